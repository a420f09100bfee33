"""Stimulus scripts: what a test bench does to a component's ports, cycle by cycle.

A script is a list of commands, one a line in its text form (``#`` starts a comment):

    set PORT VALUE            drive input PORT with VALUE from now on (negative values allowed for signed ports)
    step N                    advance N clock cycles (N rising edges of ``sync``)
    until PORT VALUE MAX      step until output PORT equals VALUE, at most MAX cycles
    dump PORT [PORT ...]      record the present values of the ports (after combinational settling)
    drive N P... [: S...]     N cycles: each sets inputs P... to the values of the next line, steps
                              one cycle, then records outputs S... (the following N lines hold the values)

Semantics shared by every back end: a ``set`` takes effect at once (combinational outputs follow it
before the next ``dump``); a cycle is one rising clock edge; ``until`` tests the port before each
step, so it takes 0 cycles when the port already holds the value. Ports are named as in the
exported Verilog: the signature path joined by ``__`` (``host__addr``, ``arr__0``).
"""

from dataclasses import dataclass, field

import numpy as np

from capsacc.errors import InputError


@dataclass(frozen=True)
class Set:
    """Drive input `port` with `value` (an integer; masked to the port's width)."""

    port: str
    value: int


@dataclass(frozen=True)
class Step:
    """Advance `cycles` clock cycles."""

    cycles: int


@dataclass(frozen=True)
class Until:
    """Step until `port` equals `value`, for at most `max_cycles` cycles."""

    port: str
    value: int
    max_cycles: int


@dataclass(frozen=True)
class Dump:
    """Record the present values of `ports`."""

    ports: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Drive:
    """One cycle per row of `values` (uint64 bit patterns, shape (N, len(ports))): set `ports` to
    the row, step one cycle, then record the bit patterns of the `sample` ports."""

    ports: tuple[str, ...]
    values: np.ndarray
    sample: tuple[str, ...] = field(default=())

    def __eq__(self, other):
        return (isinstance(other, Drive) and self.ports == other.ports and self.sample == other.sample
                and np.array_equal(self.values, other.values))

    __hash__ = None


Command = Set | Step | Until | Dump | Drive


MASK64 = (1 << 64) - 1


class ScriptError(InputError):
    """A script that does not parse or names ports the component lacks."""


class Script:
    """A list of commands built in Python, with the text form of the module docstring."""

    def __init__(self, commands=()):
        self.commands: list[Command] = list(commands)

    def set(self, port: str, value: int) -> "Script":
        self.commands.append(Set(port, int(value)))
        return self

    def step(self, cycles: int = 1) -> "Script":
        if cycles < 0:
            raise ScriptError(f"step: cycles must be >= 0, got {cycles}")
        if cycles:
            self.commands.append(Step(int(cycles)))
        return self

    def until(self, port: str, value: int, max_cycles: int) -> "Script":
        if max_cycles < 0:
            raise ScriptError(f"until: max_cycles must be >= 0, got {max_cycles}")
        self.commands.append(Until(port, int(value), int(max_cycles)))
        return self

    def dump(self, *ports: str) -> "Script":
        if not ports:
            raise ScriptError("dump: name at least one port")
        self.commands.append(Dump(tuple(ports)))
        return self

    def drive(self, ports, values, sample=()) -> "Script":
        """Append a `Drive`; `values` (N, len(ports)) integers, negative ones as two's complement."""
        array = np.asarray(values)
        if array.ndim != 2 or array.shape[1] != len(ports):
            raise ScriptError(f"drive: values must have shape (N, {len(ports)}), got {array.shape}")
        if array.dtype != np.uint64:
            array = array.astype(np.int64).view(np.uint64)
        if len(array):
            self.commands.append(Drive(tuple(ports), np.ascontiguousarray(array), tuple(sample)))
        return self

    def extend(self, other: "Script") -> "Script":
        self.commands.extend(other.commands)
        return self

    def __len__(self) -> int:
        return len(self.commands)

    def text(self) -> str:
        """The text form, one command a line."""
        lines = []
        for command in self.commands:
            match command:
                case Set(port, value):
                    lines.append(f"set {port} {value}")
                case Step(cycles):
                    lines.append(f"step {cycles}")
                case Until(port, value, max_cycles):
                    lines.append(f"until {port} {value} {max_cycles}")
                case Dump(ports):
                    lines.append("dump " + " ".join(ports))
                case Drive(ports, values, sample):
                    tail = " : " + " ".join(sample) if sample else ""
                    lines.append(f"drive {len(values)} " + " ".join(ports) + tail)
                    lines.extend(" ".join(str(int(v)) for v in row) for row in values)
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str, source: str = "script") -> "Script":
        """Parse the text form; errors name `source` and the line."""
        script = cls()
        lines = text.splitlines()
        number = 0
        while number < len(lines):
            line = lines[number]
            number += 1
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            where = f"{source}, line {number}"
            op, args = words[0], words[1:]
            try:
                if op == "set" and len(args) == 2:
                    script.set(args[0], int(args[1], 0))
                elif op == "step" and len(args) == 1:
                    script.step(int(args[0], 0))
                elif op == "until" and len(args) == 3:
                    script.until(args[0], int(args[1], 0), int(args[2], 0))
                elif op == "dump" and args:
                    script.dump(*args)
                elif op == "drive" and len(args) >= 2:
                    count = int(args[0], 0)
                    ports, _, sample = " ".join(args[1:]).partition(":")
                    if number + count > len(lines):
                        raise ScriptError(f"drive: {count} value lines announced, {len(lines) - number} left")
                    rows = [[int(v, 0) & MASK64 for v in lines[number + i].split()] for i in range(count)]
                    number += count
                    script.drive(ports.split(), np.array(rows, dtype=np.uint64).reshape(count, -1),
                                 sample.split())
                else:
                    raise ScriptError(f"cannot parse '{line.strip()}' "
                                      "(set PORT VALUE | step N | until PORT VALUE MAX | dump PORT...)")
            except ValueError as error:
                raise ScriptError(f"{where}: {error}") from None
        return script
