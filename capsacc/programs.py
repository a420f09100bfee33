"""The host session of an operation on CapsAcc, as the driver plays it and the calibrated model
times it: the one definition of the programs (`capsacc.schedule` instructions, addresses by the
tiling rules of `capsacc.mapping`) and of the order of buffer writes, runs and result reads.

`operation_session(kind, op, config)` lists the `SessionEvent`s of an operation of a batch of
`config.batch` images: `Load` (the host puts rows into an int8 buffer), `PsumWrite` (into the
partial-sum memory), `Run` (one program, no HALT), `PsumRead` and `Store` (the host reads results).
`sim.driver.OperationDriver` plays them on a host or DMA session, filling each `Load` with the rows
its `part` names; `session_cost` plays them on `capsacc.schedule.DmaScheduler` and times the DMA
programs with `capsacc.schedule.timing`: the cycles `nascaps rtl run` measures with the off-chip
memory (`total_cycles`, from the first byte in to the last result out, stalls included), and the
bytes of program words its overlay programs load (`program_bytes`), without simulating. A routing's
programs are `RoutingPlan`'s (`rtl.workloads.RoutingLayout` fills its images with data);
`chained_routing_session` orders a routing's phases as a chained network runs them, the partial-sum
state kept on chip from phase to phase.
"""

import dataclasses
import functools
from dataclasses import dataclass

from capsacc.array import ArrayConfig
from capsacc.mapping import (ACTIVATIONS, ELEMENTWISE_KINDS, ROUTING_PHASES, ROUTINGS, UPDATE_PHASES, ElementwiseShape,
                             MappingError, MatmulShape, act_lanes, apart_acts_per_run, ceil_div, classcaps_act_pieces,
                             classcaps_dims, classcaps_packing, classcaps_per_run, elementwise_chunking,
                             elementwise_shape, matmul_acts_apart, matmul_blocks, matmul_chunk_rows, matmul_chunking,
                             matmul_shape, route3d_routing, routing_geometry, routing_phases, routing_run_kinds)
from capsacc.schedule import Act, DmaScheduler, MatMul, program_cycles, program_load_beats


@dataclass(frozen=True)
class Load:
    """The host puts `rows` int8 rows into buffer `memory` ("data", "weight", "routing") from row
    `base`; `part` names which rows of the operation (read by the driver that fills them)."""
    memory: str
    base: int
    rows: int
    part: tuple = ()


@dataclass(frozen=True)
class PsumWrite:
    """The host writes `rows` partial-sum rows from row `base`."""
    base: int
    rows: int
    part: tuple = ()


@dataclass(frozen=True)
class Run:
    """One program (no HALT): start, wait for busy to fall."""
    program: tuple


@dataclass(frozen=True)
class PsumRead:
    """The host reads partial-sum rows base..base+rows-1 (first `lanes` lanes) as result `name`."""
    name: str
    base: int
    rows: int
    lanes: int


@dataclass(frozen=True)
class Store:
    """The host reads int8 rows base..base+rows-1 of buffer `memory` (`lanes` lanes) as result
    `name`; `part` names which results of the operation they hold."""
    name: str
    memory: str
    base: int
    rows: int
    lanes: int
    part: tuple = ()


SessionEvent = Load | PsumWrite | Run | PsumRead | Store


def matmul_session(shape: MatmulShape, config: ArrayConfig, shift: int = 0) -> list[SessionEvent]:
    """A conv kind (`capsacc.mapping.matmul_shape`): per chunk of nc data rows from row n0, runs of kr K
    chunks (k0 .. k1 - 1) over gb column blocks (b0 .. b1 - 1; `capsacc.mapping.matmul_chunking`: every
    block, or column groups of one K chunk): `Load` data part ("data", n0, nc, k0, k1) before the first
    group (chunk j's nc rows of lanes kk R .. from row j nc), `Load` weight part ("weight", k0, k1, b0, b1)
    (the tile of K chunk kk and block b at row (j (b1 - b0) + b - b0) R), one MATMUL per (K chunk, block)
    with results of block b from partial-sum row b nc, the chunk's last run an ACT per span blocks
    (requantized by `shift`) to weight rows from depth - mb nc, or runs of at most P - 1 of those ACTs
    alone after it (`capsacc.mapping.matmul_acts_apart`); then the chunk's results are stored (`Store`
    "out{n0}", part (n0, nc)). The whole operation is one stream: only after the last chunk does the
    host read partial sums (`PsumRead` "sums", the last chunk's, for the bit-exactness check)."""
    cols, depth = config.cols, config.buffer_depth
    blocks = matmul_blocks(shape)
    mb = len(blocks)
    nc_max = matmul_chunk_rows(shape, config)
    chunk_runs = {}  # chunks of equal rows run equal programs: built once (`session_cost` times them once)
    events = []
    for n0 in range(0, shape.n, nc_max):
        nc = min(nc_max, shape.n - n0)
        if nc not in chunk_runs:
            chunk_runs[nc] = _matmul_chunk_runs(shape, config, blocks, nc, shift)
        runs, act_runs = chunk_runs[nc]
        for k0, k1, b0, b1, program in runs:
            if b0 == 0:
                events.append(Load("data", 0, (k1 - k0) * nc, ("data", n0, nc, k0, k1)))
            events += [Load("weight", 0, (k1 - k0) * (b1 - b0) * config.rows, ("weight", k0, k1, b0, b1)), Run(program)]
        events += [Run(acts) for acts in act_runs]
        events.append(Store(f"out{n0}", "weight", depth - mb * nc, mb * nc, cols, (n0, nc)))
    return events + [PsumRead("sums", 0, mb * nc, cols)]


