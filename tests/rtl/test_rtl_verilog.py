"""Exported Verilog: lint with Verilator, simulate it cycle for cycle against Amaranth, synthesize."""

import gc
import json
import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable

from capsacc.array import ArrayConfig, buffer_depths
from capsacc.cli import main
from capsacc.energy import sram_access_pJ, sram_area_um2
from rtl import host, workloads
from rtl.capsacc import CapsAcc
from rtl.export import LINT_WAIVERS, TOP, export_verilog
from rtl.isa import program_cycles
from rtl.offchip import CapsAccSystem
from rtl.synth import (SRAM_MEMORIES, SynthError, memory_shapes, module_sources, split_parts, sram_macros,
                       without_memory_init)
from rtl.version import rtl_version
from rtl.widths import ACC_BITS
from sim import golden
from sim.harness import run
from sim.script import Script
from rtl_bench import decode_system, system_commands
from test_rtl_dma import segment as dma_segment
from test_rtl_programs import random_program

needs_verilator = pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator not installed")
needs_yosys = pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed")


def to_script(commands: list[tuple]) -> Script:
    """rtl.host's command tuples as a sim.script.Script."""
    script = Script()
    for command in commands:
        getattr(script, command[0])(*command[1:])
    return script


def test_export_cli_writes_verilog_and_rejects_bad_parameters(tmp_path, capsys):
    out = tmp_path / "capsacc.v"
    assert main(["rtl", "export", "--rows", "2", "--cols", "3", "--buffer-depth", "16", "-o", str(out)]) == 0
    text = out.read_text()
    assert f"module {TOP}(" in text and "host_rdata" in text
    assert main(["rtl", "export", "--rows", "2", "--cols", "3", "--buffer-depth", "12", "-o", str(out)]) == 2
    assert "--buffer-depth: 12 is not a power of two" in capsys.readouterr().err  # the option given, not a field
    assert main(["rtl", "export", "--rows", "2", "--cols", "0", "-o", str(out)]) == 2
    assert "array 'cols' must be an integer in 1..4096, got 0" in capsys.readouterr().err
    assert main(["rtl", "export", "--rows", "2", "--cols", "2", "--acc-bits", "8", "-o", str(out)]) == 2
    assert "acc_bits: 8" in capsys.readouterr().err


