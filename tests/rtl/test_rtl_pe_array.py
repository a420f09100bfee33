"""PE array: matrix products bit-exact against the golden model (Amaranth simulation)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from rtl.pe_array import PEArray
from sim.golden import matmul_tile


def run_array(x: np.ndarray, w: np.ndarray, acc_bits: int = 25):
    """Load w (bottom row first), stream the rows of x back to back; return (results, cycles)."""
    rows, cols = w.shape
    dut = PEArray(rows, cols, acc_bits)
    results, cycles = [], []

    async def bench(ctx):
        ctx.set(dut.w_shift, 1)
        for r in reversed(range(rows)):
            ctx.set(dut.w_in, [int(v) for v in w[r]])
            await ctx.tick()
        ctx.set(dut.w_shift, 0)
        cycle = rows
        pending = list(x)
        while len(results) < len(x):
            if pending:
                ctx.set(dut.x, [int(v) for v in pending.pop(0)])
                ctx.set(dut.x_valid, 1)
            else:
                ctx.set(dut.x_valid, 0)
            if ctx.get(dut.y_valid):
                results.append([ctx.get(dut.y[c]) for c in range(cols)])
            await ctx.tick()
            cycle += 1
        cycles.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.array(results, dtype=np.int64), cycles[0], dut.latency


@pytest.mark.parametrize("rows,cols", [(2, 3), (4, 4), (3, 2)])
def test_matmul_random_and_edges(rows, cols, record_property):
    rng = np.random.default_rng(rows * 10 + cols)
    x = rng.integers(-128, 128, size=(12, rows))
    w = rng.integers(-128, 128, size=(rows, cols))
    x[0, :], x[1, :] = -128, 127
    x[2, :] = -128
    w[:, 0] = -128
    if cols > 1:
        w[:, 1] = 127
    got, cycles, latency = run_array(x, w)
    assert np.array_equal(got, matmul_tile(x, w))
    # load R cycles, then N vectors with the first result after `latency` cycles
    assert cycles == rows + len(x) + latency
    record_property("cycles", cycles)
    print(f"{rows}x{cols}: {cycles} cycles")


def test_wraps_to_acc_bits():
    """A narrow accumulator wraps in two's complement exactly as the golden model does."""
    x = np.full((3, 4), -128)
    w = np.full((4, 2), -128)
    got, cycles, _ = run_array(x, w, acc_bits=12)
    assert np.array_equal(got, matmul_tile(x, w, acc_bits=12))
    assert got[0, 0] == 0  # 4 * 16384 = 65536 wraps to 0 in 12 bits
    print(f"12-bit accumulator: {cycles} cycles")