def _matmul_chunk_runs(shape: MatmulShape, config: ArrayConfig, blocks: list, nc: int,
                       shift: int) -> tuple[list[tuple[int, int, int, int, tuple]], list[tuple]]:
    """The runs of a `matmul_session` chunk of `nc` data rows, (k0, k1, b0, b1, program) each, and the
    programs of its ACTs when they run apart (none otherwise)."""
    rows, depth, mb = config.rows, config.buffer_depth, len(blocks)
    kc = ceil_div(shape.k, rows)
    kr, gb = matmul_chunking(shape, config, nc)
    apart = matmul_acts_apart(shape, config, gb)
    out_base = depth - mb * nc
    acts = tuple(Act(shape.func, p_addr=b * nc, n=shape.span * nc, length=shape.act_length(blocks[b][1]), shift=shift,
                     dst="weight", dst_addr=out_base + b * nc, stride=nc if shape.span > 1 else 0)
                 for b in range(0, mb, shape.span))  # an ACT per span blocks (a capsule type's, strided, when span > 1)
    runs = []
    for k0 in range(0, kc, kr):
        k1 = min(kc, k0 + kr)
        for b0 in range(0, mb, gb):
            b1 = min(mb, b0 + gb)
            program = [MatMul(d_addr=j * nc, w_addr=(j * (b1 - b0) + b - b0) * rows, p_addr=b * nc, n=nc,
                              accumulate=kk > 0)
                       for j, kk in enumerate(range(k0, k1)) for b in range(b0, b1)]
            if k1 == kc and not apart:
                program += acts
            runs.append((k0, k1, b0, b1, tuple(program)))
    return runs, _apart_act_programs(acts, config) if apart else []


def _apart_act_programs(acts: tuple, config: ArrayConfig) -> list[tuple]:
    """The programs of ACTs that run apart (`capsacc.mapping.apart_acts_per_run` each), in order."""
    per_run = apart_acts_per_run(config.program_depth)
    return [acts[a:a + per_run] for a in range(0, len(acts), per_run)]


def classcaps_session(op, config: ArrayConfig, shift: int = 0) -> list[SessionEvent]:
    """ClassCaps: per run of ci input capsules from capsule i0 (cn of them, in `groups` groups of k) and
    tb column tiles t0 .. t1 - 1 (`capsacc.mapping.classcaps_per_run`: every tile, or tile groups of one
    capsule group), `Load` data part ("data", i0, cn, groups, t0, t1) before the first tiles (rows of group g
    and K chunk kk from (g kc + kk) B k), `Load` weight part ("weight", i0, cn, groups, t0, t1) (tile of
    (g, kk, t) at ((g kc + kk) tw + t - t0) R, tw = t1 - t0), one MATMUL per (group, K chunk, column tile),
    ACTs "none" over the run's partial sums to weight rows from groups kc tw R, then `Store` "u_hat{i0}_{t0}"
    (part (i0, cn, groups, t0, t1))."""
    rows, cols, batch = config.rows, config.cols, config.batch
    n_in, d_in, n_out, dim = classcaps_dims(op)
    flat = n_out * dim
    kc, mb = ceil_div(d_in, rows), ceil_div(flat, cols)
    k = classcaps_packing(d_in, config)
    ci, tb = classcaps_per_run(d_in, flat, config)
    data_rows = batch * k
    events = []
    for i0 in range(0, n_in, ci):
        cn = min(ci, n_in - i0)
        groups = ceil_div(cn, k)
        for t0 in range(0, mb, tb):
            t1 = min(mb, t0 + tb)
            tw = t1 - t0
            program = []
            for g in range(groups):
                for kk in range(kc):
                    for t in range(tw):
                        program.append(MatMul(d_addr=(g * kc + kk) * data_rows, w_addr=((g * kc + kk) * tw + t) * rows,
                                              p_addr=(g * tw + t) * data_rows, n=data_rows, accumulate=kk > 0))
            out_base = groups * kc * tw * rows
            for first, n in classcaps_act_pieces(groups * tw * data_rows):
                program.append(Act("none", p_addr=first, n=n, length=cols, shift=shift, dst="weight",
                                   dst_addr=out_base + first))
            part = (i0, cn, groups, t0, t1)
            if t0 == 0:
                events.append(Load("data", 0, groups * kc * data_rows, ("data",) + part))
            events += [Load("weight", 0, groups * kc * tw * rows, ("weight",) + part), Run(tuple(program)),
                       Store(f"u_hat{i0}_{t0}", "weight", out_base, groups * tw * data_rows, cols, part)]
    return events


