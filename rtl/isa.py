"""The CapsAcc instruction set: 64-bit instruction words, an assembler and a disassembler.

Every instruction is one 64-bit word; bits 3:0 are the opcode.

HALT (opcode 0): stop; `busy` falls and `done` rises.

MATMUL (opcode 1): load a weight tile, stream data rows through the array, accumulate results.
    bit 4       src         0: data buffer, 1: routing buffer (the source of the data rows)
    bit 5       accumulate  0: write the tile result, 1: add it to the stored partial sum
    bits 19:6   d_addr      first data row (a row holds R int8 lanes, lane r meets PE row r)
    bits 33:20  w_addr      first weight-tile row: tile row r (C int8 lanes) is weight row
                            w_addr + r and goes to PE row r
    bits 47:34  p_addr      first partial-sum row
    bits 61:48  n           number of data rows (>= 1); data row d_addr + k gives result row k
    bit 62      hold        0: result row k goes to partial-sum row p_addr + k; 1: all n results
                            go to row p_addr (a reduction over data rows; exercises the
                            accumulator's read-after-write forwarding)
    Cycles: 2 (fetch, decode) + R (weight load) + n (stream) + R + C + 1 (drain:
    array latency R + C - 1, one cycle to write, one to see the count reach zero).

ACT (opcode 2): the activation unit on partial-sum rows (see `rtl.activation`).
    bits 5:4    func        0: none (requantize only), 1: ReLU, 2: squash, 3: softmax
    bits 7:6    dst         0: data buffer, 1: weight buffer, 2: routing buffer
    bit 8       column      0: row mode, element (j, l) -> row dst_addr + j, lane l;
                            1: column mode, element (j, l) -> row dst_addr + j * stride + l, lane j
    bits 13:9   shift       requantization shift (0..31)
    bits 19:14  length      lanes per row (1..63; lanes >= length are ignored)
    bits 33:20  p_addr      first partial-sum row
    bits 47:34  dst_addr    first destination row
    bits 57:48  n           number of rows (1..1023)
    bits 63:58  stride      column-mode row stride (0..63)
    Cycles: 2 (fetch, decode) + 1 (start) + per row (none/ReLU: 2 + length; squash:
    2 * length + 42; softmax: 3 * length + 31) + 1 (finish).

Opcodes 3..15 are reserved and halt the machine like HALT.
"""

from dataclasses import dataclass

OP_HALT, OP_MATMUL, OP_ACT = 0, 1, 2
SRC_DATA, SRC_ROUTING = 0, 1
DST_DATA, DST_WEIGHT, DST_ROUTING = 0, 1, 2
FUNCS = {"none": 0, "relu": 1, "squash": 2, "softmax": 3}
DSTS = {"data": DST_DATA, "weight": DST_WEIGHT, "routing": DST_ROUTING}
SRCS = {"data": SRC_DATA, "routing": SRC_ROUTING}
ADDR_BITS = 14


def _field(name: str, value: int, bits: int, low: int = 0) -> int:
    if not isinstance(value, int) or not low <= value < (1 << bits):
        raise ValueError(f"{name}: {value!r} outside [{low}, {(1 << bits) - 1}]")
    return value


@dataclass(frozen=True)
class Halt:
    """Stop the program."""

    def encode(self) -> int:
        return OP_HALT


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
        if self.src not in SRCS:
            raise ValueError(f"src: {self.src!r} is not one of {sorted(SRCS)}")
        word = OP_MATMUL | SRCS[self.src] << 4 | int(bool(self.accumulate)) << 5
        word |= _field("d_addr", self.d_addr, ADDR_BITS) << 6
        word |= _field("w_addr", self.w_addr, ADDR_BITS) << 20
        word |= _field("p_addr", self.p_addr, ADDR_BITS) << 34
        word |= _field("n", self.n, ADDR_BITS, 1) << 48
        return word | int(bool(self.hold)) << 62


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
        if self.func not in FUNCS:
            raise ValueError(f"func: {self.func!r} is not one of {sorted(FUNCS)}")
        if self.dst not in DSTS:
            raise ValueError(f"dst: {self.dst!r} is not one of {sorted(DSTS)}")
        word = OP_ACT | FUNCS[self.func] << 4 | DSTS[self.dst] << 6 | int(bool(self.column)) << 8
        word |= _field("shift", self.shift, 5) << 9
        word |= _field("length", self.length, 6, 1) << 14
        word |= _field("p_addr", self.p_addr, ADDR_BITS) << 20
        word |= _field("dst_addr", self.dst_addr, ADDR_BITS) << 34
        word |= _field("n", self.n, 10, 1) << 48
        return word | _field("stride", self.stride, 6) << 58


Instruction = Halt | MatMul | Act


def assemble(program: list[Instruction]) -> list[int]:
    """64-bit words of a program; a HALT is appended when the last instruction is not one."""
    words = [instruction.encode() for instruction in program]
    if not program or not isinstance(program[-1], Halt):
        words.append(Halt().encode())
    return words


def disassemble(word: int) -> Instruction:
    """The instruction a 64-bit word encodes (reserved opcodes read as Halt)."""
    op = word & 0xF
    bits = lambda low, width: (word >> low) & ((1 << width) - 1)  # noqa: E731
    if op == OP_MATMUL:
        src = {v: k for k, v in SRCS.items()}[bits(4, 1)]
        return MatMul(bits(6, 14), bits(20, 14), bits(34, 14), bits(48, 14), bool(bits(5, 1)), src,
                      bool(bits(62, 1)))
    if op == OP_ACT:
        func = {v: k for k, v in FUNCS.items()}[bits(4, 2)]
        dst = {v: k for k, v in DSTS.items()}.get(bits(6, 2), "data")
        return Act(func, bits(20, 14), bits(48, 10), bits(14, 6), bits(9, 5), dst, bits(34, 14),
                   bool(bits(8, 1)), bits(58, 6))
    return Halt()


def matmul_cycles(rows: int, cols: int, n: int) -> int:
    """Cycles of one MATMUL instruction, fetch and decode included."""
    return 2 + rows + n + rows + cols + 1


def act_cycles(func: str, n: int, length: int) -> int:
    """Cycles of one ACT instruction, fetch and decode included."""
    per_row = {"none": 2 + length, "relu": 2 + length, "squash": 2 * length + 42,
               "softmax": 3 * length + 31}[func]
    return 2 + 1 + n * per_row + 1


def program_cycles(program: list[Instruction], rows: int, cols: int) -> int:
    """Busy cycles of a program on an R x C CapsAcc (start to HALT; a HALT is appended if missing)."""
    total = 0
    for instruction in program:
        if isinstance(instruction, MatMul):
            total += matmul_cycles(rows, cols, instruction.n)
        elif isinstance(instruction, Act):
            total += act_cycles(instruction.func, instruction.n, instruction.length)
        else:
            return total + 2
    return total + 2
