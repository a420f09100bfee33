"""The CapsAcc instruction set: 64-bit instruction words, an assembler and a disassembler.

The encoding is declared once, here, as `amaranth.lib.data` layouts with `amaranth.lib.enum`
field types: `MATMUL_LAYOUT`, `ACT_LAYOUT`, `DMA_LAYOUT`, `WAIT_LAYOUT` and `HALT_LAYOUT` (one `StructLayout` per instruction,
fields from bit 0 up, every one starting with the 4-bit `Opcode`), joined by `INSTRUCTION`, a
64-bit `UnionLayout` view of a program word. The control unit (`rtl.capsacc`) decodes a word
through that view; `assemble` builds words with `INSTRUCTION.const(...)` and `disassemble` reads
them with `INSTRUCTION.from_bits(...)`, so no bit position is written anywhere else.
`encoding_table()` renders the layouts as the table of docs/rtl.md.

HALT: stop; `busy` falls and `done` rises. Opcodes not in `Opcode` are reserved and halt too.

MATMUL: load a weight tile, stream data rows through the array, accumulate results.
    src         `Src`: the buffer the data rows come from
    accumulate  0: write the tile result, 1: add it to the stored partial sum
    d_addr      first data row (a row holds R int8 lanes, lane r meets PE row r)
    w_addr      first weight-tile row: tile row r (C int8 lanes) is weight row w_addr + r and goes
                to PE row r
    p_addr      first partial-sum row
    n           number of data rows (>= 1); data row d_addr + k gives result row k
    hold        0: result row k goes to partial-sum row p_addr + k; 1: all n results go to row
                p_addr (a reduction over data rows; exercises the accumulator's forwarding)

ACT: the activation unit on partial-sum rows (see `rtl.activation`).
    func        `Func`: none (requantize only), ReLU, squash, softmax
    dst         `Dst`: the buffer the int8 results go to
    column      0: row mode, element (j, l) of the row at p_addr + o -> row dst_addr + o, lane l;
                1: column mode, element (j, l) -> row dst_addr + j * stride + l, lane j; a
                capsule spanning rows (L > C) is one group g of span = ceil(L / C) rows: its atom
                a -> row dst_addr + g * span * stride + a, lane g (a transposing scatter)
    shift       requantization shift (0..31)
    length      L (1..64, 64 encoded as 0): squash and softmax, atoms per capsule (a row holds
                floor(C / L) capsules when L <= C; a capsule spans ceil(L / C) rows when L > C);
                none and ReLU, lanes per row (lanes >= L are not written)
    p_addr      first partial-sum row
    dst_addr    first destination row
    n           number of rows (1..1023), rounded up to whole capsules (a multiple of ceil(L / C))
    stride      column mode: the destination row stride (0..63). Row mode: where capsule g's row
                t (t < span = ceil(L / C)) is read: 0 at p_addr + g span + t (consecutive rows),
                1..63 at p_addr + g + t stride (strided: a capsule over span column blocks whose
                MATMULs wrote `stride` rows each; `sim.golden.act_row_offsets`). The unit
                takes a row per cycle either way.

DMA: one transfer between the off-chip memory and an int8 buffer, run by the DMA engine
(`rtl.dma`) while later instructions go on (it issues when the engine is idle).
    store       0: load (off-chip -> buffer), 1: store (buffer -> off-chip)
    buffer      `Buffer`: data, weight or routing
    addr        first buffer row
    n           rows (>= 1)
    ext         first off-chip beat (a beat is the port's W bytes): buffer row addr + i is beats
                ext + i * b .. ext + i * b + b - 1, b = ceil(lanes / W) (`beats_per_row`), its lane
                j in byte j of that run of beats (a store writes zeros past the row's lanes)

WAIT: wait until the DMA engine is idle and every issued MATMUL has read its operands (the load
and stream engines are idle; results may still be in flight). The one synchronisation between
transfers and compute: a program loads the next tile into the other half of a buffer, issues the
MATMULs of the current one, then WAITs before it reuses that half.
"""

from dataclasses import dataclass

from amaranth.lib import data, enum