def elementwise_session(shape: ElementwiseShape, config: ArrayConfig, shift: int = 0) -> list[SessionEvent]:
    """An `ELEMENTWISE_KINDS` sum of `shape.operands` maps: per chunk of nc rows from n0, run of operands
    p0 .. p1 - 1 and column blocks b0 .. b1 - 1 (every block, or column groups, `elementwise_chunking`),
    `Load` data part ("data", n0, nc, p0, p1, b0, b1) (operand j's K chunk kk of block b at row
    ((j kc + kk) (b1 - b0) + b - b0) nc), `Load` weight part ("identity",) (the kc identity tiles from
    row 0), one accumulating MATMUL per (operand, K chunk, block), the chunk's last run an ACT per span
    blocks to weight rows from kc R (or runs of at most P - 1 of those ACTs alone after it); then
    `Store` "out{n0}" (part (n0, nc))."""
    rows, cols = config.rows, config.cols
    columns = shape.columns
    blocks = matmul_blocks(columns)
    mb, kc, span = len(blocks), shape.chunks, columns.span
    nc_max, pr, apart, gb = elementwise_chunking(shape, config)
    out_base = kc * rows
    events = []
    for n0 in range(0, shape.n, nc_max):
        nc = min(nc_max, shape.n - n0)
        acts = [Act(shape.func, p_addr=b * nc, n=span * nc, length=columns.act_length(blocks[b][1]), shift=shift,
                    dst="weight", dst_addr=out_base + b * nc, stride=nc if span > 1 else 0)
                for b in range(0, mb, span)]  # an ACT per span blocks, as `matmul_session`'s
        for p0 in range(0, shape.operands, pr):
            p1 = min(shape.operands, p0 + pr)
            for b0 in range(0, mb, gb):
                b1 = min(mb, b0 + gb)
                program = []
                for j, p in enumerate(range(p0, p1)):
                    for kk in range(kc):
                        for b in range(b0, b1):
                            program.append(MatMul(d_addr=((j * kc + kk) * (b1 - b0) + b - b0) * nc, w_addr=kk * rows,
                                                  p_addr=b * nc, n=nc, accumulate=p > 0 or kk > 0))
                if p1 == shape.operands and not apart:
                    program += acts
                events += [Load("data", 0, (p1 - p0) * kc * (b1 - b0) * nc, ("data", n0, nc, p0, p1, b0, b1)),
                           Load("weight", 0, kc * rows, ("identity",)), Run(tuple(program))]
        if apart:
            events += [Run(tuple(program)) for program in _apart_act_programs(acts, config)]
        events.append(Store(f"out{n0}", "weight", out_base, mb * nc, cols, (n0, nc)))
    return events


def activation_session(func: str, op, config: ArrayConfig, shift: int = 0) -> list[SessionEvent]:
    """A lone activation: `PsumWrite` of n = op.n_in rows rounded up to whole capsules of L =
    op.caps_in (1..64), one row-mode ACT, `Store` "out" of those rows. ValueError when the rows
    do not fit the activation unit or half the buffer."""
    n, length = op.n_in, op.caps_in
    span = act_lanes(config.cols, func, length)[0] if 1 <= length else 1
    rows = ceil_div(n, span) * span
    if not 1 <= length <= 64 or not 1 <= n <= 1023 or rows > config.buffer_depth // 2:
        raise ValueError(f"{func}: {n} rows with L = {length} do not fit the activation unit")
    return [PsumWrite(0, rows), Run((Act(func, p_addr=0, n=n, length=length, shift=shift, dst="weight", dst_addr=0),)),
            Store("out", "weight", 0, rows, config.cols)]


@dataclass(frozen=True)
class Region:
    """Where a result lies: memory name, first row, rows, lanes."""
    memory: str
    base: int
    n_rows: int
    lanes: int


@dataclass(frozen=True)
class RoutingRun:
    """One run of a routing: its program and the images the host writes before it (`Load`s, in the
    order written: data, then weight, then routing buffer rows; `part` names the rows for
    `rtl.workloads.RoutingLayout.fill`)."""
    program: tuple
    images: tuple


MEMORY_ORDER = ("data", "weight", "routing")
"""The order in which a run's buffer images are written (`RoutingRun.images`)."""


