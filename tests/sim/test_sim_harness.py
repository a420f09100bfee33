# amaranth: UnusedElaboratable=no
"""The script harness: both back ends play the same script, cycle for cycle, on a small component."""

import random
import re
import shutil

import numpy as np
import pytest

from sim.harness import run
from sim.script import Script, ScriptError
from sim.trace import Port, Trace, component_ports
from sim.verilator import VerilatorModel, cpp_name, export_verilog
from sim_components import Accumulator

DEPTH = 8


def random_script(seed: int, commands: int = 40) -> Script:
    rng = random.Random(seed)
    script = Script()
    for _ in range(commands):
        script.set("en", rng.randint(0, 1)).set("data", rng.randint(-128, 127))
        script.set("clear", int(rng.random() < 0.1))
        script.step(rng.randint(1, 3)).dump("acc", "count", "full")
        script.set("rd__addr", rng.randrange(DEPTH)).step(1).dump("rd__data")
    rows = [[rng.randint(0, 1), rng.randint(-128, 127)] for _ in range(12)]
    script.drive(("en", "data"), rows, sample=("acc", "count"))
    script.drive(("rd__addr",), [[a] for a in range(DEPTH)], sample=("rd__data",))
    script.set("clear", 1).step(1).set("clear", 0).set("en", 1).set("data", 3)
    script.until("full", 1, 50).dump("acc", "count")
    script.until("count", 0, 4)
    return script


def reference(script: Script) -> tuple[list[tuple[int, dict]], list[list[list[int]]]]:
    """The dumps and drive samples `Accumulator` must produce, from its description."""
    inputs = {"en": 0, "clear": 0, "data": 0, "rd__addr": 0}
    acc, count, cycle, read = 0, 0, 0, 0
    history = [0] * DEPTH
    dumps, samples = [], []

    def wrap16(value):
        return (value + 2 ** 15) % 2 ** 16 - 2 ** 15

    def tick():
        nonlocal acc, count, read
        read = history[inputs["rd__addr"]]
        if inputs["clear"]:
            acc, count = 0, 0
        elif inputs["en"]:
            history[count % DEPTH] = wrap16(acc + inputs["data"])
            acc, count = wrap16(acc + inputs["data"]), (count + 1) % 256

    for command in script.commands:
        kind = type(command).__name__
        if kind == "Set":
            inputs[command.port] = command.value
        elif kind == "Step":
            for _ in range(command.cycles):
                tick()
            cycle += command.cycles
        elif kind == "Drive":
            got = []
            for row in command.values.astype(np.int64).tolist():
                inputs.update(zip(command.ports, row))
                inputs["data"] = (inputs["data"] + 128) % 256 - 128
                tick()
                state = {"acc": acc, "count": count, "rd__data": read}
                got.append([state[name] % 2 ** 16 for name in command.sample])  # raw 16-bit patterns
            cycle += len(command.values)
            samples.append(got)
        elif kind == "Until":
            values = {"full": int(count >= DEPTH), "count": count}
            waited = 0
            while values[command.port] != command.value and waited < command.max_cycles:
                tick()
                waited += 1
                values = {"full": int(count >= DEPTH), "count": count}
            cycle += waited
        else:
            state = {"acc": acc, "count": count, "full": int(count >= DEPTH), "rd__data": read}
            dumps.append((cycle, {name: state[name] for name in command.ports}))
    return dumps, samples


def test_script_text_round_trip():
    script = random_script(0, commands=5)
    assert Script.parse(script.text()).commands == script.commands
    assert any(type(c).__name__ == "Drive" for c in script.commands)
    parsed = Script.parse("set data -5  # comment\n\nstep 0x10\nuntil full 1 9\ndump acc count\n")
    assert parsed.text() == "set data -5\nstep 16\nuntil full 1 9\ndump acc count\n"