from capsacc.array import ArrayConfig
from capsacc.mapping import act_lanes, result_delay_cycles

ADDR_BITS = 14
"""Width of every buffer address field (rows)."""


class Opcode(enum.Enum, shape=4):
    """Bits 3:0 of every instruction word."""
    HALT = 0
    MATMUL = 1
    ACT = 2
    DMA = 3
    WAIT = 4


class Src(enum.Enum, shape=1):
    """MATMUL: the buffer the data rows come from."""
    DATA = 0
    ROUTING = 1


class Func(enum.Enum, shape=2):
    """ACT: the function applied after requantization."""
    NONE = 0
    RELU = 1
    SQUASH = 2
    SOFTMAX = 3


class Dst(enum.Enum, shape=2):
    """ACT: the buffer the int8 results are written to (3 is reserved: writes nothing)."""
    DATA = 0
    WEIGHT = 1
    ROUTING = 2


class Buffer(enum.Enum, shape=2):
    """DMA: the on-chip int8 buffer of a transfer (3 is reserved: the transfer moves nothing)."""
    DATA = 0
    WEIGHT = 1
    ROUTING = 2


EXT_BITS = 29
"""Width of the DMA's off-chip beat address."""

HALT_LAYOUT = data.StructLayout({"op": Opcode})
WAIT_LAYOUT = data.StructLayout({"op": Opcode})

MATMUL_LAYOUT = data.StructLayout({
    "op": Opcode, "src": Src, "accumulate": 1, "d_addr": ADDR_BITS, "w_addr": ADDR_BITS,
    "p_addr": ADDR_BITS, "n": ADDR_BITS, "hold": 1,
})

ACT_LAYOUT = data.StructLayout({
    "op": Opcode, "func": Func, "dst": Dst, "column": 1, "shift": 5, "length": 6,
    "p_addr": ADDR_BITS, "dst_addr": ADDR_BITS, "n": 10, "stride": 6,
})

DESCRIPTOR = data.StructLayout({"store": 1, "buffer": Buffer, "addr": ADDR_BITS, "n": ADDR_BITS, "ext": EXT_BITS})
"""A DMA transfer, as the DMA engine takes it (the DMA instruction without its opcode)."""

DMA_LAYOUT = data.StructLayout({"op": Opcode, "store": 1, "buffer": Buffer, "addr": ADDR_BITS, "n": ADDR_BITS,
                                "ext": EXT_BITS})

WORD_BITS = 64
INSTRUCTION = data.UnionLayout({
    "op": Opcode, "halt": HALT_LAYOUT, "matmul": MATMUL_LAYOUT, "act": ACT_LAYOUT, "dma": DMA_LAYOUT,
    "wait": WAIT_LAYOUT, "bits": WORD_BITS,
})
"""One program word: `op` (shared by every instruction), the per-instruction views, `bits`."""

FIELD_MINIMUM = {"matmul": {"n": 1}, "act": {"n": 1}, "dma": {"n": 1}}
"""Fields whose value 0 is not allowed (all others range over their whole width)."""

FIELD_VALUES = {"act": {"length": "1..64 (64 encoded as 0)"}}
"""Fields whose values are not their plain binary range (the docs table says so)."""

LAYOUTS = {"halt": HALT_LAYOUT, "matmul": MATMUL_LAYOUT, "act": ACT_LAYOUT, "dma": DMA_LAYOUT,
           "wait": WAIT_LAYOUT}
for _layout in LAYOUTS.values():
    assert _layout.size <= WORD_BITS, "an instruction exceeds the program word"


def _name(member: enum.Enum) -> str:
    return member.name.lower()


def _member(enum_type, name: str, field: str):
    """The enum member called `name` (lower case) of a field's type; ValueError naming the field."""
    for member in enum_type:
        if _name(member) == name:
            return member
    raise ValueError(f"{field}: {name!r} is not one of {sorted(_name(m) for m in enum_type)}")


