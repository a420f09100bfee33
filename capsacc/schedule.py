"""The CapsAcc control unit's schedule and the DMA session's ordering: the one definition of both,
for the RTL side (`rtl.isa` re-exports the instructions and the timing, `sim.host.DmaSession`
plays the ordering with data) and for the calibrated model (`capsacc.programs`: an operation's
total cycles, data movement included, without simulating).

- The instructions as plain data (`MatMul`, `Act`, `Dma`, `Wait`, `Halt`; fields as `rtl.isa`
  documents them, which encodes them as 64-bit words).
- `timing`: the exact issue cycle of every instruction of a program on an R x C CapsAcc with an
  off-chip port of W bytes a cycle and L cycles of latency (tested against the RTL), from
  `act_unit_cycles` (the activation unit, its pipeline `activation_latency_cycles`) and `dma_cycles`
  (the DMA engine).
- `DmaScheduler`: how a session's buffer writes, programs and result reads become DMA programs
  (loads, stores, WAITs, ping-pong prefetch), a stream longer than the program memory one overlay
  program that loads its own later segments (`overlay_loads`, `resident_words`).
"""

import bisect
import functools
from dataclasses import dataclass, field

from capsacc.array import ArrayConfig
from capsacc.mapping import act_lanes, result_delay_cycles


@dataclass(frozen=True)
class Halt:
    """Stop the program."""


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


@dataclass(frozen=True)
class Dma:
    """Move n rows between buffer `buffer` ("data"/"weight"/"routing", or "program": the program
    memory, a row a 64-bit word) from row addr and the off-chip memory from beat ext: a load
    (off-chip -> buffer), or a store when `store` (a store from the program memory writes zeros)."""
    buffer: str
    addr: int
    n: int
    ext: int
    store: bool = False


@dataclass(frozen=True)
class Wait:
    """Wait for the DMA engine to be idle and every issued MATMUL to have read its operands."""


Instruction = Halt | MatMul | Act | Dma | Wait

MATMUL_MAX_ROWS = (1 << 14) - 1
"""Most rows of one MATMUL or DMA (their 14-bit n fields)."""

REQUANT_STAGES = 5
"""Pipeline stages of the activation unit's requantization (`rtl.activation`)."""
OPERAND_STAGES = 2
"""Pipeline stages of its operand (q^2 or EXP[m - q])."""
SCALE_STAGES = 11
"""Pipeline stages of its scaling (divisor, tables, multiplies, rounding)."""


def scan_levels(cols: int) -> int:
    """W: levels of the activation unit's segmented scans over C = `cols` lanes, ceil(log2 C)."""
    return (cols - 1).bit_length()


