"""The CapsAcc top level: PE array, accumulator, activation unit, buffers, control and host port.

Host protocol (every port is at most 64 bits wide; see docs/rtl.md):

- While `busy` is low the host owns the memories. `host_sel` picks one: 0 program (64-bit words),
  1 data buffer (R int8 lanes per row), 2 weight buffer (C int8 lanes), 3 routing buffer (R int8
  lanes), 4 partial-sum memory (C lanes of signed acc_bits). `host_addr` is the row.
- Writes: set `host_we` for one cycle with `host_wdata`. Program: the whole word. int8 buffers:
  `host_lane` = g writes lanes 8g..8g+7 from the bytes of host_wdata (lane 8g in bits 7:0; lanes
  past the row width are ignored). Partial sums: `host_lane` = l writes lane l from the low
  acc_bits of host_wdata.
- Reads: present host_sel/host_addr/host_lane; one cycle later `host_rdata` holds the 8 bytes of
  lane group g (int8 buffers), the sign-extended partial sum of lane l, or the program word.
- Run: pulse `start` for one cycle; `busy` rises in the next cycle and falls when HALT executes,
  `done` then stays high until the next start. `start` clears all counters (each counter's
  register clears it at the end of the cycle after the start, `rtl.counter`). In the cycle of
  `start` the program port reads word 0 (the first fetch), whatever `host_addr` says.
- Counters: `counter_sel` = i puts counter i on `counter` (combinational), see COUNTERS.

Control unit (see `rtl.isa.timing` for its exact schedule): FETCH once after start, then DISPATCH
offers the word at pc every cycle from a register (`current`); the program port always reads the
word after it (pc + 1, or pc + 2 in the cycle a word issues), so fetch overlaps execution and no
logic sits behind the program memory's read data. A MATMUL hands its weight tile to the load engine (R weight-row reads,
top tile row first, into the next of the PEs' two weight banks) and its data stream to a one-entry
slot, from which the stream engine takes it (n data-row reads, each row tagged with its bank). It
issues when the load engine is free or reading its last row, the slot is free or being taken,
and its bank is no longer in use by the tile before the previous one. MATMULs therefore issue back
to back; ACT and HALT wait until every result is written (drained). ACT: ACT_START, ACT_WAIT.

Datapath registers: every memory's read data goes straight into a register (a block RAM's
clock-to-output delay leaves no time for logic behind it on an FPGA): a data row read at cycle s
is registered behind its memory at s + 1, selected (data or routing buffer) into the array's input
register at s + 2 and enters the array at s + 3; a weight row read at cycle w is written into its
PE row at w + 3 (two registers, so that it keeps its distance to the data). The exception is a
DMA store's row, which goes to the off-chip port and is registered at the memory's side
(`rtl.offchip`). The activation unit's buffer writes are
registered too: each lands a cycle after the unit presents it.

DMA engine (`rtl.dma`): runs the DMA instructions' transfers between the `offchip` port and the
int8 buffers through its own read-write port on each buffer, concurrently with the compute; WAIT
synchronises them (`rtl.isa`). Each int8 buffer thus has two read-write ports (compute, DMA), each
with one address: a true dual-port memory, as an FPGA block RAM or a dual-port SRAM macro offers.
The engine also loads words into the program memory (overlays) through its write port, the host's
while idle: the program memory keeps one read and one write port. Its addresses, the program
counter's fetch included, wrap modulo the program depth (a power of two).

Accumulator unit: every data row read at cycle s carries its partial-sum row and accumulate flag
down a delay line; its result leaves the array at s + D (D = R + C + 3,
`capsacc.mapping.result_delay_cycles`), its partial-sum row is read at s + D - 3, registered twice, and
at s + D the stored value plus the result (accumulate) or the result alone is registered, then
written at s + D + 1 (the write register: no path runs from the adder into the block RAM; the row is
in memory before an ACT or the host can read it, both a cycle or more after the drain). The four
writes a read cannot see yet (those of the four rows ahead of it) are forwarded from registers
(read-after-write forwarding), so back-to-back updates of one row (MATMUL hold, consecutive
MATMULs into the same rows) are exact. Sums wrap in acc_bits two's complement; the default
`rtl.widths.ACC_BITS` (34) holds every sum of the search space.
"""

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from capsacc.array import MEMORY_DEPTHS, ArrayConfig
from capsacc.errors import AcceleratorConfigError
from rtl.activation import ActivationUnit
from rtl.counter import EventCounter
from rtl.delay import delay_chain, delayed
from rtl.dma import DMAEngine, OffchipSignature
from rtl.isa import ADDR_BITS, INSTRUCTION, Buffer, Dst, Opcode, Src
from rtl.pe_array import PEArray
from rtl.widths import ACC_BITS, product_sum_bits

SEL_PROGRAM, SEL_DATA, SEL_WEIGHT, SEL_ROUTING, SEL_PSUM = 0, 1, 2, 3, 4

