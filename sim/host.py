"""A host session on `rtl.capsacc.CapsAcc` as one `sim.script.Script`: load buffers, run programs,
read counters and results, then decode the trace.

The protocol is the one of `rtl.capsacc` (and `rtl.host`): one 64-bit host write per cycle (int8
buffers by groups of 8 lanes, partial sums by lane), reads one cycle after the address, `start`
pulsed for one cycle, the run over when `busy` falls, counters cleared by `start`. Every write and
read is a row of a `drive` command, so a session of millions of host cycles stays compact.
"""

from dataclasses import dataclass, field

import numpy as np

from capsacc.schedule import PROGRAM_WORD_BYTES, DmaScheduler, overlay_loads, resident_words
from rtl.capsacc import COUNTERS
from rtl.host import SELECT
from rtl.isa import Instruction, assemble, beats_per_row, buffer_lanes
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

    def write_program(self, words: list[int]) -> None:
        """Write 64-bit program `words` into the program memory from word 0."""
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
        """Load `program` (assembled), pulse start, wait for busy to fall, read every counter."""
        self.start(assemble(program), max_cycles)

    def start(self, words: list[int], max_cycles: int = 1 << 40) -> None:
        """Write program `words` from word 0, pulse start, wait for busy to fall, read every counter."""
        self.write_program(words)
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


def row_beats(rows: np.ndarray, per_row: int, bytes_per_cycle: int) -> np.ndarray:
    """Rows (n, lanes) of bytes (int8 as int64, or uint8) as off-chip beats (n * per_row, W) uint8:
    row i at beats i * per_row .., its lane j in byte j, zeros past the lanes."""
    rows = np.asarray(rows)
    beats = np.zeros((len(rows), per_row * bytes_per_cycle), dtype=np.uint8)
    beats[:, :rows.shape[1]] = rows & 0xFF
    return beats.reshape(-1, bytes_per_cycle)


def word_beats(words: list[int], bytes_per_cycle: int) -> np.ndarray:
    """Program words as the off-chip beats a DMA load into the program memory reads (`row_beats` of
    rows of `PROGRAM_WORD_BYTES` bytes, byte j of a word its bits 8j + 7..8j)."""
    rows = np.array(words, dtype="<u8").view(np.uint8).reshape(len(words), PROGRAM_WORD_BYTES)
    return row_beats(rows, beats_per_row(PROGRAM_WORD_BYTES, bytes_per_cycle), bytes_per_cycle)


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
    assembled; the host writes an overlay program's first segment, `capsacc.schedule.resident_words`),
    and the stores the host reads back. `loads` and `stores` are `Region`s of the image (an overlay
    program's segments: loads into buffer "program");
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
    rescheduled by `capsacc.schedule.DmaScheduler` (loads, WAITs, ping-pong prefetch, a stream longer
    than the program memory one overlay program, whose later segments the image holds), the ordering
    the calibrated model shares. Partial sums
    (`write_psum`, `read_psum`) stay host accesses between programs (state set up for lone routing
    phases, results kept for checking): each ends the merged stream (`flush`); writes before a
    stream belong to its `Stream`.
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
    program_beats: int = 0
    """Off-chip beats of program words the overlay programs loaded (`capsacc.schedule.overlay_program`)."""
    programs: list = field(default_factory=list)
    streams: list = field(default_factory=list)
    scheduler: DmaScheduler = None
    _psum_writes: list = field(default_factory=list)
    _loads: list = field(default_factory=list)
    _stores: list = field(default_factory=list)
    _reads: list = field(default_factory=list)
    _image: list = field(default_factory=list)
    _results: list = field(default_factory=list)

    def __post_init__(self):
        self.scheduler = DmaScheduler(self.rows, self.cols, self.depth, self.program_depth, self.bytes_per_cycle,
                                      self.latency_cycles)

    @property
    def compute_cycles(self) -> int:
        """`rtl.isa.timing` of the driver's programs with preloaded buffers, summed."""
        return self.scheduler.compute_cycles

    @property
    def offchip_beats(self) -> int:
        """The most beats of off-chip image one stream used (the image is rewritten from beat 0 at each `flush`)."""
        return self.scheduler.offchip_beats

    def _beats(self, memory: str) -> int:
        return beats_per_row(buffer_lanes(memory, self.rows, self.cols), self.bytes_per_cycle)

    def write_int8(self, memory: str, base: int, rows: np.ndarray) -> None:
        """Put int8 `rows` (n, lanes) into the off-chip image, to be loaded into `memory` from `base`."""
        rows = np.asarray(rows, dtype=np.int64)
        per_row = self._beats(memory)
        first = self.scheduler.load(memory, base, len(rows))
        self._image.append((first, row_beats(rows, per_row, self.bytes_per_cycle)))
        self._loads.append(Region(memory, base, len(rows), first, len(rows) * per_row))

    def execute(self, program: list[Instruction]) -> None:
        """Schedule `program` (no HALT) after what came before."""
        self.scheduler.execute(program)

    def read_int8(self, name: str, memory: str, base: int, n: int, lanes: int) -> None:
        """Store rows base..base+n-1 of an int8 buffer to the off-chip image; result `name`."""
        per_row = self._beats(memory)
        ext = self.scheduler.store(memory, base, n)
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

    def flush(self) -> None:
        """Write the off-chip image (an overlay program's later segments included), run the merged
        stream as programs (each written as far as it is resident, `resident_words`, and started
        once), read the results; record the `Stream`."""
        programs = self.scheduler.flush()
        image = np.zeros((self.scheduler.image_beats, self.bytes_per_cycle), dtype=np.uint8)
        resident = []
        for program in programs:
            words = assemble(program)
            for ext, first, n in overlay_loads(program, self.program_depth):
                self._image.append((ext, word_beats(words[first:first + n], self.bytes_per_cycle)))
                self._loads.append(Region("program", first % self.program_depth, n, ext, len(self._image[-1][1])))
                self.program_beats += len(self._image[-1][1])
            resident.append(words[:resident_words(len(words), self.program_depth)])
        for first, beats in self._image:
            image[first:first + len(beats)] = beats
            table = offchip_write_table(first, beats)
            self.script.drive(WRITE_PORTS, table)
            self.script.set("host_we", 0)
            self.host_cycles += len(table)
        self._image = []
        host = self._host()
        for program, words in zip(programs, resident):
            self.programs.append(program)
            host.start(words)
        for name, ext, n, per_row, lanes in self._results:
            host.read_offchip(name, ext, n, per_row, lanes, self.bytes_per_cycle)
        if programs or self._stores:  # partial-sum writes with no stream after them wait for the next
            self.streams.append(Stream(self._psum_writes, image, self._loads, programs, self._stores))
            self._psum_writes = []
        self._loads, self._stores, self._results = [], [], []
        self.runs += host.runs
        self.host_cycles += host.host_cycles

    def decode(self, trace: Trace) -> tuple[dict[str, np.ndarray], list[dict[str, int]]]:
        """(results by name, counters of each program) from the trace of `script`."""
        return self._host().decode(trace)
