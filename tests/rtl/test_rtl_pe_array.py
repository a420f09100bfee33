"""PE array: matrix products bit-exact against the golden model (Amaranth simulation), weights
double-buffered: the next tile loads into the other bank while the current one streams."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from rtl.pe_array import PEArray
from rtl.widths import product_sum_bits
from sim.golden import matmul_tile


def run_array(x_tiles: list[np.ndarray], w_tiles: list[np.ndarray], acc_bits: int = 25):
    """Tile t (weights w_tiles[t], bank t % 2) loads top row first while tile t - 1 streams; its
    data (x_tiles[t]) enter from the cycle after its first weight row, as soon as the previous
    tile's data have entered. Returns (results of every data row in order, cycles, latency)."""
    rows, cols = w_tiles[0].shape
    dut = PEArray(rows, cols, acc_bits)
    results, cycles = [], []
    total = sum(len(x) for x in x_tiles)
    # Per cycle: the weight row to write (tile, row) and the data row to present (tile, k).
    loads, stream = [], []
    for t, x in enumerate(x_tiles):
        start = max(len(loads), len(stream) - 1 if stream else 0)
        loads += [None] * (start - len(loads)) + [(t, r) for r in range(rows)]
        stream += [None] * (start + 1 - len(stream)) + [(t, k) for k in range(len(x))]

    async def bench(ctx):
        cycle = 0
        while len(results) < total:
            load = loads[cycle] if cycle < len(loads) else None
            enables = [0] * rows
            if load is not None:
                t, r = load
                ctx.set(dut.w_in, [int(v) for v in w_tiles[t][r]])
                enables[r] = 1 << (t % 2)
            ctx.set(dut.w_we, enables)
            item = stream[cycle] if cycle < len(stream) else None
            ctx.set(dut.x_valid, item is not None)
            if item is not None:
                t, k = item
                ctx.set(dut.x, [int(v) for v in x_tiles[t][k]])
            # the bank of the next cycle's vector, a cycle ahead of it
            following = stream[cycle + 1] if cycle + 1 < len(stream) else None
            if following is not None:
                ctx.set(dut.x_bank_next, following[0] % 2)
            if ctx.get(dut.y_valid):
                results.append([ctx.get(dut.y[c]) for c in range(cols)])
            await ctx.tick()
            cycle += 1
        cycles.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.array(results, dtype=np.int64), cycles[0], dut.latency, stream


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
    got, cycles, latency, _ = run_array([x], [w])
    assert np.array_equal(got, matmul_tile(x, w))
    # the first datum enters one cycle after the first weight row, the last result `latency` later
    assert cycles == 1 + len(x) + latency
    record_property("cycles", cycles)


@pytest.mark.parametrize("rows,cols,n", [(4, 4, 1), (4, 4, 6), (3, 2, 2), (2, 3, 5)])
def test_tiles_back_to_back_alternate_banks(rows, cols, n, record_property):
    """Five tiles, each loaded while the previous streams: every result equals its own tile's
    product (a write into the streaming bank, or a late load, would mix tiles)."""
    rng = np.random.default_rng(rows * 100 + cols * 10 + n)
    xs = [rng.integers(-128, 128, size=(n, rows)) for _ in range(5)]
    ws = [rng.integers(-128, 128, size=(rows, cols)) for _ in range(5)]
    got, cycles, latency, stream = run_array(xs, ws)
    assert np.array_equal(got, np.concatenate([matmul_tile(x, w) for x, w in zip(xs, ws)]))
    # the data stream has gaps only where a load (R cycles) is longer than a tile's stream
    assert len(stream) == 1 + 5 * max(n, rows) - (max(n, rows) - n)
    assert cycles == len(stream) + latency
    record_property("cycles", cycles)


def test_wraps_to_acc_bits():
    """A narrow accumulator wraps in two's complement exactly as the golden model does."""
    x = np.full((3, 4), -128)
    w = np.full((4, 2), -128)
    got, _, _, _ = run_array([x], [w], acc_bits=12)
    assert np.array_equal(got, matmul_tile(x, w, acc_bits=12))
    assert got[0, 0] == 0  # 4 * 16384 = 65536 wraps to 0 in 12 bits


def test_worst_case_column_is_exact_at_product_sum_bits():
    """R products of -128 * -128 (and of -128 * 127) fit `product_sum_bits(R)` exactly."""
    rows = 4
    bits = product_sum_bits(rows)
    x = np.array([[-128] * rows, [127] * rows])
    w = np.full((rows, 2), -128)
    got, _, _, _ = run_array([x], [w], acc_bits=bits)
    assert got.tolist() == [[rows << 14] * 2, [-rows * 127 * 128] * 2]
    assert product_sum_bits(rows) == 18 and product_sum_bits(16) == 20 and product_sum_bits(331777) == 34


def test_every_row_skews_its_bank_bit_in_registers_of_its_own():
    """Every row's bank skew holds the same bits (x_bank_next delayed), as does the bank register of the
    first PE of the row above: each skew register is marked `keep` (one flip-flop each after
    `rtl.fpga.KEEP_FLIP_FLOPS`), as the PEs' bank registers are, so that synthesis does not merge
    them into one chain driving the weight multiplexers of two rows."""
    import re

    from amaranth.back import verilog

    rows, cols = 4, 2
    dut = PEArray(rows, cols)
    # Amaranth emits the last register of a chain under the PE port's name (`bank_in$N`), the kept
    # skew name a wire assigned from it: KEEP_FLIP_FLOPS reaches the flip-flop through that wire.
    declarations = re.findall(r"((?:\(\*[^\n]*\*\)\s*)+)(?:reg|wire) (?:\[[^\]]*\] )?(\w+)", verilog.convert(dut))
    kept = {name for attributes, name in declarations if "keep" in attributes}
    assert {f"skew_b_{r}_{i}" for r in range(rows) for i in range(r)} <= kept
    assert not any(name.startswith(("skew_x", "skew_v")) for name in kept)