class RoutingPlan:
    """The one routing program: where a routing over I input capsules and J output capsules of D
    atoms with `routings` iterations lies on a CapsAcc `config`, and the runs (`RoutingRun`s) of each
    of its phases (`capsacc.mapping.ROUTING_PHASES`; geometry by `capsacc.mapping.routing_geometry`:
    tJ = ceil(J / C) class tiles of C classes, tD = ceil(D / C) rows per capsule, q_in inputs per
    chunk, nq chunks per block, KF weight tiles per set of output capsules).

    On-chip state, kept between phases and runs:

    - sums s_j: partial-sum rows S + j tD + e (S = 0), lane l = atom e C + l (a capsule spanning
      tD rows, as the activation unit reads it);
    - logits b_ij (j = t C + l): partial-sum row B + i tJ + t, lane l (B = J tD; the logits of input
      i span tJ rows). "Resident" when B + I tJ rows fit the partial-sum memory; otherwise the logits
      are recomputed per block of inputs from the output capsules of the earlier iterations (rows
      relative to the block's first input);
    - coupling c_ij of the current block: routing-buffer row m J + j, lane i - (first input of the
      block's chunk m);
    - output capsules v: class tile t's weight tiles, row l P + d (P = tD ceil(D / tD) >= D), lane
      l = v_{tC + l, d}, every other lane zero; one set at V (resident) or one per iteration (set r
      at V + r KF R, recomputation: the sets not yet written are zero).

    Each run's own images: the tiles U (row i = u_hat[i, j, eC:(e+1)C] for the inputs of a chunk)
    from weight row 0 (weighted sums), the predictions of a chunk of inputs from data row 0 (the
    update: row i tJ + t of a MATMUL over class tile t, other rows zero).

    The partial-sum state of `images` images lies side by side (`side_by_side`) when the logits are
    resident and `images` times the state's B + I tJ rows fit the partial-sum memory: image b's sums
    and logits from row b (B + I tJ) (`state_base`), so the images' phases follow each other in one
    stream and each phase finds its image's logits where the previous phase left them. Otherwise
    every image's state starts at row 0.
    """

    def __init__(self, n_in: int, n_out: int, dim: int, config: ArrayConfig, routings: int = ROUTINGS,
                 images: int = 1):
        self.n_in, self.n_out, self.dim, self.config, self.routings = n_in, n_out, dim, config, routings
        self.geometry = routing_geometry(n_in, n_out, dim, config, routings)
        g = self.geometry
        self.state_rows = g["B"] + n_in * g["tJ"]
        """Partial-sum rows of one image's state when its logits are resident (sums, then logits)."""
        self.side_by_side = images > 1 and g["resident"] and images * self.state_rows <= config.buffer_depth
        tiles = [g["kf_full"]] * (g["tJ"] - 1) + [g["kf_last"]]
        self._tile_base = [sum(tiles[:t]) * config.rows for t in range(g["tJ"])]
        self._tiles = tiles

    def _classes(self, t: int) -> int:
        return min(self.config.cols, self.n_out - t * self.config.cols)

    def state_base(self, image: int) -> int:
        """The first partial-sum row of image `image`'s state: image (B + I tJ) side by side, else 0."""
        return image * self.state_rows if self.side_by_side else 0

    def _slot(self, iteration: int) -> int:
        """The weight row of the output-capsule set iteration `iteration` writes."""
        g = self.geometry
        return g["V"] + (0 if g["resident"] else iteration) * g["KF"] * self.config.rows

    def blocks(self) -> list[tuple[int, int]]:
        """The blocks of inputs (first input, inputs): nq chunks of q_in inputs each (the last fewer)."""
        size = self.geometry["nq"] * self.geometry["q_in"]
        return [(i0, min(size, self.n_in - i0)) for i0 in range(0, self.n_in, size)]

    def regions(self, iteration: int = 0, image: int = 0) -> dict[str, Region]:
        """The state's regions after iteration `iteration` of image `image`: "c" (the last block's
        coupling rows), "s", "v" (that iteration's output-capsule rows), "b" (the logits: every
        input's when resident, else the last block's)."""
        g, cfg, base = self.geometry, self.config, self.state_base(image)
        _, last_inputs = self.blocks()[-1]
        logits = self.n_in if g["resident"] else last_inputs
        return {"c": Region("routing", 0, ceil_div(last_inputs, g["q_in"]) * self.n_out, cfg.rows),
                "s": Region("psum", base + g["S"], self.n_out * g["tD"], cfg.cols),
                "v": Region("weight", self._slot(iteration), g["KF"] * cfg.rows, cfg.cols),
                "b": Region("psum", base + g["B"], logits * g["tJ"], cfg.cols)}

    def last_block(self) -> slice:
        """The inputs whose coupling (and, recomputing, logits) `regions` holds."""
        first, inputs = self.blocks()[-1]
        return slice(first, first + inputs)

    def update_tiles(self) -> list[tuple[int, int]]:
        """The (class tile t, weight tile k of it) of a set of output capsules, in MATMUL order."""
        return [(t, k) for t in range(self.geometry["tJ"]) for k in range(self._tiles[t])]

    def weighted_pairs(self, inputs: int) -> list[tuple[int, int, int]]:
        """The (chunk m, class j, row e of s_j) of a block of `inputs` inputs, in MATMUL order."""
        chunks = ceil_div(inputs, self.geometry["q_in"])
        return [(m, j, e) for m in range(chunks) for j in range(self.n_out) for e in range(self.geometry["tD"])]

    def _update_runs(self, first: int, inputs: int, sets: int, p_addr: int, writes: bool) -> list[RoutingRun]:
        """b += sum_d u_hat v over `sets` output-capsule sets (from set 0) for inputs first..first +
        inputs - 1, into partial-sum rows from p_addr: per set KF MATMULs of inputs tJ rows, in runs
        of mpr; with `writes` the first MATMUL writes (a recomputation), all others accumulate. Each
        run's data image: part ("update", first, inputs, m0), the predictions of tiles m0 .. of
        `update_tiles` (row index n + i tJ + t for its index-th tile)."""
        g, rows = self.geometry, self.config.rows
        n = inputs * g["tJ"]
        tiles = self.update_tiles()
        runs = []
        for s in range(sets):
            base = g["V"] + s * g["KF"] * rows
            for m0 in range(0, len(tiles), g["mpr"]):
                part = tiles[m0:m0 + g["mpr"]]
                program = tuple(MatMul(d_addr=index * n, w_addr=base + self._tile_base[t] + k * rows, p_addr=p_addr,
                                       n=n, accumulate=not (writes and s == 0 and m0 == 0 and index == 0))
                                for index, (t, k) in enumerate(part))
                runs.append(RoutingRun(program, (Load("data", 0, len(part) * n, ("update", first, inputs, m0)),)))
        return runs

    def phase_runs(self, kind: str, iteration: int | None = None, shift_logits: int = 0,
                   shift_sum: int = 0, image: int = 0) -> list[RoutingRun]:
        """The runs of one phase. "routing_uniform" (iteration 0) loads the uniform first coupling
        into the routing buffer block by block (part ("coupling", first, inputs)); "routing_softmax"
        (iteration 1 .. routings - 1, default the last a recomputation allows, `recompute`) computes c
        from the logits (requantized by `shift_logits`; recomputed per block when not resident); both
        then form s (weight tiles: part ("tiles", first, inputs, p0), pairs p0 .. of
        `weighted_pairs`) and v (squash after requantizing by `shift_sum`) into the iteration's
        output-capsule set; a uniform phase that recomputes later zeroes the other sets (part
        ("zeros",)); "routing_update" adds the agreement to resident logits, "routing_first_update"
        writes it over them (its first MATMUL of each group of inputs writes; no runs for either when
        the logits are recomputed). Phases read the state the previous ones left (class docstring),
        image `image`'s (`state_base`)."""
        g, rows, cols = self.geometry, self.config.rows, self.config.cols
        sums, logits_base = self.state_base(image) + g["S"], self.state_base(image) + g["B"]
        n_out, t_j, t_d, q_in = self.n_out, g["tJ"], g["tD"], g["q_in"]
        if kind in UPDATE_PHASES:
            if not g["resident"]:
                return []
            return [run for i0 in range(0, self.n_in, g["na"])
                    for run in self._update_runs(i0, min(g["na"], self.n_in - i0), 1, logits_base + i0 * t_j,
                                                 kind == "routing_first_update")]
        if kind not in ("routing_uniform", "routing_softmax"):
            raise ValueError(f"unknown routing phase {kind!r}")
        if iteration is None:
            iteration = 0 if kind == "routing_uniform" else g["recompute"]
        runs = []
        for first, inputs in self.blocks():
            chunks = ceil_div(inputs, q_in)
            block_runs = []
            if kind == "routing_softmax":
                logits = logits_base + (first * t_j if g["resident"] else 0)
                if not g["resident"]:
                    block_runs += self._update_runs(first, inputs, g["recompute"], logits, True)
                acts = [Act("softmax", p_addr=logits + m * q_in * t_j, n=min(q_in, inputs - m * q_in) * t_j,
                            length=n_out, shift=shift_logits, dst="routing", dst_addr=m * n_out, column=True,
                            stride=0) for m in range(chunks)]
                block_runs += [RoutingRun(tuple(acts[a:a + g["acts_per_run"]]), ())
                               for a in range(0, len(acts), g["acts_per_run"])]
            pairs = self.weighted_pairs(inputs)
            matmul_runs = []
            for p0 in range(0, len(pairs), g["pairs_per_run"]):
                batch = pairs[p0:p0 + g["pairs_per_run"]]
                program = tuple(MatMul(d_addr=m * n_out + j, w_addr=index * rows, p_addr=sums + j * t_d + e, n=1,
                                       accumulate=first + m > 0, src="routing") for index, (m, j, e) in enumerate(batch))
                matmul_runs.append([program, [Load("weight", 0, len(batch) * rows, ("tiles", first, inputs, p0))]])
            if kind == "routing_uniform":
                matmul_runs[0][1].append(Load("routing", 0, chunks * n_out, ("coupling", first, inputs)))
            runs += block_runs + matmul_runs
        if kind == "routing_uniform" and not g["resident"] and g["recompute"] > 1:
            runs[0][1].append(Load("weight", self._slot(1), (g["recompute"] - 1) * g["KF"] * rows, ("zeros",)))
        squash = tuple(Act("squash", p_addr=sums + t * cols * t_d, n=self._classes(t) * t_d, length=self.dim,
                           shift=shift_sum, dst="weight", dst_addr=self._slot(iteration) + self._tile_base[t],
                           column=True, stride=g["stride"]) for t in range(t_j))
        runs = [run if isinstance(run, RoutingRun) else
                RoutingRun(run[0], tuple(sorted(run[1], key=lambda load: MEMORY_ORDER.index(load.memory))))
                for run in runs]
        return runs + [RoutingRun(squash, ())]

    def routing_runs(self, shift_logits: int = 0, shift_sum: int = 0) -> list[RoutingRun]:
        """The runs of a whole routing of `routings` iterations (`capsacc.mapping.routing_phases`),
        from any partial-sum state (the first update writes the logits)."""
        runs, iteration = [], 0
        for kind in routing_phases(self.routings):
            iteration += kind == "routing_softmax"
            runs += self.phase_runs(kind, iteration, shift_logits, shift_sum)
        return runs

    def phase_iteration(self, kind: str) -> int:
        """The iteration whose state a lone `kind` ("routing" for a whole routing) leaves: 0 for the
        uniform phase, `recompute` for softmax, the last for an update and a whole routing."""
        return {"routing_uniform": 0, "routing_softmax": self.geometry["recompute"]}.get(kind, self.routings - 1)

    def result_names(self, kind: str) -> tuple[str, ...]:
        """The regions (`regions`) a lone `kind` reads back: "b" after an update (resident logits
        only), "c", "s", "v" after a phase, and "b" too after a whole routing."""
        if kind in UPDATE_PHASES:
            return ("b",) if self.geometry["resident"] else ()
        return ("c", "s", "v", "b") if kind == "routing" else ("c", "s", "v")


