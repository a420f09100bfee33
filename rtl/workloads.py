"""Workloads for CapsAcc: programs (see `rtl.isa`) with the buffer images they expect.

Each builder returns a `Workload` (program plus the initial rows of every memory, keyed by first
row) and the `Region`s of its results (`RoutingLayout`: a list of runs and the regions of its
state), so a host (the Amaranth test bench, `sim/`'s harnesses)
can load, run and read it without re-deriving encodings. Buffer layouts:

- data / routing buffer rows hold R int8 lanes (lane r meets PE row r);
- weight buffer rows hold C int8 lanes; a weight tile is R consecutive rows (tile row r feeds
  PE row r, lane c PE column c);
- partial-sum rows hold C signed acc_bits lanes (lane c = array column c).
Values past a tile's used rows and lanes are zero.
"""

from dataclasses import dataclass, field

import numpy as np

from capsacc.array import ArrayConfig
from capsacc.mapping import ROUTINGS, ceil_div, routing_geometry, routing_phases
from rtl.isa import Act, Instruction, MatMul, assemble


@dataclass
class Workload:
    """A program and initial memory images: {first row: 2-D array (rows, lanes)} per memory."""
    program: list[Instruction]
    data: dict[int, np.ndarray] = field(default_factory=dict)
    weight: dict[int, np.ndarray] = field(default_factory=dict)
    routing: dict[int, np.ndarray] = field(default_factory=dict)
    psum: dict[int, np.ndarray] = field(default_factory=dict)

    def words(self) -> list[int]:
        """The assembled program (64-bit words, HALT-terminated)."""
        return assemble(self.program)

    def rows_used(self, memory: str) -> int:
        """One past the last initialised row of `memory`."""
        images = getattr(self, memory)
        return max((base + len(rows) for base, rows in images.items()), default=0)


@dataclass(frozen=True)
class Region:
    """Where a result lies: memory name, first row, rows, lanes."""
    memory: str
    base: int
    n_rows: int
    lanes: int


