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
from rtl.isa import Instruction, assemble
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
            else:
                results[name] = sample[:, 0].view(np.int64).reshape(-1, lanes)
        return results, runs