def routing_session(kind: str, op, config: ArrayConfig, routings: int = ROUTINGS, shift_logits: int = 0,
                    shift_sum: int = 0, images: int | None = None) -> list[SessionEvent]:
    """A routing phase or a whole routing ("routing") of `op` (`capsacc.mapping.classcaps_dims`)
    with the programs of `RoutingPlan`, for each image b of the batch in turn (`images` of them,
    default config.batch; a ConvCaps3D's routings are more, `capsacc.mapping.route3d_routing`): the
    state a lone phase starts from (`PsumWrite` part ("logits", b) of the resident logits a softmax
    phase or an update reads; `Load` part ("v", b) of the output capsules an update reads; with
    recomputed logits, a softmax phase's `Load`s part ("v_set", r, b) of the `recompute` sets), the
    runs (their images' parts prefixed ("run", b)), then the result regions read
    (`RoutingPlan.result_names`, named name + b).

    A phase whose images' states lie side by side (`RoutingPlan.side_by_side`) is one stream: the
    partial-sum state is written before the first image's runs and read after the last's. Otherwise,
    and for a whole routing (route3d's, one per position), each image's partial-sum accesses end the
    stream."""
    n_in, _, n_out, dim = classcaps_dims(op)
    images = config.batch if images is None else images
    plan = RoutingPlan(n_in, n_out, dim, config, routings, images if kind in ROUTING_PHASES else 1)
    parts = _RoutingImages(plan, kind, shift_logits, shift_sum, writes_logits=True)
    return _routing_order([parts(image) for image in range(images)], plan.side_by_side)


