"""Block RAM output registers for the ECP5 build: a pass over yosys' JSON netlist, between
`synth_ecp5` and nextpnr-ecp5.

A DP16KD block RAM can register its read data in an output register of its own (REGMODE OUTREG,
Lattice TN1264): the data then leaves the block about a nanosecond after the clock edge instead of
5.83 ns (nextpnr-ecp5's timing at speed grade 6), the time a route behind a block RAM needs. yosys'
ECP5 block-RAM mapping never uses it (its `brams_16kd.txt` has no such option), so the registers
CapsAcc puts right behind its memories stay flip-flops in the fabric. This pass moves them into the
blocks: where every used read-data bit of a port drives flip-flops only, plain ones (clocked by the
port's clock, no enable, no reset, power-up value 0, as the block's output register), the port
goes to OUTREG, the flip-flops are removed and the block drives their outputs. Duplicate
flip-flops of a bit (equal registers yosys did not merge) become one. The cycle behaviour is the
same: a register behind the read data, clocked every cycle, the block's output register enabled
every cycle (OCE high) and never reset (RST low).

The read ports are those of a true dual-port block (both ports at most 18 bits wide, each its own
port), or the one read port of a 36-bit pseudo-dual-port block, as yosys maps a memory of more than
18 bits (`$__PDPW16KD_`: port A writes, port B reads 36 bits through the data-out pins of both
sides). Such a read port is packed as "cell.AB": both sides' output registers on (REGMODE_A and
REGMODE_B OUTREG, as Lattice's tools configure a PDPW16KD with its output register), only where
both sides have the same clock and no reset, and with the A side's output enable tied high as the
B side's is, so that the block registers its 36 bits every cycle whichever side's controls govern
the A-side pins.
"""

from collections import defaultdict

BLOCK_RAM = "DP16KD"
FLIP_FLOP = "TRELLIS_FF"
DATA_BITS = 18
"""Read-data bits of a DP16KD port (DOA0..DOA17, DOB0..DOB17), the widest a port of a true
dual-port block has."""
WIDE_BITS = 36
"""The read width of a pseudo-dual-port block whose read uses the pins of both sides."""
PLAIN_FLIP_FLOP = {"CLKMUX": "CLK", "CEMUX": "1", "GSR": "DISABLED", "REGSET": "RESET"}
"""The TRELLIS_FF parameters of a register the output register can replace: clocked on the rising
edge, always enabled, no global set or reset, power-up value 0 (its reset input must be tied low)."""


def top_module(netlist: dict) -> dict:
    """The module of a yosys JSON netlist with the `top` attribute; ValueError if none or several."""
    tops = [module for module in netlist.get("modules", {}).values()
            if str(module.get("attributes", {}).get("top", "0")).strip("0 ")]
    if len(tops) != 1:
        raise ValueError(f"netlist: {len(tops)} top modules, expected 1")
    return tops[0]


def _parameter(cell: dict, name: str, default: str = "") -> str:
    """A cell's string parameter; yosys writes a string that looks like bits with a trailing space."""
    return str(cell.get("parameters", {}).get(name, default)).rstrip(" ")


def _is_plain_register(cell: dict, clock: list) -> bool:
    """Whether `cell` is a TRELLIS_FF as `PLAIN_FLIP_FLOP` describes, clocked by the net `clock`."""
    connections = cell["connections"]
    return (cell["type"] == FLIP_FLOP and connections.get("CLK") == clock
            and connections.get("LSR", ["0"]) == ["0"]
            and all(_parameter(cell, name) == value for name, value in PLAIN_FLIP_FLOP.items()))


def _width(cell: dict, side: str) -> int:
    """A DP16KD port's DATA_WIDTH (yosys writes the integer as a string of bits)."""
    value = _parameter(cell, f"DATA_WIDTH_{side}", "18")
    return int(value, 2) if value and set(value) <= {"0", "1"} else int(value)


