"""Run one hardware operation on the CapsAcc RTL and check it bit-exactly against `sim.golden`.

`OperationDriver(config, backend).run(kind, op, seed)` draws random int8 data and weights (and
partial sums for routing and the activations), tiles the operation onto the array by the rules of
`capsacc.mapping` (programs of `rtl.isa`), plays the whole host session (loads, runs, counter and
result reads) as one script on the chosen back end, compares every result with the golden model
and returns an `OperationRun`: RTL cycles (sum of `busy_cycles` over the runs), host I/O cycles,
summed counters and the instruction counts. Kinds (`DRIVER_KINDS`): `capsacc.mapping.KINDS` (routing
by phase), `capsacc.mapping.CHAIN_KINDS` (element-wise sums of capsule maps, and "route3d": a
ConvCaps3D's routing at every position, `capsacc.mapping.route3d_routing`), "routing" (a whole
routing of `routings` iterations) and the activations "relu", "squash", "softmax" (one ACT over
random partial sums).

An operation runs on a batch of B = `config.batch` images (`capsacc.mapping`'s rules): every
per-image input and output carries a leading batch axis of length B, also when B = 1 (weights are
shared by the batch; the lone activations have no images and no batch axis). Each image's results
are checked against the golden model of that image alone.
"""

import hashlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from capsacc.array import ArrayConfig
from capsacc.mapping import (ACTIVATIONS, CHAIN_KINDS, COUNT_FIELDS, ELEMENTWISE_KINDS, KINDS, ROUTING_PHASES,
                             ROUTINGS, UPDATE_PHASES, act_lanes, bandwidth_bound, ceil_div, classcaps_dims,
                             classcaps_packing, elementwise_shape, matmul_blocks, matmul_shape, route3d_routing,
                             routing_run_kinds)
from capsacc.network import Operation
from capsacc.programs import (Load, PsumRead, PsumWrite, Run, activation_session, classcaps_session,
                              chained_routing_session, elementwise_session, matmul_session, routing_session)
import rtl
from rtl.offchip import HOST_SIGNATURE, CapsAccSystem
from rtl.isa import MatMul, timing
from rtl.workloads import RoutingLayout
from sim import golden
from sim.harness import run as run_script
from sim.host import COUNTER_NAMES, DmaSession, HostSession
from sim.trace import component_ports

DRIVER_KINDS = KINDS + CHAIN_KINDS + ("routing",) + ACTIVATIONS
"""What `OperationDriver.run` runs: the calibrated model's kinds, the element-wise steps of chained
CapsCell networks, a whole routing, lone activations."""


class MismatchError(AssertionError):
    """An RTL result that differs from the golden model. `finished`: the runs of a routing's phases
    before the one that differs (`OperationDriver.run_routing`), in order; else empty."""

    def __init__(self, message: str, finished: list | None = None):
        super().__init__(message)
        self.finished = finished or []


@dataclass
class OperationRun:
    """What one operation cost on the RTL and whether it matched the golden model."""

    kind: str
    op: Operation
    config: ArrayConfig
    backend: str
    cycles: int
    """Sum of the runs' busy cycles (start to HALT), the figure the cost models estimate."""
    host_cycles: int
    """Cycles the host spent writing buffers and reading results (not in `cycles`)."""
    runs: int
    counters: dict[str, int]
    """Each counter of `rtl.capsacc.COUNTERS` summed over the runs."""
    counts: dict[str, int]
    """Instructions issued, as `capsacc.mapping.plan_counts` names them."""
    outputs: dict[str, np.ndarray] = field(repr=False)
    golden: dict[str, np.ndarray] = field(repr=False)
    sim_s: float = 0.0
    """Seconds the simulator spent clocking the design."""
    cpu_s: float = 0.0
    """CPU seconds of the simulator (Verilator: the whole bench process, stimulus parsing included)."""
    wall_s: float = 0.0
    """Seconds of the whole `run`: script generation, simulation, decoding, golden model."""
    total_cycles: int = 0
    """Busy cycles of every run, data movement included: with the off-chip memory (`offchip`), the
    DMA programs' from the first byte loaded to the last result stored, stalls included; else `cycles`."""
    offchip_bytes: int = 0
    """Bytes of buffer rows the DMA moved over the off-chip port (beats read and written times W, the
    program words of overlays aside: `program_bytes`), the figure the calibrated model predicts."""
    streams: list = field(default_factory=list, repr=False)
    """With `offchip`: the `sim.host.Stream`s played (off-chip images, programs, partial-sum writes,
    stores with their results), in order; else empty."""
    program_bytes: int = 0
    """Bytes of program words the overlay programs loaded over the port (beats times W)."""

    @property
    def bound(self) -> str:
        """"bandwidth" when moving `offchip_bytes` over the port (W bytes a cycle) takes longer than
        the compute's `cycles`, else "compute"."""
        bound = bandwidth_bound(self.offchip_bytes, self.config.offchip_bytes_per_cycle, self.cycles)
        return "bandwidth" if bound else "compute"

    @property
    def simulated_cycles(self) -> int:
        """Every cycle the simulator ran: the runs' busy cycles and the host's (start pulses included)."""
        return self.total_cycles + self.host_cycles