def _pad(a, rows: int, lanes: int) -> np.ndarray:
    out = np.zeros((rows, lanes), dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    out[:a.shape[0], :a.shape[1]] = a
    return out


def _check(name: str, value: int, limit: int) -> None:
    if not 1 <= value <= limit:
        raise ValueError(f"{name}: {value} outside [1, {limit}]")


def conv_tile(patches, weights, rows: int, cols: int, shift: int) -> tuple[Workload, dict[str, Region]]:
    """Convolution tile: im2col `patches` (N, K) int8 against `weights` (K, M) int8, M <= cols.

    Data rows k*N + n hold patches[n, k*R:(k+1)*R]; weight tile k (rows k*R..) holds
    weights[k*R:(k+1)*R]; one MATMUL per K-chunk accumulates into partial-sum rows 0..N-1, then
    ReLU with `shift` writes int8 results to weight-buffer rows from `ceil(K/R)*R` (C lanes).
    Results: "sums" (psum, N x M) and "out" (weight buffer, N x M).
    """
    patches, weights = np.asarray(patches), np.asarray(weights)
    n, k_total = patches.shape
    m = weights.shape[1]
    _check("output channels", m, cols)
    chunks = -(-k_total // rows)
    work = Workload(program=[])
    for k in range(chunks):
        work.data[k * n] = _pad(patches[:, k * rows:(k + 1) * rows], n, rows)
        work.weight[k * rows] = _pad(weights[k * rows:(k + 1) * rows], rows, cols)
        work.program.append(MatMul(d_addr=k * n, w_addr=k * rows, p_addr=0, n=n, accumulate=k > 0))
    out = chunks * rows
    work.program.append(Act("relu", p_addr=0, n=n, length=m, shift=shift, dst="weight", dst_addr=out))
    return work, {"sums": Region("psum", 0, n, m), "out": Region("weight", out, n, m)}


def classcaps(u, w, rows: int, cols: int, shift: int) -> tuple[Workload, dict[str, Region]]:
    """ClassCaps predictions: u (I, Din) int8 with Din <= R, w (I, Din, J*Dout) int8.

    Each input capsule i has ceil(J*Dout / C) weight tiles t (tile i*T + t holds
    w[i][:, t*C:(t+1)*C]); a MATMUL with n = 1 (data row i = u[i]) writes partial-sum row i*T + t;
    an ACT "none" requantizes all rows into weight-buffer rows from (I*T)*R.
    Results: "u_hat" (weight buffer, I*T rows x C lanes; flatten row-major per capsule and take
    the first J*Dout values).
    """
    u, w = np.asarray(u), np.asarray(w)
    n_in, d_in = u.shape
    flat = w.shape[2]
    _check("input capsule dimension", d_in, rows)
    tiles = -(-flat // cols)
    work = Workload(program=[], data={0: _pad(u, n_in, rows)})
    for i in range(n_in):
        for t in range(tiles):
            tile = i * tiles + t
            work.weight[tile * rows] = _pad(w[i][:, t * cols:(t + 1) * cols], rows, cols)
            work.program.append(MatMul(d_addr=i, w_addr=tile * rows, p_addr=tile, n=1))
    out = n_in * tiles * rows
    work.program.append(Act("none", p_addr=0, n=n_in * tiles, length=cols, shift=shift, dst="weight",
                            dst_addr=out))
    return work, {"u_hat": Region("weight", out, n_in * tiles, cols)}


class RoutingLayout:
    """The one routing program: where a routing over I input capsules and J output capsules of D
    atoms with `routings` iterations lies on a CapsAcc `config`, and the runs (`Workload`s) of each
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
    """

    def __init__(self, n_in: int, n_out: int, dim: int, config: ArrayConfig, routings: int = ROUTINGS):
        self.n_in, self.n_out, self.dim, self.config, self.routings = n_in, n_out, dim, config, routings
        self.geometry = routing_geometry(n_in, n_out, dim, config, routings)
        g = self.geometry
        tiles = [g["kf_full"]] * (g["tJ"] - 1) + [g["kf_last"]]
        self._tile_base = [sum(tiles[:t]) * config.rows for t in range(g["tJ"])]
        self._tiles = tiles

    # ---- where the state lies ----------------------------------------------------------------

    def _classes(self, t: int) -> int:
        return min(self.config.cols, self.n_out - t * self.config.cols)

    def _slot(self, iteration: int) -> int:
        """The weight row of the output-capsule set iteration `iteration` writes."""
        g = self.geometry
        return g["V"] + (0 if g["resident"] else iteration) * g["KF"] * self.config.rows

    def blocks(self) -> list[tuple[int, int]]:
        """The blocks of inputs (first input, inputs): nq chunks of q_in inputs each (the last fewer)."""
        size = self.geometry["nq"] * self.geometry["q_in"]
        return [(i0, min(size, self.n_in - i0)) for i0 in range(0, self.n_in, size)]

    def regions(self, iteration: int = 0) -> dict[str, Region]:
        """The state's regions after iteration `iteration`: "c" (the last block's coupling rows),
        "s", "v" (that iteration's output-capsule rows), "b" (the logits: every input's when
        resident, else the last block's)."""
        g, cfg = self.geometry, self.config
        last_first, last_inputs = self.blocks()[-1]
        logits = self.n_in if g["resident"] else last_inputs
        return {"c": Region("routing", 0, ceil_div(last_inputs, g["q_in"]) * self.n_out, cfg.rows),
                "s": Region("psum", g["S"], self.n_out * g["tD"], cfg.cols),
                "v": Region("weight", self._slot(iteration), g["KF"] * cfg.rows, cfg.cols),
                "b": Region("psum", g["B"], logits * g["tJ"], cfg.cols)}

    def last_block(self) -> slice:
        """The inputs whose coupling (and, recomputing, logits) `regions` holds."""
        first, inputs = self.blocks()[-1]
        return slice(first, first + inputs)

    def coupling_rows(self, coupling) -> np.ndarray:
        """The routing-buffer rows (chunks x J, R) of a block's coupling c (inputs, J)."""
        q_in, rows = self.geometry["q_in"], self.config.rows
        c = np.asarray(coupling)
        chunks = ceil_div(len(c), q_in)
        out = np.zeros((chunks * self.n_out, rows), dtype=np.int64)
        for m in range(chunks):
            part = c[m * q_in:(m + 1) * q_in]
            out[m * self.n_out:(m + 1) * self.n_out, :len(part)] = part.T
        return out

    def coupling(self, rows) -> np.ndarray:
        """c (inputs of the last block, J) from the routing-buffer rows of `coupling_rows`."""
        q_in = self.geometry["q_in"]
        inputs = self.blocks()[-1][1]
        rows = np.asarray(rows)
        return np.concatenate([rows[m * self.n_out:(m + 1) * self.n_out, :min(q_in, inputs - m * q_in)].T
                               for m in range(ceil_div(inputs, q_in))])

    def logit_rows(self, logits) -> np.ndarray:
        """The partial-sum rows (inputs x tJ, C) of logits b (inputs, J)."""
        b, cols, t_j = np.asarray(logits), self.config.cols, self.geometry["tJ"]
        return _pad(b, len(b), t_j * cols).reshape(len(b) * t_j, cols)

    def logits(self, rows) -> np.ndarray:
        """b (inputs, J) from partial-sum rows of `logit_rows`."""
        t_j, cols = self.geometry["tJ"], self.config.cols
        return np.asarray(rows).reshape(-1, t_j * cols)[:, :self.n_out]

    def sums(self, rows) -> np.ndarray:
        """s (J, D) from the partial-sum rows of the "s" region."""
        t_d, cols = self.geometry["tD"], self.config.cols
        return np.asarray(rows).reshape(self.n_out, t_d * cols)[:, :self.dim]

    def v_rows(self, v) -> np.ndarray:
        """The weight rows (KF R, C) of one set of output capsules v (J, D): per class tile t, row
        l P + d, lane l."""
        g, cols = self.geometry, self.config.cols
        out = np.zeros((g["KF"] * self.config.rows, cols), dtype=np.int64)
        for j in range(self.n_out):
            t, lane = divmod(j, cols)
            base = self._tile_base[t] + lane * g["period"]
            out[base:base + self.dim, lane] = np.asarray(v)[j]
        return out

    def v(self, rows) -> np.ndarray:
        """v (J, D) from a set's weight rows (`v_rows`)."""
        rows, g, cols = np.asarray(rows), self.geometry, self.config.cols
        out = []
        for j in range(self.n_out):
            t, lane = divmod(j, cols)
            base = self._tile_base[t] + lane * g["period"]
            out.append(rows[base:base + self.dim, lane])
        return np.stack(out)

    # ---- the programs --------------------------------------------------------------------------

    def _features(self, u, t: int) -> np.ndarray:
        """Class tile t's predictions, flattened as its output-capsule rows: (I, kf_t R), column
        l P + d = u_hat[i, tC + l, d]."""
        g, cols = self.geometry, self.config.cols
        out = np.zeros((len(u), self._tiles[t] * self.config.rows), dtype=np.int64)
        for lane in range(self._classes(t)):
            out[:, lane * g["period"]:lane * g["period"] + self.dim] = u[:, t * cols + lane, :]
        return out

    def _update_runs(self, u, first: int, inputs: int, sets: int, p_addr: int, writes: bool) -> list[Workload]:
        """b += sum_d u_hat v over `sets` output-capsule sets (from set 0) for inputs first..first +
        inputs - 1, into partial-sum rows from p_addr: per set KF MATMULs of inputs tJ rows, in runs
        of mpr; with `writes` the first MATMUL writes (a recomputation), all others accumulate."""
        g, rows = self.geometry, self.config.rows
        t_j, n = g["tJ"], inputs * g["tJ"]
        tiles = [(t, k) for t in range(t_j) for k in range(self._tiles[t])]
        features = [self._features(u[first:first + inputs], t) for t in range(t_j)]
        runs = []
        for s in range(sets):
            base = g["V"] + s * g["KF"] * rows
            for m0 in range(0, len(tiles), g["mpr"]):
                part = tiles[m0:m0 + g["mpr"]]
                data = np.zeros((len(part) * n, rows), dtype=np.int64)
                program = []
                for index, (t, k) in enumerate(part):
                    block = features[t][:, k * rows:(k + 1) * rows]
                    data[index * n + t:(index + 1) * n:t_j, :block.shape[1]] = block
                    w_addr = base + self._tile_base[t] + k * rows
                    program.append(MatMul(d_addr=index * n, w_addr=w_addr, p_addr=p_addr, n=n,
                                          accumulate=not (writes and s == 0 and m0 == 0 and index == 0)))
                runs.append(Workload(program, data={0: data}))
        return runs

    def phase(self, kind: str, u_hat, shift_logits: int = 0, shift_sum: int = 0, coupling=None,
              iteration: int | None = None) -> list[Workload]:
        """The runs of one phase over predictions u_hat (I, J, D) int8. "routing_uniform" (iteration
        0) writes `coupling` (I, J), the uniform first coupling, into the routing buffer block by
        block; "routing_softmax" (iteration 1 .. routings - 1, default the last a recomputation
        allows, `recompute`) computes c from the
        logits (requantized by `shift_logits`; recomputed per block when not resident); both then form
        s and v (squash after requantizing by `shift_sum`) into the iteration's output-capsule set;
        "routing_update" adds the agreement to resident logits (no runs when they are recomputed).
        Phases read the state the previous ones left (class docstring)."""
        u = np.asarray(u_hat)
        g, rows, cols = self.geometry, self.config.rows, self.config.cols
        n_out, t_j, t_d, q_in = self.n_out, g["tJ"], g["tD"], g["q_in"]
        if kind == "routing_update":
            if not g["resident"]:
                return []
            return [run for i0 in range(0, self.n_in, g["na"])
                    for run in self._update_runs(u, i0, min(g["na"], self.n_in - i0), 1, g["B"] + i0 * t_j, False)]
        if kind not in ("routing_uniform", "routing_softmax"):
            raise ValueError(f"unknown routing phase {kind!r}")
        if kind == "routing_uniform" and coupling is None:
            raise ValueError("routing_uniform: the uniform coupling (I, J) is needed")
        if iteration is None:
            iteration = 0 if kind == "routing_uniform" else g["recompute"]
        runs = []
        for first, inputs in self.blocks():
            chunks = ceil_div(inputs, q_in)
            block_runs = []
            if kind == "routing_softmax":
                logits = g["B"] + (first * t_j if g["resident"] else 0)
                if not g["resident"]:
                    block_runs += self._update_runs(u, first, inputs, g["recompute"], logits, True)
                acts = [Act("softmax", p_addr=logits + m * q_in * t_j, n=min(q_in, inputs - m * q_in) * t_j,
                            length=n_out, shift=shift_logits, dst="routing", dst_addr=m * n_out, column=True,
                            stride=0) for m in range(chunks)]
                block_runs += [Workload(acts[a:a + g["acts_per_run"]]) for a in range(0, len(acts), g["acts_per_run"])]
            pairs = [(m, j, e) for m in range(chunks) for j in range(n_out) for e in range(t_d)]
            matmul_runs = []
            for p0 in range(0, len(pairs), g["pairs_per_run"]):
                batch = pairs[p0:p0 + g["pairs_per_run"]]
                tiles = np.zeros((len(batch) * rows, cols), dtype=np.int64)
                program = []
                for index, (m, j, e) in enumerate(batch):
                    tile = u[first + m * q_in:first + min(inputs, (m + 1) * q_in), j, e * cols:(e + 1) * cols]
                    tiles[index * rows:index * rows + len(tile), :tile.shape[1]] = tile
                    program.append(MatMul(d_addr=m * n_out + j, w_addr=index * rows, p_addr=g["S"] + j * t_d + e, n=1,
                                          accumulate=first + m > 0, src="routing"))
                matmul_runs.append(Workload(program, weight={0: tiles}))
            if kind == "routing_uniform":
                matmul_runs[0].routing[0] = self.coupling_rows(np.asarray(coupling)[first:first + inputs])
            runs += block_runs + matmul_runs
        if kind == "routing_uniform" and not g["resident"] and g["recompute"] > 1:
            zeros = np.zeros(((g["recompute"] - 1) * g["KF"] * rows, cols), dtype=np.int64)
            runs[0].weight[self._slot(1)] = zeros
        squash = [Act("squash", p_addr=g["S"] + t * cols * t_d, n=self._classes(t) * t_d, length=self.dim,
                      shift=shift_sum, dst="weight", dst_addr=self._slot(iteration) + self._tile_base[t], column=True,
                      stride=g["stride"]) for t in range(t_j)]
        runs.append(Workload(squash))
        return runs

    def routing(self, u_hat, shift_logits: int, shift_sum: int, coupling) -> list[Workload]:
        """The runs of a whole routing of `routings` iterations (`capsacc.mapping.routing_phases`);
        the logits (when resident) must start at zero in the partial-sum memory."""
        runs, iteration = [], 0
        for kind in routing_phases(self.routings):
            iteration += kind == "routing_softmax"
            runs += self.phase(kind, u_hat, shift_logits, shift_sum, coupling, iteration)
        return runs
