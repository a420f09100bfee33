"""Workloads for CapsAcc: programs (see `rtl.isa`) with the buffer images they expect.

Each builder returns a `Workload` (program plus the initial rows of every memory, keyed by first
row) and the `Region`s of its results (`RoutingLayout`: a list of runs and the regions of its
state; its programs are `capsacc.programs.RoutingPlan`'s, which the calibrated model times), so a host (the Amaranth test bench, `sim/`'s harnesses)
can load, run and read it without re-deriving encodings. Buffer layouts:

- data / routing buffer rows hold R int8 lanes (lane r meets PE row r);
- weight buffer rows hold C int8 lanes; a weight tile is R consecutive rows (tile row r feeds
  PE row r, lane c PE column c);
- partial-sum rows hold C signed acc_bits lanes (lane c = array column c).
Values past a tile's used rows and lanes are zero.
"""

from dataclasses import dataclass, field

import numpy as np

from capsacc.mapping import ceil_div
from capsacc.programs import Region, RoutingPlan
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


class RoutingLayout(RoutingPlan):
    """The routing programs of `capsacc.programs.RoutingPlan` (the layout and the runs, defined once
    there) with their data: the conversions between the on-chip rows and the routing's arrays, and
    `phase` / `routing`, the runs as `Workload`s whose images `fill` gives."""

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

    def _features(self, u, t: int) -> np.ndarray:
        """Class tile t's predictions, flattened as its output-capsule rows: (I, kf_t R), column
        l P + d = u_hat[i, tC + l, d]."""
        g, cols = self.geometry, self.config.cols
        out = np.zeros((len(u), self._tiles[t] * self.config.rows), dtype=np.int64)
        for lane in range(self._classes(t)):
            out[:, lane * g["period"]:lane * g["period"] + self.dim] = u[:, t * cols + lane, :]
        return out

    def fill(self, load, u_hat, coupling=None) -> np.ndarray:
        """The rows of a run's image `load` (a `capsacc.programs.Load` of `RoutingRun.images`, by its
        part) for predictions u_hat (I, J, D) int8 and the uniform `coupling` (I, J)."""
        g, rows, cols = self.geometry, self.config.rows, self.config.cols
        u = np.asarray(u_hat)
        kind = load.part[0]
        if kind == "update":  # the predictions of update tiles m0 .. (`_update_runs`)
            _, first, inputs, m0 = load.part
            t_j, n = g["tJ"], inputs * g["tJ"]
            data = np.zeros((load.rows, rows), dtype=np.int64)
            for index, (t, k) in enumerate(self.update_tiles()[m0:m0 + g["mpr"]]):
                block = self._features(u[first:first + inputs], t)[:, k * rows:(k + 1) * rows]
                data[index * n + t:(index + 1) * n:t_j, :block.shape[1]] = block
            return data
        if kind == "tiles":  # the weighted sums' tiles of pairs p0 ..
            _, first, inputs, p0 = load.part
            q_in = g["q_in"]
            tiles = np.zeros((load.rows, cols), dtype=np.int64)
            for index, (m, j, e) in enumerate(self.weighted_pairs(inputs)[p0:p0 + g["pairs_per_run"]]):
                tile = u[first + m * q_in:first + min(inputs, (m + 1) * q_in), j, e * cols:(e + 1) * cols]
                tiles[index * rows:index * rows + len(tile), :tile.shape[1]] = tile
            return tiles
        if kind == "coupling":
            _, first, inputs = load.part
            return self.coupling_rows(np.asarray(coupling)[first:first + inputs])
        return np.zeros((load.rows, cols), dtype=np.int64)  # "zeros": the sets a recomputation reads

    def _workloads(self, runs, u_hat, coupling) -> list[Workload]:
        works = []
        for run in runs:
            work = Workload(list(run.program))
            for load in run.images:
                getattr(work, load.memory)[load.base] = self.fill(load, u_hat, coupling)
            works.append(work)
        return works

    def phase(self, kind: str, u_hat, shift_logits: int = 0, shift_sum: int = 0, coupling=None,
              iteration: int | None = None) -> list[Workload]:
        """The runs of one phase (`RoutingPlan.phase_runs`) over predictions u_hat (I, J, D) int8, as
        `Workload`s: "routing_uniform" needs the uniform first `coupling` (I, J)."""
        if kind == "routing_uniform" and coupling is None:
            raise ValueError("routing_uniform: the uniform coupling (I, J) is needed")
        return self._workloads(self.phase_runs(kind, iteration, shift_logits, shift_sum), u_hat, coupling)

    def routing(self, u_hat, shift_logits: int, shift_sum: int, coupling) -> list[Workload]:
        """The runs of a whole routing of `routings` iterations (`RoutingPlan.routing_runs`) as
        `Workload`s, from any partial-sum state (the first update writes the logits)."""
        return self._workloads(self.routing_runs(shift_logits, shift_sum), u_hat, coupling)