def test_every_port_is_at_most_64_bits():
    """The host ports of CapsAcc, and every port of the simulated system, are at most 64 bits; the
    off-chip port is W bytes wide."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)  # only the signature is inspected
        widths = {}
        for dut in (CapsAcc(16, 16), CapsAccSystem(ArrayConfig(16, 16), 2)):
            widths[type(dut).__name__] = {"__".join(map(str, path)): value.shape().width
                                          for path, _, value in dut.signature.flatten(dut)}
        del dut
        gc.collect()
    host_ports = {"host_sel", "host_addr", "host_lane", "host_wdata", "host_we", "host_rdata", "start", "busy",
                  "done", "counter_sel", "counter"}
    assert max(widths["CapsAccSystem"].values()) <= 64 and set(widths["CapsAccSystem"]) == host_ports
    assert {name: widths["CapsAcc"][name] for name in host_ports} == {
        name: width for name, width in widths["CapsAccSystem"].items() if name != "host_addr"} | {"host_addr": 16}
    assert widths["CapsAcc"]["offchip__wdata"] == widths["CapsAcc"]["offchip__rdata"] == 8 * 16


@pytest.mark.verilator
@needs_verilator
@pytest.mark.parametrize("rows,cols", [(2, 3), (4, 4)])
def test_verilator_lint_passes(tmp_path, rows, cols):
    source = tmp_path / f"{TOP}.v"
    source.write_text(export_verilog(ArrayConfig(rows, cols, **buffer_depths(32), program_depth=16)))
    waivers = [f"-Wno-{name}" for name in LINT_WAIVERS]
    result = subprocess.run(["verilator", "--lint-only", "-Wall", *waivers, "--top-module", TOP, str(source)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "%Warning" not in result.stderr and "%Error" not in result.stderr


@pytest.mark.verilator
@needs_verilator
def test_verilator_agrees_with_amaranth_cycle_for_cycle(tmp_path, record_property):
    """A routing of two iterations (uniform coupling, weighted sums, squash, agreement, softmax) with
    J = 6 classes and D = 5 atoms on 4 columns (spanning capsules, column-mode scatters of whole
    capsules) played by the same host script on Amaranth's simulator and on Verilator: equal
    traces, results equal to the golden model."""
    rows, cols, depth = 4, 4, 64
    rng = np.random.default_rng(21)
    u_hat = rng.integers(-128, 128, size=(4, 6, 5))
    layout = workloads.RoutingLayout(4, 6, 5, ArrayConfig(rows, cols, 25, **buffer_depths(depth), program_depth=16), routings=2)
    runs = layout.routing(u_hat, 8, 9, golden.uniform_coupling(4, 6))
    regions = layout.regions()
    script = to_script(host.workload_commands(runs, regions, max_cycles=10_000))
    dut = lambda: CapsAccSystem(ArrayConfig(rows, cols, ACC_BITS, **buffer_depths(depth), program_depth=16), 2)  # noqa: E731
    amaranth_trace = run(dut(), script, "amaranth")
    verilator_trace = run(dut(), script, "verilator", cache_dir=tmp_path)
    assert verilator_trace.same_as(amaranth_trace)
    values = [list(d.values.values())[0] for d in verilator_trace.dumps]
    results, counters = host.decode(values, regions, len(runs))
    c, s, v, b = golden.routing(u_hat, 2, 8, 9)
    assert np.array_equal(layout.coupling(results["c"]), c)
    assert np.array_equal(layout.sums(results["s"]), s) and np.array_equal(layout.v(results["v"]), v)
    assert np.array_equal(layout.logits(results["b"]), b)
    assert counters["busy_cycles"] == sum(wait.waited for wait in verilator_trace.waits)
    record_property("cycles", counters["busy_cycles"])
    record_property("verilator_cycles_per_s", round(verilator_trace.cycles_per_s))
    print(f"routing of 2 iterations 4x4, J = 6, D = 5: {counters['busy_cycles']} busy cycles; script {verilator_trace.cycles} "
          f"cycles; Verilator {verilator_trace.cycles_per_s:.0f} cycles/s, Amaranth "
          f"{amaranth_trace.cycles_per_s:.0f} cycles/s")

    # A random program on the same (cached) build: every memory row and counter, cycle for cycle.
    state = golden.MachineState(rows, cols, depth, data=rng.integers(-128, 128, size=(depth, rows)),
                                weight=rng.integers(-128, 128, size=(depth, cols)),
                                routing=rng.integers(-128, 128, size=(depth, rows)),
                                psum=rng.integers(-(1 << 24), 1 << 24, size=(depth, cols)))
    program = random_program(rng, rows, cols, 10)
    work = workloads.Workload(program, data={0: state.data.copy()}, weight={0: state.weight.copy()},
                              routing={0: state.routing.copy()}, psum={0: state.psum.copy()})
    regions = {name: workloads.Region(name, 0, depth, getattr(state, name).shape[1])
               for name in ("data", "weight", "routing", "psum")}
    script = to_script(host.workload_commands(work, regions, max_cycles=10_000))
    verilator_trace = run(dut(), script, "verilator", cache_dir=tmp_path)
    assert verilator_trace.same_as(run(dut(), script, "amaranth"))
    results, _ = host.decode([list(d.values.values())[0] for d in verilator_trace.dumps], regions)
    golden.execute(program, state)
    for name in regions:
        assert np.array_equal(results[name], getattr(state, name)), name


@pytest.mark.verilator
@needs_verilator
def test_verilator_memory_model_agrees_with_amaranth(tmp_path):
    """A program of DMA transfers, MATMULs and ACTs on CapsAccSystem: the off-chip memory's Verilog
    model (Verilator) and its Amaranth model give the same trace, cycle for cycle, and the golden
    machine's memories."""
    rows, cols, depth, width, latency = 4, 4, 32, 8, 7
    rng = np.random.default_rng(5)
    state = golden.MachineState(rows, cols, depth, data=rng.integers(-128, 128, size=(depth, rows)),
                                weight=rng.integers(-128, 128, size=(depth, cols)),
                                routing=rng.integers(-128, 128, size=(depth, rows)),
                                psum=rng.integers(-(1 << 24), 1 << 24, size=(depth, cols)), bytes_per_cycle=width,
                                offchip=rng.integers(0, 256, size=(24, width)).astype(np.uint8))
    program = [instruction for k in range(4) for instruction in dma_segment(rng, rows, cols, k % 2, width)]
    commands, regions = system_commands(state, program, width)
    script = to_script(commands)
    config = ArrayConfig(rows, cols, ACC_BITS, **buffer_depths(depth), program_depth=64, offchip_bytes_per_cycle=width,
                         offchip_latency_cycles=latency)
    verilator_trace = run(CapsAccSystem(config, 32, verilog_memory=True), script, "verilator", cache_dir=tmp_path)
    assert verilator_trace.same_as(run(CapsAccSystem(config, 32), script, "amaranth"))
    dumps = [list(d.values.values())[0] for d in verilator_trace.dumps]
    results, counters = decode_system(dumps, regions, 24, width)
    golden.execute(program, state)
    for name in ("data", "weight", "routing", "psum", "offchip"):
        assert np.array_equal(results[name], getattr(state, name)), name
    assert counters["busy_cycles"] == program_cycles(program, rows, cols, width, latency)


