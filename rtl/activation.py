"""The activation unit: requantization, ReLU, squash and softmax on partial-sum rows.

It executes one ACT instruction (see `rtl.isa`): for each of `n` rows of the partial-sum memory
(C lanes of signed `acc_bits`) it takes the first `length` lanes, one lane per cycle, requantizes
each to int8 and applies the function, and writes each int8 result to a destination buffer.

Fixed-point formats and integer algorithms (mirrored by `sim.golden`):

- requantize(v, shift) = saturate_int8((v + ((1 << shift) >> 1)) >> shift): arithmetic shift
  with round-half-up, then saturation to [-128, 127].
- ReLU: max(q, 0). "none": q.
- squash of one row (a capsule vector q, int8 in Q3.4): S2 = sum q_i**2 (22-bit), norm =
  floor(sqrt(S2)) by an 11-step digit-by-digit square root, recip = floor(2**28 / (256 + S2)) by
  a 29-step restoring divider, y_i = saturate_int8((q_i * norm * recip + 2**20) >> 21): Q0.7.
- softmax of one row (logits q, int8 in Q3.4): m = max q_i, e_i = EXP[m - q_i] from a 256-entry
  table EXP[d] = round(2**15 * exp(-d / 16)) (16-bit), E = sum e_i, recip = floor(2**28 / E),
  y_i = saturate_int8((e_i * recip + 2**20) >> 21): Q0.7 (1.0 saturates to 127).

Cycles per row (deterministic): none/relu 2 + length; squash 2 * length + 42 (2 + length + 11 +
29 + length); softmax 3 * length + 31 (2 + 2 * length + 29 + length).

Destination addressing: row mode writes element (row j, lane l) to buffer row dst_addr + j,
lane l; column mode writes it to buffer row dst_addr + j * stride + l, lane j (a transposing or
block-diagonal scatter). Lanes beyond the destination buffer's width are not written.
"""

import math

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

RECIPROCAL_BITS = 28
SQRT_STEPS = 11
SQUARES_BITS = 2 * SQRT_STEPS
OUT_SHIFT = RECIPROCAL_BITS - 7
EXP_BITS = 15

FUNC_NONE, FUNC_RELU, FUNC_SQUASH, FUNC_SOFTMAX = 0, 1, 2, 3


def exp_table() -> list[int]:
    """EXP[d] = round(2**15 * exp(-d / 16)) for d in 0..255 (the softmax lookup table)."""
    return [round(2.0 ** EXP_BITS * math.exp(-d / 16.0)) for d in range(256)]


def saturate8(value):
    """An Amaranth expression: `value` clamped to [-128, 127] as signed(8)."""
    return Mux(value > 127, 127, Mux(value < -128, -128, value))


