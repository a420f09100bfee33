"""Instruction encodings, and the golden model's fixed-point functions against real arithmetic."""

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtl.activation import exp_table as rtl_exp_table
from rtl.isa import (ACT_LAYOUT, INSTRUCTION, MATMUL_LAYOUT, Act, Dma, Dst, Func, Halt, MatMul, Opcode, Src, assemble,
                     disassemble, encode, encoding_table)
from sim import golden

addr = st.integers(0, (1 << 14) - 1)


@given(addr, addr, addr, st.integers(1, (1 << 14) - 1), st.booleans(), st.sampled_from(["data", "routing"]),
       st.booleans())
def test_matmul_round_trip(d, w, p, n, accumulate, src, hold):
    instruction = MatMul(d, w, p, n, accumulate, src, hold)
    word = encode(instruction)
    assert 0 <= word < 1 << 64 and word & 0xF == 1
    assert disassemble(word) == instruction


@given(st.sampled_from(["none", "relu", "squash", "softmax"]), addr, st.integers(1, 1023), st.integers(1, 64),
       st.integers(0, 31), st.sampled_from(["data", "weight", "routing"]), addr, st.booleans(),
       st.integers(0, 63))
def test_act_round_trip(func, p, n, length, shift, dst, dst_addr, column, stride):
    instruction = Act(func, p, n, length, shift, dst, dst_addr, column, stride)
    word = encode(instruction)
    assert 0 <= word < 1 << 64 and word & 0xF == 2
    assert disassemble(word) == instruction


@pytest.mark.parametrize("instruction, message", [
    (MatMul(0, 0, 0, 0), "n: 0 outside"),
    (MatMul(1 << 14, 0, 0, 1), "d_addr"),
    (MatMul(0, 0, 0, 1, src="weight"), "src"),
    (Act("tanh", 0, 1, 1, 0, "data", 0), "func"),
    (Act("relu", 0, 1, 65, 0, "data", 0), "length"),
    (Act("squash", 0, 1, 0, 0, "data", 0), "length"),
    (Act("relu", 0, 1, 4, 32, "data", 0), "shift"),
    (Act("relu", 0, 1, 4, 0, "psum", 0), "dst"),
])
def test_fields_out_of_range_are_refused(instruction, message):
    with pytest.raises(ValueError, match=message):
        encode(instruction)


def test_words_follow_the_layouts():
    """Each field sits where the layout puts it: setting one field moves exactly its bits."""
    base = encode(MatMul(0, 0, 0, 1))
    for name, value in (("d_addr", 5), ("w_addr", 9), ("p_addr", 3), ("n", 7)):
        word = encode(MatMul(**{"d_addr": 0, "w_addr": 0, "p_addr": 0, "n": 1, name: value}))
        field = MATMUL_LAYOUT[name]
        assert (word >> field.offset) & ((1 << field.width) - 1) == value
        mask = ((1 << field.width) - 1) << field.offset
        assert word & ~mask == base & ~mask
    act = Act("softmax", 1, 2, 3, 4, "routing", 5, True, 6)
    view = INSTRUCTION.from_bits(encode(act))
    assert view.op == Opcode.ACT and view.act.func == Func.SOFTMAX and view.act.dst == Dst.ROUTING
    assert (view.act.p_addr, view.act.n, view.act.length, view.act.shift, view.act.stride) == (1, 2, 3, 4, 6)
    assert INSTRUCTION.from_bits(encode(MatMul(0, 0, 0, 1, src="routing"))).matmul.src == Src.ROUTING
    assert INSTRUCTION.size == 64 and MATMUL_LAYOUT.size <= 64 and ACT_LAYOUT.size == 64


def test_reserved_encodings():
    for op in range(5, 16):
        assert disassemble(op | 0xFFFF0) == Halt()
    assert disassemble(3 | 0xFFFF0) == Dma("program", 8191, 0, 0, store=True)  # buffer 3: the program memory
    reserved_dst = encode(Act("none", 0, 1, 1, 0, "data", 0)) | 3 << ACT_LAYOUT["dst"].offset
    with pytest.raises(ValueError, match="dst: reserved"):
        disassemble(reserved_dst)
    with pytest.raises(ValueError, match="64-bit"):
        disassemble(1 << 64)


