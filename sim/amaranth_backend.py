"""The Amaranth back end: `amaranth.sim.Simulator` with an async testbench that plays a script."""

import time

from amaranth.lib import wiring
from amaranth.sim import Simulator
import numpy as np

from sim.script import Drive, Dump, Script, Set, Step, Until
from sim.trace import DumpRecord, Port, Trace, WaitRecord

CLOCK_PERIOD_S = 1e-6
"""Simulated clock period (only orders events; cycle counts do not depend on it)."""


def run_amaranth(component: wiring.Component, script: Script, ports: dict[str, Port]) -> Trace:
    """Play `script` on `component` in Amaranth's simulator (domain ``sync``; no reset pulse)."""
    signals = {"__".join(str(p) for p in path): value
               for path, _, value in component.signature.flatten(component)}
    trace = Trace(backend="amaranth", cycles=0)

    async def testbench(ctx):
        cycle = 0
        for command in script.commands:
            match command:
                case Set(port, value):
                    ctx.set(signals[port], ports[port].value(ports[port].raw(value)))
                case Step(cycles):
                    for _ in range(cycles):
                        await ctx.tick()
                    cycle += cycles
                case Until(port, value, max_cycles):
                    target, signal, waited = ports[port].raw(value), signals[port], 0
                    while ports[port].raw(ctx.get(signal)) != target and waited < max_cycles:
                        await ctx.tick()
                        waited += 1
                    cycle += waited
                    trace.waits.append(WaitRecord(cycle, waited, ports[port].raw(ctx.get(signal)) == target))
                case Dump(names):
                    trace.dumps.append(DumpRecord(cycle, {
                        name: ports[name].value(ports[name].raw(ctx.get(signals[name]))) for name in names}))
                case Drive(names, values, sample):
                    targets = [(signals[n], ports[n]) for n in names]
                    probes = [(signals[n], ports[n]) for n in sample]
                    got = np.zeros((len(values), len(sample)), dtype=np.uint64)
                    for r, row in enumerate(values.tolist()):
                        for (signal, port), raw in zip(targets, row):
                            ctx.set(signal, port.value(port.raw(raw)))
                        await ctx.tick()
                        for c, (signal, port) in enumerate(probes):
                            got[r, c] = port.raw(ctx.get(signal))
                    cycle += len(values)
                    if sample:
                        trace.samples.append(got)
        trace.cycles = cycle

    simulator = Simulator(component)
    try:
        simulator.add_clock(CLOCK_PERIOD_S)
    except (ValueError, NameError):
        pass  # a purely combinational component has no clock; its scripts cannot step
    simulator.add_testbench(testbench)
    start, cpu_start = time.perf_counter(), time.process_time()
    simulator.run()
    trace.sim_s = time.perf_counter() - start
    trace.cpu_s = time.process_time() - cpu_start
    return trace