def activation_latency_cycles(cols: int, length: int) -> int:
    """Cycles from a partial-sum row at the input of the C = `cols` lane activation unit to its
    result at the output, for capsules of L = `length` atoms: 20 + 4 ceil(log2 C) + 2 ceil(L / C)."""
    return REQUANT_STAGES + 2 * (2 * scan_levels(cols) + 1 + -(-length // cols)) + OPERAND_STAGES + SCALE_STAGES


PROGRAM_WORD_BYTES = 8
"""Bytes of a program memory row (a 64-bit instruction word, byte j its bits 8j + 7 .. 8j) as the DMA moves it."""

OVERLAY_MIN_DEPTH = 8
"""The smallest program memory that runs overlays (`overlay_program`): a half of 4 words holds the
program load, one instruction and the two WAITs."""


def buffer_lanes(buffer: str, rows: int, cols: int) -> int:
    """int8 lanes (bytes) of a row of `buffer` on an R x C array: data and routing R, weight C,
    program `PROGRAM_WORD_BYTES`."""
    if buffer == "program":
        return PROGRAM_WORD_BYTES
    return cols if buffer == "weight" else rows


def beats_per_row(lanes: int, bytes_per_cycle: int) -> int:
    """Off-chip beats of a buffer row of `lanes` int8 lanes on a port of W = `bytes_per_cycle` bytes."""
    return -(-lanes // bytes_per_cycle)


def act_unit_cycles(cols: int, func: str, n: int, length: int, column: bool = False) -> int:
    """Cycles from the activation unit's start pulse to its done pulse for one ACT on C = `cols`
    lanes: row mode rows + latency + 1 (a partial-sum row per cycle), column mode elements +
    latency + 2 (an element per cycle). latency = `activation_latency_cycles(C, L')` (L' = L for
    squash and softmax, 1 for none and ReLU); rows = n rounded up to whole capsules; elements =
    the lanes written over those rows (`capsacc.mapping.act_lanes`)."""
    span, width, last_width = act_lanes(cols, func, length)
    groups = -(-n // span)
    pipeline = activation_latency_cycles(cols, length if func in ("squash", "softmax") else 1)
    if column:
        return groups * ((span - 1) * width + last_width) + pipeline + 2
    return groups * span + pipeline + 1


def dma_cycles(instruction: Dma, rows: int, cols: int, bytes_per_cycle: int, latency_cycles: int) -> int:
    """Cycles from a DMA instruction's issue to the first cycle its engine is idle again, with
    T = n * `beats_per_row` beats: a load T + L + 1 (a read request per cycle from issue + 1, each
    answered L cycles later, the row written as its last beat arrives), a store T + 3 (a buffer row
    read per beat from issue + 1, registered behind the buffer, the beat written to the port two
    cycles after its read)."""
    beats = instruction.n * beats_per_row(buffer_lanes(instruction.buffer, rows, cols), bytes_per_cycle)
    return beats + 3 if instruction.store else beats + latency_cycles + 1


@dataclass(frozen=True)
class Timing:
    """When the instructions of a program issue on an R x C CapsAcc (cycle 0: the start pulse).

    `issue[i]`: the DISPATCH cycle in which instruction i issues; `busy_cycles`: cycles with busy
    high, start to HALT (the HALT's issue cycle)."""
    issue: tuple[int, ...]
    busy_cycles: int


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
    Results are registered at read + D (D = `capsacc.mapping.result_delay_cycles`, R + C + 3) and
    written a cycle later, so every MATMUL has its results in hand from cycle S + D + 1 on: an ACT
    issues at max(offered, that cycle). An ACT then starts the activation unit in the next cycle,
    when the last row is in memory (`act_unit_cycles` to its
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


def act_rows(act: Act, cols: int) -> tuple[int, int]:
    """(first, count): rows of the destination buffer an ACT may write (a bound, from `dst_addr`;
    addresses wrap modulo the depth), for `DmaScheduler`'s ordering of transfers around it."""
    span = -(-act.length // cols) if act.func in ("squash", "softmax") else 1
    groups = -(-act.n // span)
    if act.column:
        return act.dst_addr, (groups - 1) * span * act.stride + span * cols
    if act.stride:
        return act.dst_addr, groups + (span - 1) * act.stride
    return act.dst_addr, groups * span


def overlay_program(stream: list[Instruction], program_depth: int, bytes_per_cycle: int, allocate) -> list[Instruction]:
    """The one program (no HALT) that runs `stream` (no HALT, longer than the program memory) as
    overlays on a program memory of P = `program_depth` words (P >= `OVERLAY_MIN_DEPTH`) used as two
    halves of H = P / 2 words (the program counter wraps at P). Segment s, words s H .. s H + H - 1
    of the program in half s mod 2, is a DMA that loads segment s + 1 into the other half (which held
    segment s - 1, done), H - 3 instructions of the stream and two WAITs; the last segment is the
    rest of the stream (at most H - 1 instructions, then the HALT `assemble` appends). Segment
    s + 1's words (HALT included) lie at `allocate(beats)`, the first of `beats` new beats of the
    off-chip image (`PROGRAM_WORD_BYTES` a word, `beats_per_row` beats). Two WAITs because fetch
    runs two words ahead: the first issues once the engine is idle (the load's last word written
    the cycle before) and fetches the other half's first word, already rewritten; the second, fetched
    before it, issues at once. The host writes segment 0 (`resident_words`) and the image (segment
    s + 1's words at the beat of the s-th program load, `overlay_loads`), then starts once."""
    half = program_depth // 2
    per_segment = half - 3
    count = -(-(len(stream) - half + 1) // per_segment)  # segments before the last
    pieces = [stream[s * per_segment:(s + 1) * per_segment] for s in range(count)] + [stream[count * per_segment:]]
    words = [half] * count + [len(pieces[-1]) + 1]
    per_word = beats_per_row(PROGRAM_WORD_BYTES, bytes_per_cycle)
    program = []
    for s, piece in enumerate(pieces[:-1]):
        load = Dma("program", (s + 1) % 2 * half, words[s + 1], allocate(words[s + 1] * per_word))
        program += [load, *piece, Wait(), Wait()]
    return program + pieces[-1]


def overlay_loads(program: list[Instruction], program_depth: int) -> list[tuple[int, int, int]]:
    """(first beat, first word, words) of each load of `program` into the program memory of
    P = `program_depth` words (`overlay_program`): the k-th loads the words of segment k + 1, from
    word (k + 1) P / 2 of the program as `assemble` lays it out (HALT last)."""
    half = program_depth // 2
    loads = [i for i in program if isinstance(i, Dma) and i.buffer == "program" and not i.store]
    return [(load.ext, (k + 1) * half, load.n) for k, load in enumerate(loads)]


def program_load_beats(program: list[Instruction], program_depth: int, bytes_per_cycle: int) -> int:
    """Off-chip beats of the program words that `program` loads into the program memory of
    `program_depth` words (an overlay program's later segments, `overlay_loads`; 0 for a program the host
    writes whole): each word `PROGRAM_WORD_BYTES` bytes, `beats_per_row` beats on a port of W =
    `bytes_per_cycle` bytes (the beats `sim.host.DmaSession.program_beats` counts)."""
    words = sum(n for _, _, n in overlay_loads(program, program_depth))
    return words * beats_per_row(PROGRAM_WORD_BYTES, bytes_per_cycle)


def resident_words(words: int, program_depth: int) -> int:
    """How many of a program's `words` words (HALT included) the host writes into the program memory
    of P = `program_depth` words before the start: all of them, or an overlay program's (more than P
    words, `overlay_program`) first segment, P / 2."""
    return words if words <= program_depth else program_depth // 2


@dataclass
class _Item:
    """One place of `DmaScheduler`'s schedule: a step (consecutive MATMULs on the same data rows),
    an ACT or a store; `loads` are the transfers it needs first, `rows` the buffer rows it reads or
    writes and `loaded` those its loads write (memory -> set of row numbers), against which a
    prefetch is checked; a step's `key` (source buffer, first data row, rows), the number of
    steps `merged` into it and its `cycles`, the sum of max(n, R) over its MATMULs."""

    kind: str
    instructions: list
    loads: list
    rows: dict
    loaded: dict
    key: tuple = ()
    merged: int = 1
    cycles: int = 0


EXT_BITS = 29
"""Width of the DMA's off-chip beat address."""


@functools.lru_cache(maxsize=1 << 12)
def _rows(first: int, n: int, depth: int) -> frozenset:
    """The buffer rows first .. first + n - 1 modulo `depth` (shared, immutable)."""
    if first + n <= depth:
        return frozenset(range(first, first + n))
    return frozenset(row % depth for row in range(first, first + n))


class PendingRows:
    """The rows of one buffer (`depth` rows, `per_row` off-chip beats each) that a load has placed in
    the off-chip image and no transfer has taken yet: sorted, disjoint pieces (first row, end row,
    beat of the first row), each of consecutive rows at consecutive beats. A later load of a row
    replaces the earlier one."""

    def __init__(self, depth: int, per_row: int):
        self.depth, self.per_row = depth, per_row
        self._starts: list[int] = []
        self._pieces: list[tuple[int, int, int]] = []

    def _cut(self, first: int, end: int) -> list[tuple[int, int, int]]:
        """Remove rows first .. end - 1 (0 <= first < end <= depth); the pieces removed, ascending."""
        index = bisect.bisect_right(self._starts, first) - 1
        if index < 0 or self._pieces[index][1] <= first:
            index += 1
        removed, kept, stop = [], [], index
        while stop < len(self._pieces) and self._pieces[stop][0] < end:
            start, finish, beat = self._pieces[stop]
            if start < first:
                kept.append((start, first, beat))
            low, high = max(start, first), min(finish, end)
            removed.append((low, high, beat + (low - start) * self.per_row))
            if finish > end:
                kept.append((end, finish, beat + (end - start) * self.per_row))
            stop += 1
        self._pieces[index:stop] = kept
        self._starts[index:stop] = [piece[0] for piece in kept]
        return removed

    def add(self, base: int, n: int, beat: int) -> None:
        """Rows base .. base + n - 1 (modulo the depth) at beats beat, beat + per_row, ..."""
        if n > self.depth:
            base, beat, n = base + n - self.depth, beat + (n - self.depth) * self.per_row, self.depth
        base %= self.depth
        pieces = [(base, min(base + n, self.depth), beat)]
        if base + n > self.depth:
            pieces.append((0, base + n - self.depth, beat + (self.depth - base) * self.per_row))
        for first, end, first_beat in pieces:
            self._cut(first, end)
            index = bisect.bisect_left(self._starts, first)
            self._pieces.insert(index, (first, end, first_beat))
            self._starts.insert(index, first)

    def take(self, first: int, n: int) -> list[tuple[int, int, int]]:
        """Remove the pending rows among first .. first + n - 1 (modulo the depth); the pieces
        removed (first row, end row, beat of the first row), in ascending row order."""
        if not self._pieces:
            return []
        first %= self.depth
        if n >= self.depth:
            return self._cut(0, self.depth)
        if first + n <= self.depth:
            return self._cut(first, first + n)
        return self._cut(0, first + n - self.depth) + self._cut(first, self.depth)


@dataclass
class DmaScheduler:
    """The ordering of a session in which the host only writes programs and the off-chip image:
    every buffer write (`load`) becomes a region of the off-chip image (beats allocated in order
    from 0) and DMA loads, every result read (`store`) a DMA store. The programs given to `execute`
    are merged and rescheduled: each step's loads are issued before the previous step's MATMULs
    (ping-pong between the rows of consecutive steps) when no row is shared (`_Item.rows`), else
    after them; each step ends with a WAIT; `flush` makes the merged stream one program (a HALT is
    appended), an overlay program (`overlay_program`) when it does not fit the program memory
    (`program_depth` >= `OVERLAY_MIN_DEPTH`; a smaller one cuts it into programs of `program_depth` - 1
    instructions the host starts in turn), and starts the image again from beat 0.
    `compute_cycles`: `timing` of the given programs with preloaded buffers."""

    rows: int
    cols: int
    depth: int
    program_depth: int
    bytes_per_cycle: int
    latency_cycles: int
    compute_cycles: int = 0
    offchip_beats: int = 0
    """The most beats of off-chip image one flush used."""
    next_beat: int = 0
    """The first free beat of the current image."""
    image_beats: int = 0
    """Beats of the image the last flush used (its program words included)."""
    _pending: dict = field(default_factory=dict)
    _items: list = field(default_factory=list)
    _loads_made: dict = field(default_factory=dict)
    _taken: dict = field(default_factory=dict)

    def __post_init__(self):
        self._pending = {memory: PendingRows(self.depth, beats_per_row(buffer_lanes(memory, self.rows, self.cols),
                                                                        self.bytes_per_cycle))
                         for memory in ("data", "weight", "routing")}
        self._loads_made = dict.fromkeys(self._pending, 0)

    def _beats(self, memory: str) -> int:
        """Off-chip beats per row of `memory`."""
        return self._pending[memory].per_row

    def _span(self, first: int, n: int) -> frozenset:
        """The buffer rows first .. first + n - 1, modulo the depth (shared: never changed in place)."""
        return _rows(first, n, self.depth)

    def _loaded(self, loads: list) -> dict:
        """The rows the transfers `loads` write, by buffer."""
        rows = {}
        for load in loads:
            rows.setdefault(load.buffer, set()).update(_rows(load.addr, load.n, self.depth))
        return rows

    def _item(self, kind: str, instructions: list, loads: list, rows: dict, key: tuple = ()) -> _Item:
        return _Item(kind, instructions, loads, rows, self._loaded(loads), key)

    def allocate(self, beats: int) -> int:
        """The first beat of `beats` new beats of the off-chip image."""
        first = self.next_beat
        self.next_beat += beats
        if self.next_beat >= 1 << EXT_BITS:
            raise ValueError(f"off-chip image of {self.next_beat} beats exceeds the DMA's {EXT_BITS}-bit address")
        self.offchip_beats = max(self.offchip_beats, self.next_beat)
        return first

    def load(self, memory: str, base: int, n: int) -> int:
        """`n` rows of the off-chip image to be loaded into `memory` from row `base`; their first beat."""
        per_row = self._beats(memory)
        first = self.allocate(n * per_row)
        self._pending[memory].add(base, n, first)
        self._loads_made[memory] += 1
        return first

    def store(self, memory: str, base: int, n: int) -> int:
        """Store rows base..base+n-1 of `memory` to new beats of the off-chip image; their first beat."""
        ext = self.allocate(n * self._beats(memory))
        self._items.append(self._item("store", [Dma(memory, base, n, ext, store=True)], self._take(memory, base, n),
                                      {memory: self._span(base, n)}))
        return ext

    def _take(self, memory: str, first: int, n: int) -> list:
        """The loads of the pending rows among first .. first + n - 1 (modulo the depth), in row
        order, no longer pending: one per run of consecutive rows at consecutive beats, of at most
        `MATMUL_MAX_ROWS` rows (`_coalesce`'s rule). A window taken whole since the last `load` into
        `memory` has nothing pending (only `load` makes rows pending): no look."""
        window_key = (memory, first, n)
        if self._taken.get(window_key) == self._loads_made[memory]:
            return []
        self._taken[window_key] = self._loads_made[memory]
        per_row = self._beats(memory)
        loads = []
        start = count = ext = 0
        for row, end, beat in self._pending[memory].take(first, n):
            if not (count and row == start + count and beat == ext + count * per_row):
                if count:
                    loads += self._chunks(memory, start, count, ext)
                start, count, ext = row, 0, beat
            count += end - row
        if count:
            loads += self._chunks(memory, start, count, ext)
        return loads

    def _chunks(self, memory: str, start: int, count: int, ext: int) -> list:
        """The loads of `count` consecutive rows from `start` at consecutive beats from `ext`, in
        pieces of at most `MATMUL_MAX_ROWS` rows."""
        if count <= MATMUL_MAX_ROWS:
            return [Dma(memory, start, count, ext)]
        per_row = self._beats(memory)
        return [Dma(memory, start + done, min(MATMUL_MAX_ROWS, count - done), ext + done * per_row)
                for done in range(0, count, MATMUL_MAX_ROWS)]

    def _coalesce(self, loads: list) -> list:
        """`loads` with each one that continues the previous (same buffer, next rows, next beats) merged into it."""
        merged = []
        for load in loads:
            last = merged[-1] if merged else None
            if (last and last.buffer == load.buffer and last.addr + last.n == load.addr
                    and last.n + load.n <= MATMUL_MAX_ROWS and last.ext + last.n * self._beats(load.buffer) == load.ext):
                merged[-1] = Dma(load.buffer, last.addr, last.n + load.n, last.ext)
            else:
                merged.append(load)
        return merged

    def execute(self, program: list[Instruction]) -> None:
        """Schedule `program` (no HALT) after what came before."""
        self.compute_cycles += timing(program, self.rows, self.cols).busy_cycles
        first = len(self._items)
        self._add(program)
        self._merge_steps(first)

    def _merge_steps(self, first: int) -> None:
        """Join the short steps of the run whose items start at `first` (a step of few data rows
        per MATMUL, as routing's, would pay a transfer's latency and a WAIT for little compute):
        consecutive steps merge while the merged step computes for fewer than 8 (L + 2 R) cycles
        (each MATMUL max(n, R); its transfers then pay the latency rarely), holds at most half of the
        run's steps (so that the next run's first half can load under its second), and loads no row
        it reads or loads already."""
        items = self._items[first:]
        steps = sum(item.kind == "step" for item in items)
        target = 8 * (self.latency_cycles + 2 * self.rows)
        merged = []
        for item in items:
            last = merged[-1] if merged else None
            if (last and last.kind == item.kind == "step" and last.merged < max(1, steps // 2)
                    and last.cycles < target and not self._conflicts(item.loads, last)):
                last.instructions += item.instructions
                last.cycles += item.cycles
                last.loads = self._coalesce(sorted(last.loads + item.loads, key=lambda load: (load.buffer, load.addr)))
                last.merged += 1
                for memory, rows in item.rows.items():
                    last.rows[memory] = last.rows.get(memory, set()) | rows
                for memory, rows in item.loaded.items():
                    last.loaded.setdefault(memory, set()).update(rows)
            else:
                merged.append(item)
        self._items[first:] = merged

    def _conflicts(self, loads: list, item: _Item) -> bool:
        """Whether `loads` write a row that `item` reads, writes or loads."""
        for load in loads:
            rows = _rows(load.addr, load.n, self.depth)
            if not rows.isdisjoint(item.rows.get(load.buffer, ())) or \
                    not rows.isdisjoint(item.loaded.get(load.buffer, ())):
                return True
        return False

    def _add(self, program: list[Instruction]) -> None:
        """The items of `program`: steps (consecutive MATMULs on the same data rows, none of whose
        loads rewrites a row the step reads or loads, as the next run's operand in the same rows)
        and ACTs."""
        for instruction in program:
            if isinstance(instruction, MatMul):
                previous = self._items[-1] if self._items else None
                key = (instruction.src, instruction.d_addr, instruction.n)
                loads = (self._take(instruction.src, instruction.d_addr, instruction.n)
                         + self._take("weight", instruction.w_addr, self.rows))
                tile = _rows(instruction.w_addr, self.rows, self.depth)
                if (previous and previous.kind == "step" and previous.key == key
                        and not self._conflicts(loads, previous)):  # a reload of its rows: a new step
                    previous.instructions.append(instruction)
                    previous.cycles += max(instruction.n, self.rows)
                    previous.loads = self._coalesce(previous.loads + loads)
                    previous.rows["weight"] |= tile
                    for memory, rows in self._loaded(loads).items():
                        previous.loaded.setdefault(memory, set()).update(rows)  # its own sets: grown in place
                else:
                    source = self._span(instruction.d_addr, instruction.n)
                    item = self._item("step", [instruction], loads, {instruction.src: source, "weight": set(tile)}, key)
                    item.cycles = max(instruction.n, self.rows)
                    self._items.append(item)
            elif isinstance(instruction, Act):
                first, count = act_rows(instruction, self.cols)
                self._items.append(self._item("act", [instruction], self._take(instruction.dst, first, count),
                                              {instruction.dst: self._span(first, count)}))

    def _schedule(self) -> list:
        """The merged instruction stream of the items (see the class docstring)."""
        stream, prefetched = [], set()
        steps = [i for i, item in enumerate(self._items) if item.kind == "step"]
        for index, item in enumerate(self._items):
            if index not in prefetched and item.loads:
                stream += item.loads + [Wait()]
            if item.kind != "step":
                stream += item.instructions
                continue
            position = bisect.bisect_right(steps, index)
            following = steps[position] if position < len(steps) else None
            if following is not None and self._prefetchable(index, following):
                # One prefetch before each MATMUL (a DMA issues when the engine is idle: the
                # MATMULs between keep the array busy while it moves the previous one).
                loads = self._items[following].loads
                prefetched.add(following)
                for position, matmul in enumerate(item.instructions):
                    stream += loads[position:position + 1] + [matmul]
                stream += loads[len(item.instructions):]
            else:
                stream += item.instructions
            stream += [Wait()]
        loads = [load for memory in self._pending for load in self._take(memory, 0, self.depth)]
        return stream + loads

    def _prefetchable(self, current: int, following: int) -> bool:
        """Whether the loads of step `following` may run under step `current`: their rows meet no row
        that the current step reads, or that an item between them reads, writes or loads."""
        target = self._items[following].loaded
        if not target:
            return False
        for index in range(current, following):
            item = self._items[index]
            for memory, rows in target.items():
                if not rows.isdisjoint(item.rows.get(memory, ())):
                    return False
                if index > current and not rows.isdisjoint(item.loaded.get(memory, ())):
                    return False
        return True

    def flush(self) -> list[list[Instruction]]:
        """The programs of the merged stream so far (no HALT; see the class docstring: none, one, or
        with a program memory of fewer than `OVERLAY_MIN_DEPTH` words pieces of `program_depth` - 1
        instructions); the image starts again from beat 0."""
        stream = self._schedule()
        self._items, self._taken = [], {}
        size = self.program_depth - 1
        if len(stream) <= size:
            programs = [stream] if stream else []
        elif self.program_depth >= OVERLAY_MIN_DEPTH:
            programs = [overlay_program(stream, self.program_depth, self.bytes_per_cycle, self.allocate)]
        else:
            programs = [stream[start:start + size] for start in range(0, len(stream), size)]
        self.image_beats, self.next_beat = self.next_beat, 0
        return programs