def test_docs_table_is_the_layouts():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "rtl.md").read_text()
    assert encoding_table() in doc


def test_assemble_appends_halt():
    words = assemble([MatMul(0, 0, 0, 1)])
    assert len(words) == 2 and disassemble(words[1]) == Halt()
    assert assemble([Halt()]) == [0]


def test_exp_tables_agree():
    assert list(golden.exp_table()) == rtl_exp_table()
    assert golden.exp_table()[0] == 1 << 15


def test_wrap_and_requantize_semantics():
    assert golden.wrap([(1 << 24), -(1 << 24) - 1, 5], 25).tolist() == [-(1 << 24), (1 << 24) - 1, 5]
    assert golden.requantize([3, 2, -2, -3, 1000, -1000], 1).tolist() == [2, 1, -1, -1, 127, -128]
    assert golden.requantize([5], 0).tolist() == [5]


@given(st.lists(st.integers(-128, 127), min_size=1, max_size=64))
def test_squash_close_to_real_squash(q):
    s = np.array(q) / 16.0
    norm = math.sqrt(float(np.dot(s, s)))
    want = s * norm / (1.0 + norm ** 2) * 128.0
    got = golden.squash(q)
    assert np.all(np.abs(got - np.clip(want, -128, 127)) <= 1.5 + 0.01 * np.abs(want))


def test_squash_scale_within_one_and_a_half_percent_of_real():
    """The table-based factor against 128 sqrt(S2) / (256 + S2) over every sum of squares of up to
    64 int8 atoms (the largest errors are at tiny S2, where the outputs are below 1 LSB)."""
    worst = 0.0
    for s2 in range(1, 64 * 128 ** 2 + 1, 7):
        factor, shift = golden.squash_scale(s2)
        worst = max(worst, abs(factor / 2.0 ** shift / (128 * math.sqrt(s2) / (256 + s2)) - 1))
    assert worst < 0.015
    assert golden.squash_scale(0)[0] == 0


@given(st.lists(st.integers(-128, 127), min_size=1, max_size=64))
def test_softmax_close_to_real_softmax(q):
    x = np.array(q) / 16.0
    e = np.exp(x - x.max())
    want = np.clip(e / e.sum() * 128.0, 0, 127)
    got = golden.softmax(q)
    assert np.all(np.abs(got - want) <= 1.5 + 0.01 * want)
    assert got.min() >= 0