def _read_ports(cell: dict) -> list[str]:
    """The read ports of a DP16KD, each as the sides whose data-out pins it drives: "A" and "B" for a
    true dual-port block, "AB" for a 36-bit pseudo-dual-port block (port B reads, never writes)."""
    widths = (_width(cell, "A"), _width(cell, "B"))
    if max(widths) <= DATA_BITS:
        return ["A", "B"]
    if widths == (WIDE_BITS, WIDE_BITS) and cell["connections"].get("WEB") == ["0"]:
        return ["AB"]
    return []


def _port_registers(cells: dict, sinks: dict, cell: dict, sides: str) -> dict[tuple[str, int], list[str]] | None:
    """The flip-flops behind the read port on `sides` ("A", "B" or "AB", `_read_ports`) of block RAM
    `cell`, by read-data pin (side, bit; the pins that drive anything), if the port can hold them in
    its output register; else None."""
    connections = cell["connections"]
    read_side = sides[-1]
    if (connections.get(f"OCE{read_side}") != ["1"]
            or len({str(connections.get(f"CLK{side}")) for side in sides}) != 1
            or any(_parameter(cell, f"REGMODE_{side}", "NOREG") != "NOREG"
                   or _parameter(cell, f"CLK{side}MUX", f"CLK{side}") != f"CLK{side}"
                   or connections.get(f"RST{side}") != ["0"] for side in sides)):
        return None
    clock, registers = connections.get(f"CLK{read_side}"), {}
    for side in sides:
        for k in range(DATA_BITS):
            bit = connections.get(f"DO{side}{k}", ["x"])[0]
            users = sinks.get(bit, []) if isinstance(bit, int) else []
            if not users:
                continue
            if any(port != "DI" or not _is_plain_register(cells[name], clock) for name, port in users):
                return None
            registers[side, k] = sorted(name for name, _ in users)
    return registers or None


def pack_output_registers(netlist: dict) -> list[str]:
    """Move the plain registers behind DP16KD read ports of `netlist` (yosys JSON, changed in place)
    into the blocks' output registers (see the module docstring); the ports packed, as
    "cell.A", "cell.B" or "cell.AB" (a 36-bit read port), sorted."""
    module = top_module(netlist)
    cells = module["cells"]
    sinks = defaultdict(list)
    for name, cell in cells.items():
        for port, bits in cell["connections"].items():
            if cell.get("port_directions", {}).get(port) != "output":
                for bit in bits:
                    sinks[bit].append((name, port))
    for port in module.get("ports", {}).values():
        if port["direction"] != "input":
            for bit in port["bits"]:
                sinks[bit].append(("", port["direction"]))
    packed, renamed = [], {}
    for name in sorted(cells):
        cell = cells.get(name)
        if cell is None or cell["type"] != BLOCK_RAM:
            continue
        for sides in _read_ports(cell):
            registers = _port_registers(cells, sinks, cell, sides)
            if registers is None:
                continue
            for (side, k), flip_flops in registers.items():
                kept = cells[flip_flops[0]]["connections"]["Q"][0]
                cell["connections"][f"DO{side}{k}"] = [kept]
                for flip_flop in flip_flops:
                    renamed[cells.pop(flip_flop)["connections"]["Q"][0]] = kept
            for side in sides:
                cell["parameters"][f"REGMODE_{side}"] = "OUTREG"
                cell["connections"][f"OCE{side}"] = ["1"]
            packed.append(f"{name}.{sides}")
    for cell in cells.values():
        for port, bits in cell["connections"].items():
            cell["connections"][port] = [renamed.get(bit, bit) for bit in bits]
    for port in module.get("ports", {}).values():
        port["bits"] = [renamed.get(bit, bit) for bit in port["bits"]]
    for net in module.get("netnames", {}).values():
        net["bits"] = [renamed.get(bit, bit) for bit in net["bits"]]
    return packed