def _checked(kind: str, values: dict) -> dict:
    """`values` of a `kind` instruction after range checks derived from its layout's field widths."""
    layout = LAYOUTS[kind]
    for name, value in values.items():
        shape = layout[name].shape
        if isinstance(shape, type) and issubclass(shape, enum.Enum):
            continue
        low, width = FIELD_MINIMUM.get(kind, {}).get(name, 0), layout[name].width
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value < (1 << width):
            raise ValueError(f"{name}: {value!r} outside [{low}, {(1 << width) - 1}]")
    return values


def _word(kind: str, values: dict) -> int:
    return INSTRUCTION.const({kind: _checked(kind, values)}).as_bits()


@dataclass(frozen=True)
class Halt:
    """Stop the program."""

    def encode(self) -> int:
        return _word("halt", {"op": Opcode.HALT})


@dataclass(frozen=True)
class MatMul:
    """n data rows from `src` ("data"/"routing") at d_addr times the weight tile at w_addr,
    written (or added, `accumulate`) to partial-sum rows from p_addr (all to p_addr if `hold`)."""
    d_addr: int
    w_addr: int
    p_addr: int
    n: int
    accumulate: bool = False
    src: str = "data"
    hold: bool = False

    def encode(self) -> int:
        return _word("matmul", {
            "op": Opcode.MATMUL, "src": _member(Src, self.src, "src"), "accumulate": int(bool(self.accumulate)),
            "d_addr": self.d_addr, "w_addr": self.w_addr, "p_addr": self.p_addr, "n": self.n,
            "hold": int(bool(self.hold))})


@dataclass(frozen=True)
class Act:
    """Activation `func` on n partial-sum rows from p_addr (first `length` lanes), requantized by
    `shift`, int8 results to buffer `dst` from dst_addr (row mode, or column mode with stride)."""
    func: str
    p_addr: int
    n: int
    length: int
    shift: int
    dst: str
    dst_addr: int
    column: bool = False
    stride: int = 0

    def encode(self) -> int:
        if isinstance(self.length, bool) or not isinstance(self.length, int) or not 1 <= self.length <= 64:
            raise ValueError(f"length: {self.length!r} outside [1, 64]")
        return _word("act", {
            "op": Opcode.ACT, "func": _member(Func, self.func, "func"), "dst": _member(Dst, self.dst, "dst"),
            "column": int(bool(self.column)), "shift": self.shift, "length": self.length % 64,
            "p_addr": self.p_addr, "dst_addr": self.dst_addr, "n": self.n, "stride": self.stride})


@dataclass(frozen=True)
class Dma:
    """Move n rows between buffer `buffer` ("data"/"weight"/"routing") from row addr and the
    off-chip memory from beat ext: a load (off-chip -> buffer), or a store when `store`."""
    buffer: str
    addr: int
    n: int
    ext: int
    store: bool = False

    def encode(self) -> int:
        return _word("dma", {
            "op": Opcode.DMA, "store": int(bool(self.store)), "buffer": _member(Buffer, self.buffer, "buffer"),
            "addr": self.addr, "n": self.n, "ext": self.ext})


@dataclass(frozen=True)
class Wait:
    """Wait for the DMA engine to be idle and every issued MATMUL to have read its operands."""

    def encode(self) -> int:
        return _word("wait", {"op": Opcode.WAIT})


Instruction = Halt | MatMul | Act | Dma | Wait


def buffer_lanes(buffer: str, rows: int, cols: int) -> int:
    """int8 lanes of a row of `buffer` on an R x C array: data and routing R, weight C."""
    return cols if buffer == "weight" else rows