LAST_SUMS = "last_sums"
"""The result of a conv kind that holds its last chunk's partial sums (rows of the batch's stacked
im2col rows, not per image): the host reads them once, after the operation's stream."""


def _compare(kind: str, op: Operation, outputs: dict, expected: dict) -> None:
    """Raise `MismatchError` for the first result of `expected` that `outputs` does not equal."""
    for name, want in expected.items():
        got = outputs[name]
        if got.shape != want.shape or not np.array_equal(got, want):
            bad = int(np.sum(got != want)) if got.shape == want.shape else -1
            raise MismatchError(f"{kind} {op}: result '{name}' differs from the golden model "
                                f"({bad} of {want.size} values; shapes {got.shape} vs {want.shape})")


def _session_marks(session) -> dict[str, int]:
    """What a host or DMA session has spent so far: host starts ("runs"), "host_cycles", and with the
    off-chip memory "compute_cycles" (`DmaSession.compute_cycles`), "program_beats" and "streams"
    (how many `Stream`s were played)."""
    dma = isinstance(session, DmaSession)
    return {"runs": session.runs, "host_cycles": session.host_cycles,
            "compute_cycles": session.compute_cycles if dma else 0,
            "program_beats": session.program_beats if dma else 0, "streams": len(session.streams) if dma else 0}


class _RoutingPhase:
    """One routing phase of a batch (`OperationDriver._routing_op`, `OperationDriver.run_routing`): the
    state it starts from, per image b (logits (B, I, J), the output capsules v (B, J, D) an update
    reads, the `recompute` sets v_sets of a recomputing softmax, each (B, J, D)), the rows its session's
    `Load`s and `PsumWrite`s name (`fill`), the golden results (`expected`, by result name, stacked
    over the batch) and the check of the RTL's results (named prefix + name + b)."""

    def __init__(self, kind: str, layout: RoutingLayout, u_hat, logits, v, v_sets, shift_logits: int, shift_sum: int,
                 prefix: str = ""):
        self.kind, self.layout, self.prefix = kind, layout, prefix
        self.u_hat, self.logits, self.v = u_hat, logits, v
        sets = layout.geometry["recompute"]
        self.v_sets = [np.asarray(v_r) for v_r in v_sets] + [np.zeros_like(v)] * (sets - len(v_sets))
        self.coupling = golden.uniform_coupling(layout.n_in, layout.n_out)
        self.names = layout.result_names(kind)
        acc_bits, block = layout.config.acc_bits, layout.last_block()
        expected = {name: [] for name in self.names}
        for image in range(len(u_hat)):
            u = u_hat[image]
            if kind in UPDATE_PHASES:  # the first update writes the logits: it adds to none
                start = logits[image] if kind == "routing_update" else np.zeros_like(logits[image])
                results = {"b": golden.routing_update(start, u, v[image], acc_bits)}
            elif kind == "routing":
                results = dict(zip(("c", "s", "v", "b"), golden.routing(u, layout.routings, shift_logits, shift_sum,
                                                                         acc_bits)))
                results["c"] = results["c"][block]
                if not layout.geometry["resident"]:
                    results["b"] = results["b"][block]
            else:
                if kind == "routing_uniform":
                    c = self.coupling
                else:
                    start = logits[image]
                    if not layout.geometry["resident"]:
                        for v_r in self.v_sets:
                            start = golden.routing_update(start, u, v_r[image], acc_bits)
                    c = golden.activate(start, shift_logits, "softmax")
                results = dict(zip(("c", "s", "v"), (c[block], *golden.routing_sum(c, u, shift_sum, acc_bits))))
            for name in self.names:
                expected[name].append(results[name])
        self.expected = {name: np.stack(values) for name, values in expected.items()}

    def fill(self, load) -> np.ndarray:
        """The rows of a `Load` or `PsumWrite` of the phase's session, by its part."""
        part, layout = load.part, self.layout
        if part[0] == "logits":
            return layout.logit_rows(self.logits[part[1]])
        if part[0] == "v":
            return layout.v_rows(self.v[part[1]])
        if part[0] == "v_set":
            return layout.v_rows(self.v_sets[part[1]][part[2]])
        return layout.fill(replace(load, part=part[2:]), self.u_hat[part[1]], self.coupling)  # ("run", image, ...)

    def check(self, results: dict) -> tuple[dict, dict]:
        """(the RTL's results, the golden ones), by result name, stacked over the batch."""
        convert = {"c": self.layout.coupling, "s": self.layout.sums, "v": self.layout.v, "b": self.layout.logits}
        images = range(len(self.u_hat))
        got = {name: np.stack([convert[name](results[f"{self.prefix}{name}{image}"]) for image in images])
               for name in self.names}
        return got, self.expected


