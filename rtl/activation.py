"""The vector activation unit: C lanes, pipelined, one partial-sum row per cycle.

`ActivationUnit(cols, acc_bits)` takes a stream of partial-sum rows (C lanes of signed
`acc_bits`), one row per cycle, and gives a stream of int8 rows, one per cycle, a fixed number
of cycles later (`latency(length)`). It requantizes every lane, then applies the function
(`rtl.isa.Func`): none, ReLU, squash or softmax. Squash and softmax work on capsules of L =
`length` atoms (1..64), laid out as `sim.golden.activate_rows` defines:

- L <= C (segmented): a row holds floor(C / L) capsules, capsule k in lanes kL .. kL + L - 1;
  lanes from floor(C / L) L on read 0.
- L > C (spanning): a capsule fills ceil(L / C) consecutive rows; the sum (or maximum) is carried
  across its rows, the rows wait in a buffer until the capsule's scale factor is known.

Integer semantics (the same as `sim.golden`): requantize(v) = sat8((v + ((1 << shift) >> 1)) >>
shift); squash: S2 = sum q^2, (factor, k) = golden.squash_scale(S2), y = sat8((q factor +
2^(k-1)) >> k) with table-based square root and reciprocal; softmax: m = max q, e = EXP[m - q],
E = sum e, (factor, k) = golden.softmax_scale(E), y = sat8((e factor + 2^(k-1)) >> k).

Pipeline (W = ceil(log2 C) scan levels, span = ceil(L / C); every stage registered):

    requantize        5 stages   register the row; register it again; shift (`half_shift`); the
                                 rounding's flags and low byte (`round_flags`); saturate (`saturate8`)
    reduce 1 (max)    2W + 1 + span: segmented max scan (W), cross-row stage (1), backward
                      broadcast of each segment's total to its lanes (W), hold register; the
                      rows wait in a delay buffer (a memory) for the same number of cycles
    operand           2 stages   squash: q^2; softmax: e = EXP[m - q] (table, synchronous read);
                                 the operand and the reduction input registered
    reduce 2 (sum)    2W + 1 + span: as reduce 1, with sums
    scale             11 stages  divisor; exponents; the tables' addresses; tables; table outputs
                      registered; factor (9 x 9 multiply); operand times factor (17 x 17 multiply);
                      the product registered again; shift; rounding flags; saturation

so `latency(C, L) = 20 + 4W + 2 ceil(L / C)` cycles from a row at the input to its result at the
output, and n rows (whole capsules) take latency + n cycles from the cycle of the first row in to
the cycle after the last row out. Every multiplier has a registered output and no stage holds more
than one adder or one multiplier (a rounding shift with saturation is three stages: a barrel shift,
an increment beside compares with constants, two multiplexers); every memory's read data (the
input row, the tables, the delay buffers) goes straight into a register (a block RAM's
clock-to-output delay leaves no time for logic behind it). Only the control registers (valid,
first and last bits, counters, pointers, configuration) have a reset; the data registers have none
(their contents matter only where a valid bit says so), which keeps them off the reset's net on an
FPGA, as the PE array's. Contract: the configuration (func, shift,
length) is stable from the cycle of the first row until the last result; every capsule's rows arrive
in consecutive cycles, and the rows of one configuration are whole capsules (a multiple of span
rows).
"""

import math

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from capsacc.mapping import MAX_CAPSULE, act_lanes
from capsacc.schedule import SCALE_STAGES, scan_levels
from capsacc.schedule import activation_latency_cycles as latency
from rtl.delay import delay_chain
from rtl.isa import Func
from rtl.pe_array import Multiplier

MAX_LENGTH = MAX_CAPSULE
"""Longest capsule / logit vector (atoms)."""
EXP_BITS = 15
SQRT_FRAC_BITS = 4
RECIP_BITS = 17
SUM_BITS = 22
"""Segment sums: a sum of squares is at most 64 * 128**2 = 2**20, a sum of EXP entries 64 * 2**15."""
OPERAND_BITS = 17
"""Signed operand of the output multiply: q (int8) or e (0..2**15)."""
FACTOR_BITS = 17
"""Unsigned factor: SQRT times RECIP <= 256 * 511 < 2**17 (the tables' largest entries), so the
operand x factor product is one 18 x 18 signed multiplier (one MULT18X18D on an ECP5)."""


def exp_table() -> list[int]:
    """EXP[d] = round(2**15 * exp(-d / 16)) for d in 0..255 (the softmax table, `golden.exp_table`)."""
    return [round(2.0 ** EXP_BITS * math.exp(-d / 16.0)) for d in range(256)]


def sqrt_table() -> list[int]:
    """SQRT[m] = round(16 sqrt(m)) for m < 256, SQRT[256 + m] = round(16 sqrt(m + 1/2)) (`golden.sqrt_table`)."""
    return [round(2.0 ** SQRT_FRAC_BITS * math.sqrt(i if i < 256 else i - 256 + 0.5)) for i in range(512)]


def recip_table() -> list[int]:
    """RECIP[i] = round(2**17 / (256 + i + 1/2)) for i in 0..255 (`golden.recip_table`)."""
    return [round(2.0 ** RECIP_BITS / (256 + i + 0.5)) for i in range(256)]


