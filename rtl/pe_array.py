"""The weight-stationary systolic PE array of CapsAcc, with double-buffered weights.

PE (r, c) holds two signed 8-bit weights, banks 0 and 1. Every cycle it multiplies the datum
arriving from its left neighbour by the weight of the bank named by the bank bit that travels with
the datum and registers the product; in the next cycle it adds the product to the partial sum
arriving from the PE above (the top row adds to 0) and registers the sum. Data move one PE right
per cycle, partial sums one PE down per cycle, one cycle behind the products (a multiplier and an
adder never share a cycle). The bank bits travel one cycle ahead of their data, so that each PE
selects the weight of its next datum into a register a cycle early (with the weight being written
in that cycle, where it is written into that bank): the multiplier's inputs are both registers,
with no multiplexer in front of them (an ECP5 build measured the bank bit through the multiplexer
into the neighbour's multiplier as its critical path, docs/rtl.md).
Partial sums are `acc_bits`-bit two's complement and wrap (the low `acc_bits` bits of the exact
sum are kept; no saturation).

Weights load by rows: the C weights of `w_in` are written into bank b of PE row r where bit b of
`w_we[r]` is high (a column bus per column, an enable per row and bank, decoded by the user ahead
of its register, so that no decode runs into the PEs), so a tile loads in R cycles, one row per
cycle, into the bank the array is not computing with: the next tile loads
while the current one streams. Loading top row first, the data of the new tile may enter the
array the cycle after its first row was written (row r's weights are written before the skewed
data reach row r); the bank may be rewritten once the last datum of the tile that used it has
passed the row's last column (`rtl.capsacc` enforces both).

The array skews its inputs (row r delayed r cycles) and de-skews its outputs (column c delayed
C-1-c cycles) internally, so a data vector `x` presented with `x_valid` at cycle t, its bank on
`x_bank_next` at cycle t - 1, comes out as the result vector `y = x @ W[bank]` with `y_valid` at
cycle t + `latency` (`latency` = R + C).
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl.delay import delayed


class Multiplier(wiring.Component):
    """A registered signed product: `p` = `a` * `b` one cycle after `a` and `b` (`a` signed `width`
    bits, `b` signed `b_width` bits, `width` by default; `p` signed `width` + `b_width`; 0 at power-up,
    no reset: a data register, qualified by its user's valid bits).
    On a platform with `get_multiplier(multiplier)` (the ECP5 build, `rtl.fpga.ECP5Primitives`) the
    platform builds it, e.g. in a DSP block with its output register, so that no long route runs
    between the block and a fabric register."""

    def __init__(self, width: int = 8, b_width: int | None = None):
        b_width = width if b_width is None else b_width
        if width < 1 or b_width < 1:
            raise ValueError(f"operand widths must be >= 1, not {width} and {b_width}")
        self.width, self.b_width = width, b_width
        super().__init__({"a": In(signed(width)), "b": In(signed(b_width)), "p": Out(signed(width + b_width))})

    def elaborate(self, platform):
        if hasattr(platform, "get_multiplier"):
            return platform.get_multiplier(self)
        m = Module()
        product = Signal.like(self.p, name="product", reset_less=True)
        m.d.sync += product.eq(self.a * self.b)
        m.d.comb += self.p.eq(product)
        return m


class PE(wiring.Component):
    """One processing element: registers x_out = x_in, valid_out = valid_in, bank_out = bank_in,
    the weight of its next datum (weight[bank_in], or w_in where that bank is written in this cycle),
    product = x_in * that weight (selected a cycle before), and psum_out = wrap(psum_in + product)
    (the product of the previous cycle); writes weight[b] = w_in where bit b of w_we is high.

    Ports: x_in / x_out signed 8-bit data with valid bits; bank_in the bank of the datum arriving in
    the next cycle, bank_out (registered) that of the datum now at x_out's register, the right
    neighbour's next; psum_in / psum_out signed acc_bits; w_in (signed 8), w_we (a bit per bank).
    """

    def __init__(self, acc_bits: int = 25):
        self.acc_bits = acc_bits
        super().__init__({
            "x_in": In(signed(8)), "valid_in": In(1), "bank_in": In(1),
            "psum_in": In(signed(acc_bits)),
            "w_in": In(signed(8)), "w_we": In(2),
            "x_out": Out(signed(8)), "valid_out": Out(1), "bank_out": Out(1),
            "psum_out": Out(signed(acc_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        # The data registers (weights, datum, partial sum) have no reset (0 at power-up): the valid
        # bits qualify them, so a reset need not reach them (on an FPGA, fewer loads on the reset's
        # net and fewer control sets to pack).
        banks = [Signal(signed(8), name=f"w{b}", reset_less=True) for b in range(2)]
        for b, bank in enumerate(banks):
            with m.If(self.w_we[b]):
                m.d.sync += bank.eq(self.w_in)
        # The weight of the datum arriving next cycle: its bank as it will be then (written now or not).
        weight = Signal(signed(8), reset_less=True)
        written = Mux(self.bank_in, self.w_we[1], self.w_we[0])
        m.d.sync += weight.eq(Mux(written, self.w_in, Mux(self.bank_in, banks[1], banks[0])))
        m.submodules.multiplier = multiplier = Multiplier(8)
        product = multiplier.p
        # The PEs of an anti-diagonal hold equal bank bits. `keep` asks synthesis for one flip-flop
        # per PE all the same (rtl.fpga honours it): merged, one flip-flop would drive the weight
        # multiplexers of a whole anti-diagonal, long nets across the array.
        bank = Signal(name="bank", attrs={"keep": 1})
        x, psum = Signal(signed(8), reset_less=True), Signal(signed(self.acc_bits), reset_less=True)
        m.d.comb += [self.bank_out.eq(bank), multiplier.a.eq(self.x_in), multiplier.b.eq(weight),
                     self.x_out.eq(x), self.psum_out.eq(psum)]
        m.d.sync += [
            x.eq(self.x_in),
            self.valid_out.eq(self.valid_in),
            bank.eq(self.bank_in),
            # The assignment truncates to acc_bits: two's-complement wrap.
            psum.eq(self.psum_in + product),
        ]
        return m


class PEArray(wiring.Component):
    """R x C weight-stationary array, two weight banks, internal input skew and output de-skew.

    Ports: x (R lanes, int8) with x_valid; x_bank_next, the weight bank that the vector of the next
    cycle meets (a cycle ahead of it); w_in (C lanes, int8) written into bank b of PE row r where bit
    b of w_we[r] is high (at most one row); y (C lanes, signed
    acc_bits) with y_valid, `latency` = R + C cycles after x.
    """

    def __init__(self, rows: int, cols: int, acc_bits: int = 25):
        if rows < 1 or cols < 1:
            raise ValueError(f"rows and cols must be >= 1, not {rows}x{cols}")
        self.rows, self.cols, self.acc_bits = rows, cols, acc_bits
        self.latency = rows + cols
        super().__init__({
            "x": In(data.ArrayLayout(signed(8), rows)), "x_valid": In(1), "x_bank_next": In(1),
            "w_in": In(data.ArrayLayout(signed(8), cols)), "w_we": In(data.ArrayLayout(2, rows)),
            "y": Out(data.ArrayLayout(signed(acc_bits), cols)), "y_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        pes = [[PE(self.acc_bits) for _ in range(cols)] for _ in range(rows)]
        for r in range(rows):
            for c in range(cols):
                m.submodules[f"pe_{r}_{c}"] = pes[r][c]
                pe = pes[r][c]
                m.d.comb += [pe.w_in.eq(self.w_in[c]), pe.w_we.eq(self.w_we[r])]
                m.d.comb += pe.psum_in.eq(0 if r == 0 else pes[r - 1][c].psum_out)
            # Input skew: row r's datum (with its valid bit, and its bank bit a cycle ahead) enters r
            # cycles late. Every row's bank skew is the same bits (x_bank_next delayed), and so is the
            # bank register of the first PE of the row above: `keep`, so that synthesis does not
            # merge them into one chain whose registers each drive the weight multiplexers of two rows.
            x_row = delayed(m, self.x[r], r, signed(8), f"skew_x_{r}_", reset_less=True)
            valid_row = delayed(m, self.x_valid, r, 1, f"skew_v_{r}_")
            bank_row = delayed(m, self.x_bank_next, r, 1, f"skew_b_{r}_", attrs={"keep": 1})
            for c in range(cols):
                pe = pes[r][c]
                if c == 0:
                    m.d.comb += [pe.x_in.eq(x_row), pe.valid_in.eq(valid_row), pe.bank_in.eq(bank_row)]
                else:
                    left = pes[r][c - 1]
                    m.d.comb += [pe.x_in.eq(left.x_out), pe.valid_in.eq(left.valid_out),
                                 pe.bank_in.eq(left.bank_out)]
        # Output de-skew: column c leaves the bottom row at t + R + 1 + c; delay it C-1-c cycles.
        for c in range(cols):
            m.d.comb += self.y[c].eq(delayed(m, pes[rows - 1][c].psum_out, cols - 1 - c, signed(self.acc_bits),
                                             f"deskew_y_{c}_", reset_less=True))
        # The bottom-right PE passes its datum on at t + R + C - 1, its sum one cycle later.
        m.d.sync += self.y_valid.eq(pes[rows - 1][cols - 1].valid_out)
        return m
