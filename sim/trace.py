"""What the simulation back ends share: a component's ports, the check of a script against them,
and the trace a script leaves (`Trace` with its `DumpRecord`s and `WaitRecord`s).

`sim.harness` picks a back end; `sim.amaranth_backend` and `sim.verilator` fill a `Trace`. Both
import this module only, so no back end imports the harness.
"""

from dataclasses import dataclass, field

from amaranth.lib import wiring

import numpy as np

from sim.script import Drive, Dump, Script, ScriptError, Set, Until


@dataclass(frozen=True)
class Port:
    """One port of a component: Verilog name, width in bits, signedness, direction ("in"/"out")."""

    name: str
    width: int
    signed: bool
    direction: str

    def raw(self, value: int) -> int:
        """`value` as the unsigned bit pattern of the port."""
        return int(value) & ((1 << self.width) - 1)

    def value(self, raw: int) -> int:
        """The integer a bit pattern stands for (two's complement when signed)."""
        if self.signed and raw >> (self.width - 1) & 1:
            return raw - (1 << self.width)
        return raw


def component_ports(component: wiring.Component) -> dict[str, Port]:
    """The ports of `component`, by Verilog name (signature path joined by ``__``)."""
    ports = {}
    for path, member, value in component.signature.flatten(component):
        name = "__".join(str(part) for part in path)
        shape = value.shape()
        if shape.width > 64:
            raise ScriptError(f"port '{name}' is {shape.width} bits wide; the harness handles at most 64")
        ports[name] = Port(name, shape.width, shape.signed, "in" if member.flow == wiring.In else "out")
    return ports


@dataclass(frozen=True)
class DumpRecord:
    """The values (as integers, signed where the port is) of the dumped ports at `cycle`."""

    cycle: int
    values: dict[str, int]


@dataclass(frozen=True)
class WaitRecord:
    """An ``until`` that ended at `cycle`, after `waited` cycles; `reached` is False on a timeout."""

    cycle: int
    waited: int
    reached: bool


@dataclass
class Trace:
    """What a script produced on one back end."""

    backend: str
    cycles: int
    dumps: list[DumpRecord] = field(default_factory=list)
    waits: list[WaitRecord] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)
    """Per `drive` with sample ports: uint64 bit patterns, shape (N, len(sample))."""
    sim_s: float = 0.0
    """Wall time of the simulation loop alone, in seconds (no build, no file transfer)."""
    cpu_s: float = 0.0
    """CPU time of the simulator process in seconds (Verilator: the whole bench, parsing included;
    Amaranth: the simulation loop)."""

    @property
    def cycles_per_s(self) -> float:
        return self.cycles / self.sim_s if self.sim_s > 0 else float("inf")

    def same_as(self, other: "Trace") -> bool:
        """True when the cycles, dumps and waits are equal (the back ends and timings may differ)."""
        return ((self.cycles, self.dumps, self.waits) == (other.cycles, other.dumps, other.waits)
                and len(self.samples) == len(other.samples)
                and all(np.array_equal(a, b) for a, b in zip(self.samples, other.samples)))

    def check_waits(self) -> None:
        """Raise `SimulationTimeout` if any ``until`` timed out."""
        for number, wait in enumerate(self.waits):
            if not wait.reached:
                raise SimulationTimeout(f"until #{number} timed out at cycle {wait.cycle} after {wait.waited} cycles")


class SimulationTimeout(RuntimeError):
    """An ``until`` whose port never reached its value within its cycle budget."""


def check_script(script: Script, ports: dict[str, Port]) -> None:
    """Raise `ScriptError` if the script names unknown ports or drives outputs."""
    for command in script.commands:
        driven = ()
        if isinstance(command, Dump):
            names = command.ports
        elif isinstance(command, Drive):
            names, driven = command.ports + command.sample, command.ports
        elif isinstance(command, (Set, Until)):
            names = (command.port,)
            driven = names if isinstance(command, Set) else ()
        else:
            names = ()
        for name in names:
            if name not in ports:
                raise ScriptError(f"unknown port '{name}' (ports: {', '.join(sorted(ports))})")
        for name in driven:
            if ports[name].direction != "in":
                raise ScriptError(f"'set {name}': not an input port")