COUNTERS = (
    ("busy_cycles", "cycles with busy high (start to HALT)"),
    ("instructions", "instructions executed, HALT included"),
    ("weight_loads", "weight tiles loaded (one per MATMUL)"),
    ("weight_load_cycles", "cycles in the weight-load state"),
    ("data_reads", "data-buffer row reads by the control unit"),
    ("data_writes", "data-buffer element writes by the activation unit"),
    ("weight_reads", "weight-buffer row reads"),
    ("weight_writes", "weight-buffer element writes by the activation unit"),
    ("routing_reads", "routing-buffer row reads"),
    ("routing_writes", "routing-buffer element writes by the activation unit"),
    ("pe_active_cycles", "PE-cycles with valid data = multiply-accumulates issued (R*C per data row)"),
    ("psum_reads", "partial-sum row reads (accumulate and activation)"),
    ("psum_writes", "partial-sum row writes by the accumulator"),
    ("act_ops", "int8 results produced by the activation unit"),
    ("offchip_read_beats", "off-chip beats read by the DMA engine (W bytes each)"),
    ("offchip_write_beats", "off-chip beats written by the DMA engine (W bytes each)"),
)
"""Performance counters, by index: (name, what it counts). Each is COUNTER_BITS wide."""

COUNTER_BITS = 48


def host_members(addr_bits: int) -> dict:
    """The host side of a simulation top (`CapsAcc`, `rtl.offchip.CapsAccSystem`): a buffer port
    (select, `addr_bits`-bit row address, 64-bit lane group, write data and enable, read data), start,
    busy and done, and a performance-counter read port (`COUNTERS` by index)."""
    return {
        "host_sel": In(3), "host_addr": In(addr_bits), "host_lane": In(6),
        "host_wdata": In(64), "host_we": In(1), "host_rdata": Out(64),
        "start": In(1), "busy": Out(1), "done": Out(1),
        "counter_sel": In(4), "counter": Out(COUNTER_BITS),
    }


def check_buildable(config: ArrayConfig) -> None:
    """Raise `AcceleratorConfigError` (a ValueError) naming the parameter of `config` that this RTL
    cannot build: the instruction fields bound the columns (ACT length, 6 bits) and the depths
    (addresses, ADDR_BITS); a product of int8 operands needs 16 accumulator bits and a sign."""
    if not 1 <= config.rows <= 64:
        raise AcceleratorConfigError(f"rows: {config.rows} outside [1, 64]")
    if not 1 <= config.cols <= 63:
        raise AcceleratorConfigError(f"cols: {config.cols} outside [1, 63] (the host port's lane field)")
    if not 17 <= config.acc_bits <= 48:
        raise AcceleratorConfigError(f"acc_bits: {config.acc_bits} outside [17, 48] (an int8 product needs 16 bits)")
    width = config.offchip_bytes_per_cycle
    if not 1 <= width <= 64 or width & (width - 1):
        raise AcceleratorConfigError(f"offchip_bytes_per_cycle: {width} is not a power of two in [1, 64]")
    for name in MEMORY_DEPTHS:
        check_depth(name, getattr(config, name))


def check_depth(name: str, depth: int) -> None:
    """Raise `AcceleratorConfigError` naming `name` (a field or an option) unless `depth`, a memory's rows
    or words, is a power of two its addresses reach: 2 to 2^ADDR_BITS."""
    if not 2 <= depth <= 1 << ADDR_BITS or depth & (depth - 1):
        raise AcceleratorConfigError(f"{name}: {depth} is not a power of two in [2, {1 << ADDR_BITS}]")


def host_write_layout(rows: int, cols: int) -> data.StructLayout:
    """The host's write enables, decoded: one bit for the program memory, one for each group of 8
    lanes of the data (R lanes), weight (C) and routing (R) buffers, and one for each of the C
    partial-sum lanes (`decode_host_write`)."""
    groups = lambda lanes: (lanes + 7) // 8  # noqa: E731
    return data.StructLayout({"program": 1, "data": groups(rows), "weight": groups(cols),
                              "routing": groups(rows), "psum": cols})


def decode_host_write(enables, we, sel, lane) -> list:
    """Statements setting `enables` (a view of `host_write_layout`) from the host port's write
    enable, select and lane (module docstring): the one memory and lane group that a write in
    this cycle goes to, or none."""
    stmts = [enables.program.eq(we & (sel == SEL_PROGRAM))]
    for field, selected in (("data", SEL_DATA), ("weight", SEL_WEIGHT), ("routing", SEL_ROUTING),
                            ("psum", SEL_PSUM)):
        bits = getattr(enables, field)
        stmts += [bits[i].eq(we & (sel == selected) & (lane == i)) for i in range(len(bits))]
    return stmts


