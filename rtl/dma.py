"""The DMA engine: transfers between an off-chip memory port and the int8 buffers or the program
memory (rows of one 64-bit word, 8 lanes: a row of the engine has max(R, C, 8) lanes).

The off-chip port (`OffchipSignature`, W = bytes_per_cycle bytes a beat) takes one request a
cycle: `read` with `addr` (a beat address), answered by `rvalid` with `rdata` a fixed L cycles
later (in order, never refused), or `write` with `addr` and `wdata` (posted: the memory holds it
from the next cycle). The engine takes one `rtl.isa.DESCRIPTOR` (`cmd` while `cmd_valid`, accepted
when `idle`) and runs it alone:

- load: T = n * b beats (b = `rtl.isa.beats_per_row`) requested in the T cycles after it was
  accepted, at ext, ext + 1, ...; each row is written into the buffer (`wr_row` at `addr`, `wr_en`)
  in the cycle its last beat arrives (lane j from byte j of the row's beats). Idle again the cycle
  after the last.
- store: in each of the T cycles after it was accepted, the engine reads buffer row
  addr + k // b (`addr`, data in `rd_row` two cycles later: the user registers the read data behind
  the buffer, `rtl.capsacc`) and writes its beat k % b to beat ext + k two cycles after the read
  (bytes past the row's lanes are zero). Idle again the cycle after the last write.

The engine reads a buffer only in a store and writes one only in a load, so one address (`addr`,
in the buffer `buffer`) serves both: each buffer's DMA side is a single read-write port, and with
the compute side's single port the buffer is a true dual-port memory (one ECP5 block RAM port each).

`rtl.isa.dma_cycles` states the schedule; `reads` and `writes` pulse per beat (the counters).
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from capsacc.schedule import PROGRAM_WORD_BYTES
from rtl.delay import delayed
from rtl.isa import ADDR_BITS, DESCRIPTOR, EXT_BITS, Buffer, beats_per_row, buffer_lanes


class OffchipSignature(wiring.Signature):
    """The off-chip memory port, seen from the DMA engine: a beat of `bytes_per_cycle` bytes."""

    def __init__(self, bytes_per_cycle: int):
        self.bytes_per_cycle = bytes_per_cycle
        super().__init__({"addr": Out(EXT_BITS), "read": Out(1), "write": Out(1), "wdata": Out(8 * bytes_per_cycle),
                          "rdata": In(8 * bytes_per_cycle), "rvalid": In(1)})


class DMAEngine(wiring.Component):
    """The DMA engine of an R x C CapsAcc (rows of R int8 lanes in the data and routing buffers, C
    in the weight buffer, `PROGRAM_WORD_BYTES` in the program memory) on a port of `bytes_per_cycle`
    bytes; see the module docstring."""

    def __init__(self, rows: int, cols: int, bytes_per_cycle: int):
        self.rows, self.cols, self.bytes_per_cycle = rows, cols, bytes_per_cycle
        self.lanes = max(rows, cols, PROGRAM_WORD_BYTES)
        row = data.ArrayLayout(8, self.lanes)
        super().__init__({
            "cmd": In(DESCRIPTOR), "cmd_valid": In(1), "idle": Out(1),
            "port": Out(OffchipSignature(bytes_per_cycle)),
            "buffer": Out(Buffer), "addr": Out(ADDR_BITS), "wr_row": Out(row), "wr_en": Out(1), "rd_row": In(row),
            "reads": Out(1), "writes": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        width = 8 * self.bytes_per_cycle
        per_row = {buffer: beats_per_row(buffer_lanes(buffer.name.lower(), self.rows, self.cols), self.bytes_per_cycle)
                   for buffer in Buffer}
        most = max(per_row.values())

        cur = Signal(DESCRIPTOR)
        active = Signal()
        total = Signal(ADDR_BITS + most.bit_length())
        row_beats = Signal(range(most + 1))
        # `loading` (a load runs) and `last_beat` (its next beat completes a row): registers, so that the
        # buffers' write ports see no logic but `rvalid`'s.
        loading, last_beat = Signal(), Signal()
        m.d.comb += self.idle.eq(~active)

        with m.If(self.cmd_valid & ~active):
            m.d.sync += [cur.eq(self.cmd), active.eq(1), loading.eq(~self.cmd.store)]
            with m.Switch(self.cmd.buffer):  # n times a constant per buffer: no multiplier
                for buffer, beats in per_row.items():
                    with m.Case(buffer):
                        m.d.sync += [total.eq(self.cmd.n * beats), row_beats.eq(beats),
                                     last_beat.eq(beats == 1)]

        # Requests (load: reads; store: buffer-row reads), one a cycle, counted in beats.
        issued = Signal.like(total)
        issue_beat = Signal(range(max(most, 2)))
        issue_addr = Signal(ADDR_BITS)  # the buffer row of the request: the descriptor's addr + its rows
        issuing = active & (issued != total)
        with m.If(self.cmd_valid & ~active):
            m.d.sync += [issued.eq(0), issue_beat.eq(0), issue_addr.eq(self.cmd.addr)]
        with m.Elif(issuing):
            m.d.sync += issued.eq(issued + 1)
            with m.If(issue_beat == row_beats - 1):
                m.d.sync += [issue_beat.eq(0), issue_addr.eq(issue_addr + 1)]
            with m.Else():
                m.d.sync += issue_beat.eq(issue_beat + 1)

        # Load: beats come back in order; a row is written as its last beat arrives, at `got_addr` (a
        # register: the descriptor's addr + the rows written).
        got_beat = Signal(range(max(most, 2)))
        got_addr = Signal(ADDR_BITS)
        got = Signal.like(total)
        held = [Signal(width, name=f"beat_{b}") for b in range(most - 1)]
        arriving = loading & self.port.rvalid
        assembled = Signal(width * most)
        m.d.comb += assembled.eq(Cat(*held, self.port.rdata) if most > 1 else self.port.rdata)
        for b in range(1, most):  # a row of fewer beats than `most` puts its last beat at its place
            with m.If(row_beats == b):
                m.d.comb += assembled.eq(Cat(*held[:b - 1], self.port.rdata))
        with m.If(arriving):
            m.d.sync += got.eq(got + 1)
            for b in range(most - 1):
                with m.If(got_beat == b):
                    m.d.sync += held[b].eq(self.port.rdata)
            with m.If(last_beat):
                m.d.sync += [got_beat.eq(0), got_addr.eq(got_addr + 1), last_beat.eq(row_beats == 1)]
            with m.Else():
                m.d.sync += [got_beat.eq(got_beat + 1), last_beat.eq(got_beat + 2 == row_beats)]
        with m.If(self.cmd_valid & ~active):
            m.d.sync += [got.eq(0), got_beat.eq(0), got_addr.eq(self.cmd.addr)]
        padded = Cat(assembled, Const(0, max(0, 8 * self.lanes - width * most)))
        m.d.comb += [self.wr_row.eq(padded[:8 * self.lanes]), self.wr_en.eq(arriving & last_beat)]
        with m.If(arriving & (got + 1 == total)):
            m.d.sync += [active.eq(0), loading.eq(0)]

        # Store: the row read in the issue cycle, its beat written to the port two cycles later (the
        # read data registered behind the buffer, then selected by buffer into `rd_row`). `st_last`
        # marks the last beat: the next to last is written when all beats have issued.
        st_valid = delayed(m, issuing & cur.store, 2, 1, "st_valid")
        st_last = delayed(m, issued + 1 == total, 2, 1, "st_last")
        st_beat = delayed(m, issue_beat, 2, len(issue_beat), "st_beat")
        st_ext = delayed(m, cur.ext + issued, 2, EXT_BITS, "st_ext")
        row_bits = Cat(self.rd_row.as_value(), Const(0, max(0, width * most - 8 * self.lanes)))
        m.d.comb += [self.buffer.eq(cur.buffer),
                     self.addr.eq(Mux(cur.store, issue_addr, got_addr))]
        with m.If(st_valid & st_last):
            m.d.sync += active.eq(0)

        m.d.comb += [
            self.port.read.eq(issuing & ~cur.store),
            self.port.write.eq(st_valid),
            self.port.addr.eq(Mux(st_valid, st_ext, cur.ext + issued)),
            self.port.wdata.eq(row_bits.word_select(st_beat, width)),
            self.reads.eq(self.port.read), self.writes.eq(self.port.write),
        ]
        return m
