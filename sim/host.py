"""A host session on `rtl.capsacc.CapsAcc` as one `sim.script.Script`: load buffers, run programs,
read counters and results, then decode the trace.

The protocol is the one of `rtl.capsacc` (and `rtl.host`): one 64-bit host write per cycle (int8
buffers by groups of 8 lanes, partial sums by lane), reads one cycle after the address, `start`
pulsed for one cycle, the run over when `busy` falls, counters cleared by `start`. Every write and
read is a row of a `drive` command, so a session of millions of host cycles stays compact.
"""

from dataclasses import dataclass, field

import numpy as np

from rtl.capsacc import COUNTERS
from rtl.host import SELECT
from rtl.isa import EXT_BITS, Act, Dma, Instruction, MatMul, Wait, assemble, beats_per_row, buffer_lanes, timing
from sim.trace import Trace
from sim.script import Script

WRITE_PORTS = ("host_sel", "host_addr", "host_lane", "host_wdata", "host_we")
READ_PORTS = ("host_sel", "host_addr", "host_lane", "host_we")
COUNTER_NAMES = tuple(name for name, _ in COUNTERS)


def pack_int8_rows(rows: np.ndarray) -> np.ndarray:
    """int8 rows (n, lanes) -> uint64 words (n, ceil(lanes / 8)), lane 8g + i in byte i of word g."""
    rows = np.asarray(rows, dtype=np.int64)
    n, lanes = rows.shape
    groups = -(-lanes // 8)
    padded = np.zeros((n, groups * 8), dtype=np.uint8)
    padded[:, :lanes] = (rows & 0xFF).astype(np.uint8)
    return padded.view("<u8").reshape(n, groups).astype(np.uint64)


def unpack_int8_words(words: np.ndarray, lanes: int) -> np.ndarray:
    """uint64 words (n, groups) -> int8 values (n, lanes) as int64."""
    words = np.ascontiguousarray(words, dtype="<u8")
    return words.view(np.int8).reshape(len(words), -1)[:, :lanes].astype(np.int64)


@dataclass
class HostSession:
    """Builds the script of a session and remembers where each run and read lands in the trace."""

    rows: int
    cols: int
    acc_bits: int
    script: Script = field(default_factory=Script)
    runs: int = 0
    host_cycles: int = 0
    _reads: list[tuple[str, str, int]] = field(default_factory=list)

    def write_int8(self, memory: str, base: int, rows: np.ndarray) -> None:
        """Write int8 `rows` (n, lanes) into `memory` ("data", "weight", "routing") from row `base`."""
        words = pack_int8_rows(rows)
        n, groups = words.shape
        table = np.zeros((n * groups, 5), dtype=np.uint64)
        table[:, 0] = SELECT[memory]
        table[:, 1] = np.repeat(np.arange(base, base + n, dtype=np.uint64), groups)
        table[:, 2] = np.tile(np.arange(groups, dtype=np.uint64), n)
        table[:, 3] = words.reshape(-1)
        table[:, 4] = 1
        self._write(table)

    def write_psum(self, base: int, sums: np.ndarray) -> None:
        """Write partial sums (n, lanes) (wrapped to acc_bits by the hardware) from row `base`."""
        sums = np.asarray(sums, dtype=np.int64)
        n, lanes = sums.shape
        table = np.zeros((n * lanes, 5), dtype=np.uint64)
        table[:, 0] = SELECT["psum"]
        table[:, 1] = np.repeat(np.arange(base, base + n, dtype=np.uint64), lanes)
        table[:, 2] = np.tile(np.arange(lanes, dtype=np.uint64), n)
        table[:, 3] = sums.reshape(-1).view(np.uint64)
        table[:, 4] = 1
        self._write(table)

    def write_program(self, program: list[Instruction]) -> None:
        words = assemble(program)
        table = np.zeros((len(words), 5), dtype=np.uint64)
        table[:, 0] = SELECT["program"]
        table[:, 1] = np.arange(len(words), dtype=np.uint64)
        table[:, 3] = np.array(words, dtype=np.uint64)
        table[:, 4] = 1
        self._write(table)

    def _write(self, table: np.ndarray) -> None:
        self.script.drive(WRITE_PORTS, table)
        self.script.set("host_we", 0)
        self.host_cycles += len(table)

    def execute(self, program: list[Instruction], max_cycles: int = 1 << 40) -> None:
        """Load `program`, pulse start, wait for busy to fall, read every counter."""
        self.write_program(program)
        self.script.set("start", 1).step(1).set("start", 0).until("busy", 0, max_cycles)
        counters = np.arange(len(COUNTER_NAMES), dtype=np.uint64)[:, None]
        self.script.drive(("counter_sel",), counters, sample=("counter",))
        self.host_cycles += 1 + len(COUNTER_NAMES)
        self._reads.append(("counters", "", 0))
        self.runs += 1

    def read_int8(self, name: str, memory: str, base: int, n: int, lanes: int) -> None:
        """Read rows base..base+n-1 of an int8 buffer as result `name`."""
        groups = -(-lanes // 8)
        table = np.zeros((n * groups, 4), dtype=np.uint64)
        table[:, 0] = SELECT[memory]
        table[:, 1] = np.repeat(np.arange(base, base + n, dtype=np.uint64), groups)
        table[:, 2] = np.tile(np.arange(groups, dtype=np.uint64), n)
        self.script.drive(READ_PORTS, table, sample=("host_rdata",))
        self.host_cycles += len(table)
        self._reads.append((name, "int8", lanes))

    def read_psum(self, name: str, base: int, n: int, lanes: int) -> None:
        """Read partial-sum rows base..base+n-1 (first `lanes` lanes) as result `name`."""
        table = np.zeros((n * lanes, 4), dtype=np.uint64)
        table[:, 0] = SELECT["psum"]
        table[:, 1] = np.repeat(np.arange(base, base + n, dtype=np.uint64), lanes)
        table[:, 2] = np.tile(np.arange(lanes, dtype=np.uint64), n)
        self.script.drive(READ_PORTS, table, sample=("host_rdata",))
        self.host_cycles += len(table)
        self._reads.append((name, "psum", lanes))

    def read_offchip(self, name: str, beat: int, n: int, per_row: int, lanes: int, width: int) -> None:
        """Read `n` int8 rows of `lanes` lanes, `per_row` beats of `width` bytes each, from off-chip
        beat `beat` as result `name` (while the accelerator is idle)."""
        table = offchip_read_table(beat, n * per_row, width)
        self.script.drive(READ_PORTS, table, sample=("host_rdata",))
        self.host_cycles += len(table)
        self._reads.append((name, "offchip", (n, per_row, lanes, width)))

    def decode(self, trace: Trace) -> tuple[dict[str, np.ndarray], list[dict[str, int]]]:
        """(results by name, counters of each run) from the trace of `script`."""
        trace.check_waits()
        if len(trace.samples) != len(self._reads):
            raise RuntimeError(f"expected {len(self._reads)} sampled reads, the trace has {len(trace.samples)}")
        results, runs = {}, []
        for (name, kind, lanes), sample in zip(self._reads, trace.samples):
            if name == "counters":
                runs.append(dict(zip(COUNTER_NAMES, (int(v) for v in sample[:, 0]))))
            elif kind == "int8":
                results[name] = unpack_int8_words(sample.reshape(-1, -(-lanes // 8)), lanes)
            elif kind == "offchip":
                n, per_row, width, beat_bytes = lanes
                beats = np.ascontiguousarray(sample[:, 0], dtype="<u8").view(np.uint8).reshape(n * per_row, -1)
                rows = beats[:, :beat_bytes].reshape(n, per_row * beat_bytes)[:, :width]
                results[name] = rows.view(np.int8).astype(np.int64)
            else:
                results[name] = sample[:, 0].view(np.int64).reshape(-1, lanes)
        return results, runs


def act_rows(act: Act, cols: int) -> tuple[int, int]:
    """(first, count): rows of the destination buffer an ACT may write (a bound, from `dst_addr`;
    addresses wrap modulo the depth), for `DmaSession`'s ordering of transfers around it."""
    span = -(-act.length // cols) if act.func in ("squash", "softmax") else 1
    groups = -(-act.n // span)
    if act.column:
        return act.dst_addr, (groups - 1) * span * act.stride + span * cols
    if act.stride:
        return act.dst_addr, groups + (span - 1) * act.stride
    return act.dst_addr, groups * span


@dataclass
class _Item:
    """One place of `DmaSession`'s schedule: a step (consecutive MATMULs on the same data rows),
    an ACT, a store, or the end; `loads` are the transfers it needs first, `rows` the buffer rows
    it reads or writes (memory -> row numbers), against which a prefetch is checked."""

    kind: str
    instructions: list
    loads: list
    rows: dict


def offchip_write_table(first: int, beats: np.ndarray) -> np.ndarray:
    """The host writes (`WRITE_PORTS` rows) of off-chip beats `beats` (n, W) uint8 from beat `first`:
    one per beat and 8-byte group, byte 8g + i of the beat in byte i of host_wdata."""
    width = beats.shape[1]
    words = beats.view("<u8") if width >= 8 else np.pad(beats, ((0, 0), (0, 8 - width))).view("<u8")
    groups = words.shape[1]
    table = np.zeros((len(words) * groups, 5), dtype=np.uint64)
    table[:, 0] = SELECT["offchip"]
    table[:, 1] = np.repeat(np.arange(first, first + len(words), dtype=np.uint64), groups)
    table[:, 2] = np.tile(np.arange(groups, dtype=np.uint64), len(words))
    table[:, 3] = words.reshape(-1)
    table[:, 4] = 1
    return table


def offchip_read_table(first: int, beats: int, width: int) -> np.ndarray:
    """The host reads (`READ_PORTS` rows) of `beats` off-chip beats of `width` bytes from beat `first`."""
    groups = -(-width // 8)
    table = np.zeros((beats * groups, 4), dtype=np.uint64)
    table[:, 0] = SELECT["offchip"]
    table[:, 1] = np.repeat(np.arange(first, first + beats, dtype=np.uint64), groups)
    table[:, 2] = np.tile(np.arange(groups, dtype=np.uint64), beats)
    return table


@dataclass
class Region:
    """`rows` rows of int8 buffer `buffer` from row `row`, at off-chip beat `beat` (`beats` beats):
    loaded from the off-chip image, or (a store) written to it; `name` the result a store holds."""

    buffer: str
    row: int
    rows: int
    beat: int
    beats: int
    name: str = ""


@dataclass
class Stream:
    """What one `DmaSession.flush` played, as the RTL loads it: the host's partial-sum writes first
    (`psum_writes`: (first row, sums (n, lanes) int64)), then the off-chip image from beat 0 (`image`,
    uint8 (beats, W), zero where nothing is loaded), the programs in order (HALT appended when
    assembled), and the stores the host reads back. `loads` and `stores` are `Region`s of the image;
    `results` the stores' values (int8 rows as int64, by name) once the session's trace is decoded."""

    psum_writes: list
    image: np.ndarray
    loads: list
    programs: list
    stores: list
    results: dict = field(default_factory=dict)


@dataclass
class DmaSession:
    """A host session in which the host only writes programs and the off-chip image: every
    `write_int8` becomes a region of the off-chip image and DMA loads, every `read_int8` a DMA
    store (the host reads the off-chip image after the runs). The driver's programs are merged and
    rescheduled: each step's loads are issued before the previous step's MATMULs (ping-pong
    between the rows of consecutive steps) when no row is shared (`_Item.rows`), else after them;
    each step ends with a WAIT; programs are cut at `program_depth` - 1 instructions. Partial sums
    (`write_psum`, `read_psum`) stay host accesses between programs (state set up for lone
    routing phases, results kept for checking): each ends the merged stream (`flush`).
    `compute_cycles`: `rtl.isa.timing` of the driver's programs with preloaded buffers; `streams`
    each flush's `Stream` (the memory images and programs, `sim.memory_files`)."""

    rows: int
    cols: int
    acc_bits: int
    depth: int
    program_depth: int
    bytes_per_cycle: int
    latency_cycles: int
    script: Script = field(default_factory=Script)
    runs: int = 0
    host_cycles: int = 0
    compute_cycles: int = 0
    programs: list = field(default_factory=list)
    offchip_beats: int = 0
    """The most beats of off-chip image one stream used (the image is rewritten from beat 0 at each `flush`)."""
    streams: list = field(default_factory=list)
    _next_beat: int = 0
    _psum_writes: list = field(default_factory=list)
    _loads: list = field(default_factory=list)
    _stores: list = field(default_factory=list)
    _reads: list = field(default_factory=list)
    _pending: dict = field(default_factory=dict)
    _items: list = field(default_factory=list)
    _image: list = field(default_factory=list)
    _results: list = field(default_factory=list)

    def __post_init__(self):
        self._pending = {memory: np.full(self.depth, -1, dtype=np.int64) for memory in ("data", "weight", "routing")}

    def _lanes(self, memory: str) -> int:
        return buffer_lanes(memory, self.rows, self.cols)

    def _beats(self, memory: str) -> int:
        return beats_per_row(self._lanes(memory), self.bytes_per_cycle)

    def _allocate(self, beats: int) -> int:
        first = self._next_beat
        self._next_beat += beats
        if self._next_beat >= 1 << EXT_BITS:
            raise ValueError(f"off-chip image of {self._next_beat} beats exceeds the DMA's {EXT_BITS}-bit address")
        self.offchip_beats = max(self.offchip_beats, self._next_beat)
        return first

    def write_int8(self, memory: str, base: int, rows: np.ndarray) -> None:
        """Put int8 `rows` (n, lanes) into the off-chip image, to be loaded into `memory` from `base`."""
        rows = np.asarray(rows, dtype=np.int64)
        per_row = self._beats(memory)
        beats = np.zeros((len(rows), per_row * self.bytes_per_cycle), dtype=np.uint8)
        beats[:, :rows.shape[1]] = rows & 0xFF
        first = self._allocate(len(rows) * per_row)
        self._image.append((first, beats.reshape(-1, self.bytes_per_cycle)))
        self._loads.append(Region(memory, base, len(rows), first, len(rows) * per_row))
        targets = (base + np.arange(len(rows))) % self.depth
        self._pending[memory][targets] = first + per_row * np.arange(len(rows))

    def _take(self, memory: str, rows: np.ndarray) -> list:
        """The loads of the pending rows among `rows` (coalesced), no longer pending."""
        pending = self._pending[memory]
        rows = np.unique(rows % self.depth)
        rows = rows[pending[rows] >= 0]
        loads = [Dma(memory, row, 1, ext) for row, ext in zip(rows.tolist(), pending[rows].tolist())]
        pending[rows] = -1
        return self._coalesce(loads)

    def _coalesce(self, loads: list) -> list:
        """`loads` with each one that continues the previous (same buffer, next rows, next beats) merged into it."""
        merged = []
        for load in loads:
            last = merged[-1] if merged else None
            if (last and last.buffer == load.buffer and last.addr + last.n == load.addr and last.n + load.n < 1 << 14
                    and last.ext + last.n * self._beats(load.buffer) == load.ext):
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
        (each MATMUL max(n, R); its transfers then pay the latency rarely), holds at most half of the run's steps (so that the next run's first half
        can load under its second), and loads no row it reads or loads already."""
        items = self._items[first:]
        steps = sum(item.kind == "step" for item in items)
        target = 8 * (self.latency_cycles + 2 * self.rows)
        merged = []
        for item in items:
            last = merged[-1] if merged else None
            if (last and last.kind == item.kind == "step" and len(last.rows["merged"]) < max(1, steps // 2)
                    and self._step_cycles(last) < target and not self._conflicts(item.loads, last)):
                last.instructions += item.instructions
                last.loads = self._coalesce(sorted(last.loads + item.loads, key=lambda load: (load.buffer, load.addr)))
                last.rows["merged"].append(item)
                for memory in ("data", "weight", "routing"):
                    if memory in item.rows:
                        last.rows[memory] = np.union1d(last.rows.get(memory, np.zeros(0, np.int64)), item.rows[memory])
            else:
                if item.kind == "step":
                    item.rows["merged"] = [item]
                merged.append(item)
        self._items[first:] = merged

    def _step_cycles(self, item: _Item) -> int:
        return sum(max(matmul.n, self.rows) for matmul in item.instructions)

    def _conflicts(self, loads: list, item: _Item) -> bool:
        """Whether `loads` write a row that `item` reads, writes or loads."""
        for load in loads:
            rows = np.arange(load.addr, load.addr + load.n) % self.depth
            touched = [item.rows.get(load.buffer, np.zeros(0, np.int64))]
            touched += [np.arange(other.addr, other.addr + other.n) % self.depth for other in item.loads
                        if other.buffer == load.buffer]
            if np.intersect1d(rows, np.concatenate(touched)).size:
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
                source = np.arange(instruction.d_addr, instruction.d_addr + instruction.n) % self.depth
                tile = np.arange(instruction.w_addr, instruction.w_addr + self.rows) % self.depth
                loads = self._take(instruction.src, source) + self._take("weight", tile)
                if (previous and previous.kind == "step" and previous.rows["key"] == key
                        and not self._conflicts(loads, previous)):  # a reload of its rows: a new step
                    previous.instructions.append(instruction)
                    previous.loads = self._coalesce(previous.loads + loads)
                    previous.rows["weight"] = np.union1d(previous.rows["weight"], tile)
                else:
                    self._items.append(_Item("step", [instruction], loads,
                                             {"key": key, instruction.src: source, "weight": tile}))
            elif isinstance(instruction, Act):
                first, count = act_rows(instruction, self.cols)
                written = np.arange(first, first + count) % self.depth
                self._items.append(_Item("act", [instruction], self._take(instruction.dst, written),
                                         {instruction.dst: written}))

    def read_int8(self, name: str, memory: str, base: int, n: int, lanes: int) -> None:
        """Store rows base..base+n-1 of an int8 buffer to the off-chip image; result `name`."""
        per_row = self._beats(memory)
        ext = self._allocate(n * per_row)
        rows = (base + np.arange(n)) % self.depth
        self._items.append(_Item("store", [Dma(memory, base, n, ext, store=True)], self._take(memory, rows),
                                 {memory: rows}))
        self._results.append((name, ext, n, per_row, lanes))
        self._stores.append(Region(memory, base, n, ext, n * per_row, name))

    def _host(self) -> HostSession:
        """A `HostSession` on this session's script and reads (host accesses between programs)."""
        return HostSession(self.rows, self.cols, self.acc_bits, self.script, _reads=self._reads)

    def write_psum(self, base: int, sums: np.ndarray) -> None:
        """End the merged stream (`flush`), then write partial sums as `HostSession.write_psum`."""
        self.flush()
        self._psum_writes.append((base, np.asarray(sums, dtype=np.int64)))
        host = self._host()
        host.write_psum(base, sums)
        self.host_cycles += host.host_cycles

    def read_psum(self, name: str, base: int, n: int, lanes: int) -> None:
        """End the merged stream (`flush`), then read partial sums as `HostSession.read_psum`."""
        self.flush()
        host = self._host()
        host.read_psum(name, base, n, lanes)
        self.host_cycles += host.host_cycles

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
            following = [i for i in steps if i > index][:1]
            if following and self._prefetchable(index, following[0]):
                # One prefetch before each MATMUL (a DMA issues when the engine is idle: the
                # MATMULs between keep the array busy while it moves the previous one).
                loads = self._items[following[0]].loads
                prefetched.add(following[0])
                for position, matmul in enumerate(item.instructions):
                    stream += loads[position:position + 1] + [matmul]
                stream += loads[len(item.instructions):]
            else:
                stream += item.instructions
            stream += [Wait()]
        loads = [load for memory in self._pending for load in self._take(memory, np.arange(self.depth))]
        return stream + loads

    def _prefetchable(self, current: int, following: int) -> bool:
        """Whether the loads of step `following` may run under step `current`: their rows meet no row
        that the current step reads, or that an item between them reads, writes or loads."""
        target = {}
        for load in self._items[following].loads:
            target.setdefault(load.buffer, []).append(np.arange(load.addr, load.addr + load.n) % self.depth)
        if not target:
            return False
        for index in range(current, following):
            item = self._items[index]
            touched = dict(item.rows)
            for load in item.loads if index > current else []:
                touched.setdefault(load.buffer, np.zeros(0, np.int64))
                touched[load.buffer] = np.union1d(touched[load.buffer],
                                                  np.arange(load.addr, load.addr + load.n) % self.depth)
            for memory, ranges in target.items():
                if memory in touched and np.intersect1d(np.concatenate(ranges), touched[memory]).size:
                    return False
        return True

    def flush(self) -> None:
        """Write the off-chip image, run the merged stream as programs, read the results; record the `Stream`."""
        stream = self._schedule()
        self._items = []
        image = np.zeros((self._next_beat, self.bytes_per_cycle), dtype=np.uint8)
        for first, beats in self._image:
            image[first:first + len(beats)] = beats
            table = offchip_write_table(first, beats)
            self.script.drive(WRITE_PORTS, table)
            self.script.set("host_we", 0)
            self.host_cycles += len(table)
        self._image = []
        host = self._host()
        size = self.program_depth - 1
        programs = [stream[start:start + size] for start in range(0, len(stream), size)]
        for program in programs:
            self.programs.append(program)
            host.execute(program)
        for name, ext, n, per_row, lanes in self._results:
            host.read_offchip(name, ext, n, per_row, lanes, self.bytes_per_cycle)
        if self._psum_writes or programs or self._stores:
            self.streams.append(Stream(self._psum_writes, image, self._loads, programs, self._stores))
        self._psum_writes, self._loads, self._stores, self._results = [], [], [], []
        self._next_beat = 0
        self.runs += host.runs
        self.host_cycles += host.host_cycles

    def decode(self, trace: Trace) -> tuple[dict[str, np.ndarray], list[dict[str, int]]]:
        """(results by name, counters of each program) from the trace of `script`."""
        return self._host().decode(trace)