def half_shift(value, shift):
    """The first of the three stages of a rounding shift: t = floor(2 v / 2**shift), an Amaranth
    expression (a barrel shift, no adder). `saturate8` of `round_flags(t)` is sat8((v + ((1 << shift)
    >> 1)) >> shift): floor((floor(2 v / 2**k) + 1) / 2) = floor(v / 2**k + 1/2) for every k >= 0."""
    return (value << 1) >> shift


ROUNDED = data.StructLayout({"over": 1, "under": 1, "low": signed(8)})
"""A rounded value before its saturation: (t + 1) >> 1 > 127 (`over`), < -128 (`under`), and its low
byte (`low`), for t = `half_shift(v, k)` (`round_flags`, then `saturate8`)."""


def round_flags(half):
    """The second stage of a rounding shift, an Amaranth expression of layout `ROUNDED`: the
    saturation flags of (t + 1) >> 1 are compares of t with constants (> 127 iff t >= 255, < -128
    iff t < -257), beside a 9-bit increment for the low byte, so no compare waits for the shift or the
    increment."""
    return Cat(half >= 255, half < -257, (half[:9] + 1)[1:9])


def saturate8(rounded):
    """The third stage of a rounding shift: sat8 of a `ROUNDED` view, two multiplexers."""
    return Mux(rounded.over, 127, Mux(rounded.under, -128, rounded.low))


