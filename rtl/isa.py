"""The CapsAcc instruction set: 64-bit instruction words, an assembler and a disassembler.

The encoding is declared once, here, as `amaranth.lib.data` layouts with `amaranth.lib.enum`
field types: `MATMUL_LAYOUT`, `ACT_LAYOUT`, `DMA_LAYOUT`, `WAIT_LAYOUT` and `HALT_LAYOUT` (one `StructLayout` per instruction,
fields from bit 0 up, every one starting with the 4-bit `Opcode`), joined by `INSTRUCTION`, a
64-bit `UnionLayout` view of a program word. The control unit (`rtl.capsacc`) decodes a word
through that view; `assemble` builds words with `INSTRUCTION.const(...)` and `disassemble` reads
them with `INSTRUCTION.from_bits(...)`, so no bit position is written anywhere else.
`encoding_table()` renders the layouts as the table of docs/rtl.md. The instructions themselves
(`MatMul`, `Act`, `Dma`, `Wait`, `Halt`: plain data) and the control unit's exact schedule (`timing`,
`program_cycles`, `dma_cycles`, `act_unit_cycles`) are defined in `capsacc.schedule`, which the
calibrated model shares; this module re-exports them and `encode`s them.

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

DMA: one transfer between the off-chip memory and an int8 buffer or the program memory, run by the
DMA engine (`rtl.dma`) while later instructions go on (it issues when the engine is idle).
    store       0: load (off-chip -> buffer), 1: store (buffer -> off-chip)
    buffer      `Buffer`: data, weight, routing, or program (a row is a 64-bit word, 8 lanes, byte j
                its bits 8j + 7..8j; addresses wrap modulo the program depth; a store from it writes
                zeros: the program memory has no DMA read port)
    addr        first buffer row
    n           rows (>= 1)
    ext         first off-chip beat (a beat is the port's W bytes): buffer row addr + i is beats
                ext + i * b .. ext + i * b + b - 1, b = ceil(lanes / W) (`beats_per_row`), its lane
                j in byte j of that run of beats (a store writes zeros past the row's lanes)
A program may load words into the program memory (overlays, `capsacc.schedule.overlay_program`):
the program counter wraps at the program depth, and since fetch runs two words ahead, a word a load
writes may be executed only when fetched after the engine was idle: from the second word after the
next WAIT or DMA (which wait for the engine) on (`sim.golden.execute` refuses a program that breaks this).

WAIT: wait until the DMA engine is idle and every issued MATMUL has read its operands (the load
and stream engines are idle; results may still be in flight). The one synchronisation between
transfers and compute: a program loads the next tile into the other half of a buffer, issues the
MATMULs of the current one, then WAITs before it reuses that half.
"""

from amaranth.lib import data, enum

from capsacc.schedule import (EXT_BITS, Act, Dma, Halt, Instruction, MatMul, Timing, Wait, act_unit_cycles,
                              beats_per_row, buffer_lanes, dma_cycles, program_cycles, timing)

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
    """DMA: the on-chip memory of a transfer: an int8 buffer, or the program memory (rows of one
    64-bit word, `capsacc.schedule.PROGRAM_WORD_BYTES` bytes)."""
    DATA = 0
    WEIGHT = 1
    ROUTING = 2
    PROGRAM = 3


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


def encode(instruction: Instruction) -> int:
    """The 64-bit word of an instruction (`capsacc.schedule`'s plain data); ValueError naming the
    field when a value is outside its field's range."""
    if isinstance(instruction, MatMul):
        return _word("matmul", {
            "op": Opcode.MATMUL, "src": _member(Src, instruction.src, "src"),
            "accumulate": int(bool(instruction.accumulate)), "d_addr": instruction.d_addr,
            "w_addr": instruction.w_addr, "p_addr": instruction.p_addr, "n": instruction.n,
            "hold": int(bool(instruction.hold))})
    if isinstance(instruction, Act):
        length = instruction.length
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= 64:
            raise ValueError(f"length: {length!r} outside [1, 64]")
        return _word("act", {
            "op": Opcode.ACT, "func": _member(Func, instruction.func, "func"),
            "dst": _member(Dst, instruction.dst, "dst"), "column": int(bool(instruction.column)),
            "shift": instruction.shift, "length": length % 64, "p_addr": instruction.p_addr,
            "dst_addr": instruction.dst_addr, "n": instruction.n, "stride": instruction.stride})
    if isinstance(instruction, Dma):
        return _word("dma", {
            "op": Opcode.DMA, "store": int(bool(instruction.store)),
            "buffer": _member(Buffer, instruction.buffer, "buffer"), "addr": instruction.addr, "n": instruction.n,
            "ext": instruction.ext})
    if isinstance(instruction, Wait):
        return _word("wait", {"op": Opcode.WAIT})
    return _word("halt", {"op": Opcode.HALT})


def assemble(program: list[Instruction]) -> list[int]:
    """64-bit words of a program; a HALT is appended when the last instruction is not one."""
    words = [encode(instruction) for instruction in program]
    if not program or not isinstance(program[-1], Halt):
        words.append(encode(Halt()))
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
        return Dma(_name(f.buffer), f.addr, f.n, f.ext, bool(f.store))
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