@given(st.integers(1, 64), st.integers(1, 16), st.integers(0, 2 ** 32 - 1))
def test_activate_rows_layouts(length, cols, seed):
    """Segmented rows and spanning capsules hold the capsules of `squash` / `softmax` in order."""
    rng = np.random.default_rng(seed)
    span = -(-length // cols)
    per_row = max(1, cols // length)
    capsules = rng.integers(-128, 128, size=(3 * per_row, length))
    if length <= cols:
        rows = np.zeros((3, cols), dtype=np.int64)
        rows[:, :per_row * length] = capsules.reshape(3, -1)
    else:
        flat = np.zeros((3, span * cols), dtype=np.int64)
        flat[:, :length] = capsules
        rows = flat.reshape(3 * span, cols)
    for func, vector in (("squash", golden.squash), ("softmax", golden.softmax)):
        out = golden.activate_rows(rows, 0, func, length)
        want = np.stack([vector(c) for c in capsules])
        if length <= cols:
            assert np.array_equal(out[:, :per_row * length].reshape(-1, length), want)
            assert not out[:, per_row * length:].any()
        else:
            flat_out = out.reshape(3, span * cols)
            assert np.array_equal(flat_out[:, :length], want) and not flat_out[:, length:].any()
    with pytest.raises(ValueError, match="whole capsules"):
        golden.activate_rows(np.zeros((span + 1, cols)), 0, "squash", length) if span > 1 else \
            golden.activate_rows(np.zeros((1, 1)), 0, "squash", 2)


@settings(deadline=None)  # one example can take over 200 ms on a loaded 2-core machine (no timing goal here)
@given(st.integers(1, 12), st.integers(1, 5), st.integers(1, 6), st.integers(0, 2 ** 32 - 1))
def test_strided_act_squashes_capsules_split_over_column_blocks(cols, excess, n_caps, seed):
    """A row-mode ACT with stride nc reads capsule g's block t at p_addr + g + t nc: the layout of nc
    capsules of L > C atoms whose span = ceil(L / C) column blocks were written nc rows each, and
    writes each result row at the same offset from dst_addr, leaving the rows in between alone."""
    rng = np.random.default_rng(seed)
    length = min(64, cols + excess)
    span = -(-length // cols)
    depth, p_addr, dst_addr = 512, 3, 200
    capsules = rng.integers(-128, 128, size=(n_caps, length))
    padded = np.zeros((n_caps, span * cols), dtype=np.int64)
    padded[:, :length] = capsules
    blocks = padded.reshape(n_caps, span, cols).transpose(1, 0, 2).reshape(span * n_caps, cols)  # block-major
    state = golden.MachineState(1, cols, depth)
    state.psum[p_addr:p_addr + span * n_caps] = blocks
    state.weight[:] = 99
    golden.execute([Act("squash", p_addr, span * n_caps, length, 0, "weight", dst_addr, stride=n_caps)], state)
    out = state.weight[dst_addr:dst_addr + span * n_caps].reshape(span, n_caps, cols).transpose(1, 0, 2)
    got = out.reshape(n_caps, span * cols)
    assert np.array_equal(got[:, :length], np.stack([golden.squash(c) for c in capsules]))
    assert np.all(got[:, length:] == 99) and np.all(state.weight[:dst_addr] == 99)
    assert np.all(state.weight[dst_addr + span * n_caps:] == 99)
    assert golden.act_row_offsets(span * n_caps, span, 0) == list(range(span * n_caps))


def test_uniform_coupling_is_one_over_j_in_q07():
    for n_out in range(1, 64):
        c = golden.uniform_coupling(3, n_out)
        assert c.shape == (3, n_out) and len(np.unique(c)) == 1
        assert abs(int(c[0, 0]) - min(128 / n_out, 127)) <= 0.5
    assert golden.uniform_coupling(2, 1)[0, 0] == 127 and golden.uniform_coupling(2, 10)[0, 0] == 13


@pytest.mark.parametrize("routings", [1, 2, 3])
def test_routing_follows_the_algorithm(routings):
    """Dynamic routing in integers: the uniform first coupling, the agreement updates from zero
    logits, the softmax couplings close to the real softmax of the requantized logits."""
    rng = np.random.default_rng(routings)
    u_hat = rng.integers(-60, 60, size=(8, 3, 4))
    c, s, v, b = golden.routing(u_hat, routings, 8, 9)
    v_prev = None
    for iteration in range(routings):
        _, _, v_iter, b_iter = golden.routing(u_hat, iteration + 1, 8, 9)
        want_b = np.zeros((8, 3), dtype=np.int64) if v_prev is None else \
            b_prev + np.einsum("ijd,jd->ij", u_hat, v_prev)
        assert np.array_equal(b_iter, want_b)
        v_prev, b_prev = v_iter, b_iter
    assert np.array_equal(b, b_prev)
    if routings == 1:
        assert np.all(c == 43) and not np.any(b)
    else:
        logits = golden.requantize(b, 8) / 16
        real = np.exp(logits - logits.max(axis=1, keepdims=True))
        real = real / real.sum(axis=1, keepdims=True) * 128
        assert np.all(np.abs(c - np.minimum(real, 127)) <= 1.5 + 0.02 * real)
    assert np.array_equal(s, np.einsum("ij,ijd->jd", c, u_hat))
    assert np.array_equal(v, golden.activate(s, 9, "squash"))
    with pytest.raises(ValueError, match="routings"):
        golden.routing(u_hat, 0, 8, 9)