def shift_exponent(value, width: int, low: int, step: int):
    """An Amaranth expression: how many k >= 1 have the low `width` bits of unsigned `value` at or
    above 2**(low + step k), i.e. max(0, floor((bit_length - low - 1) / step)) (the smallest
    shift, in steps of `step` bits, that brings the value below 2**(low + step)), without an adder: the thresholds are OR
    reductions, monotone in k (a thermometer code), and bit b of their count is set where the code
    ends in the upper half of a 2**(b + 1) block."""
    count = max(0, -(-(width - low) // step))
    over = [value[low + step * k:width].any() for k in range(1, count + 1)]
    flag = lambda k: over[k - 1] if k <= count else Const(0)  # noqa: E731
    bits = []
    for b in range(count.bit_length()):
        half, block = 1 << b, 1 << (b + 1)
        terms = [flag(start) & ~flag(start - half + block) for start in range(half, count + 1, block)]
        bits.append(terms[0] if len(terms) == 1 else Cat(*terms).any())
    return Cat(*bits) if bits else Const(0, 1)


class _LengthConfig:
    """Constants of one capsule length L on C lanes (computed in Python, selected by L in hardware)."""

    def __init__(self, length: int, cols: int):
        levels = scan_levels(cols)
        self.span = -(-length // cols)
        if length <= cols:
            start = [j % length == 0 for j in range(cols)]
            used = [j < (cols // length) * length for j in range(cols)]
            used_last = used
        else:
            start = [j == 0 for j in range(cols)]
            used = [True] * cols
            used_last = [j < length - (self.span - 1) * cols for j in range(cols)]
        end = [j == cols - 1 or start[j + 1] for j in range(cols)]
        self.start, self.used, self.used_last = start, used, used_last
        # Forward scan: at level l lane j adds lane j - 2**l unless its window reaches a start.
        self.fwd, closed = [], list(start)
        for level in range(levels):
            d = 1 << level
            self.fwd.append([not closed[j] and j >= d for j in range(cols)])
            closed = [closed[j] or (j >= d and closed[j - d]) for j in range(cols)]
        # Backward broadcast: at level l lane j copies lane j + 2**l unless its window holds an end.
        self.bwd, closed = [], list(end)
        for level in range(levels):
            d = 1 << level
            self.bwd.append([not closed[j] and j + d < cols for j in range(cols)])
            closed = [closed[j] or (j + d < cols and closed[j + d]) for j in range(cols)]


def _rom_ports(m, name: str, shape, init: list[int], lanes: int) -> list:
    """Synchronous read ports of a table for `lanes` lanes: one ROM per pair of lanes (two read
    ports, a dual-port block RAM on an FPGA)."""
    ports = []
    for pair in range(0, lanes, 2):
        rom = Memory(shape=shape, depth=len(init), init=init)
        m.submodules[f"{name}{pair // 2}"] = rom
        ports += [rom.read_port() for _ in range(min(2, lanes - pair))]
    return ports


def _bits(flags) -> int:
    return sum(1 << j for j, flag in enumerate(flags) if flag)


class VectorActivation(wiring.Component):
    """The vector activation datapath; see the module docstring.

    Ports: `func` (`rtl.isa.Func`), `shift` (0..31), `length` (L, 1..64): the configuration;
    `i`: stream of partial-sum rows (always ready; `i.payload` C lanes of signed acc_bits);
    `o`: stream of int8 result rows (no back-pressure: `o.ready` is not looked at); `o_valid_next`:
    `o.valid` of the next cycle (a user's own copies of the valid register start from it).
    """

    def __init__(self, cols: int, acc_bits: int = 25):
        if cols < 1:
            raise ValueError(f"cols must be >= 1, not {cols}")
        self.cols, self.acc_bits = cols, acc_bits
        self.levels = scan_levels(cols)
        self.max_span = -(-MAX_LENGTH // cols)
        super().__init__({
            "func": In(Func), "shift": In(5), "length": In(range(MAX_LENGTH + 1)),
            "i": In(stream.Signature(data.ArrayLayout(signed(acc_bits), cols), always_ready=True)),
            "o": Out(stream.Signature(data.ArrayLayout(signed(8), cols))), "o_valid_next": Out(1),
        })

    def span(self, length: int) -> int:
        """Rows per capsule of `length` atoms: ceil(L / C)."""
        return -(-length // self.cols)

    def latency(self, length: int) -> int:
        """Cycles from a row at the input to its result at the output, for capsules of `length` atoms."""
        return latency(self.cols, length)

    def elaborate(self, platform):
        m = Module()
        cols, levels = self.cols, self.levels

        # Configuration constants selected by L, registered (stable while an instruction runs).
        cfg_span, cfg_span_m1 = Signal(range(self.max_span + 1)), Signal(range(self.max_span))
        cfg_start, cfg_used, cfg_used_last = Signal(cols), Signal(cols), Signal(cols)
        cfg_fwd = [Signal(cols, name=f"cfg_fwd{level}") for level in range(levels)]
        cfg_bwd = [Signal(cols, name=f"cfg_bwd{level}") for level in range(levels)]
        with m.Switch(self.length):
            for length in range(1, MAX_LENGTH + 1):
                with m.Case(*([length] if length > 1 else [0, 1])):
                    c = _LengthConfig(length, cols)
                    m.d.sync += [cfg_span.eq(c.span), cfg_span_m1.eq(c.span - 1), cfg_start.eq(_bits(c.start)),
                                 cfg_used.eq(_bits(c.used)), cfg_used_last.eq(_bits(c.used_last))]
                    m.d.sync += [s.eq(_bits(f)) for s, f in zip(cfg_fwd, c.fwd)]
                    m.d.sync += [s.eq(_bits(f)) for s, f in zip(cfg_bwd, c.bwd)]
        # Each lane has its own copy of the function and the shift (`keep`: one flip-flop each,
        # not merged by synthesis), so that no register drives every lane (on an ECP5 the shared
        # `shift` took 7.2 ns of fan-out routing into the barrel shifters). A copy follows its
        # port a cycle later; the contract's configuration, stable from the cycle of the first
        # row, reaches the copies in time for that row's first use (the shift, in stage r1).
        lane_func = [Signal(Func, name=f"func{j}", attrs={"keep": 1}) for j in range(cols)]
        lane_shift = [Signal(5, name=f"shift{j}", attrs={"keep": 1}) for j in range(cols)]
        m.d.sync += [copy.eq(self.func) for copy in lane_func] + [copy.eq(self.shift) for copy in lane_shift]
        squash = [copy == Func.SQUASH for copy in lane_func]
        softmax = [copy == Func.SOFTMAX for copy in lane_func]

        # Requantization: r0 registers the row (memory read data; no reset, as the registers
        # behind CapsAcc's memories, so that a block RAM's output register can hold it), r0b
        # registers it again, r1 shifts (`half_shift`), r2 registers the rounding's flags and low
        # byte (`round_flags`), r3 saturates (`saturate8`). r0b is a register with no logic in
        # front (`keep`: not merged with an equal one): CapsAcc's accumulator reads the same block
        # RAM through the same output register, and on an FPGA the route from it to one of the two
        # was long; the shift behind it was then on the latest path of most runs (docs/rtl.md).
        r0_valid, r0b_valid, r1_valid, r2_valid = Signal(), Signal(), Signal(), Signal()
        r0 = Signal(data.ArrayLayout(signed(self.acc_bits), cols), reset_less=True)
        r0b = Signal(data.ArrayLayout(signed(self.acc_bits), cols), reset_less=True, attrs={"keep": 1})
        r1 = Signal(data.ArrayLayout(signed(self.acc_bits + 1), cols), reset_less=True)
        r2 = Signal(data.ArrayLayout(ROUNDED, cols), reset_less=True)
        m.d.sync += [r0_valid.eq(self.i.valid), r0.eq(self.i.payload), r0b_valid.eq(r0_valid), r0b.eq(r0),
                     r1_valid.eq(r0b_valid), r2_valid.eq(r1_valid)]
        for j in range(cols):
            m.d.sync += [r1[j].eq(half_shift(r0b[j], lane_shift[j])), r2[j].eq(round_flags(r1[j]))]
        # The row at r2 is its capsule's `row_count`-th; `row_last` (row_count == span - 1) is a
        # register of its own, from the next count, so no compare runs into the lane masks below,
        # and so is each lane's mask bit (`in_use`, `keep`: one flip-flop per lane, so that no
        # register drives every lane's mask; an ECP5 build measured `row_last`'s net into the mask
        # as its latest path, docs/rtl.md).
        row_count = Signal(range(self.max_span + 1))
        row_count_next = Signal.like(row_count)
        row_last = Signal()
        in_use = [Signal(name=f"in_use{j}", attrs={"keep": 1}) for j in range(cols)]
        last_next = row_count_next == cfg_span_m1
        m.d.comb += row_count_next.eq(Mux(r2_valid, Mux(row_last, 0, row_count + 1), row_count))
        m.d.sync += [row_count.eq(row_count_next), row_last.eq(last_next)]
        m.d.sync += [in_use[j].eq(Mux(last_next, cfg_used_last[j], cfg_used[j])) for j in range(cols)]
        q = Signal(data.ArrayLayout(signed(8), cols), reset_less=True)
        q_valid, q_first, q_last = Signal(), Signal(), Signal()
        m.d.sync += [q_valid.eq(r2_valid), q_first.eq(row_count == 0), q_last.eq(row_last)]
        # Reduce 1's input, q with -128 outside capsules, is registered beside q (the lanes in use
        # chosen by the row's place in its span, as q_last): the mask is then no net from one
        # register to every lane ahead of the first comparison.
        max_in = Signal(data.ArrayLayout(signed(8), cols), reset_less=True)
        for j in range(cols):
            value = saturate8(r2[j])
            m.d.sync += [q[j].eq(value), max_in[j].eq(Mux(in_use[j], value, -128))]

        # Reduce 1: the maximum of every capsule (softmax), broadcast to its lanes.
        red1 = self._reduce(m, "max", q_valid, q_first, q_last, max_in, q, signed(8),
                            lambda a, b: Mux(a > b, a, b), cfg_span, cfg_fwd, cfg_bwd)
        p_valid, p_first, p_last, p_data, p_total = red1
        p_used = Mux(p_last, cfg_used_last, cfg_used)

        # Operand stages: squash q and q^2, softmax e = EXP[m - q] (the table has a synchronous
        # read port); then the operand and the reduction input (0 outside capsules) registered.
        exp_port = _rom_ports(m, "exp_rom", unsigned(EXP_BITS + 1), exp_table(), cols)
        op = Signal(data.ArrayLayout(signed(OPERAND_BITS), cols), reset_less=True)
        x = Signal(data.ArrayLayout(unsigned(SUM_BITS), cols), reset_less=True)
        o_valid, o_first, o_last = Signal(), Signal(), Signal()
        o_used = Signal(cols)
        o_q = Signal(data.ArrayLayout(signed(8), cols), reset_less=True)
        square = Signal(data.ArrayLayout(unsigned(16), cols))
        m.d.sync += [o_valid.eq(p_valid), o_first.eq(p_first), o_last.eq(p_last), o_used.eq(p_used),
                     o_q.eq(p_data)]
        x_valid, x_first, x_last = Signal(), Signal(), Signal()
        m.d.sync += [x_valid.eq(o_valid), x_first.eq(o_first), x_last.eq(o_last)]
        for j in range(cols):
            port = exp_port[j]
            m.d.comb += port.addr.eq((p_total[j] - p_data[j])[:8])
            m.submodules[f"square{j}"] = squarer = Multiplier(8)
            m.d.comb += [squarer.a.eq(p_data[j]), squarer.b.eq(p_data[j]), square[j].eq(squarer.p)]
            m.d.sync += [
                op[j].eq(Mux(softmax[j], port.data, o_q[j])),
                x[j].eq(Mux(o_used[j], Mux(softmax[j], port.data, square[j]), 0)),
            ]
        red2 = self._reduce(m, "sum", x_valid, x_first, x_last, x, op, signed(OPERAND_BITS),
                            lambda a, b: a + b, cfg_span, cfg_fwd, cfg_bwd)
        d_valid, _, d_last, d_op, d_total = red2
        d_used = Mux(d_last, cfg_used_last, cfg_used)

        # Scale: per lane, from the capsule total T (S2 or E) to the factor, then the output.
        sqrt_port = _rom_ports(m, "sqrt_rom", unsigned(9), sqrt_table(), cols)
        recip_port = _rom_ports(m, "recip_rom", unsigned(9), recip_table(), cols)
        valid = delay_chain(m, d_valid, SCALE_STAGES, 1, "s{}_valid")
        used = delay_chain(m, d_used, SCALE_STAGES, cols, "s{}_used")
        result = Signal(data.ArrayLayout(signed(8), cols), name="result", reset_less=True)
        m.d.comb += [self.o.valid.eq(valid[-1]), self.o_valid_next.eq(valid[-2]), self.o.payload.eq(result)]
        for j in range(cols):
            ops = delay_chain(m, d_op[j], SCALE_STAGES - 2, signed(OPERAND_BITS), f"s{{}}_op{j}", reset_less=True)
            # s0: divisor D = T + 256 (squash) or T (softmax).
            total = Signal(SUM_BITS, name=f"s0_total{j}", reset_less=True)
            divisor = Signal(SUM_BITS + 1, name=f"s0_div{j}", reset_less=True)
            m.d.sync += [total.eq(d_total[j]), divisor.eq(d_total[j] + Mux(squash[j], 256, 0))]
            # s1: exponents e (square root) and f (reciprocal).
            e_exp = Signal(range(16), name=f"s1_e{j}", reset_less=True)
            f_exp = Signal(range(16), name=f"s1_f{j}", reset_less=True)
            total1 = Signal(SUM_BITS, name=f"s1_total{j}", reset_less=True)
            divisor1 = Signal(SUM_BITS + 1, name=f"s1_div{j}", reset_less=True)
            # e = max(0, ceil((bit_length(T) - 8) / 2)), f = max(0, bit_length(D) - 9)
            m.d.sync += [total1.eq(total), divisor1.eq(divisor),
                         e_exp.eq(shift_exponent(total, SUM_BITS, 6, 2)),
                         f_exp.eq(shift_exponent(divisor, SUM_BITS + 1, 8, 1))]
            # s2: the tables' addresses (the mantissas) registered, and the output shift k: the
            # tables are LUT logic on an FPGA, too deep to follow a barrel shift in one cycle.
            sq_addr = Signal(9, name=f"s2_sqrt_addr{j}", reset_less=True)
            rc_addr = Signal(8, name=f"s2_recip_addr{j}", reset_less=True)
            k2 = Signal(range(32), name=f"s2_k{j}", reset_less=True)
            m.d.sync += [sq_addr.eq(Cat((total1 >> (e_exp << 1))[:8], e_exp != 0)),
                         rc_addr.eq((divisor1 >> f_exp)[:8]),
                         k2.eq(Mux(squash[j], f_exp - e_exp + 14, f_exp + 10))]
            k = [k2, *delay_chain(m, k2, 5, range(32), f"s{{}}_k{j}", first=3, reset_less=True)]
            # s3: the tables read (synchronous read ports).
            sq_port, rc_port = sqrt_port[j], recip_port[j]
            m.d.comb += [sq_port.addr.eq(sq_addr), rc_port.addr.eq(rc_addr)]
            # s4: the table outputs registered, the square root 1 for softmax.
            sq4, rc4 = Signal(9, name=f"s4_sqrt{j}", reset_less=True), Signal(9, name=f"s4_recip{j}", reset_less=True)
            m.d.sync += [sq4.eq(Mux(squash[j], sq_port.data, 1)), rc4.eq(rc_port.data)]
            # s5: the factor, sqrt x recip (squash) or recip (softmax).
            m.submodules[f"factor{j}"] = factor_product = Multiplier(10)
            factor = Signal(FACTOR_BITS, name=f"s5_factor{j}")
            m.d.comb += [factor_product.a.eq(sq4), factor_product.b.eq(rc4), factor.eq(factor_product.p)]
            # s6: operand times factor; s7: the product registered again in the fabric (the route
            # out of a DSP row is long).
            m.submodules[f"scale{j}"] = scale_product = Multiplier(OPERAND_BITS, FACTOR_BITS + 1)
            product = Signal(signed(OPERAND_BITS + FACTOR_BITS + 1), name=f"s7_product{j}", reset_less=True)
            m.d.comb += [scale_product.a.eq(ops[5]), scale_product.b.eq(factor)]
            m.d.sync += product.eq(scale_product.p)
            # s8: shift (`half_shift`).
            shifted = Signal(signed(OPERAND_BITS + FACTOR_BITS + 2), name=f"s8_shifted{j}", reset_less=True)
            m.d.sync += shifted.eq(half_shift(product, k[5]))
            # s9: the rounding's flags (`round_flags`); beside them what the lane gives where it
            # does not scale: q (none), ReLU(q), or 0 (a lane outside the capsules).
            rounded = Signal(ROUNDED, name=f"s9_rounded{j}", reset_less=True)
            scales = Signal(name=f"s9_scales{j}", reset_less=True)
            plain = Signal(signed(8), name=f"s9_plain{j}", reset_less=True)
            q8 = ops[8][:8].as_signed()
            m.d.sync += [rounded.eq(round_flags(shifted)), scales.eq((squash[j] | softmax[j]) & used[8][j])]
            with m.Switch(lane_func[j]):
                with m.Case(Func.NONE):
                    m.d.sync += plain.eq(q8)
                with m.Case(Func.RELU):
                    m.d.sync += plain.eq(Mux(q8 < 0, 0, q8))
                with m.Default():
                    m.d.sync += plain.eq(0)
            # s10: saturate (`saturate8`) or pass the plain value.
            m.d.sync += result[j].eq(Mux(scales, saturate8(rounded), plain))
        return m

    def _reduce(self, m, name, valid, first, last, values, row, row_shape, op, cfg_span, cfg_fwd, cfg_bwd):
        """A segmented reduction of `values` (C lanes) with `op`: each lane gets its capsule's total,
        held while the capsule's rows (`row`, delayed in a memory) come out. Returns the output
        (valid, first, last, row, total) 2W + 1 + span cycles after the input."""
        cols, levels = self.cols, self.levels
        shape = values.shape().elem_shape
        layout = data.ArrayLayout(shape, cols)
        # Forward segmented scan.
        stage = values
        for level in range(levels):
            d = 1 << level
            nxt = Signal(layout, name=f"{name}_fwd{level}", reset_less=True)
            for j in range(cols):
                if j >= d:
                    m.d.sync += nxt[j].eq(Mux(cfg_fwd[level][j], op(stage[j - d], stage[j]), stage[j]))
                else:
                    m.d.sync += nxt[j].eq(stage[j])
            stage = nxt
        tags = Signal(3, name=f"{name}_tags0")
        m.d.comb += tags.eq(Cat(valid, first, last))
        tag_pipe = [tags]
        for level in range(levels):
            t = Signal(3, name=f"{name}_tags{level + 1}")
            m.d.sync += t.eq(tag_pipe[-1])
            tag_pipe.append(t)
        t_valid, t_first = tag_pipe[-1][0], tag_pipe[-1][1]
        # Cross-row stage: a capsule spanning rows carries its total in `acc` (lane C-1 holds the row's).
        acc = Signal(shape, name=f"{name}_acc", reset_less=True)
        crossed = Signal(layout, name=f"{name}_cross", reset_less=True)
        carried = Mux(t_first | (cfg_span == 1), stage[cols - 1], op(acc, stage[cols - 1]))
        for j in range(cols - 1):
            m.d.sync += crossed[j].eq(stage[j])
        m.d.sync += crossed[cols - 1].eq(carried)
        with m.If(t_valid):
            m.d.sync += acc.eq(carried)
        t = Signal(3, name=f"{name}_tags_cross")
        m.d.sync += t.eq(tag_pipe[-1])
        tag_pipe.append(t)
        # Backward broadcast of each segment's total (at its last lane) to all its lanes.
        stage = crossed
        for level in range(levels):
            d = 1 << level
            nxt = Signal(layout, name=f"{name}_bwd{level}", reset_less=True)
            for j in range(cols):
                if j + d < cols:
                    m.d.sync += nxt[j].eq(Mux(cfg_bwd[level][j], stage[j + d], stage[j]))
                else:
                    m.d.sync += nxt[j].eq(stage[j])
            stage = nxt
            t = Signal(3, name=f"{name}_tags_bwd{level}")
            m.d.sync += t.eq(tag_pipe[-1])
            tag_pipe.append(t)
        # Hold the total of a capsule from its last row on; count its rows out of the delay buffer.
        total = Signal(layout, name=f"{name}_total", reset_less=True)
        rows_left = Signal(range(self.max_span + 1), name=f"{name}_rows_left")
        latch = tag_pipe[-1][0] & tag_pipe[-1][2]
        with m.If(latch):
            m.d.sync += [total.eq(stage), rows_left.eq(cfg_span)]
        with m.Elif(rows_left != 0):
            m.d.sync += rows_left.eq(rows_left - 1)
        out_valid = Signal(name=f"{name}_valid")
        out_first = Signal(name=f"{name}_first")
        out_last = Signal(name=f"{name}_last")
        m.d.comb += [out_valid.eq(rows_left != 0), out_first.eq(rows_left == cfg_span),
                     out_last.eq(rows_left == 1)]
        # Delay buffer: the rows come out 2W + 1 + span cycles after they went in, from a register
        # behind the memory's read port (read 2W + span cycles after the write; with W = 0 and
        # span 1 that is the cycle of the write, which the port then passes through).
        row_layout = data.ArrayLayout(row_shape, cols)
        depth = 1 << (2 * levels + 2 + self.max_span).bit_length()
        buffer = Memory(shape=row_layout, depth=depth, init=[])
        m.submodules[f"{name}_buffer"] = buffer
        write = buffer.write_port()
        read = buffer.read_port(transparent_for=(write,) if levels == 0 else ())
        # The read address trails the write pointer by 2W + span - 1 rows. It is a register of its
        # own (the next pointer's difference), so no subtraction runs into the memory's address;
        # it follows a new span a cycle after cfg_span, long before an instruction's first row
        # reaches the buffer.
        pointer = Signal(range(depth), name=f"{name}_pointer")
        read_pointer = Signal(range(depth), name=f"{name}_read_pointer")
        delayed = Signal(row_layout, name=f"{name}_delayed", reset_less=True)
        m.d.sync += [pointer.eq(pointer + 1), read_pointer.eq(pointer + 2 - 2 * levels - cfg_span),
                     delayed.eq(read.data)]
        m.d.comb += [write.addr.eq(pointer), write.data.eq(row), write.en.eq(1), read.addr.eq(read_pointer)]
        return out_valid, out_first, out_last, delayed, total


class ActivationUnit(wiring.Component):
    """Executes one ACT instruction (`rtl.isa`) on the vector datapath: `start` pulses with the
    fields valid (latched), `done` is high in the cycle of the last write.

    Partial-sum rows are read one per cycle (`psum_addr`/`psum_en`, the data one cycle later on
    `psum_data`): n rows rounded up to whole capsules (a multiple of span = ceil(L / C) for squash
    and softmax), capsule g's row t at p_addr + g span + t, or at p_addr + g + t stride in
    strided row mode (column low, stride > 0; `sim.golden.act_row_offsets`). Row mode (`wr_row`
    high, the mode of the latched instruction, whether or not it writes in the cycle) writes one
    result row per cycle (the row at the same offset from dst_addr, lanes 0 .. width - 1
    of `wr_data`, see `capsacc.mapping.act_lanes`); column
    mode writes one element per cycle (`wr_row` low: element a of group g, the span rows of a
    capsule, to row dst_addr + g * span * stride + a, lane `wr_lane` = g, value `wr_elem`; span 1:
    row j's lane l to row dst_addr + j * stride + l, lane j), so reads go out in groups, one group
    every `width` (segmented) or L (spanning) cycles, and the rows of a group wait in a bank of
    span registers. `wr_count` is the number of elements written in the cycle.

    `length` is the ACT field: L in 1..63, 0 for 64.
    """

    def __init__(self, cols: int, acc_bits: int = 25, addr_bits: int = 14):
        self.cols, self.acc_bits, self.addr_bits = cols, acc_bits, addr_bits
        self.max_span = -(-MAX_LENGTH // cols)
        super().__init__({
            "start": In(1), "func": In(Func), "shift": In(5), "length": In(6), "n_rows": In(10),
            "p_addr": In(addr_bits), "dst_addr": In(addr_bits), "stride": In(6), "column": In(1),
            "psum_addr": Out(addr_bits), "psum_en": Out(1),
            "psum_data": In(data.ArrayLayout(signed(acc_bits), cols)),
            "wr_en": Out(1), "wr_row": Out(1), "wr_addr": Out(addr_bits),
            "wr_data": Out(data.ArrayLayout(signed(8), cols)), "wr_mask": Out(cols),
            "wr_lane": Out(11), "wr_elem": Out(signed(8)), "wr_count": Out(range(cols + 1)),
            "busy": Out(1), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cols, max_span = self.cols, self.max_span
        m.submodules.vector = vector = VectorActivation(cols, self.acc_bits)

        func, shift = Signal(Func), Signal(5)
        n_rows, column, stride = Signal(10), Signal(), Signal(6)
        p_ptr, p_group = Signal(self.addr_bits), Signal(self.addr_bits)
        # Constants of the ACT, registered when it is latched (`latch_constants`), so that every
        # compare of the control starts from registers: the unit's L, span - 1 (and max(span - 2,
        # 0)), the lane widths (`act_lanes`; as counts, less one, and as lane masks), the idle
        # cycles between column-mode groups, and the address steps.
        vector_length = Signal(range(MAX_LENGTH + 1))
        span_m1, span_m2 = Signal(range(max_span)), Signal(range(max_span))
        width, last_width = Signal(range(cols + 1)), Signal(range(cols + 1))
        width_m1, last_width_m1, first_width_m1 = Signal(range(cols)), Signal(range(cols)), Signal(range(cols))
        mask, last_mask = Signal(cols), Signal(cols)
        group_wait = Signal(range(MAX_LENGTH + cols + 1))
        w_width_m1 = Signal(range(cols))  # the column-mode writer's lanes of its row w_slot, less one
        row_step, group_step = Signal(6), Signal(range(max_span + 1))
        m.d.comb += [vector.func.eq(func), vector.shift.eq(shift), vector.length.eq(vector_length)]

        def latch_constants():
            """Synchronous assignments of the constants from the instruction's fields (`self.func`,
            `self.length`, `self.column`, `self.stride`). Row addresses: the next row of a capsule
            `row_step` on, the next capsule `group_step` on from its first row (consecutive: 1 and
            span; strided row mode: stride and 1); column mode starts a group of span reads every
            (span - 1) width + last_width cycles (the group's elements), row mode every span."""
            capsules = (self.func == Func.SQUASH) | (self.func == Func.SOFTMAX)
            strided = ~self.column & (self.stride != 0)
            m.d.sync += row_step.eq(Mux(strided, self.stride, 1))
            for is_capsule, name in ((0, "none"), (1, "squash")):
                with m.If(capsules == is_capsule):
                    with m.Switch(self.length):
                        for field in range(64):
                            with m.Case(field):
                                g_span, g_width, g_last = act_lanes(cols, name, field or MAX_LENGTH)
                                m.d.sync += [
                                    vector_length.eq((field or MAX_LENGTH) if is_capsule else 1),
                                    span_m1.eq(g_span - 1), span_m2.eq(max(g_span - 2, 0)),
                                    width.eq(g_width), last_width.eq(g_last),
                                    width_m1.eq(g_width - 1), last_width_m1.eq(g_last - 1),
                                    first_width_m1.eq((g_last if g_span == 1 else g_width) - 1),
                                    w_width_m1.eq((g_last if g_span == 1 else g_width) - 1),
                                    mask.eq((1 << g_width) - 1), last_mask.eq((1 << g_last) - 1),
                                    group_wait.eq(Mux(self.column, (g_span - 1) * g_width + g_last - g_span, 0)),
                                    group_step.eq(Mux(strided, 1, g_span)),
                                ]

        # Issue: one partial-sum row per cycle, in groups of span rows, `group_wait` idle cycles
        # after each group.
        issued = Signal(11)
        in_group = Signal(range(max_span + 1))
        wait = Signal(range(MAX_LENGTH + cols + 1))
        read_q = Signal()
        m.d.sync += read_q.eq(self.psum_en)
        m.d.comb += [self.psum_addr.eq(p_ptr), vector.i.valid.eq(read_q), vector.i.payload.eq(self.psum_data)]

        # Results: row mode writes them as they come; column mode keeps a group in `bank`.
        out_rows = Signal(11)
        out_in_group = Signal(range(max_span + 1))
        out_base, out_group = Signal(self.addr_bits), Signal(self.addr_bits)
        out_last_row = out_in_group == span_m1
        bank = [Signal(data.ArrayLayout(signed(8), cols), name=f"bank{r}", reset_less=True) for r in range(max_span)]
        # The result's valid drives the row-mode writer and the bank rows' loads from copies of
        # its own, not from the one register (`keep`: not merged back into it): `row_valid` equals
        # vector.o.valid, `bank_load{r}` is vector.o.valid while the result goes to bank row r,
        # both registered a cycle ahead (from `o_valid_next` and `out_in_group_next`).
        row_valid = Signal(name="row_valid", attrs={"keep": 1})
        bank_load = [Signal(name=f"bank_load{r}", attrs={"keep": 1}) for r in range(max_span)]
        out_in_group_next = Signal.like(out_in_group)
        m.d.comb += out_in_group_next.eq(out_in_group)
        m.d.sync += [out_in_group.eq(out_in_group_next), row_valid.eq(vector.o_valid_next)]
        m.d.sync += [load.eq(vector.o_valid_next & (out_in_group_next == r)) for r, load in enumerate(bank_load)]
        group_ready = Signal()
        m.d.sync += group_ready.eq(vector.o.valid & column & (out_in_group == 0))

        row_width = Mux(out_last_row, last_width, width)
        m.d.comb += [self.wr_data.eq(vector.o.payload), self.wr_addr.eq(out_base),
                     self.wr_mask.eq(Mux(out_last_row, last_mask, mask))]
        # `wr_row` follows the mode alone, not the result's valid: the writes' registers in front
        # of the buffers select their value by it without waiting for the valid.
        m.d.comb += self.wr_row.eq(~column)
        with m.If(row_valid & ~column):
            m.d.comb += [self.wr_en.eq(1), self.wr_count.eq(row_width)]
            m.d.sync += out_base.eq(Mux(out_last_row, out_group + group_step, out_base + row_step))
            with m.If(out_last_row):
                m.d.sync += out_group.eq(out_group + group_step)

        # Column-mode writer: element (slot, lane) of the group in the bank, one per cycle, to row
        # w_base + atom (slot C + lane, the atom's index in its capsule), lane w_group; w_strided
        # steps `stride` a row, so the next group's w_base is span * stride on. The bank row being
        # written shifts one lane a write, so the element is always lane 0 of row w_slot (no select
        # by lane on the path into the buffers). A row is written out before the next group's
        # same row arrives (the group's idle cycles pace the reads); in the cycle both meet (span
        # 1) the arriving row wins, as its load follows the shift below.
        w_active = Signal()
        w_slot = Signal(range(max_span + 1))
        # w_slot as one bit per bank row, a register of its own: each row's shift enable is then
        # `writing` and one bit, with no compare of w_slot in front of its 64 flip-flops (an ECP5
        # build measured w_slot's decode into a row's enable as its critical path, docs/rtl.md).
        w_slot_row = Signal(max_span, init=1)
        w_lane = Signal(range(cols + 1))
        w_row, w_group = Signal(11), Signal(11)
        w_base, w_strided = Signal(self.addr_bits), Signal(self.addr_bits)
        w_atom = Signal(range(max_span * cols + 1))
        w_last_slot = w_slot == span_m1
        w_row_end = w_lane == w_width_m1
        element = Signal(signed(8))
        writing = Signal()
        m.d.comb += writing.eq(w_active | group_ready)
        with m.Switch(w_slot):
            for r in range(max_span):
                with m.Case(r):
                    m.d.comb += element.eq(bank[r][0])
        for r in range(max_span):
            with m.If(writing & w_slot_row[r]):
                m.d.sync += [bank[r][lane].eq(bank[r][lane + 1]) for lane in range(cols - 1)]
        with m.If(vector.o.valid):
            m.d.sync += out_rows.eq(out_rows + 1)
            m.d.comb += out_in_group_next.eq(Mux(out_last_row, 0, out_in_group + 1))
        for r in range(max_span):
            with m.If(bank_load[r]):
                m.d.sync += bank[r].eq(vector.o.payload)
        with m.If(writing):
            m.d.comb += [self.wr_en.eq(1), self.wr_addr.eq(w_base + w_atom), self.wr_lane.eq(w_group),
                         self.wr_elem.eq(element), self.wr_count.eq(1)]
            m.d.sync += [w_active.eq(1), w_lane.eq(w_lane + 1), w_atom.eq(w_atom + 1)]
            with m.If(w_row_end):
                m.d.sync += [w_lane.eq(0), w_slot.eq(w_slot + 1), w_slot_row.eq(w_slot_row << 1),
                             w_row.eq(w_row + 1), w_strided.eq(w_strided + stride),
                             w_width_m1.eq(Mux(w_slot == span_m2, last_width_m1, width_m1))]
                with m.If(w_last_slot):
                    m.d.sync += [w_active.eq(0), w_slot.eq(0), w_slot_row.eq(1), w_atom.eq(0),
                                 w_group.eq(w_group + 1), w_base.eq(w_strided + stride),
                                 w_width_m1.eq(first_width_m1)]

        last_write = Mux(column, writing & w_row_end & (w_row == issued - 1),
                         vector.o.valid & (out_rows == issued - 1))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    latch_constants()
                    m.d.comb += out_in_group_next.eq(0)
                    m.d.sync += [
                        func.eq(self.func), shift.eq(self.shift),
                        n_rows.eq(self.n_rows), column.eq(self.column), stride.eq(self.stride),
                        p_ptr.eq(self.p_addr), p_group.eq(self.p_addr), out_base.eq(self.dst_addr),
                        out_group.eq(self.dst_addr), w_base.eq(self.dst_addr), w_strided.eq(self.dst_addr),
                        issued.eq(0), in_group.eq(0), wait.eq(0), out_rows.eq(0),
                        w_active.eq(0), w_slot.eq(0), w_slot_row.eq(1), w_lane.eq(0), w_row.eq(0), w_group.eq(0),
                        w_atom.eq(0),
                    ]
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += self.busy.eq(1)
                with m.If(wait != 0):
                    m.d.sync += wait.eq(wait - 1)
                with m.Else():
                    m.d.comb += self.psum_en.eq(1)
                    m.d.sync += [p_ptr.eq(Mux(in_group == span_m1, p_group + group_step, p_ptr + row_step)),
                                 issued.eq(issued + 1), in_group.eq(Mux(in_group == span_m1, 0, in_group + 1))]
                    with m.If(in_group == span_m1):
                        m.d.sync += [wait.eq(group_wait), p_group.eq(p_group + group_step)]
                        with m.If(issued + 1 >= n_rows):
                            m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                with m.If(last_write):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m
