"""The weight-stationary systolic PE array of CapsAcc.

PE (r, c) holds a stationary signed 8-bit weight. Every cycle it multiplies the datum arriving from
its left neighbour by that weight, adds the product to the partial sum arriving from the PE above
(the top row adds to 0) and registers both: data move one PE right per cycle, partial sums one PE
down. Partial sums are `acc_bits`-bit two's complement and wrap (the low `acc_bits` bits of the
exact sum are kept; no saturation).

Weights load through a vertical shift chain: while `w_shift` is high, every PE takes the weight of
the PE above and the top row takes `w_in`, so a full R x C tile loads in R cycles, bottom row first.

The array skews its inputs (row r delayed r cycles) and de-skews its outputs (column c delayed
C-1-c cycles) internally, so a data vector `x` presented with `x_valid` at cycle t comes out as the
result vector `y = x @ W` with `y_valid` at cycle t + `latency` (`latency` = R + C - 1).
"""

from amaranth import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


class PE(wiring.Component):
    """One processing element: registers x_out = x_in, psum_out = wrap(psum_in + x_in * weight).

    Ports: x_in / x_out signed 8-bit data, psum_in / psum_out signed acc_bits, w_in / w_out signed
    8-bit weight chain with w_shift (load the weight of the PE above), valid_in / valid_out.
    """

    def __init__(self, acc_bits: int = 25):
        self.acc_bits = acc_bits
        super().__init__({
            "x_in": In(signed(8)), "valid_in": In(1),
            "psum_in": In(signed(acc_bits)),
            "w_in": In(signed(8)), "w_shift": In(1),
            "x_out": Out(signed(8)), "valid_out": Out(1),
            "psum_out": Out(signed(acc_bits)),
            "w_out": Out(signed(8)),
        })

    def elaborate(self, platform):
        m = Module()
        with m.If(self.w_shift):
            m.d.sync += self.w_out.eq(self.w_in)
        m.d.sync += [
            self.x_out.eq(self.x_in),
            self.valid_out.eq(self.valid_in),
            # The assignment truncates to acc_bits: two's-complement wrap.
            self.psum_out.eq(self.psum_in + self.x_in * self.w_out),
        ]
        return m


class PEArray(wiring.Component):
    """R x C weight-stationary array with internal input skew and output de-skew.

    Ports: x (R lanes, int8) with x_valid; w_in (C lanes, int8) with w_shift; y (C lanes,
    signed acc_bits) with y_valid, `latency` = R + C - 1 cycles after x. `active` is high in the
    cycles a valid vector enters the array (each such cycle issues R*C multiply-accumulates as
    it travels through).
    """

    def __init__(self, rows: int, cols: int, acc_bits: int = 25):
        if rows < 1 or cols < 1:
            raise ValueError(f"rows and cols must be >= 1, not {rows}x{cols}")
        self.rows, self.cols, self.acc_bits = rows, cols, acc_bits
        self.latency = rows + cols - 1
        super().__init__({
            "x": In(data.ArrayLayout(signed(8), rows)), "x_valid": In(1),
            "w_in": In(data.ArrayLayout(signed(8), cols)), "w_shift": In(1),
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
                m.d.comb += pe.w_shift.eq(self.w_shift)
                m.d.comb += pe.w_in.eq(self.w_in[c] if r == 0 else pes[r - 1][c].w_out)
                m.d.comb += pe.psum_in.eq(0 if r == 0 else pes[r - 1][c].psum_out)
            # Input skew: row r's datum enters r cycles late.
            x_row, valid_row = self.x[r], self.x_valid
            for i in range(r):
                x_reg = Signal(signed(8), name=f"skew_x_{r}_{i}")
                v_reg = Signal(name=f"skew_v_{r}_{i}")
                m.d.sync += [x_reg.eq(x_row), v_reg.eq(valid_row)]
                x_row, valid_row = x_reg, v_reg
            for c in range(cols):
                pe = pes[r][c]
                if c == 0:
                    m.d.comb += [pe.x_in.eq(x_row), pe.valid_in.eq(valid_row)]
                else:
                    m.d.comb += [pe.x_in.eq(pes[r][c - 1].x_out), pe.valid_in.eq(pes[r][c - 1].valid_out)]
        # Output de-skew: column c leaves the bottom row at t + R + c; delay it C-1-c cycles.
        for c in range(cols):
            y_col = pes[rows - 1][c].psum_out
            for i in range(cols - 1 - c):
                y_reg = Signal(signed(self.acc_bits), name=f"deskew_y_{c}_{i}")
                m.d.sync += y_reg.eq(y_col)
                y_col = y_reg
            m.d.comb += self.y[c].eq(y_col)
        valid = pes[rows - 1][cols - 1].valid_out
        m.d.comb += self.y_valid.eq(valid)
        return m
