"""Shared helper for the CapsAcc top-level tests: run a workload in Amaranth's simulator."""

import numpy as np
from amaranth.sim import Simulator

from rtl import host
from rtl.capsacc import CapsAcc


def run_workload(work, regions, rows: int, cols: int, acc_bits: int = 25, buffer_depth: int = 128):
    """Load, run and read back; returns ({region name: array}, busy cycles, counters)."""
    dut = CapsAcc(rows, cols, acc_bits=acc_bits, buffer_depth=buffer_depth, program_depth=64)
    for memory in ("data", "weight", "routing", "psum"):
        assert work.rows_used(memory) <= buffer_depth, f"{memory} image does not fit {buffer_depth} rows"
    out = {}

    async def bench(ctx):
        await host.load(ctx, dut, work)
        out["cycles"] = await host.run(ctx, dut)
        out["counters"] = await host.read_counters(ctx, dut)
        for name, region in regions.items():
            if region.memory == "psum":
                out[name] = await host.read_psum(ctx, dut, region.base, region.n_rows, region.lanes)
            else:
                out[name] = await host.read_int8(ctx, dut, region.memory, region.base, region.n_rows,
                                                 region.lanes)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    results = {name: np.asarray(out[name]) for name in regions}
    return results, out["cycles"], out["counters"]