def _lane_group_write(port, lanes: int, groups, wdata) -> list:
    """Statements writing the int8 lanes of a row from the bytes of wdata: lane l from byte l % 8,
    where bit l // 8 of `groups` (the decoded lane groups) is set."""
    stmts = []
    for lane in range(lanes):
        stmts.append(port.data[lane].eq(wdata.word_select(lane % 8, 8)))
        stmts.append(port.en[lane].eq(groups[lane // 8]))
    return stmts


class CapsAcc(wiring.Component):
    """CapsAcc with an R x C array; see the module docstring for the host protocol. The parameters
    are those of `capsacc.array.ArrayConfig` (`CapsAcc(**config.hardware())`), checked by
    `check_buildable`. With `host_read_registers` (the FPGA build, `rtl.fpga`) the host reads the
    registers behind the memories (`data_q`, `w_q`, `routing_q`, `psum_q`, and one of its own behind
    the program memory): a read's data is in host_rdata two cycles after its address, not one, and
    each buffer's compute read port drives nothing but its register, which an FPGA block RAM can
    then hold as its own output register (`rtl.ecp5_pack.pack_output_registers`). With
    `host_write_decoded` (the FPGA build too) the memories' host write enables come decoded, from
    an input `host_write` (`host_write_layout`, set by `decode_host_write` where the top decodes
    them, before its input registers), and `host_we` is not used."""

    def __init__(self, rows: int = 4, cols: int = 4, acc_bits: int = ACC_BITS, *, data_depth: int = 256,
                 weight_depth: int = 256, routing_depth: int = 256, psum_depth: int = 256, program_depth: int = 64,
                 offchip_bytes_per_cycle: int = ArrayConfig.offchip_bytes_per_cycle,
                 offchip_latency_cycles: int = ArrayConfig.offchip_latency_cycles,
                 host_read_registers: bool = False, host_write_decoded: bool = False):
        self.config = ArrayConfig(rows, cols, acc_bits, data_depth=data_depth, weight_depth=weight_depth,
                                  routing_depth=routing_depth, psum_depth=psum_depth, program_depth=program_depth,
                                  offchip_bytes_per_cycle=offchip_bytes_per_cycle,
                                  offchip_latency_cycles=offchip_latency_cycles)
        check_buildable(self.config)
        self.rows, self.cols, self.acc_bits = rows, cols, acc_bits
        self.host_read_registers = host_read_registers
        self.host_read_latency = 2 if host_read_registers else 1
        """Cycles from a host read's address to its data in host_rdata."""
        self.host_write_decoded = host_write_decoded
        decoded = {"host_write": In(host_write_layout(rows, cols))} if host_write_decoded else {}
        super().__init__({
            "offchip": Out(OffchipSignature(offchip_bytes_per_cycle)), **host_members(16), **decoded})

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        rows, cols, acc_bits = cfg.rows, cfg.cols, cfg.acc_bits

        # Inside the array a column sums at most R products: product_sum_bits(R) bits are exact
        # (20 for R = 16), so the PEs carry no more than that; the accumulator carries acc_bits.
        m.submodules.array = array = PEArray(rows, cols, min(acc_bits, product_sum_bits(rows)))
        m.submodules.act = act = ActivationUnit(cols, acc_bits, ADDR_BITS)
        m.submodules.dma = dma = DMAEngine(rows, cols, cfg.offchip_bytes_per_cycle)
        wiring.connect(m, wiring.flipped(self.offchip), dma.port)

        # A read and a write of the same row in one cycle never meet in an int8 buffer (module
        # docstring: each port reads or writes, and the program keeps the DMA's rows apart from
        # the compute's), so its read-write collisions are don't-care (`no_rw_check`): yosys then
        # maps it to true dual-port block RAM instead of emulating read-first across the ports.
        # The program memory and the partial sums meet them, but never use such a read's data:
        # - program: the fetch reads a word every cycle, and a word's read is used (`current`) only
        #   in the cycle its word issues, when no load is writing it (a program executes a word a
        #   load writes only from the second word after the next WAIT or DMA, `rtl.isa`, which
        #   issue with the engine idle); the host writes while idle, reads in other cycles;
        # - partial sums: the accumulator's read of a row in the cycle that row is written is
        #   replaced by the forwarded sum (hit4, below); the activation unit reads drained, the
        #   host while idle, in cycles it does not write.
        no_rw_check = {"no_rw_check": 1}
        m.submodules.program = program = Memory(shape=INSTRUCTION, depth=cfg.program_depth, init=[],
                                                attrs=no_rw_check)
        buffer = lambda lanes, depth: Memory(shape=data.ArrayLayout(signed(8), lanes), depth=depth, init=[],  # noqa: E731
                                             attrs=no_rw_check)
        m.submodules.data_buf = data_buf = buffer(rows, cfg.data_depth)
        m.submodules.weight_buf = weight_buf = buffer(cols, cfg.weight_depth)
        m.submodules.routing_buf = routing_buf = buffer(rows, cfg.routing_depth)
        m.submodules.psum = psum = Memory(shape=data.ArrayLayout(signed(acc_bits), cols),
                                          depth=cfg.psum_depth, init=[], attrs=no_rw_check)
        prog_r, prog_w = program.read_port(), program.write_port()
        data_r, data_w = data_buf.read_port(), data_buf.write_port(granularity=1)
        weight_r, weight_w = weight_buf.read_port(), weight_buf.write_port(granularity=1)
        routing_r, routing_w = routing_buf.read_port(), routing_buf.write_port(granularity=1)
        psum_r, psum_w = psum.read_port(), psum.write_port(granularity=1)

        # The DMA engine's own port on each int8 buffer: one address for its reads (stores) and
        # writes (loads), so that the buffer has two read-write ports (this one and the compute's,
        # below), a true dual-port block RAM. The engine moves rows while the compute reads and
        # writes; the program keeps them on different rows (`rtl.isa` WAIT). The read data is
        # registered behind each buffer (no reset: a block RAM's output register can hold it) and
        # selected, two cycles after the read, by the buffer the engine read then; the select is
        # then no logic between a block RAM and the off-chip port (an ECP5 build measured that path
        # as its critical one, docs/rtl.md).
        dma_rd_buffer = delayed(m, dma.buffer, 2, Buffer, "dma_rd_buffer")
        for buffer, memory, lanes in ((Buffer.DATA, data_buf, rows), (Buffer.WEIGHT, weight_buf, cols),
                                      (Buffer.ROUTING, routing_buf, rows)):
            reader, writer = memory.read_port(), memory.write_port(granularity=1)
            m.d.comb += [reader.addr.eq(dma.addr), writer.addr.eq(dma.addr)]
            m.d.comb += [writer.data[lane].eq(dma.wr_row[lane]) for lane in range(lanes)]
            m.d.comb += [writer.en[lane].eq(dma.wr_en & (dma.buffer == buffer)) for lane in range(lanes)]
            read_q = delayed(m, reader.data, 1, data.ArrayLayout(8, lanes), f"dma_{buffer.name.lower()}_q",
                             reset_less=True)
            with m.If(dma_rd_buffer == buffer):
                m.d.comb += [dma.rd_row[lane].eq(read_q[lane]) for lane in range(lanes)]

        busy = Signal()
        done = Signal()
        m.d.comb += [self.busy.eq(busy), self.done.eq(done)]

        # Instruction fetch: `word` (word pc) is a register; the program read port presents word
        # pc + 1 in every DISPATCH cycle and reads pc + 2 in the cycle a word issues (`fire`), so
        # instructions issue back to back. FETCH loads word 0, read in the start cycle.
        pc = Signal(ADDR_BITS)
        word = Signal(INSTRUCTION, name="current")
        fire = Signal()
        instr = Signal(INSTRUCTION, reset_less=True)  # the ACT the activation unit executes
        act_dst = instr.act.dst
        m.d.comb += [
            act.func.eq(instr.act.func), act.column.eq(instr.act.column), act.shift.eq(instr.act.shift),
            act.length.eq(instr.act.length), act.p_addr.eq(instr.act.p_addr), act.dst_addr.eq(instr.act.dst_addr),
            act.n_rows.eq(instr.act.n), act.stride.eq(instr.act.stride),
            act.psum_data.eq(psum_r.data),
        ]

        # Weight-load engine: R cycles of weight-row reads, top tile row first, into the bank the
        # MATMUL was given; each row is registered twice and written into the array three cycles after its read.
        l_busy, l_bank = Signal(), Signal()
        l_k = Signal(range(max(rows, 2)))
        # The row read now, `l_row`: a tile's first row from `l_base`, the tile address of the word at pc a
        # cycle before (captured every cycle: the MATMUL that issued then), later rows from `l_ptr`, the
        # row before plus one; both registers, so no path runs from `fire` into them or an adder before
        # the buffer.
        l_base, l_ptr, l_row = Signal(ADDR_BITS), Signal(ADDR_BITS), Signal(ADDR_BITS)
        l_first = Signal()  # the cycle after a MATMUL issued: its tile's first row is read
        m.d.comb += l_row.eq(Mux(l_first, l_base, l_ptr))
        m.d.sync += [l_base.eq(word.matmul.w_addr), l_ptr.eq(l_row + 1), l_first.eq(0)]
        # `l_last` (l_k == R - 1) is a register of its own, from the next count, so no compare of
        # the count runs into the dispatch (`fire`).
        l_last = Signal(init=int(rows == 1))
        load_free = ~l_busy | l_last
        weight_issue = l_busy
        # The row's write (enable, tile row, bank) follows the read down two registers, then is
        # decoded into the array's enables (a register per row and bank) in the third; the read
        # data is registered behind the memory and again in front of the array (the data stream
        # does the same, so a weight row reaches the array as many cycles after its read as a
        # data row does after its own).
        # The registers behind the memories carry data only (each has a valid bit beside it), so
        # they have no reset: an FPGA block RAM's output register can hold them.
        w_q = Signal(data.ArrayLayout(signed(8), cols), name="w_q", reset_less=True)
        w_in = Signal(data.ArrayLayout(signed(8), cols), name="w_in", reset_less=True)
        w_we = delayed(m, weight_issue, 2, 1, "w_we")
        w_row = delayed(m, l_k, 2, range(max(rows, 2)), "w_row")
        w_bank = delayed(m, l_bank, 2, 1, "w_bank")
        w_row_we = Signal(data.ArrayLayout(2, rows), name="w_row_we")
        m.d.sync += [w_row_we[r][b].eq(w_we & (w_row == r) & (w_bank == b)) for r in range(rows) for b in range(2)]
        m.d.sync += [w_q.eq(weight_r.data), w_in.eq(w_q)]
        m.d.comb += [array.w_in.eq(w_in), array.w_we.eq(w_row_we)]
        with m.If(l_busy):
            m.d.sync += [l_k.eq(l_k + 1), l_last.eq(l_k == rows - 2)]
            with m.If(l_last):
                m.d.sync += [l_busy.eq(0), l_k.eq(0), l_last.eq(rows == 1)]

        # Stream engine: n cycles of data-row reads; a one-entry slot holds the next MATMUL's
        # stream from its dispatch until the engine takes it (the cycle of the previous stream's
        # last read at the earliest, and never before the tile's first weight row was read).
        stream_fields = data.StructLayout({"d_addr": ADDR_BITS, "p_addr": ADDR_BITS, "n": ADDR_BITS,
                                           "src": Src, "accumulate": 1, "hold": 1, "bank": 1})
        slot = Signal(stream_fields, reset_less=True)  # its fields hold a MATMUL's where slot_valid says so
        slot_valid = Signal()
        stream = Signal(stream_fields)
        s_busy = Signal()
        s_k = Signal(ADDR_BITS)
        s_ptr = Signal(ADDR_BITS)  # the row read now, stream.d_addr + s_k, in a register of its own
        s_final = Signal()  # the row read in this cycle is the stream's last (from a register: dispatch timing)
        data_issue = s_busy
        s_last = s_busy & s_final
        slot_move = slot_valid & (~s_busy | s_last)
        slot_free = ~slot_valid | slot_move
        with m.If(s_busy):
            m.d.sync += [s_k.eq(s_k + 1), s_ptr.eq(s_ptr + 1), s_final.eq(s_k + 2 == stream.n)]
            with m.If(s_last):
                m.d.sync += s_busy.eq(0)
        with m.If(slot_move):
            m.d.sync += [stream.eq(slot), s_busy.eq(1), s_k.eq(0), s_ptr.eq(slot.d_addr), s_final.eq(slot.n == 1),
                         slot_valid.eq(0)]
        from_routing = stream.src == Src.ROUTING
        # The read data is registered behind each memory (a block RAM's clock-to-output delay
        # leaves no time for a long route), then selected into the array's input register `x`.
        data_q, routing_q = (Signal(data.ArrayLayout(signed(8), rows), name=name, reset_less=True)
                             for name in ("data_q", "routing_q"))
        x_in = Signal(data.ArrayLayout(signed(8), rows), name="x")
        x_valid = delay_chain(m, data_issue, 3, 1, "x_valid")
        # The array takes each vector's bank a cycle ahead of it (`rtl.pe_array`).
        x_bank_next = delayed(m, stream.bank, 2, 1, "x_bank")
        x_routing = delay_chain(m, from_routing, 2, 1, "x_routing")
        m.d.sync += [data_q.eq(data_r.data), routing_q.eq(routing_r.data),
                     x_in.eq(Mux(x_routing[-1], routing_q.as_value(), data_q.as_value()))]
        m.d.comb += [array.x_valid.eq(x_valid[-1]), array.x_bank_next.eq(x_bank_next), array.x.eq(x_in)]

        # Bank hazard: a tile may be loaded into a bank once the last datum of the tile before
        # it in that bank has passed its row's last column: dispatch >= that datum's read + C - 2.
        # `cooled` (count_down == 0) is a register of its own, from the next count.
        bank_ready = []
        for b in range(2):
            if cols < 3:  # the stream slot's order alone keeps the rule
                bank_ready.append(Const(1))
                continue
            count_down = Signal(range(cols - 1), name=f"cooldown_{b}")
            cooled = Signal(init=1, name=f"cooled_{b}")
            leaving = s_last & (stream.bank == b)
            m.d.sync += cooled.eq(Mux(leaving, cols == 3, count_down[1:] == 0))  # count_down <= 1
            with m.If(leaving):
                m.d.sync += count_down.eq(cols - 3)
            with m.Elif(count_down != 0):
                m.d.sync += count_down.eq(count_down - 1)
            bank_ready.append(cooled & ~leaving)
        next_bank = Signal()
        # The slot's fields take the word's MATMUL fields in every cycle the slot is free, the
        # cycle a MATMUL issues among them (it issues only into a free slot, and sets slot_valid):
        # `fire`, the dispatch's deepest logic, then enables only the fetch's and the load
        # engine's registers, not the slot's too (an ECP5 build measured its fan-out into the
        # slot's enables on its latest path, docs/rtl.md).
        with m.If(slot_free):
            f = word.matmul
            m.d.sync += [slot.d_addr.eq(f.d_addr), slot.p_addr.eq(f.p_addr), slot.n.eq(f.n), slot.src.eq(f.src),
                         slot.accumulate.eq(f.accumulate), slot.hold.eq(f.hold), slot.bank.eq(next_bank)]

        # Accumulator unit: every streamed row carries its partial-sum row and accumulate flag
        # down a delay line of D = 3 + array latency stages (`result_delay_cycles`): read at
        # issue + D - 3, the read data registered at issue + D - 2 (the register a block RAM can
        # hold, `psum_q`) and again at issue + D - 1 (`psum_q2`, no logic in front: on an FPGA the
        # route from the block RAM to the adders is a path of its own, docs/rtl.md), the sum
        # registered at issue + D and written at issue + D + 1.
        delay = 3 + array.latency
        meta = data.StructLayout({"valid": 1, "accumulate": 1, "row": ADDR_BITS})
        entering = Signal(meta)
        m.d.comb += [entering.valid.eq(data_issue), entering.accumulate.eq(stream.accumulate),
                     entering.row.eq(stream.p_addr + Mux(stream.hold, 0, s_k))]
        stages = delay_chain(m, entering, delay, meta, "acc_stage_")
        reading, fetched, writing = stages[delay - 4], stages[delay - 2], stages[delay - 1]
        acc_read = reading.valid
        acc_write = array.y_valid
        row_bits = (cfg.psum_depth - 1).bit_length()
        # Rows streamed whose sums are not yet written; `pending_zero` (pending == 0) is registered
        # beside it, from the next count, so no compare of the count runs into the dispatch.
        pending = Signal(ADDR_BITS + 2)
        pending_next = Signal(ADDR_BITS + 2)
        pending_zero = Signal(init=1)
        m.d.comb += pending_next.eq(pending + data_issue - acc_write)
        # psum_q2 is `keep`: the activation unit registers psum_q too (its r0b), and merged they
        # would be one register driving both units again.
        psum_q = Signal(data.ArrayLayout(signed(acc_bits), cols), name="psum_q", reset_less=True)
        psum_q2 = Signal(data.ArrayLayout(signed(acc_bits), cols), name="psum_q2", reset_less=True, attrs={"keep": 1})
        # fwd_k: the sums computed k cycles ago (fwd1 is the write register: the memory writes them
        # a cycle after the adder, so no route runs from the adder to the block RAM); hit_k: the row
        # now writing is fwd_k's (decided a cycle ahead, from `fetched`). The read, three cycles
        # before the adder, sees the memory as written up to five cycles before it: four rows
        # forward. The sums carry data only (used where a hit says so): no reset.
        fwd1, fwd2, fwd3, fwd4 = (Signal(data.ArrayLayout(signed(acc_bits), cols), name=f"fwd{i}_data",
                                         reset_less=True) for i in (1, 2, 3, 4))
        fwd1_row, fwd2_row, fwd3_row = Signal(ADDR_BITS), Signal(ADDR_BITS), Signal(ADDR_BITS)
        fwd1_valid, fwd2_valid, fwd3_valid = Signal(), Signal(), Signal()
        # Each column's adder takes the forwarding selects and the accumulate flag (writing's) from
        # registers of its own (`keep`: not merged by synthesis), so that no register drives all
        # C x acc_bits multiplexers (an ECP5 build measured a select's net into them on its latest
        # path, docs/rtl.md).
        hit1, hit2, hit3, hit4, accumulate = ([Signal(name=f"{name}_{c}", attrs={"keep": 1}) for c in range(cols)]
                                              for name in ("hit1", "hit2", "hit3", "hit4", "accumulate"))
        stored = Signal(data.ArrayLayout(signed(acc_bits), cols))
        sums = Signal(data.ArrayLayout(signed(acc_bits), cols))
        # Rows compare as the memory addresses them (modulo the depth: p_addr + k may wrap).
        is_hit1 = acc_write & (writing.row[:row_bits] == fetched.row[:row_bits])
        is_hit2 = fwd1_valid & (fwd1_row[:row_bits] == fetched.row[:row_bits])
        is_hit3 = fwd2_valid & (fwd2_row[:row_bits] == fetched.row[:row_bits])
        is_hit4 = fwd3_valid & (fwd3_row[:row_bits] == fetched.row[:row_bits])
        for c in range(cols):
            forwarded = Mux(hit3[c], fwd3[c], Mux(hit4[c], fwd4[c], psum_q2[c]))
            m.d.comb += [stored[c].eq(Mux(hit1[c], fwd1[c], Mux(hit2[c], fwd2[c], forwarded))),
                         sums[c].eq(Mux(accumulate[c], stored[c], 0) + array.y[c])]
            m.d.sync += [hit1[c].eq(is_hit1), hit2[c].eq(is_hit2), hit3[c].eq(is_hit3), hit4[c].eq(is_hit4),
                         accumulate[c].eq(fetched.accumulate)]
        m.d.sync += [
            psum_q.eq(psum_r.data), psum_q2.eq(psum_q),
            fwd1.eq(sums), fwd1_row.eq(writing.row), fwd1_valid.eq(acc_write),
            fwd2.eq(fwd1), fwd2_row.eq(fwd1_row), fwd2_valid.eq(fwd1_valid), fwd3.eq(fwd2),
            fwd3_row.eq(fwd2_row), fwd3_valid.eq(fwd2_valid), fwd4.eq(fwd3),
            pending.eq(pending_next), pending_zero.eq(pending_next == 0),
        ]
        drained = ~l_busy & ~slot_valid & ~s_busy & pending_zero

        # Host read path: remember what was asked, select it when the data arrives: the read data
        # a cycle after the address, or with `host_read_registers` the registers behind the
        # memories a cycle later still (the program's read data passes a register of its own).
        host_sel_q = delayed(m, self.host_sel, self.host_read_latency, 3, "host_sel_q")
        host_lane_q = delayed(m, self.host_lane, self.host_read_latency, 6, "host_lane_q")
        if self.host_read_registers:
            program_q = Signal(INSTRUCTION, reset_less=True)
            m.d.sync += program_q.eq(prog_r.data)
            host_sources = (program_q, data_q, w_q, routing_q, psum_q)
        else:
            host_sources = (prog_r.data, data_r.data, weight_r.data, routing_r.data, psum_r.data)
        program_row, data_row, weight_row, routing_row, psum_row = host_sources

        def lane_group(view, lanes):
            """The 8 int8 lanes of group host_lane_q as 64 bits (0 past the row)."""
            groups = (lanes + 7) // 8
            padded = Cat(view.as_value(), Const(0, 64 * groups - 8 * lanes))
            selected = Signal(64)
            with m.Switch(host_lane_q):
                for g in range(groups):
                    with m.Case(g):
                        m.d.comb += selected.eq(padded.word_select(g, 64))
            return selected

        with m.Switch(host_sel_q):
            with m.Case(SEL_PROGRAM):
                m.d.comb += self.host_rdata.eq(program_row)
            with m.Case(SEL_DATA):
                m.d.comb += self.host_rdata.eq(lane_group(data_row, rows))
            with m.Case(SEL_WEIGHT):
                m.d.comb += self.host_rdata.eq(lane_group(weight_row, cols))
            with m.Case(SEL_ROUTING):
                m.d.comb += self.host_rdata.eq(lane_group(routing_row, rows))
            with m.Case(SEL_PSUM):
                with m.Switch(host_lane_q):
                    for c in range(cols):
                        with m.Case(c):
                            m.d.comb += self.host_rdata.eq(psum_row[c])

        # Memory port ownership: the host while idle, the control unit while busy.
        if self.host_write_decoded:
            host_write = self.host_write
        else:
            host_write = Signal(host_write_layout(rows, cols))
            m.d.comb += decode_host_write(host_write, self.host_we, self.host_sel, self.host_lane)
        # The activation unit's writes are registered (`act_w`): each lands a cycle after the unit
        # presents it, so the column-mode writer's element select and the lane decode end in a
        # register instead of running on into the buffers. The last lands in the cycle after done,
        # before any word issued after the ACT reads a buffer (its first read is a cycle later).
        lanes_max = max(rows, cols)
        act_w = Signal(data.StructLayout({"valid": 1, "dst": Dst, "addr": ADDR_BITS, "en": lanes_max,
                                          "value": data.ArrayLayout(signed(8), lanes_max)}))
        m.d.sync += [act_w.valid.eq(act.wr_en), act_w.dst.eq(act_dst), act_w.addr.eq(act.wr_addr)]
        for lane in range(lanes_max):
            in_row = act.wr_mask[lane] if lane < cols else 0
            value = act.wr_data[lane] if lane < cols else 0
            m.d.sync += [act_w.value[lane].eq(Mux(act.wr_row, value, act.wr_elem)),
                         act_w.en[lane].eq(act.wr_en & Mux(act.wr_row, in_row, act.wr_lane == lane))]

        # The compute side of each int8 buffer is one read-write port too: its reads (the stream
        # and load engines) and the activation unit's writes share an address. They never meet:
        # an ACT issues drained, and no word after it reads before its last write has landed.
        data_addr, weight_addr, routing_addr = (Signal(ADDR_BITS, name=f"{name}_addr")
                                                for name in ("data", "weight", "routing"))
        for reader, writer, addr in ((data_r, data_w, data_addr), (weight_r, weight_w, weight_addr),
                                     (routing_r, routing_w, routing_addr)):
            m.d.comb += [reader.addr.eq(addr), writer.addr.eq(addr)]
        with m.If(busy):
            m.d.comb += [
                prog_r.addr.eq(Mux(fire, pc + 2, pc + 1)),
                prog_w.addr.eq(dma.addr), prog_w.data.eq(dma.wr_row.as_value()[:64]),
                prog_w.en.eq(dma.wr_en & (dma.buffer == Buffer.PROGRAM)),
                weight_addr.eq(Mux(act_w.valid, act_w.addr, l_row)),
                data_addr.eq(Mux(act_w.valid, act_w.addr, s_ptr)),
                routing_addr.eq(Mux(act_w.valid, act_w.addr, s_ptr)),
                # The accumulator's reads (`reading`, a register) and the activation unit's never
                # meet (an ACT issues drained), so the select is a register, not the unit's state.
                psum_r.addr.eq(Mux(reading.valid, reading.row, act.psum_addr)),
                psum_w.addr.eq(fwd1_row),
            ]
            for c in range(cols):
                m.d.comb += [psum_w.data[c].eq(fwd1[c]), psum_w.en[c].eq(fwd1_valid)]
            for port, lanes, dst in ((data_w, rows, Dst.DATA), (weight_w, cols, Dst.WEIGHT),
                                     (routing_w, rows, Dst.ROUTING)):
                for lane in range(lanes):
                    m.d.comb += [port.data[lane].eq(act_w.value[lane]),
                                 port.en[lane].eq(act_w.en[lane] & (act_w.dst == dst))]
        with m.Else():
            for addr in (prog_r.addr, psum_r.addr, prog_w.addr, psum_w.addr, data_addr, weight_addr, routing_addr):
                m.d.comb += addr.eq(self.host_addr)
            with m.If(self.start):
                m.d.comb += prog_r.addr.eq(0)
            m.d.comb += [prog_w.data.eq(self.host_wdata), prog_w.en.eq(host_write.program)]
            m.d.comb += _lane_group_write(data_w, rows, host_write.data, self.host_wdata)
            m.d.comb += _lane_group_write(weight_w, cols, host_write.weight, self.host_wdata)
            m.d.comb += _lane_group_write(routing_w, rows, host_write.routing, self.host_wdata)
            for c in range(cols):
                m.d.comb += [psum_w.data[c].eq(self.host_wdata[:acc_bits]), psum_w.en[c].eq(host_write.psum[c])]

        # Performance counters.
        act_write = lambda dst: Mux(act.wr_en & (act_dst == dst), act.wr_count, 0)  # noqa: E731
        matmul_fired = Signal()
        increments = {
            "busy_cycles": busy,
            "instructions": fire,
            "weight_loads": matmul_fired,
            "weight_load_cycles": weight_issue,
            "weight_reads": weight_issue,
            "data_reads": data_issue & ~from_routing,
            "routing_reads": data_issue & from_routing,
            "pe_active_cycles": Mux(data_issue, rows * cols, 0),
            "psum_reads": (acc_read & reading.accumulate) | act.psum_en,
            "psum_writes": acc_write,
            "act_ops": Mux(act.wr_en, act.wr_count, 0),
            "offchip_read_beats": dma.reads,
            "offchip_write_beats": dma.writes,
            "data_writes": act_write(Dst.DATA),
            "weight_writes": act_write(Dst.WEIGHT),
            "routing_writes": act_write(Dst.ROUTING),
        }
        # `rtl.counter.EventCounter`s: each registers its increment twice, its carry between halves and
        # the start's clear, so the counts lag behind what the host reads (settled + unsettled: the
        # same value as a counter that adds in the cycle of the event). The start cycle and the ones
        # before it count nothing (idle, or the HALT of the run before), so no run's event is dropped.
        counter_units, starting = {}, self.start & ~busy
        for name, _ in COUNTERS:
            increment = Value.cast(increments[name])
            m.submodules[f"count_{name}"] = unit = EventCounter(COUNTER_BITS, len(increment))
            m.d.comb += [unit.increment.eq(increment), unit.clear.eq(starting)]
            counter_units[name] = unit
        settled, unsettled = Signal(COUNTER_BITS), Signal(COUNTER_BITS // 2 + 2)
        with m.Switch(self.counter_sel):
            for index, (name, _) in enumerate(COUNTERS):
                with m.Case(index):
                    unit = counter_units[name]
                    m.d.comb += [settled.eq(unit.settled), unsettled.eq(unit.unsettled)]
        m.d.comb += self.counter.eq(settled + unsettled)

        # Control unit: IDLE, FETCH (one cycle after start), DISPATCH (issue the word at pc), and
        # the activation unit's ACT_START / ACT_WAIT. A MATMUL issues when the load engine is free
        # (or reading its last row), the stream slot is free (or being emptied) and its bank is
        # ready; ACT and HALT issue when every MATMUL has written its results (drained), HALT also
        # when the DMA engine is idle. A DMA issues when the engine is idle (it takes the
        # descriptor in that cycle); a WAIT when the engine is idle and the load and stream
        # engines have read every operand.
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [busy.eq(1), done.eq(0), pc.eq(0), next_bank.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.sync += word.eq(prog_r.data)
                m.next = "DISPATCH"
            with m.State("DISPATCH"):
                # `instr` takes the word in every DISPATCH cycle, and holds the ACT that issued
                # through ACT_START and ACT_WAIT (not enabled by `fire`, see the stream slot).
                m.d.sync += instr.eq(word)
                with m.Switch(word.op):
                    with m.Case(Opcode.MATMUL):
                        m.d.comb += fire.eq(load_free & slot_free & Mux(next_bank, bank_ready[1], bank_ready[0]))
                        with m.If(fire):
                            m.d.comb += matmul_fired.eq(1)
                            m.d.sync += [
                                l_busy.eq(1), l_k.eq(0), l_last.eq(rows == 1), l_first.eq(1), l_bank.eq(next_bank),
                                slot_valid.eq(1), next_bank.eq(~next_bank),
                            ]
                    with m.Case(Opcode.ACT):
                        m.d.comb += fire.eq(drained)
                        with m.If(fire):
                            m.next = "ACT_START"
                    with m.Case(Opcode.DMA):
                        f = word.dma
                        m.d.comb += [fire.eq(dma.idle), dma.cmd_valid.eq(dma.idle), dma.cmd.store.eq(f.store),
                                     dma.cmd.buffer.eq(f.buffer), dma.cmd.addr.eq(f.addr), dma.cmd.n.eq(f.n),
                                     dma.cmd.ext.eq(f.ext)]
                    with m.Case(Opcode.WAIT):
                        m.d.comb += fire.eq(dma.idle & ~l_busy & ~slot_valid & ~s_busy)
                    with m.Default():
                        m.d.comb += fire.eq(drained & dma.idle)
                        with m.If(fire):
                            m.d.sync += [busy.eq(0), done.eq(1)]
                            m.next = "IDLE"
                with m.If(fire):
                    m.d.sync += [pc.eq(pc + 1), word.eq(prog_r.data)]
            with m.State("ACT_START"):
                m.d.comb += act.start.eq(1)
                m.next = "ACT_WAIT"
            with m.State("ACT_WAIT"):
                with m.If(act.done):
                    m.next = "DISPATCH"
        return m