VERILOG_HIERARCHY = """\
(* top =  1  *)
(* src = "/x/rtl/capsacc.py:112" *)
(* generator = "Amaranth" *)
module capsacc(clk, rst);
endmodule

(* src = "/x/rtl/activation.py:76" *)
module \\capsacc.act (rst, clk);
endmodule

(* src = "/x/rtl/pe_array.py:74" *)
module \\capsacc.array (rst, clk);
endmodule

(* src = "/x/rtl/pe.py:10" *)
module \\capsacc.array.pe_0_0 (rst, clk);
endmodule
"""


def test_synth_splits_the_hierarchy_into_parts():
    sources = module_sources(VERILOG_HIERARCHY)
    assert sources == {"capsacc": "/x/rtl/capsacc.py", "capsacc.act": "/x/rtl/activation.py",
                       "capsacc.array": "/x/rtl/pe_array.py", "capsacc.array.pe_0_0": "/x/rtl/pe.py"}
    modules = {  # a yosys stat of the hierarchy, the RAMs moved by submod into capsacc_buffers
        "capsacc": {"num_cells_by_type": {"$_AND_": 10, "$_DFF_P_": 2, "capsacc.act": 1, "capsacc.array": 1,
                                          "capsacc_buffers": 1}},
        "capsacc_buffers": {"num_cells_by_type": {"$_DFFE_PP_": 64, "$_MUX_": 60}},
        "capsacc.act": {"num_cells_by_type": {"$_XOR_": 5}},
        "capsacc.array": {"num_cells_by_type": {"$_NOT_": 1, "\\capsacc.array.pe_0_0": 3}},
        "capsacc.array.pe_0_0": {"num_cells_by_type": {"$_DFF_P_": 4, "$_XOR_": 2}},
    }
    parts, per_module = split_parts(modules, sources, "capsacc", "pe_array.py")
    assert per_module["capsacc.array.pe_0_0"]["instances"] == 3
    assert per_module["capsacc.array.pe_0_0"]["part"] == "pe_array"  # below the array, from another file
    assert parts["pe_array"] == {"cells": 1 + 3 * 6, "flip_flops": 12,
                                 "area_um2": pytest.approx(0.532 + 3 * (2 * 1.596 + 4 * 4.522))}
    assert parts["buffers"] == {"cells": 124, "flip_flops": 64, "area_um2": pytest.approx(64 * 6.384 + 60 * 1.862)}
    assert parts["rest"] == {"cells": 17, "flip_flops": 2,
                             "area_um2": pytest.approx(10 * 1.064 + 2 * 4.522 + 5 * 1.596)}
    with pytest.raises(SynthError, match="no module of the PE array"):
        split_parts(modules, sources, "capsacc", "systolic.py")
    # A component of the PE array's file used elsewhere (the activation unit's multipliers) stays in
    # its user's part.
    modules["capsacc.act"]["num_cells_by_type"]["\\capsacc.act.square0"] = 2
    modules["capsacc.act.square0"] = {"num_cells_by_type": {"$_AND_": 7}}
    parts, per_module = split_parts(modules, {**sources, "capsacc.act.square0": "/x/rtl/pe_array.py"}, "capsacc",
                                    "pe_array.py")
    assert per_module["capsacc.act.square0"] == {**per_module["capsacc.act.square0"], "part": "rest", "instances": 2}
    assert parts["pe_array"]["cells"] == 1 + 3 * 6 and parts["rest"]["cells"] == 17 + 2 * 7


