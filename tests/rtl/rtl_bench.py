"""Shared helper for the CapsAcc top-level tests: run a workload in Amaranth's simulator."""

from amaranth.sim import Simulator

from rtl import host, workloads
from rtl.capsacc import CapsAcc
from rtl.widths import ACC_BITS


def run_workload(work, regions, rows: int, cols: int, acc_bits: int = ACC_BITS, buffer_depth: int = 128):
    """Load, run and read back with `rtl.host`'s commands (a workload, or a list of them run in turn
    on the same memories); ({region: array}, busy cycles, counters summed over the runs)."""
    works = [work] if isinstance(work, workloads.Workload) else work
    for memory in ("data", "weight", "routing", "psum"):
        for one in works:
            assert one.rows_used(memory) <= buffer_depth, f"{memory} image does not fit {buffer_depth} rows"
    dut = CapsAcc(rows, cols, acc_bits=acc_bits, buffer_depth=buffer_depth, program_depth=64)
    played = {}

    async def bench(ctx):
        played["dumps"], played["waits"] = await host.play(ctx, dut, host.workload_commands(work, regions))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    results, counters = host.decode(played["dumps"], regions, len(works))
    assert counters["busy_cycles"] == sum(played["waits"])
    return results, counters["busy_cycles"], counters