def chained_routing_session(op, config: ArrayConfig, phases: int = 2 * ROUTINGS - 1, routings: int = ROUTINGS,
                            shift_logits: int = 0, shift_sum: int = 0,
                            images: int | None = None) -> list[tuple[int, list[SessionEvent]]]:
    """A routing of `op` as a chained network runs it: its `phases` phases (`routing_run_kinds`; the
    lone phases' geometry of `routings` iterations), the partial-sum state kept on chip from one phase
    to the next, as (phase position, events) pieces in the order they run. Each phase's events are the
    lone phase's (`routing_session`) less the host's writes of the logits it starts from (the logits
    the previous phases left are in place; the first update writes them, so the host writes no
    partial-sum row), and its result names are prefixed "p:" (phase position p). When the images' states lie side by
    side (`RoutingPlan.side_by_side`) the phases run one after the other over the batch, a piece
    each; otherwise image after image, each image's phases in turn (a piece per image and phase),
    so that no image's state overwrites another's between its phases. A piece's streams are those
    of the lone phase for its images, so each phase's `session_cost` is the lone phase's
    (`operation_cost`)."""
    n_in, _, n_out, dim = classcaps_dims(op)
    images = config.batch if images is None else images
    plan = RoutingPlan(n_in, n_out, dim, config, routings, images)
    phases = [_RoutingImages(plan, kind, shift_logits, shift_sum, writes_logits=False, prefix=f"{position}:")
              for position, kind in enumerate(routing_run_kinds(phases))]
    if plan.side_by_side:
        return [(position, _routing_order([parts(image) for image in range(images)], True))
                for position, parts in enumerate(phases)]
    return [(position, _routing_order([parts(image)], False)) for image in range(images)
            for position, parts in enumerate(phases)]