def test_synth_cli_reports_bad_parameters_and_missing_yosys(capsys):
    assert main(["rtl", "synth", "--rows", "2", "--cols", "64"]) == 2
    assert "cols: 64 outside [1, 63]" in capsys.readouterr().err
    assert main(["rtl", "synth", "--rows", "2", "--cols", "2", "--yosys", "no-such-yosys"]) == 2
    assert "'no-such-yosys' is not on PATH" in capsys.readouterr().err


def test_export_builds_each_memory_at_its_own_depth(tmp_path, capsys):
    out = tmp_path / "capsacc.v"
    assert main(["rtl", "export", "--rows", "2", "--cols", "3", "--buffer-depth", "16", "--data-depth", "32",
                 "--psum-depth", "64", "--program-depth", "8", "-o", str(out)]) == 0
    assert "depths data 32, weight 16, routing 16, psum 64, program 8" in capsys.readouterr().out
    config = ArrayConfig(2, 3, 34, data_depth=32, weight_depth=16, routing_depth=16, psum_depth=64, program_depth=8)
    memories = {}
    for match in re.finditer(r"^\s*reg \[(\d+):0\] \\?(\w+)\s+\[(\d+):0\];", out.read_text(), re.M):
        memories[match.group(2)] = (int(match.group(3)) + 1, int(match.group(1)) + 1)
    assert {name: memories.get(name) for name in SRAM_MEMORIES} == memory_shapes(config)
    assert memory_shapes(config)["psum"] == (64, 3 * 34) and config.buffer_depth == 16


def test_synthesis_drops_the_initial_blocks_of_the_sram_memories_only():
    verilog = export_verilog(ArrayConfig(2, 3, 34, **buffer_depths(32), program_depth=16))
    stripped = without_memory_init(verilog, SRAM_MEMORIES)
    assignments = lambda text, name: len(re.findall(rf"^\s*\\?{name}\s*\[\d+\] = ", text, re.M))  # noqa: E731
    for name, rows in (("data_buf", 32), ("psum", 32), ("program", 16)):
        assert assignments(verilog, name) == rows and assignments(stripped, name) == 0
    assert len(verilog.splitlines()) - len(stripped.splitlines()) == 4 * 32 + 16 + 5 * 2  # rows, initial/end
    assert stripped.count("initial begin") == verilog.count("initial begin") - 5 > 0  # the ROMs keep theirs
    assert assignments(stripped, "exp_rom0") == assignments(verilog, "exp_rom0") > 0
    with pytest.raises(SynthError, match=r"memories \['sum_buf'\] are not declared"):
        without_memory_init(verilog, ("psum", "sum_buf"))


def test_sram_macros_are_priced_by_the_table_and_checked_against_the_configuration():
    config = ArrayConfig(4, 4, 34, data_depth=1024, weight_depth=512, routing_depth=256, psum_depth=2048,
                         program_depth=64)
    rams = [{"memory": name, "depth": depth, "width": width} for name, (depth, width) in memory_shapes(config).items()]
    macros = sram_macros(rams + [{"memory": "sum_buffer", "depth": 8, "width": 16}], config)
    assert [macro["memory"] for macro in macros] == list(SRAM_MEMORIES)
    psum = macros[3]
    assert (psum["depth"], psum["width"], psum["bits"]) == (2048, 4 * 34, 2048 * 136)
    assert psum["area_um2"] == pytest.approx(2048 * 136 * 0.346 * 2.0, abs=1e-3)
    # Horowitz: 10 pJ per 64 bits at 8 KB, x sqrt(capacity / 8 KB): 136 bits of a 34 KiB memory.
    assert psum["access_pJ"] == pytest.approx(10 * 136 / 64 * (2048 * 136 / 8 / 8192) ** 0.5, abs=1e-4)
    program = macros[4]
    assert program["access_pJ"] == pytest.approx(10 * (64 * 64 / 8 / 8192) ** 0.5, abs=1e-4)
    with pytest.raises(SynthError, match="not the SRAM macros"):
        sram_macros(rams[1:], config)
    wrong = [dict(ram, depth=ram["depth"] * 2) if ram["memory"] == "weight_buf" else ram for ram in rams]
    with pytest.raises(SynthError, match="memory weight_buf: 1024 rows of 32 bits, the configuration gives 512 of 32"):
        sram_macros(wrong, config)


