"""Run a stimulus script on a `wiring.Component` with either back end and compare the traces.

`run(component, script, backend="amaranth"|"verilator")` returns a `Trace`: every ``dump`` with the
cycle it was taken at, every ``until`` with the cycle it ended at and whether the port reached the
value, and the total cycles. Both back ends implement the semantics of `sim.script`, so their traces
of the same script are equal, cycle for cycle.
"""

from pathlib import Path

from amaranth.lib import wiring

from sim.amaranth_backend import run_amaranth
from sim.script import Script, ScriptError
from sim.trace import Trace, check_script, component_ports
from sim.verilator import VerilatorModel

BACKENDS = ("amaranth", "verilator")


def run(component: wiring.Component, script: Script, backend: str = "amaranth",
        cache_dir: str | Path | None = None) -> Trace:
    """Run `script` on `component` with `backend` ("amaranth" or "verilator").

    The Verilator back end builds (or reuses from `cache_dir`) a simulator of the component's
    exported Verilog; see `sim.verilator`.
    """
    ports = component_ports(component)
    check_script(script, ports)
    if backend == "amaranth":
        return run_amaranth(component, script, ports)
    if backend == "verilator":
        return VerilatorModel.build(component, cache_dir=cache_dir).run(script)
    raise ScriptError(f"unknown back end '{backend}' (known: {', '.join(BACKENDS)})")

