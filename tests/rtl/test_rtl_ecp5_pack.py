"""The ECP5 netlist pass that moves the registers behind block RAM read ports into the blocks'
output registers (`rtl.ecp5_pack`), on small yosys-style JSON netlists."""

import copy

import pytest

from rtl.ecp5_pack import pack_output_registers, top_module

CLOCK, RESET, ENABLE = 2, 3, 4


def flip_flop(d: int, q: int, **changes) -> dict:
    """A TRELLIS_FF as synth_ecp5 writes a plain register (no enable, no reset) from net d to net q."""
    cell = {"type": "TRELLIS_FF", "port_directions": {"CLK": "input", "LSR": "input", "DI": "input", "Q": "output"},
            "parameters": {"CEMUX": "1 ", "CLKMUX": "CLK", "GSR": "DISABLED", "LSRMUX": "LSR", "REGSET": "RESET"},
            "connections": {"CLK": [CLOCK], "LSR": ["0"], "DI": [d], "Q": [q]}}
    for name, value in changes.items():
        (cell["connections"] if name in cell["connections"] or name == "CE" else cell["parameters"])[name] = value
    if "CE" in changes:
        cell["port_directions"]["CE"] = "input"
    return cell


def lut(a: int, z: int) -> dict:
    return {"type": "LUT4", "port_directions": {"A": "input", "Z": "output"}, "parameters": {"INIT": "0101"},
            "connections": {"A": [a], "Z": [z]}}


def block_ram(do_b: list[int], width: int = 18, **connections) -> dict:
    """A DP16KD: port A writes, port B reads into nets do_b (DOB0..); yosys' ties otherwise."""
    ports = {f"DO{side}{k}": ["x"] for side in "AB" for k in range(18)}
    ports.update({f"DOB{k}": [bit] for k, bit in enumerate(do_b)})
    ports.update({"CLKA": [CLOCK], "CLKB": [CLOCK], "CEA": ["1"], "CEB": ["1"], "OCEA": ["1"], "OCEB": ["1"],
                  "RSTA": ["0"], "RSTB": ["0"], "WEA": [5], "WEB": ["0"]})
    ports.update(connections)
    directions = {name: "output" if name.startswith("DO") else "input" for name in ports}
    bits = f"{width:032b}"
    return {"type": "DP16KD", "port_directions": directions, "connections": ports,
            "parameters": {"DATA_WIDTH_A": bits, "DATA_WIDTH_B": bits, "REGMODE_A": "NOREG", "REGMODE_B": "NOREG"}}


def netlist(cells: dict, outputs: list[int] = ()) -> dict:
    ports = {"clk": {"direction": "input", "bits": [CLOCK]}, "out": {"direction": "output", "bits": list(outputs)}}
    return {"modules": {"lib": {"cells": {}}, "top": {"attributes": {"top": "00000000000000000000000000000001"},
                                                     "ports": ports, "cells": cells,
                                                     "netnames": {"q": {"bits": [20, 21, 22]}}}}}


def assert_left_alone(unchanged: dict) -> None:
    """The pass packs no port of `unchanged` and leaves the netlist as it was."""
    before = copy.deepcopy(unchanged)
    assert pack_output_registers(unchanged) == []
    assert unchanged == before


def design(**ff_changes) -> dict:
    """A block RAM whose read data (nets 10, 11) goes into registers q0 (net 20) and q1 (net 21),
    each read by a LUT; `ff_changes` alter register q1."""
    return netlist({
        "ram": block_ram([10, 11]),
        "q0": flip_flop(10, 20), "q1": flip_flop(11, 21, **ff_changes),
        "use0": lut(20, 30), "use1": lut(21, 31),
    })


def test_a_read_port_into_plain_registers_is_packed():
    packed_netlist = design()
    assert pack_output_registers(packed_netlist) == ["ram.B"]
    cells = top_module(packed_netlist)["cells"]
    assert sorted(cells) == ["ram", "use0", "use1"]
    ram = cells["ram"]
    assert ram["parameters"]["REGMODE_B"] == "OUTREG" and ram["parameters"]["REGMODE_A"] == "NOREG"
    # The block now drives the registers' outputs, which their users still read.
    assert ram["connections"]["DOB0"] == [20] and ram["connections"]["DOB1"] == [21]
    assert cells["use0"]["connections"]["A"] == [20] and cells["use1"]["connections"]["A"] == [21]


