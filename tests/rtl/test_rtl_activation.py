"""Activation unit: requantization, ReLU, squash and softmax bit-exact against sim.golden."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from rtl.activation import ActivationUnit
from sim import golden

FUNC = {"none": 0, "relu": 1, "squash": 2, "softmax": 3}


def run_unit(rows: np.ndarray, func: str, shift: int, length: int, cols: int, acc_bits: int = 25):
    """Run one ACT over `rows` (N, cols) in row mode, serving the partial-sum reads from `rows`.
    Returns ((N, length) int8 results, cycles from start to done)."""
    dut = ActivationUnit(cols, acc_bits)
    n = len(rows)
    out = np.full((n, length), 999, dtype=np.int64)
    state = {}

    async def bench(ctx):
        for name, value in (("func", FUNC[func]), ("shift", shift), ("length", length), ("n_rows", n),
                            ("p_addr", 0), ("dst_addr", 0), ("column", 0), ("stride", 0)):
            ctx.set(getattr(dut, name), value)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycles, read = 1, None
        while not ctx.get(dut.done):
            if read is not None:
                ctx.set(dut.psum_data, [int(v) for v in rows[read]])
            read = ctx.get(dut.psum_addr) if ctx.get(dut.psum_en) else None
            if ctx.get(dut.wr_en):
                out[ctx.get(dut.wr_addr), ctx.get(dut.wr_lane)] = ctx.get(dut.wr_data)
            await ctx.tick()
            cycles += 1
        state["cycles"] = cycles

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out, state["cycles"]


def test_relu_and_none_exhaustive_int8(record_property):
    """Every int8 value (shift 0), plus sums past the int8 range (saturation)."""
    values = np.concatenate([np.arange(-128, 128), [-129, 128, -5000, 5000, -(1 << 24), (1 << 24) - 1]])
    values = np.concatenate([values, np.zeros((-len(values)) % 4, dtype=np.int64)])
    rows = values.reshape(-1, 4)
    for func in ("none", "relu"):
        got, cycles = run_unit(rows, func, 0, 4, 4)
        assert np.array_equal(got, golden.activate(rows, 0, func))
        assert cycles == 1 + len(rows) * (2 + 4)
    record_property("cycles", cycles)


def test_requantize_all_shifts_random_and_rounding_edges(record_property):
    rng = np.random.default_rng(3)
    total = 0
    for shift in range(32):
        edges = [-(1 << 24), (1 << 24) - 1, 0, -1, 1]
        if shift > 0:
            half = 1 << (shift - 1)
            edges += [half, -half, half - 1, -half - 1, 3 * half, -3 * half]
        edges = [min(max(e, -(1 << 24)), (1 << 24) - 1) for e in edges]
        values = np.concatenate([edges, rng.integers(-(1 << 24), 1 << 24, size=8 * 4 - len(edges))])
        rows = values.reshape(-1, 4)
        got, cycles = run_unit(rows, "none", shift, 4, 4)
        assert np.array_equal(got, golden.requantize(rows, shift)), f"shift {shift}"
        total += cycles
    record_property("cycles", total)


@pytest.mark.parametrize("length", [1, 3, 8, 16, 32])
def test_squash_wide_random(length, record_property):
    rng = np.random.default_rng(length)
    rows = rng.integers(-(1 << 12), 1 << 12, size=(64, 32))
    rows[0, :] = -128 * 16  # all -128 after shift 4
    rows[1, :] = 127 * 16
    rows[2, :] = 0
    rows[3, :] = (1 << 24) - 1  # saturates
    rows[4, :] = rng.integers(-40, 40, size=32)  # small vector
    rows[5, :] = 0
    rows[5, 0] = 1 << 24 - 1
    got, cycles = run_unit(rows, "squash", 4, length, 32)
    want = golden.activate(rows[:, :length], 4, "squash")
    assert np.array_equal(got, want)
    assert cycles == 1 + len(rows) * (2 * length + 42)
    record_property("cycles", cycles)


@pytest.mark.parametrize("length", [1, 2, 10, 32])
def test_softmax_wide_random(length, record_property):
    rng = np.random.default_rng(100 + length)
    rows = rng.integers(-(1 << 11), 1 << 11, size=(64, 32))
    rows[0, :] = -128 << 4
    rows[1, :] = 127 << 4
    rows[2, :] = 0
    rows[3, :length] = -128 << 4
    rows[3, 0] = 127 << 4  # spread 255: the last table entry
    rows[4, :] = rng.integers(-(1 << 24), 1 << 24, size=32)  # saturating logits
    got, cycles = run_unit(rows, "softmax", 4, length, 32)
    want = golden.activate(rows[:, :length], 4, "softmax")
    assert np.array_equal(got, want)
    assert cycles == 1 + len(rows) * (3 * length + 31)
    record_property("cycles", cycles)


def test_squash_one_element_exhaustive(record_property):
    """Every int8 input of the scalar squash (a 1-element capsule vector)."""
    rows = np.zeros((256, 4), dtype=np.int64)
    rows[:, 0] = np.arange(-128, 128)
    got, cycles = run_unit(rows, "squash", 0, 1, 4)
    assert np.array_equal(got, golden.activate(rows[:, :1], 0, "squash"))
    record_property("cycles", cycles)


def test_softmax_two_logits_every_difference(record_property):
    """Softmax of two logits depends on their difference only: every difference -255..255."""
    diff = np.arange(-255, 256)
    rows = np.zeros((len(diff), 4), dtype=np.int64)
    rows[:, 0] = np.where(diff >= 0, 127, 127 + diff)
    rows[:, 1] = np.where(diff >= 0, 127 - diff, 127)
    assert np.array_equal(rows[:, 0] - rows[:, 1], diff)
    got, cycles = run_unit(rows, "softmax", 0, 2, 4)
    assert np.array_equal(got, golden.activate(rows[:, :2], 0, "softmax"))
    record_property("cycles", cycles)