class ActivationUnit(wiring.Component):
    """Executes one ACT instruction; `start` pulses with the fields valid, `done` pulses at the end.

    Ports: start; func (2 bits), shift (5), length (6, lanes per row, >= 1), n_rows (10, >= 1),
    p_addr (partial-sum row of the first input), dst_addr, stride (6), column (1);
    psum_addr/psum_en/psum_data: read port of the partial-sum memory (1-cycle latency);
    wr_addr/wr_lane/wr_data/wr_en: one int8 element written per cycle; busy; done.
    """

    def __init__(self, cols: int, acc_bits: int = 25, addr_bits: int = 14):
        if cols > 63:
            raise ValueError(f"cols must be <= 63 for the activation unit, not {cols}")
        self.cols, self.acc_bits, self.addr_bits = cols, acc_bits, addr_bits
        super().__init__({
            "start": In(1), "func": In(2), "shift": In(5), "length": In(6), "n_rows": In(10),
            "p_addr": In(addr_bits), "dst_addr": In(addr_bits), "stride": In(6), "column": In(1),
            "psum_addr": Out(addr_bits), "psum_en": Out(1),
            "psum_data": In(data.ArrayLayout(signed(acc_bits), cols)),
            "wr_addr": Out(addr_bits), "wr_lane": Out(10), "wr_data": Out(signed(8)), "wr_en": Out(1),
            "busy": Out(1), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        acc_bits = self.acc_bits
        func, shift, length = Signal(2), Signal(5), Signal(6)
        n_rows, column, stride = Signal(10), Signal(), Signal(6)
        row = Signal(data.ArrayLayout(signed(acc_bits), self.cols))
        lane = Signal(6)
        row_idx = Signal(10)
        p_ptr = Signal(self.addr_bits)
        base = Signal(self.addr_bits)
        last_lane = lane == length - 1

        # Requantization of the current lane.
        value = Signal(signed(acc_bits))
        m.d.comb += value.eq(row[lane])
        half = Signal(unsigned(32))
        m.d.comb += half.eq((Const(1, 33) << shift) >> 1)
        shifted = Signal(signed(acc_bits + 1))
        m.d.comb += shifted.eq((value + half) >> shift)
        q = Signal(signed(8))
        m.d.comb += q.eq(saturate8(shifted))

        # Reductions, square root, divider.
        squares = Signal(unsigned(SQUARES_BITS))
        maximum = Signal(signed(8))
        exp_sum = Signal(unsigned(22))
        sqrt_num = Signal(unsigned(SQUARES_BITS))
        sqrt_res = Signal(unsigned(SQUARES_BITS))
        sqrt_bit = Signal(unsigned(SQUARES_BITS))
        norm = Signal(unsigned(SQRT_STEPS))
        divisor = Signal(unsigned(SQUARES_BITS + 1))
        remainder = Signal(unsigned(SQUARES_BITS + 2))
        recip = Signal(unsigned(RECIPROCAL_BITS + 1))
        step = Signal(range(RECIPROCAL_BITS + 1))

        m.submodules.exp_rom = exp_rom = Memory(shape=unsigned(EXP_BITS + 1), depth=256, init=exp_table())
        exp_port = exp_rom.read_port(domain="comb")
        m.d.comb += exp_port.addr.eq((maximum - q)[:8])
        e_value = exp_port.data

        # Output datapath.
        operand = Signal(signed(SQRT_STEPS + 9))
        m.d.comb += operand.eq(Mux(func == FUNC_SQUASH, q * norm, e_value))
        product = Signal(signed(SQRT_STEPS + 9 + RECIPROCAL_BITS + 2))
        m.d.comb += product.eq(operand * recip)
        scaled = Signal(signed(product.shape().width))
        m.d.comb += scaled.eq((product + (1 << (OUT_SHIFT - 1))) >> OUT_SHIFT)
        result = Signal(signed(8))
        with m.Switch(func):
            with m.Case(FUNC_NONE):
                m.d.comb += result.eq(q)
            with m.Case(FUNC_RELU):
                m.d.comb += result.eq(Mux(q < 0, 0, q))
            with m.Default():
                m.d.comb += result.eq(saturate8(scaled))

        m.d.comb += [
            self.psum_addr.eq(p_ptr),
            self.wr_data.eq(result),
            self.wr_addr.eq(Mux(column, base + lane, base)),
            self.wr_lane.eq(Mux(column, row_idx, lane)),
        ]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        func.eq(self.func), shift.eq(self.shift), length.eq(self.length),
                        n_rows.eq(self.n_rows), column.eq(self.column), stride.eq(self.stride),
                        p_ptr.eq(self.p_addr), base.eq(self.dst_addr), row_idx.eq(0),
                    ]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += [self.busy.eq(1), self.psum_en.eq(1)]
                m.next = "LATCH"
            with m.State("LATCH"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [row.eq(self.psum_data), lane.eq(0), squares.eq(0), maximum.eq(-128),
                             exp_sum.eq(0)]
                with m.If((func == FUNC_NONE) | (func == FUNC_RELU)):
                    m.next = "OUT"
                with m.Else():
                    m.next = "PASS_A"
            with m.State("PASS_A"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += lane.eq(lane + 1)
                with m.If(func == FUNC_SQUASH):
                    m.d.sync += squares.eq(squares + q * q)
                with m.Elif(q > maximum):
                    m.d.sync += maximum.eq(q)
                with m.If(last_lane):
                    m.d.sync += lane.eq(0)
                    with m.If(func == FUNC_SQUASH):
                        m.d.sync += [sqrt_num.eq(squares + q * q), sqrt_res.eq(0),
                                     sqrt_bit.eq(1 << (SQUARES_BITS - 2)), step.eq(0)]
                        m.next = "SQRT"
                    with m.Else():
                        m.next = "PASS_B"
            with m.State("PASS_B"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [lane.eq(lane + 1), exp_sum.eq(exp_sum + e_value)]
                with m.If(last_lane):
                    m.d.sync += [lane.eq(0), divisor.eq(exp_sum + e_value), remainder.eq(0),
                                 recip.eq(0), step.eq(0)]
                    m.next = "DIV"
            with m.State("SQRT"):
                m.d.comb += self.busy.eq(1)
                trial = sqrt_res + sqrt_bit
                with m.If(sqrt_num >= trial):
                    m.d.sync += [sqrt_num.eq(sqrt_num - trial), sqrt_res.eq((sqrt_res >> 1) + sqrt_bit)]
                with m.Else():
                    m.d.sync += sqrt_res.eq(sqrt_res >> 1)
                m.d.sync += [sqrt_bit.eq(sqrt_bit >> 2), step.eq(step + 1)]
                with m.If(step == SQRT_STEPS - 1):
                    final = Mux(sqrt_num >= trial, (sqrt_res >> 1) + sqrt_bit, sqrt_res >> 1)
                    m.d.sync += [norm.eq(final), divisor.eq(squares + 256), remainder.eq(0),
                                 recip.eq(0), step.eq(0)]
                    m.next = "DIV"
            with m.State("DIV"):
                m.d.comb += self.busy.eq(1)
                # Restoring division of 2**28 by `divisor`, quotient bit 28 first.
                shifted_rem = Signal(unsigned(SQUARES_BITS + 2))
                m.d.comb += shifted_rem.eq((remainder << 1) | (step == 0))
                with m.If(shifted_rem >= divisor):
                    m.d.sync += [remainder.eq(shifted_rem - divisor), recip.eq((recip << 1) | 1)]
                with m.Else():
                    m.d.sync += [remainder.eq(shifted_rem), recip.eq(recip << 1)]
                m.d.sync += step.eq(step + 1)
                with m.If(step == RECIPROCAL_BITS):
                    m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += [self.busy.eq(1), self.wr_en.eq(1)]
                m.d.sync += lane.eq(lane + 1)
                with m.If(last_lane):
                    m.d.sync += [
                        lane.eq(0), row_idx.eq(row_idx + 1), p_ptr.eq(p_ptr + 1),
                        base.eq(base + Mux(column, stride, 1)),
                    ]
                    with m.If(row_idx == n_rows - 1):
                        m.next = "FINISH"
                    with m.Else():
                        m.next = "READ"
            with m.State("FINISH"):
                m.d.comb += [self.busy.eq(1), self.done.eq(1)]
                m.next = "IDLE"
        return m