def test_duplicate_registers_of_a_bit_become_one():
    cells = design()["modules"]["top"]["cells"]
    cells["q1_copy"] = flip_flop(11, 22)
    cells["use_copy"] = lut(22, 32)
    duplicated = netlist(cells)
    assert pack_output_registers(duplicated) == ["ram.B"]
    top = top_module(duplicated)
    assert "q1" not in top["cells"] and "q1_copy" not in top["cells"]
    assert top["cells"]["ram"]["connections"]["DOB1"] == [21]
    assert top["cells"]["use_copy"]["connections"]["A"] == [21]
    assert top["netnames"]["q"]["bits"] == [20, 21, 21]


@pytest.mark.parametrize("case", ["enable", "reset", "other clock", "set", "inverted clock"])
def test_a_register_the_output_register_cannot_replace_keeps_the_port(case):
    changes = {"enable": {"CEMUX": "CE", "CE": [ENABLE]}, "reset": {"LSR": [RESET]}, "other clock": {"CLK": [9]},
               "set": {"REGSET": "SET"}, "inverted clock": {"CLKMUX": "INV"}}[case]
    assert_left_alone(design(**changes))


def test_read_data_used_by_logic_or_a_port_keeps_the_port():
    into_logic = design()
    top_module(into_logic)["cells"]["peek"] = lut(11, 33)
    assert pack_output_registers(into_logic) == []
    cells = design()["modules"]["top"]["cells"]
    assert pack_output_registers(netlist(cells, outputs=[10])) == []


@pytest.mark.parametrize("ram", [
    block_ram([10, 11], OCEB=["0"]),  # the output register would never load
    block_ram([10, 11], RSTB=[RESET]),  # the block's reset would clear it
])
def test_a_block_whose_output_register_differs_keeps_the_port(ram):
    cells = design()["modules"]["top"]["cells"]
    cells["ram"] = ram
    assert pack_output_registers(netlist(cells)) == []


def wide_design(**connections) -> dict:
    """A 36-bit pseudo-dual-port block as yosys maps one (port A writes, port B reads; OCEA low):
    read bit 0 on DOA0 (net 10) and bit 18 on DOB0 (net 11), into registers q0 and q1."""
    ram = block_ram([11], width=36, OCEA=["0"], WEA=["1"], DOA0=[10], **connections)
    return netlist({"ram": ram, "q0": flip_flop(10, 20), "q1": flip_flop(11, 21),
                    "use0": lut(20, 30), "use1": lut(21, 31)})


def test_a_36_bit_read_port_is_packed_on_both_sides():
    """Its read data leaves through the pins of both sides: both output registers on, the A side's
    output enable tied high as the B side's is, and the block drives both registers' outputs."""
    packed_netlist = wide_design()
    assert pack_output_registers(packed_netlist) == ["ram.AB"]
    cells = top_module(packed_netlist)["cells"]
    assert sorted(cells) == ["ram", "use0", "use1"]
    ram = cells["ram"]
    assert ram["parameters"]["REGMODE_A"] == ram["parameters"]["REGMODE_B"] == "OUTREG"
    assert ram["connections"]["OCEA"] == ram["connections"]["OCEB"] == ["1"]
    assert ram["connections"]["DOA0"] == [20] and ram["connections"]["DOB0"] == [21]


@pytest.mark.parametrize("connections", [
    {"CLKA": [9]},  # the write side's clock would clock the A-side pins' register
    {"RSTA": [RESET]},  # the A side's reset would clear it
    {"WEB": [6]},  # port B writes too: not a pseudo-dual-port read
    {"OCEB": ["0"]},  # the read side's output register would never load
])
def test_a_36_bit_block_whose_sides_differ_keeps_its_port(connections):
    assert_left_alone(wide_design(**connections))


def test_a_36_bit_block_whose_a_side_pins_feed_logic_keeps_its_port():
    into_logic = wide_design()
    top_module(into_logic)["cells"]["peek"] = lut(10, 33)
    assert pack_output_registers(into_logic) == []


def test_a_port_already_registered_or_unused_is_left_alone():
    cells = design()["modules"]["top"]["cells"]
    cells["ram"]["parameters"]["REGMODE_B"] = "OUTREG"
    cells["idle"] = block_ram([])
    assert pack_output_registers(netlist(cells)) == []


def test_the_top_module_must_be_one():
    with pytest.raises(ValueError, match="0 top modules"):
        top_module({"modules": {"a": {"attributes": {}}}})