def _routing_order(images: list[tuple[list, list, list]], side_by_side: bool) -> list[SessionEvent]:
    """The events of a routing phase from each image's (state writes, runs and stores, result reads):
    side by side every image's writes, then every image's runs, then every image's reads; otherwise
    image after image."""
    if side_by_side:
        return [event for position in range(3) for parts in images for event in parts[position]]
    return [event for parts in images for part in parts for event in part]


class _RoutingImages:
    """One phase of `plan` (or a whole routing, "routing") image by image: `parts(image)` gives the
    image's (state writes, runs and stores, result reads) events (`routing_session`). With
    `writes_logits` the host writes the resident logits a softmax phase or an update starts from
    (`PsumWrite`), without it they are taken as in place;
    result names are prefix + name + image. The runs are built once per state base (every image's
    state at row 0 unless side by side)."""

    def __init__(self, plan: RoutingPlan, kind: str, shift_logits: int, shift_sum: int, writes_logits: bool,
                 prefix: str = ""):
        self.plan, self.kind, self.shifts, self.writes_logits, self.prefix = \
            plan, kind, (shift_logits, shift_sum), writes_logits, prefix
        self.iteration, self.names = plan.phase_iteration(kind), plan.result_names(kind)
        self._runs_at = {}

    def __call__(self, image: int) -> tuple[list, list, list]:
        plan, kind, g, rows = self.plan, self.kind, self.plan.geometry, self.plan.config.rows
        regions = plan.regions(self.iteration, image)
        writes, during, reads = [], [], []
        if g["resident"]:
            if self.writes_logits and kind in ("routing_softmax", "routing_update"):
                writes.append(PsumWrite(regions["b"].base, plan.n_in * g["tJ"], ("logits", image)))
            if kind in UPDATE_PHASES:
                during.append(Load("weight", regions["v"].base, g["KF"] * rows, ("v", image)))
        elif kind == "routing_softmax":
            for r in range(g["recompute"]):
                during.append(Load("weight", plan.regions(r)["v"].base, g["KF"] * rows, ("v_set", r, image)))
        base = plan.state_base(image)
        if base not in self._runs_at:
            self._runs_at[base] = plan.routing_runs(*self.shifts) if kind == "routing" else \
                plan.phase_runs(kind, self.iteration, *self.shifts, image)
        for run in self._runs_at[base]:
            during += [Load(load.memory, load.base, load.rows, ("run", image) + load.part) for load in run.images]
            during.append(Run(run.program))
        def name(result: str) -> str:
            return f"{self.prefix}{result}{image}"

        during += [Store(name(result), regions[result].memory, regions[result].base, regions[result].n_rows,
                         regions[result].lanes) for result in self.names if regions[result].memory != "psum"]
        reads += [PsumRead(name(result), regions[result].base, regions[result].n_rows, regions[result].lanes)
                  for result in self.names if regions[result].memory == "psum"]
        return writes, during, reads


def operation_session(kind: str, op, config: ArrayConfig, shift: int = 0, operands: int | None = None) -> list[SessionEvent]:
    """The `SessionEvent`s of `op` as `kind` on `config` (ACTs requantized by `shift`, a routing's by
    0; an `ELEMENTWISE_KINDS` sum of `operands` maps, default its shape's; a routing of `ROUTINGS`
    iterations, route3d's at every position, `route3d_routing`); `capsacc.mapping.MappingError` for an
    unknown kind or an operation that does not fit."""
    if kind in ("conv", "convcaps", "convcaps3d"):
        return matmul_session(matmul_shape(kind, op, config), config, shift)
    if kind == "classcaps":
        return classcaps_session(op, config, shift)
    if kind == "route3d":
        routing, images = route3d_routing(op, config)
        return routing_session("routing", routing, config, images=images)
    if kind in ELEMENTWISE_KINDS:
        shape = elementwise_shape(kind, op, config)
        if operands is not None:
            shape = ElementwiseShape(shape.columns, shape.length, operands, shape.chunks)
        return elementwise_session(shape, config, shift)
    if kind in ACTIVATIONS:
        return activation_session(kind, op, config, shift)
    if kind in ROUTING_PHASES or kind == "routing":
        return routing_session(kind, op, config)
    raise MappingError(f"unknown operation kind {kind!r}")


def _segments(events: list[SessionEvent]):
    """The runs of `Load`, `Run` and `Store` events between the host's partial-sum accesses, in order
    (lists; the first and last may be empty). Each access ends the scheduler's merged stream
    (`DmaScheduler.flush`), after which it starts as new: a segment's programs depend on its own
    events alone."""
    segment = []
    for event in events:
        if isinstance(event, (PsumWrite, PsumRead)):
            yield segment
            segment = []
        else:
            segment.append(event)
    yield segment