@pytest.mark.parametrize("text, message", [
    ("set data", "line 1: cannot parse"),
    ("step 3\nstep x", "line 2"),
    ("jump 3", "cannot parse"),
    ("step -1", "cycles must be >= 0"),
])
def test_script_parse_errors(text, message):
    with pytest.raises(ScriptError, match=message):
        Script.parse(text)


def test_unknown_ports_and_driven_outputs_are_refused():
    with pytest.raises(ScriptError, match="unknown port 'nope'"):
        run(Accumulator(DEPTH), Script().dump("nope"))
    with pytest.raises(ScriptError, match="not an input"):
        run(Accumulator(DEPTH), Script().set("acc", 1))


def test_ports_follow_the_signature():
    ports = component_ports(Accumulator(DEPTH))
    assert ports["data"] == Port("data", 8, True, "in")
    assert ports["rd__data"] == Port("rd__data", 16, True, "out")
    assert ports["rd__addr"].direction == "in"
    assert Port("x", 8, True, "in").raw(-1) == 255 and Port("x", 8, True, "in").value(255) == -1


def test_verilator_name_mangling():
    assert cpp_name("rd__addr") == "rd___05Faddr"
    assert cpp_name("a_b") == "a_b"


def test_the_verilog_has_a_clock_and_no_reset():
    """The export's clock domain has no reset input (it made Verilator evaluate every next-state
    function at each eval); the registers keep their init values."""
    text = export_verilog(Accumulator(DEPTH))
    ports = {name.strip() for name in re.search(r"module dut\((.*?)\);", text, re.S).group(1).split(",")}
    assert ports == {"clk", "en", "clear", "data", "acc", "count", "full", "rd__addr", "rd__data"}
    assert "reg [15:0] acc = 16'h0000;" in text and "rst" not in text


def test_the_stimulus_file_is_written_a_chunk_of_drive_rows_at_a_time(tmp_path):
    ports = {"a": Port("a", 4, True, "in"), "b": Port("b", 8, False, "in"), "y": Port("y", 8, False, "out")}
    model = VerilatorModel(tmp_path / "bench", ports, tmp_path)
    script = (Script().set("a", -1).step(3).drive(["b", "a"], [[1, 2], [300, -2], [5, 6], [7, 8], [9, 10]], ["y"])
              .until("y", 4, 100).dump("y", "a"))
    want = "0 0 15\n1 3\n4 5 2 1 1 0 2\n1 2\n44 14\n5 6\n7 8\n9 10\n2 2 4 100\n3 2 2 0\n"
    for chunk_rows in (1, 2, 5, 1 << 16):
        model.write_stimulus(script, tmp_path / "stimulus.txt", chunk_rows)
        assert (tmp_path / "stimulus.txt").read_text() == want


def test_amaranth_back_end_matches_the_reference():
    script = random_script(1)
    trace = run(Accumulator(DEPTH), script, "amaranth")
    dumps, samples = reference(script)
    assert [(d.cycle, d.values) for d in trace.dumps] == dumps
    assert [s.tolist() for s in trace.samples] == samples
    assert trace.waits[0].reached and not trace.waits[1].reached
    assert trace.waits[1].waited == 4
    assert trace.cycles == trace.waits[1].cycle


@pytest.mark.verilator
@pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator not installed")
def test_verilator_matches_amaranth_cycle_for_cycle(tmp_path):
    script = random_script(2)
    amaranth_trace = run(Accumulator(DEPTH), script, "amaranth")
    verilator_trace = run(Accumulator(DEPTH), script, "verilator", cache_dir=tmp_path)
    assert isinstance(verilator_trace, Trace) and verilator_trace.backend == "verilator"
    assert verilator_trace.same_as(amaranth_trace)
    assert [(d.cycle, d.values) for d in verilator_trace.dumps] == reference(script)[0]
    builds = [p for p in tmp_path.iterdir() if p.is_dir()]
    rerun = run(Accumulator(DEPTH), random_script(3), "verilator", cache_dir=tmp_path)
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == builds, "the second run must reuse the cached build"
    assert rerun.same_as(run(Accumulator(DEPTH), random_script(3), "amaranth"))