def shift_for(terms: int) -> int:
    """A requantization shift that keeps sums of `terms` random int8 products mostly inside int8."""
    return int(min(24, max(1, round(np.log2(np.sqrt(max(terms, 1)) * 128 * 74 / 64)))))


def conv_patches(image: np.ndarray, kernel: int, stride: int, n_out: int) -> np.ndarray:
    """im2col rows (n_out², k²·ch) of `image` (H, W, ch) zero-padded so that the output side is
    n_out (pad before = total // 2), followed by a bias column of ones."""
    n_in = image.shape[0]
    pad = max(0, (n_out - 1) * stride + kernel - n_in)
    before = pad // 2
    padded = np.pad(image, ((before, pad - before), (before, pad - before), (0, 0)))
    side = (padded.shape[0] - kernel) // stride + 1
    patches = golden.im2col(padded, kernel, stride).reshape(side, side, -1)[:n_out, :n_out]
    patches = patches.reshape(n_out * n_out, -1)
    return np.hstack([patches, np.ones((len(patches), 1), dtype=np.int64)])


def conv3d_patches(caps: np.ndarray, kernel: int, stride: int, n_out: int) -> np.ndarray:
    """Patches of a 3-D capsule convolution: `caps` (H, W, T, A) (T capsule types of A atoms),
    k x k x k windows over (y, x, type), 'same' along types. Rows (n_out²·T, k³·A + 1), ordered
    (y, x, t); bias column last."""
    n_in, _, types, atoms = caps.shape
    depth_pad = kernel // 2
    padded = np.pad(caps, ((0, 0), (0, 0), (depth_pad, kernel - 1 - depth_pad), (0, 0)))
    per_type = [conv_patches(padded[:, :, t:t + kernel, :].reshape(n_in, n_in, kernel * atoms),
                             kernel, stride, n_out)[:, :-1] for t in range(types)]
    rows = np.stack(per_type, axis=1).reshape(n_out * n_out * types, -1)
    return np.hstack([rows, np.ones((len(rows), 1), dtype=np.int64)])