@pytest.mark.yosys
@needs_yosys
def test_synth_cli_4x4_with_memories_as_sram_macros(tmp_path, capsys, record_property):
    out = tmp_path / "synth.json"
    assert main(["rtl", "synth", "--rows", "4", "--cols", "4", "--buffer-depth", "512", "--data-depth", "1024",
                 "--psum-depth", "2048", "--program-depth", "64", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "published 45 nm: 16 PEs x 1333.75" in printed
    summary = json.loads(out.read_text())
    config = ArrayConfig(**summary["config"])
    assert config == ArrayConfig(4, 4, ACC_BITS, data_depth=1024, weight_depth=512, routing_depth=512,
                                 psum_depth=2048, program_depth=64)
    assert summary["flip_flops"] > 16 * (8 + 8 + 20)  # every PE registers x, w, psum
    assert summary["cells"] > summary["flip_flops"]
    assert 0.5 < summary["pe_area_um2"] / 1333.750616 < 2.0
    assert summary["published_um2"] == pytest.approx(16 * 1333.750616 + 4 * 494.1729, abs=1e-3)
    assert summary["rtl_version"] == rtl_version() and f"(RTL {rtl_version()[:12]})" in printed
    # The five memories are SRAM macros: one blackbox each, of the configured shape, priced by the
    # table; none of their bits is a flip-flop, none of their cells is synthesized.
    srams = summary["srams"]
    assert {sram["memory"]: (sram["depth"], sram["width"]) for sram in srams} == memory_shapes(config)
    for sram in srams:
        assert sram["area_um2"] == pytest.approx(sram_area_um2(sram["width"], sram["depth"]), abs=1e-3)
        assert sram["access_pJ"] == pytest.approx(sram_access_pJ(sram["width"], sram["bits"] // 8), abs=1e-4)
    sram_bits = sum(sram["bits"] for sram in srams)
    assert sram_bits == 1024 * 32 + 512 * 32 + 512 * 32 + 2048 * 4 * ACC_BITS + 64 * 64
    assert summary["flip_flops"] < sram_bits
    assert not any("sram" in cell for cell in summary["cells_by_type"])
    assert summary["sram_area_um2"] == pytest.approx(sum(sram["area_um2"] for sram in srams), abs=1e-2)
    assert summary["area_um2"] == pytest.approx(summary["logic_area_um2"] + summary["sram_area_um2"], abs=1e-2)
    # The logic parts add up to the logic, each is there; the RAMs left as flip-flops are the
    # activation unit's own row buffers.
    parts = summary["parts"]
    assert set(parts) == {"pe_array", "buffers", "rest"}
    for key, whole in (("cells", "cells"), ("flip_flops", "flip_flops"), ("area_um2", "logic_area_um2")):
        assert sum(part[key] for part in parts.values()) == pytest.approx(summary[whole], rel=1e-9)
        assert all(part[key] > 0 for part in parts.values())
    assert 0.5 < parts["pe_array"]["area_um2"] / (16 * 1333.750616) < 2.0
    assert summary["memory_bits"] == sum(ram["depth"] * ram["width"] for ram in summary["rams"]) > 0
    assert not {ram["memory"] for ram in summary["rams"]} & set(SRAM_MEMORIES)
    assert parts["buffers"]["flip_flops"] >= summary["memory_bits"]
    for name in ("PE array (16 PEs)", "small RAMs (", "rest", "SRAM macros", "  psum", "pJ/access"):
        assert name in printed
    record_property("logic_area_um2", summary["logic_area_um2"])
    record_property("sram_area_um2", summary["sram_area_um2"])
