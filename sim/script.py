"""Stimulus scripts: what a test bench does to a component's ports, cycle by cycle.

A script is a list of commands, one a line in its text form (``#`` starts a comment):

    set PORT VALUE            drive input PORT with VALUE from now on (negative values allowed for signed ports)
    step N                    advance N clock cycles (N rising edges of ``sync``)
    until PORT VALUE MAX      step until output PORT equals VALUE, at most MAX cycles
    dump PORT [PORT ...]      record the present values of the ports (after combinational settling)

Semantics shared by every back end: a ``set`` takes effect at once (combinational outputs follow it
before the next ``dump``); a cycle is one rising clock edge; ``until`` tests the port before each
step, so it takes 0 cycles when the port already holds the value. Ports are named as in the
exported Verilog: the signature path joined by ``__`` (``host__addr``, ``arr__0``).
"""

from dataclasses import dataclass

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


Command = Set | Step | Until | Dump


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
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str, source: str = "script") -> "Script":
        """Parse the text form; errors name `source` and the line."""
        script = cls()
        for number, line in enumerate(text.splitlines(), start=1):
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
                else:
                    raise ScriptError(f"cannot parse '{line.strip()}' "
                                      "(set PORT VALUE | step N | until PORT VALUE MAX | dump PORT...)")
            except ValueError as error:
                raise ScriptError(f"{where}: {error}") from None
        return script
