"""The vector activation unit: bit-exact against `sim.golden.activate_rows`, one row per cycle,
latency(C, L) + n cycles from the first row in to the cycle after the last row out."""

import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.back import verilog
from amaranth.sim import Simulator

from rtl.activation import (ROUNDED, ActivationUnit, VectorActivation, exp_table, latency, recip_table, round_flags,
                            saturate8, scan_levels, shift_exponent, sqrt_table)
from rtl.isa import Func
from sim import golden
from rtl_bench import kept_registers


def run_unit(rows: np.ndarray, func: str, shift: int, length: int, gap_every: int = 0, acc_bits: int = 25):
    """Stream `rows` (N, C) through a unit of C lanes, one row per cycle (with `gap_every` = g > 0,
    two idle cycles after every g rows). Returns ((N, C) int8 results, cycle of the first row in,
    cycle of the first result, cycle of the last result, the unit)."""
    cols = rows.shape[1]
    dut = VectorActivation(cols, acc_bits)
    outs, marks = [], {}

    async def bench(ctx):
        ctx.set(dut.func, Func[func.upper()])
        ctx.set(dut.shift, shift)
        ctx.set(dut.length, length)
        cycle, sent, idle = 0, 0, 0
        while len(outs) < len(rows):
            assert cycle < 3 * len(rows) + 200, "the unit stopped producing rows"
            send = sent < len(rows) and idle == 0
            ctx.set(dut.i.valid, int(send))
            if send:
                ctx.set(dut.i.payload, [int(v) for v in rows[sent]])
                marks.setdefault("first_in", cycle)
                sent += 1
                if gap_every and sent % gap_every == 0:
                    idle = 2
            elif idle:
                idle -= 1
            if ctx.get(dut.o.valid):
                marks.setdefault("first_out", cycle)
                marks["last_out"] = cycle
                outs.append([ctx.get(dut.o.payload[j]) for j in range(cols)])
            await ctx.tick()
            cycle += 1
        for _ in range(dut.latency(length) + 2):  # nothing more comes out
            assert not ctx.get(dut.o.valid)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.array(outs, dtype=np.int64), marks["first_in"], marks["first_out"], marks["last_out"], dut