def rtl_source_key(config: ArrayConfig, offchip_bytes: int = 0) -> str:
    """The CapsAcc sources (a hash of rtl/*.py) and parameters, naming a Verilator build (with
    `offchip_bytes` > 0: of `rtl.offchip.CapsAccSystem` with an off-chip memory of that many bytes)."""
    digest = hashlib.sha256()
    for path in sorted(Path(rtl.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    system = f"system {offchip_bytes} " if offchip_bytes else ""
    return f"CapsAcc {system}{config.hardware()} {digest.hexdigest()}"


OFFCHIP_VERILATOR_BYTES = 1 << 25
"""Least size of the simulated off-chip memory in Verilator builds: one build serves every operation
whose off-chip image fits; a larger image gets a build with a memory of the next power of two."""


class OperationDriver:
    """Runs operations on one CapsAcc instance (`config`) with one back end. With `offchip`, the
    host writes only programs and the off-chip image and the DMA moves every buffer row
    (`sim.host.DmaSession`, `rtl.offchip.CapsAccSystem`); else the host writes the buffers
    between runs (`sim.host.HostSession`) and only compute is counted."""

    def __init__(self, config: ArrayConfig, backend: str = "verilator", cache_dir=None, offchip: bool = False):
        self.config = config
        self.backend = backend
        self.cache_dir = cache_dir
        self.offchip = offchip
        self._model = None
        self._model_depth = 0

    def offchip_depth(self, offchip_beats: int = 0) -> int:
        """Beats of the simulated off-chip memory for an image of `offchip_beats` beats: the smallest
        power of two >= 2 that holds it, with `offchip` on Verilator at least `OFFCHIP_VERILATOR_BYTES`."""
        least = OFFCHIP_VERILATOR_BYTES // self.config.offchip_bytes_per_cycle \
            if self.backend == "verilator" and self.offchip else 2
        return max(least, 1 << max(1, (offchip_beats - 1).bit_length()))

    def component(self, offchip_beats: int = 0) -> CapsAccSystem:
        """The simulated system: CapsAcc with an off-chip memory of `offchip_depth(offchip_beats)`
        beats, on Verilator the memory's Verilog model."""
        return CapsAccSystem(self.config, self.offchip_depth(offchip_beats), verilog_memory=self.backend == "verilator")

    def _session(self) -> HostSession | DmaSession:
        cfg = self.config
        if self.offchip:
            return DmaSession(cfg.rows, cfg.cols, cfg.acc_bits, cfg.buffer_depth, cfg.program_depth,
                              cfg.offchip_bytes_per_cycle, cfg.offchip_latency_cycles)
        return HostSession(cfg.rows, cfg.cols, cfg.acc_bits)

    def play(self, session: HostSession | DmaSession):
        """Simulate a prepared session: (results by name, counters of each run, trace)."""
        if self.offchip:
            session.flush()
        beats = session.offchip_beats if self.offchip else 0
        if self.backend == "verilator":
            depth = self.offchip_depth(beats)
            if self._model is None or depth > self._model_depth:  # a larger image: a build with a larger memory
                from sim.verilator import VerilatorModel
                offchip_bytes = depth * self.config.offchip_bytes_per_cycle if self.offchip else 0
                key = rtl_source_key(self.config, offchip_bytes)
                # a cached build needs no system object (which would be left unelaborated)
                self._model = (VerilatorModel.cached(component_ports(HOST_SIGNATURE.create()), key, self.cache_dir)
                               or VerilatorModel.build(self.component(beats), cache_dir=self.cache_dir, source_key=key))
                self._model_depth = depth
            trace = self._model.run(session.script)
        else:
            trace = run_script(self.component(beats), session.script, self.backend)
        results, runs = session.decode(trace)
        return results, runs, trace

    # ---- the operations ------------------------------------------------------------------

    def run(self, kind: str, op: Operation, seed: int = 0, inputs: dict | None = None) -> OperationRun:
        """Run `op` as `kind` from random data (or `inputs`), check it, return its costs.

        `inputs` (for chaining layers; B = `config.batch` images) may give "image" (conv kinds:
        (B, n_in, n_in, channels) int8, convcaps3d (B, n_in, n_in, ch_in, caps_in)), "weights"
        (shared by the batch), "u" (classcaps: (B, I, caps_in)), "u_hat" (B, I, J, D), "logits"
        (B, I, J) and "v" (B, J, D) (routing phases: the state a phase starts from; the uniform phase,
        the first update and a whole routing start from no logits), "routings" (a whole routing), the shifts
        "shift_logits", "shift_sum" ("u_hat" of route3d: (B·n_out², ch_in, ch_out, caps_out), the votes at
        each image's positions in turn; its outputs "c", "s", "v", "b" as a whole routing's, with the
        same leading axis), and "maps" (`ELEMENTWISE_KINDS`: the operands, each (B, n / B, m) with
        n and m as `capsacc.mapping.elementwise_shape` gives), "bias_input" (conv kinds: the data value of
        the im2col bias column, default 1). The outputs have the same leading batch
        axis. Raises `MismatchError` when a result differs from the golden model, `ValueError` when
        an input's shape is not the batch's.
        """
        start = time.perf_counter()
        session, counts, check = self.prepare(kind, op, seed, inputs)
        results, runs, trace = self.play(session)
        streams = session.streams if self.offchip else []
        outputs, expected = check(results)
        _compare(kind, op, outputs, expected)
        run = self._operation_run(kind, op, _session_marks(session), runs, counts, outputs, expected, streams, results)
        run.sim_s, run.cpu_s, run.wall_s = trace.sim_s, trace.cpu_s, time.perf_counter() - start
        return run

    def prepare(self, kind: str, op: Operation, seed: int = 0, inputs: dict | None = None):
        """(host session, instruction counts, result checker) of `run`, without simulating."""
        rng = np.random.default_rng(seed)
        inputs = inputs or {}
        if kind in ("conv", "convcaps", "convcaps3d"):
            return self._matmul_op(kind, op, rng, inputs)
        if kind == "classcaps":
            return self._classcaps_op(op, rng, inputs)
        if kind == "route3d":
            routing, images = route3d_routing(op, self.config)
            return self._routing_op("routing", routing, rng, inputs, images)
        if kind in ELEMENTWISE_KINDS:
            return self._elementwise_op(kind, op, rng, inputs)
        if kind in ROUTING_PHASES or kind == "routing":
            return self._routing_op(kind, op, rng, inputs)
        if kind in ACTIVATIONS:
            return self._activation_op(kind, op, rng)
        raise ValueError(f"unknown operation kind {kind!r} (known: {', '.join(DRIVER_KINDS)})")

    def _new_counts(self) -> dict[str, int]:
        return dict.fromkeys(COUNT_FIELDS, 0)

    def _execute(self, session: HostSession, program: list, counts: dict) -> None:
        leading = next((i for i, instruction in enumerate(program) if not isinstance(instruction, MatMul)),
                       len(program))
        if leading:
            counts["matmul_phase_cycles"] += timing(program, self.config.rows, self.config.cols).issue[leading] - 2
        for instruction in program:
            if isinstance(instruction, MatMul):
                counts["matmuls"] += 1
                counts["matmul_rows"] += instruction.n
                counts["matmul_rows_accumulate"] += instruction.n if instruction.accumulate else 0
                counts["matmul_rows_routing"] += instruction.n if instruction.src == "routing" else 0
            else:
                span, width, last_width = act_lanes(self.config.cols, instruction.func, instruction.length)
                groups = ceil_div(instruction.n, span)
                elements = groups * ((span - 1) * width + last_width)
                counts["acts"] += 1
                counts["act_rows"] += groups * span
                counts["act_elements"] += elements
                counts["act_spans"] += span
                if instruction.column:
                    counts["acts_column"] += 1
                    counts["act_elements_column"] += elements
                else:
                    counts["act_rows_row"] += groups * span
        counts["runs"] += 1
        session.execute(program)

    def _play_events(self, session: HostSession | DmaSession, events: list, fill, counts: dict) -> list:
        """Play a `capsacc.programs` session: each `Load` (`PsumWrite`) writes the rows `fill(event)`
        gives (by its part), each `Run` executes, each read reads; returns the parts of the `Store`s in
        order."""
        stored = []
        for event in events:
            if isinstance(event, Load):
                session.write_int8(event.memory, event.base, fill(event))
            elif isinstance(event, PsumWrite):
                session.write_psum(event.base, fill(event))
            elif isinstance(event, Run):
                self._execute(session, list(event.program), counts)
            elif isinstance(event, PsumRead):
                session.read_psum(event.name, event.base, event.rows, event.lanes)
            else:
                session.read_int8(event.name, event.memory, event.base, event.rows, event.lanes)
                stored.append(event.part)
        return stored

    def _matmul_op(self, kind, op, rng, inputs):
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        shape = matmul_shape(kind, op, cfg)
        if kind == "convcaps3d":
            caps = self._batch_input(inputs, "image", (op.n_in, op.n_in, op.ch_in, op.caps_in), rng)
            x = np.vstack([conv3d_patches(one, op.kernel, op.stride, op.n_out) for one in caps])
        else:
            image = self._batch_input(inputs, "image", (op.n_in, op.n_in, op.ch_in * op.caps_in), rng)
            x = np.vstack([conv_patches(one, op.kernel, op.stride, op.n_out) for one in image])
        x[:, -1] = inputs.get("bias_input", 1)
        w = inputs.get("weights")
        if w is None:
            w = rng.integers(-128, 128, size=(shape.k, shape.m))
        shift = inputs.get("shift", shift_for(shape.k))
        blocks = matmul_blocks(shape)
        mb = len(blocks)
        session, counts = self._session(), self._new_counts()

        def fill(load):
            part = load.part
            if part[0] == "data":  # chunk j's rows n0 .. n0 + nc - 1, lanes kk R ..
                _, n0, nc, k0, k1 = part
                data = np.zeros(((k1 - k0) * nc, R), dtype=np.int64)
                for j, kk in enumerate(range(k0, k1)):
                    chunk = x[n0:n0 + nc, kk * R:(kk + 1) * R]
                    data[j * nc:(j + 1) * nc, :chunk.shape[1]] = chunk
                return data
            _, k0, k1, b0, b1 = part  # the tiles of K chunks k0 .. k1 - 1 over blocks b0 .. b1 - 1
            tiles = np.zeros(((k1 - k0) * (b1 - b0) * R, C), dtype=np.int64)
            for j, kk in enumerate(range(k0, k1)):
                for b, (col, width) in enumerate(blocks[b0:b1]):
                    tile = w[kk * R:(kk + 1) * R, col:col + width]
                    first = (j * (b1 - b0) + b) * R
                    tiles[first:first + tile.shape[0], :width] = tile
            return tiles

        reads = self._play_events(session, matmul_session(shape, cfg, shift), fill, counts)

        def columns(rows, nc):
            """The (nc, m) matrix of a chunk's result rows (block b's nc rows from row b nc)."""
            return np.hstack([rows[b * nc:(b + 1) * nc, :width] for b, (_, width) in enumerate(blocks)])

        def check(results):
            out = np.vstack([columns(results[f"out{n0}"], nc) for n0, nc in reads])
            last, nc = reads[-1]
            sums = columns(results["sums"], nc)
            want_sums = golden.tiled_matmul(x, w, R, cfg.acc_bits)
            if shape.func in ("relu", "none"):
                want_out = golden.activate(want_sums, shift, shape.func)
            else:
                capsules = want_sums.reshape(-1, shape.capsule)
                want_out = golden.activate(capsules, shift, "squash").reshape(shape.n, shape.m)
            per_image = (cfg.batch, shape.n // cfg.batch, shape.m)
            return ({LAST_SUMS: sums, "out": out.reshape(per_image)},
                    {LAST_SUMS: want_sums[last:last + nc], "out": want_out.reshape(per_image)})

        return session, counts, check

    def _batch_input(self, inputs: dict, name: str, shape: tuple, rng, low: int = -128, high: int = 128,
                     batch: int | None = None) -> np.ndarray:
        """inputs[name] of shape (B,) + `shape` (B = `batch`, default `config.batch`), or random integers in
        low..high - 1."""
        value = inputs.get(name)
        want = (self.config.batch if batch is None else batch,) + tuple(shape)
        if value is None:
            return rng.integers(low, high, size=want)
        if np.shape(value) != want:
            raise ValueError(f"input '{name}' has shape {np.shape(value)}, the batch of {self.config.batch} "
                             f"image(s) needs {want}")
        return np.asarray(value)

    def _classcaps_op(self, op, rng, inputs):
        cfg = self.config
        R, C, B = cfg.rows, cfg.cols, cfg.batch
        n_in, d_in, n_out, dim = classcaps_dims(op)
        flat = n_out * dim
        u = self._batch_input(inputs, "u", (n_in, d_in), rng)
        w = inputs.get("weights")
        if w is None:
            w = rng.integers(-128, 128, size=(n_in, d_in, flat))
        shift = inputs.get("shift", shift_for(d_in))
        kc, mb = ceil_div(d_in, R), ceil_div(flat, C)
        k = classcaps_packing(d_in, cfg)
        rows = B * k  # data rows per MATMUL: row b·k + s is image b's capsule s of the group
        session, counts = self._session(), self._new_counts()

        def fill(load):
            memory, i0, cn, groups, t0, t1 = load.part  # column tiles t0 .. t1 - 1 of capsules i0 .. i0 + cn - 1
            tw = t1 - t0
            data = np.zeros((groups * kc * rows, R), dtype=np.int64)
            tiles = np.zeros((groups * kc * tw * R, C), dtype=np.int64)
            for g in range(groups):
                for kk in range(kc):
                    for s in range(min(k, cn - g * k)):  # capsule s of the group: atoms and weights at s·d_in
                        c = i0 + g * k + s
                        if memory == "data":
                            atoms = u[:, c, kk * R:(kk + 1) * R]
                            first = (g * kc + kk) * rows + s
                            data[first:first + rows:k, s * d_in:s * d_in + atoms.shape[1]] = atoms
                            continue
                        for t in range(tw):
                            tile = w[c, kk * R:(kk + 1) * R, (t0 + t) * C:(t0 + t + 1) * C]
                            base = ((g * kc + kk) * tw + t) * R + s * d_in
                            tiles[base:base + tile.shape[0], :tile.shape[1]] = tile
            return data if memory == "data" else tiles

        reads = self._play_events(session, classcaps_session(op, cfg, shift), fill, counts)

        def check(results):
            u_hat = np.zeros((B, n_in, mb * C), dtype=np.int64)
            for i0, cn, groups, t0, t1 in reads:  # row (g tw + t) B k + b k + s: image b, capsule g k + s, tile t
                piece = results[f"u_hat{i0}_{t0}"].reshape(groups, t1 - t0, B, k, C).transpose(2, 0, 3, 1, 4)
                u_hat[:, i0:i0 + cn, t0 * C:t1 * C] = piece.reshape(B, groups * k, (t1 - t0) * C)[:, :cn]
            u_hat = u_hat[:, :, :flat]
            want = np.zeros((B, n_in, flat), dtype=np.int64)
            for i in range(n_in):  # capsule i's weights times the B images' capsule i
                want[:, i] = golden.requantize(golden.tiled_matmul(u[:, i], w[i], R, cfg.acc_bits), shift)
            return ({"u_hat": u_hat.reshape(B, n_in, n_out, dim)},
                    {"u_hat": want.reshape(B, n_in, n_out, dim)})

        return session, counts, check

    def _elementwise_op(self, kind, op, rng, inputs):
        """The element-wise sum of `elementwise_shape`'s operands (or of the given "maps", any number,
        chunked as that many operands): per chunk of nc rows, each operand's
        column block streams through the identity tiles into the block's partial sums (operands in
        groups of pr per run), the chunk's last run squashes or requantizes every block."""
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        shape = elementwise_shape(kind, op, cfg)
        columns = shape.columns
        per_image = (shape.n // cfg.batch, shape.m)
        given = inputs.get("maps")
        if given is None:
            given = [None] * shape.operands
        maps = [self._batch_input({"maps": value}, "maps", per_image, rng).reshape(shape.n, shape.m)
                for value in given]
        operands = len(maps)
        shift = inputs.get("shift", 0)
        blocks = matmul_blocks(columns)
        mb, kc = len(blocks), shape.chunks
        identity = np.zeros((kc * R, C), dtype=np.int64)
        lanes = np.arange(min(kc * R, C))
        identity[lanes, lanes] = 1
        session, counts = self._session(), self._new_counts()

        def fill(load):
            if load.part[0] == "identity":
                return identity
            _, n0, nc, p0, p1, b0, b1 = load.part  # operands p0 .. p1 - 1 over blocks b0 .. b1 - 1
            data = np.zeros(((p1 - p0) * kc * (b1 - b0) * nc, R), dtype=np.int64)
            for j, p in enumerate(range(p0, p1)):
                for kk in range(kc):
                    for b, (col, width) in enumerate(blocks[b0:b1]):
                        row = ((j * kc + kk) * (b1 - b0) + b) * nc
                        values = maps[p][n0:n0 + nc, col + kk * R:col + min(width, (kk + 1) * R)]
                        data[row:row + nc, :values.shape[1]] = values
            return data

        events = elementwise_session(replace(shape, operands=operands), cfg, shift)
        reads = self._play_events(session, events, fill, counts)

        def check(results):
            out = np.zeros((shape.n, shape.m), dtype=np.int64)
            for n0, nc in reads:
                for b, (col, width) in enumerate(blocks):
                    out[n0:n0 + nc, col:col + width] = results[f"out{n0}"][b * nc:(b + 1) * nc, :width]
            want = golden.capsule_sum(maps, shift, shape.func, shape.length, cfg.acc_bits)
            batched = (cfg.batch,) + per_image
            return {"out": out.reshape(batched)}, {"out": want.reshape(batched)}

        return session, counts, check

    def _routing_op(self, kind, op, rng, inputs, images=None):
        """A routing phase (`capsacc.mapping.ROUTING_PHASES`) or a whole routing ("routing"), of
        inputs["routings"] iterations (default `ROUTINGS`), with the programs of
        `rtl.workloads.RoutingLayout`, for each image of the batch in turn (`images` routings, default
        the batch's; a ConvCaps3D's, `capsacc.mapping.route3d_routing`). The host writes the state
        a lone phase starts from: resident logits (softmax, update; the first update writes its own)
        and the output capsules v (either update); when the logits are recomputed, the output
        capsules of the earlier iterations ("v_sets", a list of (B, J, D), zeros for the rest; a
        softmax phase then runs as the last iteration). Couplings (and recomputed logits) are
        checked for the last block of inputs (`RoutingLayout.last_block`)."""
        cfg = self.config
        batch = cfg.batch if images is None else images
        n_in, _, n_out, dim = classcaps_dims(op)
        routings = inputs.get("routings", ROUTINGS)
        layout = RoutingLayout(n_in, n_out, dim, cfg, routings)
        resident, sets = layout.geometry["resident"], layout.geometry["recompute"]
        u_hat = self._batch_input(inputs, "u_hat", (n_in, n_out, dim), rng, batch=batch)
        if not resident:
            logits = np.zeros((batch, n_in, n_out), dtype=np.int64)
        elif kind in ("routing_softmax", "routing_update"):
            logits = self._batch_input(inputs, "logits", (n_in, n_out), rng, -(1 << 10), 1 << 10, batch)
        else:
            logits = self._batch_input(inputs, "logits", (n_in, n_out), rng, 0, 1, batch)
        v = self._batch_input(inputs, "v", (n_out, dim), rng, batch=batch)
        v_sets = inputs.get("v_sets")
        if v_sets is None:
            v_sets = [self._batch_input({}, "v", (n_out, dim), rng, batch=batch) for _ in range(sets)]
        shift_logits = inputs.get("shift_logits", 4)
        shift_sum = inputs.get("shift_sum", max(1, shift_for(n_in) - 2))
        phase = _RoutingPhase(kind, layout, u_hat, logits, v, v_sets, shift_logits, shift_sum)
        session, counts = self._session(), self._new_counts()
        events = routing_session(kind, op, cfg, routings, shift_logits, shift_sum, batch)
        self._play_events(session, events, phase.fill, counts)
        return session, counts, phase.check

    def run_routing(self, ops: list[Operation], seed: int = 0, inputs: dict | None = None) -> list[OperationRun]:
        """A routing as a chained network runs it: its phases, one per operation of `ops` (a run of
        routing operations of one shape, `capsacc.mapping.routing_run_kinds`; each with the lone
        phase's geometry of inputs["routings"] iterations, default `ROUTINGS`) in one session, the
        partial-sum state kept on chip from phase to phase (`capsacc.programs.chained_routing_session`:
        image after image unless the batch's states lie side by side; the host writes no partial-sum
        row: the first update writes the logits). Inputs: "u_hat" (B, I, J, D) (random when absent),
        "shift_logits", "shift_sum". Each phase's loads of output capsules written by an earlier phase
        (an update's v, a recomputing softmax's sets) are filled with the golden model's values of that
        phase, which its own check has compared with the RTL's. Returns one `OperationRun` per phase, in
        order, each with its own programs' cycles, counters, streams and checked results (as a lone
        phase's, whose total_cycles it equals); the simulator's seconds are shared by the phases in
        proportion to their simulated cycles. Raises
        `MismatchError` for the first phase whose result differs from the golden model, with the runs
        of the phases before it (`MismatchError.finished`)."""
        start = time.perf_counter()
        cfg, batch, inputs = self.config, self.config.batch, inputs or {}
        rng = np.random.default_rng(seed)
        op, count = ops[0], len(ops)
        n_in, _, n_out, dim = classcaps_dims(op)
        routings = inputs.get("routings", ROUTINGS)
        layout = RoutingLayout(n_in, n_out, dim, cfg, routings)
        u_hat = self._batch_input(inputs, "u_hat", (n_in, n_out, dim), rng)
        shift_logits = inputs.get("shift_logits", 4)
        shift_sum = inputs.get("shift_sum", max(1, shift_for(n_in) - 2))
        logits = np.zeros((batch, n_in, n_out), dtype=np.int64)
        v, v_sets, phases = np.zeros((batch, n_out, dim), dtype=np.int64), [], []
        for kind in routing_run_kinds(count):
            phases.append(_RoutingPhase(kind, layout, u_hat, logits, v, v_sets, shift_logits, shift_sum,
                                        f"{len(phases)}:"))
            if kind in UPDATE_PHASES:
                logits = phases[-1].expected.get("b", logits)  # none when the logits are recomputed
            else:
                v = phases[-1].expected["v"]
                v_sets.append(v)
        session = self._session()
        counts = [self._new_counts() for _ in phases]
        marks = [[] for _ in phases]  # per phase: (session figures before, after) of each piece
        for position, events in chained_routing_session(op, cfg, count, routings, shift_logits, shift_sum, batch):
            before = _session_marks(session)
            self._play_events(session, events, phases[position].fill, counts[position])
            if self.offchip:
                session.flush()
            marks[position].append((before, _session_marks(session)))
        results, starts, trace = self.play(session)
        runs = []
        for phase, phase_op, phase_counts, pieces in zip(phases, ops, counts, marks):
            outputs, expected = phase.check(results)
            mine = [starts[i] for before, after in pieces for i in range(before["runs"], after["runs"])]
            spent = {field: sum(after[field] - before[field] for before, after in pieces) for field in pieces[0][0]}
            streams = [session.streams[i] for before, after in pieces
                       for i in range(before["streams"], after["streams"])]
            runs.append(self._operation_run(phase.kind, phase_op, spent, mine, phase_counts, outputs, expected,
                                            streams, results))
        simulated = sum(run.simulated_cycles for run in runs) or 1
        wall = time.perf_counter() - start
        for run in runs:
            share = run.simulated_cycles / simulated
            run.sim_s, run.cpu_s, run.wall_s = trace.sim_s * share, trace.cpu_s * share, wall * share
        for position, run in enumerate(runs):
            try:
                _compare(run.kind, run.op, run.outputs, run.golden)
            except MismatchError as error:
                raise MismatchError(str(error), runs[:position]) from None
        return runs

    def _operation_run(self, kind, op, spent: dict, starts: list, counts: dict, outputs: dict, expected: dict,
                       streams: list, results: dict) -> OperationRun:
        """The `OperationRun` of `op` from what its part of a session spent (`_session_marks`' fields),
        the counters of its programs (`starts`, one dict per host start) and its checked results (no
        simulator seconds); each of its `streams` gets its stores' values from the session's `results`."""
        for stream in streams:
            stream.results = {store.name: results[store.name] for store in stream.stores}
        counters = {name: sum(r[name] for r in starts) for name in COUNTER_NAMES}
        width = self.config.offchip_bytes_per_cycle
        cycles = spent["compute_cycles"] if self.offchip else counters["busy_cycles"]
        program_bytes = spent["program_beats"] * width
        moved = (counters["offchip_read_beats"] + counters["offchip_write_beats"]) * width - program_bytes
        return OperationRun(kind, op, self.config, self.backend, cycles, spent["host_cycles"], spent["runs"],
                            counters, counts, outputs, expected, 0.0, 0.0, 0.0, counters["busy_cycles"], moved,
                            streams, program_bytes)

    def _activation_op(self, func, op, rng):
        """One row-mode ACT of n = op.n_in partial-sum rows (rounded up to whole capsules) with
        L = op.caps_in (1..64)."""
        cfg = self.config
        n, length, shift = op.n_in, op.caps_in, 10
        events = activation_session(func, op, cfg, shift)
        rows = events[0].rows
        span, width, last_width = act_lanes(cfg.cols, func, length)
        sums = rng.integers(-(1 << (cfg.acc_bits - 1)), 1 << (cfg.acc_bits - 1), size=(rows, cfg.cols)) >> 8
        session, counts = self._session(), self._new_counts()
        self._play_events(session, events, lambda load: sums, counts)
        written = np.array([[lane < (last_width if j % span == span - 1 else width) for lane in range(cfg.cols)]
                            for j in range(rows)])

        def check(results):
            want = golden.activate_rows(sums, shift, func, length)
            return {"out": results["out"][written]}, {"out": want[written]}

        return session, counts, check