def _segment_programs(scheduler: DmaScheduler, segment: list[SessionEvent]) -> list[list]:
    """The DMA programs (no HALT) of one `_segments` segment on `scheduler`, flushed after it."""
    for event in segment:
        if isinstance(event, Load):
            scheduler.load(event.memory, event.base, event.rows)
        elif isinstance(event, Run):
            scheduler.execute(list(event.program))
        else:
            scheduler.store(event.memory, event.base, event.rows)
    return scheduler.flush()


def _scheduler(config: ArrayConfig) -> DmaScheduler:
    return DmaScheduler(config.rows, config.cols, config.buffer_depth, config.program_depth,
                        config.offchip_bytes_per_cycle, config.offchip_latency_cycles)


def dma_programs(events: list[SessionEvent], config: ArrayConfig) -> list[list]:
    """The DMA programs (no HALT) that a session with the off-chip memory runs for `events`
    (`sim.host.DmaSession`: loads and stores through `capsacc.schedule.DmaScheduler`, the merged
    stream ended by every partial-sum access and by the session's end)."""
    scheduler = _scheduler(config)
    return [program for segment in _segments(events) for program in _segment_programs(scheduler, segment)]


@dataclass(frozen=True)
class ScheduledCost:
    """What the DMA programs of a session cost beside the compute, for the batch: `total_cycles`, their
    busy cycles (`capsacc.schedule.timing` with the off-chip port, from the first byte in to the last
    result out, stalls included: `total_cycles` of `nascaps rtl run`), and `program_bytes`, the bytes of
    program words the overlay programs load through the port (`capsacc.schedule.program_load_beats` times
    W: `program_bytes` of `nascaps rtl run --json`)."""

    total_cycles: int
    program_bytes: int

    def __add__(self, other: "ScheduledCost") -> "ScheduledCost":
        return ScheduledCost(self.total_cycles + other.total_cycles, self.program_bytes + other.program_bytes)


def session_cost(events: list[SessionEvent], config: ArrayConfig) -> ScheduledCost:
    """The `ScheduledCost` of the DMA programs of `events` (`dma_programs`), summed, on the port of
    `config` (W = `offchip_bytes_per_cycle`, L = `offchip_latency_cycles`). Segments (`_segments`) of
    equal events (the same loads, programs and stores, whatever rows of the operation they name) have
    equal programs, so each distinct one is scheduled and timed once: route3d's routings, one per
    position and image, cost one routing's time, not B·n_out² of them."""
    scheduler, costs, total = _scheduler(config), {}, ScheduledCost(0, 0)
    width, programs = config.offchip_bytes_per_cycle, _ProgramIndex()
    for segment in _segments(events):
        key = tuple(_event_key(event, programs) for event in segment)
        if key not in costs:
            scheduled = _segment_programs(scheduler, segment)
            costs[key] = ScheduledCost(
                sum(program_cycles(program, config.rows, config.cols, width, config.offchip_latency_cycles)
                    for program in scheduled),
                width * sum(program_load_beats(program, config.program_depth, width) for program in scheduled))
        total += costs[key]
    return total


class _ProgramIndex:
    """A number per distinct program of a session: programs compared by content, each program object
    hashed once (a session's runs share their program tuples)."""

    def __init__(self):
        self._by_id, self._by_content, self._held = {}, {}, []

    def __call__(self, program: tuple) -> int:
        index = self._by_id.get(id(program))
        if index is None:
            index = self._by_content.setdefault(program, len(self._by_content))
            self._by_id[id(program)] = index
            self._held.append(program)
        return index


def _event_key(event: SessionEvent, programs: _ProgramIndex) -> tuple:
    """What of a segment's event its programs depend on (not the part or name it carries)."""
    if isinstance(event, Load):
        return "load", event.memory, event.base, event.rows
    if isinstance(event, Run):
        return "run", programs(event.program)
    return "store", event.memory, event.base, event.rows


def operation_cost(kind: str, op, config: ArrayConfig) -> ScheduledCost:
    """The batch's `ScheduledCost` of `op` as `kind` with the off-chip memory (`session_cost` of
    `operation_session`). Memoized by the operation's shape (its name aside) and the array."""
    return _operation_cost(kind, dataclasses.replace(op, name=""), config)


def operation_total_cycles(kind: str, op, config: ArrayConfig) -> int:
    """The batch's busy cycles of `op` as `kind` with the off-chip memory, data movement and port
    stalls included (`operation_cost`); the `total_cycles` of `nascaps rtl run`."""
    return operation_cost(kind, op, config).total_cycles


@functools.lru_cache(maxsize=1024)
def _operation_cost(kind: str, op, config: ArrayConfig) -> ScheduledCost:
    return session_cost(operation_session(kind, op, config), config)