def beats_per_row(lanes: int, bytes_per_cycle: int) -> int:
    """Off-chip beats of a buffer row of `lanes` int8 lanes on a port of W = `bytes_per_cycle` bytes."""
    return -(-lanes // bytes_per_cycle)


def assemble(program: list[Instruction]) -> list[int]:
    """64-bit words of a program; a HALT is appended when the last instruction is not one."""
    words = [instruction.encode() for instruction in program]
    if not program or not isinstance(program[-1], Halt):
        words.append(Halt().encode())
    return words


def disassemble(word: int) -> Instruction:
    """The instruction a 64-bit word encodes (reserved opcodes read as Halt; a reserved ACT
    destination is a ValueError, as no `Act` expresses it)."""
    if not 0 <= word < 1 << WORD_BITS:
        raise ValueError(f"word: {word!r} is not a {WORD_BITS}-bit instruction word")
    view = INSTRUCTION.from_bits(word)
    try:
        op = view.op
    except ValueError:
        return Halt()
    if op == Opcode.MATMUL:
        f = view.matmul
        return MatMul(f.d_addr, f.w_addr, f.p_addr, f.n, bool(f.accumulate), _name(f.src), bool(f.hold))
    if op == Opcode.ACT:
        f = view.act
        try:
            dst = _name(f.dst)
        except ValueError:
            raise ValueError(f"dst: reserved destination in ACT word {word:#018x}") from None
        return Act(_name(f.func), f.p_addr, f.n, f.length or 64, f.shift, dst, f.dst_addr, bool(f.column), f.stride)
    if op == Opcode.DMA:
        f = view.dma
        try:
            buffer = _name(f.buffer)
        except ValueError:
            raise ValueError(f"buffer: reserved buffer in DMA word {word:#018x}") from None
        return Dma(buffer, f.addr, f.n, f.ext, bool(f.store))
    if op == Opcode.WAIT:
        return Wait()
    return Halt()


def encoding_table() -> str:
    """The instruction encodings as a markdown table (bits, field, values), from the layouts."""
    lines = ["| instruction | bits | field | values |", "| --- | --- | --- | --- |"]
    for kind, layout in LAYOUTS.items():
        for name, field in layout:
            high = field.offset + field.width - 1
            bits = str(field.offset) if field.width == 1 else f"{high}:{field.offset}"
            shape = field.shape
            if name == "op":
                values = f"{Opcode[kind.upper()].value} (opcode)"
            elif isinstance(shape, type) and issubclass(shape, enum.Enum):
                values = ", ".join(f"{m.value} {_name(m)}" for m in shape)
            elif name in FIELD_VALUES.get(kind, {}):
                values = FIELD_VALUES[kind][name]
            else:
                low = FIELD_MINIMUM.get(kind, {}).get(name, 0)
                values = f"{low}..{(1 << field.width) - 1}"
            lines.append(f"| {kind.upper()} | {bits} | {name} | {values} |")
    return "\n".join(lines)


def act_unit_cycles(cols: int, func: str, n: int, length: int, column: bool = False) -> int:
    """Cycles from the activation unit's start pulse to its done pulse for one ACT on C = `cols`
    lanes: row mode rows + latency + 1 (a partial-sum row per cycle), column mode elements +
    latency + 2 (an element per cycle). latency = `rtl.activation.latency(C, L')` (L' = L for
    squash and softmax, 1 for none and ReLU); rows = n rounded up to whole capsules; elements =
    the lanes written over those rows (`capsacc.mapping.act_lanes`)."""
    from rtl.activation import latency  # rtl.activation imports this module (its `Func`)

    span, width, last_width = act_lanes(cols, func, length)
    groups = -(-n // span)
    pipeline = latency(cols, length if func in ("squash", "softmax") else 1)
    if column:
        return groups * ((span - 1) * width + last_width) + pipeline + 2
    return groups * span + pipeline + 1


@dataclass(frozen=True)
class Timing:
    """When the instructions of a program issue on an R x C CapsAcc (cycle 0: the start pulse).

    `issue[i]`: the DISPATCH cycle in which instruction i issues; `busy_cycles`: cycles with busy
    high, start to HALT (the HALT's issue cycle)."""
    issue: tuple[int, ...]
    busy_cycles: int


def dma_cycles(instruction: "Dma", rows: int, cols: int, bytes_per_cycle: int, latency_cycles: int) -> int:
    """Cycles from a DMA instruction's issue to the first cycle its engine is idle again, with
    T = n * `beats_per_row` beats: a load T + L + 1 (a read request per cycle from issue + 1, each
    answered L cycles later, the row written as its last beat arrives), a store T + 2 (a buffer row
    read per beat from issue + 1, the beat written to the port a cycle later)."""
    beats = instruction.n * beats_per_row(buffer_lanes(instruction.buffer, rows, cols), bytes_per_cycle)
    return beats + 2 if instruction.store else beats + latency_cycles + 1


def timing(program: list[Instruction], rows: int, cols: int, bytes_per_cycle: int = ArrayConfig.offchip_bytes_per_cycle,
           latency_cycles: int = ArrayConfig.offchip_latency_cycles) -> Timing:
    """The exact schedule of `rtl.capsacc`'s control unit (a HALT is appended if missing), with an
    off-chip port of W = `bytes_per_cycle` bytes and L = `latency_cycles`.

    Busy rises in cycle 1 (FETCH); the word at pc is offered from cycle 2 (DISPATCH), the next one
    the cycle after an issue. A MATMUL issues (F) at the earliest in the cycle in which
    - the load engine is free or reads its last row: F >= F' + R (F' the previous MATMUL's issue);
    - the stream slot is free or being emptied: F >= M' (the previous MATMUL's move cycle);
    - its weight bank (banks alternate) is no longer in use: F >= S'' + C - 2, S'' the last
      data-row read of the MATMUL before the previous one (its last datum passes the last column
      of every row before the new rows are written, row r at F + 3 + r).
    Its weights are read in F + 1 .. F + R; its stream moves into the engine at
    M = max(F + 1, S'), S' the previous MATMUL's last read, and reads rows M + 1 .. M + n = S.
    Results are written at read + D (D = `capsacc.mapping.result_delay_cycles`, R + C + 2), so every
    MATMUL has written its results from cycle S + D + 1 on: an ACT issues at max(offered, that
    cycle). An ACT then starts the activation unit in the next cycle (`act_unit_cycles` to its
    done pulse) and the next word is offered the cycle after done. A DMA issues when the DMA engine
    is idle (`dma_cycles` after the previous DMA's issue). A WAIT issues when the engine is idle and
    every MATMUL has read its operands (F + R + 1 and S + 1). A HALT issues when every result is
    written and the engine is idle; its issue cycle is the busy cycles' last.
    """
    delay = result_delay_cycles(rows, cols)
    offered = 2
    load_free = slot_free = stream_free = drained = reads_done = dma_free = 0
    bank_ready = [0, 0]
    bank = 0
    issue = []
    for instruction in [*program, Halt()]:
        if isinstance(instruction, MatMul):
            fire = max(offered, load_free, slot_free, bank_ready[bank])
            move = max(fire + 1, stream_free)
            last_read = move + instruction.n
            load_free, slot_free, stream_free = fire + rows, move, last_read
            bank_ready[bank] = last_read + cols - 2
            drained = last_read + delay + 1
            reads_done = max(fire + rows + 1, last_read + 1)
            bank ^= 1
            offered = fire + 1
        elif isinstance(instruction, Dma):
            fire = max(offered, dma_free)
            dma_free = fire + dma_cycles(instruction, rows, cols, bytes_per_cycle, latency_cycles)
            offered = fire + 1
        elif isinstance(instruction, Wait):
            fire = max(offered, dma_free, reads_done)
            offered = fire + 1
        elif isinstance(instruction, Act):
            fire = max(offered, drained)
            offered = fire + 2 + act_unit_cycles(cols, instruction.func, instruction.n, instruction.length,
                                                 instruction.column)
        else:
            fire = max(offered, drained, dma_free)
        issue.append(fire)
        if isinstance(instruction, Halt):
            break
    return Timing(tuple(issue), issue[-1])


def program_cycles(program: list[Instruction], rows: int, cols: int,
                   bytes_per_cycle: int = ArrayConfig.offchip_bytes_per_cycle,
                   latency_cycles: int = ArrayConfig.offchip_latency_cycles) -> int:
    """Busy cycles of a program on an R x C CapsAcc (start to HALT; a HALT is appended if missing)
    with an off-chip port of W = `bytes_per_cycle` bytes and L = `latency_cycles`."""
    return timing(program, rows, cols, bytes_per_cycle, latency_cycles).busy_cycles