def mismatches(expression, in_shape, out_shape, values, want) -> list[tuple[int, int, int]]:
    """(value, got, wanted) for each of `values` at which the combinational `expression(signal)` (an
    Amaranth expression of a signal of `in_shape`, into `out_shape`) differs from `want(value)`."""
    value, out = Signal(in_shape), Signal(out_shape)
    m = Module()
    m.d.comb += out.eq(expression(value))
    wrong = []

    async def bench(ctx):
        for v in values:
            ctx.set(value, v)
            if ctx.get(out) != want(v):
                wrong.append((v, ctx.get(out), want(v)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return wrong


def check(rows, func, shift, length, gap_every=0):
    got, first_in, first_out, last_out, dut = run_unit(rows, func, shift, length, gap_every)
    want = golden.activate_rows(rows, shift, func, length)
    assert np.array_equal(got, want), f"{func} L={length} C={rows.shape[1]}: {np.argwhere(got != want)[:5]}"
    assert first_out - first_in == dut.latency(length)
    return last_out + 1 - first_in, dut


def test_tables_agree_with_golden():
    assert exp_table() == golden.exp_table().tolist()
    assert sqrt_table() == golden.sqrt_table().tolist()
    assert recip_table() == golden.recip_table().tolist()


@pytest.mark.parametrize("cols, levels", [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (16, 4), (63, 6)])
def test_latency_formula(cols, levels):
    assert scan_levels(cols) == levels
    for length in (1, cols, cols + 1, 64):
        span = -(-length // cols)
        assert latency(cols, length) == 20 + 4 * levels + 2 * span


def test_relu_and_none_every_int8_and_saturation(record_property):
    """Every int8 value (shift 0), sums past the int8 range, one row per cycle."""
    values = np.concatenate([np.arange(-128, 128), [-129, 128, -5000, 5000, -(1 << 24), (1 << 24) - 1]])
    values = np.concatenate([values, np.zeros((-len(values)) % 4, dtype=np.int64)])
    rows = values.reshape(-1, 4)
    for func in ("none", "relu"):
        cycles, dut = check(rows, func, 0, 4)
        assert cycles == dut.latency(4) + len(rows)
    record_property("cycles", cycles)


def test_requantize_every_shift_with_rounding_and_saturation_edges():
    rng = np.random.default_rng(3)
    for shift in range(32):
        edges = [-(1 << 24), (1 << 24) - 1, 0, -1, 1]
        if shift > 0:
            half = 1 << (shift - 1)
            edges += [half, -half, half - 1, -half - 1, 3 * half, -3 * half]
        for saturates in (-(-255 << shift) // 2, -((257 << shift) // 2)):  # the least 127, the least above -128
            edges += [saturates - 1, saturates]
        edges = [min(max(e, -(1 << 24)), (1 << 24) - 1) for e in edges]
        values = np.concatenate([edges, rng.integers(-(1 << 24), 1 << 24, size=4 * 5 - len(edges))])
        check(values.reshape(-1, 4), "none", shift, 4)


CASES = [  # (C lanes, L atoms): L = C, L = 1, L not dividing C, L > C with and without a partial last row
    (4, 4), (4, 1), (4, 3), (8, 3), (8, 5), (5, 2), (3, 1), (1, 1), (4, 9), (4, 8), (3, 10), (1, 5),
    (8, 64), (5, 64), (16, 7), (16, 33),
]


@pytest.mark.parametrize("func", ["squash", "softmax"])
@pytest.mark.parametrize("cols, length", CASES)
def test_segmented_and_spanning_random_rows(cols, length, func, record_property):
    """Random rows with edge rows (all -128, all 127, zeros, saturating), whole capsules, back to back."""
    rng = np.random.default_rng(cols * 100 + length)
    span = -(-length // cols)
    n = span * max(8, -(-12 // span))
    rows = rng.integers(-(1 << 13), 1 << 13, size=(n, cols))
    rows[0:span, :] = -128 << 4
    rows[span:2 * span, :] = 127 << 4
    rows[2 * span:3 * span, :] = 0
    rows[3 * span, :] = rng.integers(-(1 << 24), 1 << 24, size=cols)
    rows[4 * span, :] = rng.integers(-40, 40, size=cols)
    cycles, dut = check(rows, func, 4, length)
    assert cycles == dut.latency(length) + n  # one row per cycle
    record_property("cycles", cycles)


@pytest.mark.parametrize("cols, length", [(4, 3), (4, 9), (3, 1)])
def test_idle_cycles_between_capsules(cols, length):
    """Rows may pause between capsules (not inside one): results stay exact."""
    rng = np.random.default_rng(7)
    span = -(-length // cols)
    rows = rng.integers(-(1 << 12), 1 << 12, size=(6 * span, cols))
    for func in ("squash", "softmax"):
        check(rows, func, 4, length, gap_every=span)


def test_squash_one_element_every_int8():
    rows = np.arange(-128, 128).reshape(-1, 4)  # L = 1: four capsules per row
    check(rows, "squash", 0, 1)


def test_softmax_two_logits_every_difference():
    """Softmax of two logits depends on their difference only: every difference -255..255."""
    diff = np.arange(-255, 256)
    pairs = np.stack([np.where(diff >= 0, 127, 127 + diff), np.where(diff >= 0, 127 - diff, 127)], axis=1)
    rows = np.concatenate([pairs, np.zeros((1, 2), dtype=np.int64)]).reshape(-1, 4)  # two pairs per row
    check(rows, "softmax", 0, 2)


@pytest.mark.parametrize("width", [10, 11, 12, 35])
def test_rounding_flags_then_saturation_are_sat8_of_the_rounded_half(width):
    """saturate8(round_flags(t)) = sat8((t + 1) >> 1), the saturation flags and the low byte's increment apart:
    every value of 10 to 12 bits, and at 35 bits (the requantizer's r1 at 34-bit partial sums) every value
    within 600 of the saturation edges 255 and -257, of 0 and of both ends of the range, and random values."""
    low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if width <= 12:
        values = range(low, high + 1)
    else:
        rng = np.random.default_rng(width)
        values = sorted({v for edge in (255, -257, 0, low + 600, high - 600) for v in range(edge - 600, edge + 601)}
                        | {int(v) for v in rng.integers(low, high, 2000, endpoint=True)})
    assert mismatches(lambda half: saturate8(ROUNDED(round_flags(half))), signed(width), signed(8), values,
                      lambda v: max(-128, min(127, (v + 1) >> 1))) == []


@pytest.mark.parametrize("width,low,step", [(22, 6, 2), (23, 8, 1), (5, 2, 2)])
def test_shift_exponent_is_the_bit_length_formula(width, low, step):
    """shift_exponent = max(0, floor((bit_length - low - 1) / step)) (squash: e from S2, low 6 step 2:
    (bl - 7) >> 1 above 8 bits, else 0; reciprocal: low 8 step 1: bl - 9 above 9 bits), on every
    power of two and its predecessor, every value below 2^12 and random values."""
    rng = np.random.default_rng(width)
    values = sorted({*range(min(1 << 12, 1 << width)), *(1 << i for i in range(width)),
                     *((1 << i) - 1 for i in range(1, width + 1)), *(int(v) for v in rng.integers(0, 1 << width, 500))})
    assert mismatches(lambda value: shift_exponent(value, width, low, step), width, 8, values,
                      lambda v: max(0, (v.bit_length() - low - 1) // step)) == []


def test_every_lane_has_its_own_function_and_shift_register():
    """The function and the shift reach each lane from a copy of its own, marked `keep` (one
    flip-flop each after `rtl.fpga.KEEP_FLIP_FLOPS`), not from one register driving every lane."""
    cols = 3
    dut = VectorActivation(cols)
    ports = [dut.func.as_value(), dut.shift, dut.length, dut.i.valid, dut.i.payload.as_value(), dut.o.valid,
             dut.o.payload.as_value()]
    kept = kept_registers(verilog.convert(dut, ports=ports))
    assert {f"{name}{j}" for name in ("func", "shift") for j in range(cols)} <= kept


def test_the_row_writer_and_every_bank_row_have_their_own_valid_register():
    """The activation unit's row-mode writer and each column-mode bank row take the result's
    valid from a register of their own, marked `keep`, not from the vector unit's output valid
    (one register whose fan-out reached the writes and the bank's flip-flops)."""
    dut = ActivationUnit(4)
    kept = kept_registers(verilog.convert(dut))
    assert dut.max_span == 16
    assert {"row_valid"} | {f"bank_load{r}" for r in range(dut.max_span)} <= kept
