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
from capsacc.mapping import routing_geometry, routing_phases
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
    atoms lies on a CapsAcc `config`, and the runs (`Workload`s) of each of its phases
    (`capsacc.mapping.ROUTING_PHASES`; geometry Q, kf, V, S, runs by `capsacc.mapping.routing_geometry`).

    On-chip state, kept between phases and runs:

    - logits b_ij: partial-sum row i, lane j (rows 0..I-1);
    - coupling c_ij: routing-buffer row q*J + j, lane i - q*R for the R-chunk q = i // R of the inputs;
    - sums s_j: partial-sum row S + j (S = I), lanes 0..D-1;
    - output capsules v_jd: weight row V + j*D + d, lane j: kf block-diagonal tiles of R rows over
      the flattened f = j*D + d (every other lane and row of the region zero).

    Each run's own images: the tiles U_qj (row i - q*R = u_hat[i, j, :]) from weight row 0 (weighted
    sums), the flattened predictions of a chunk of capsules from data row 0 (update).
    """

    def __init__(self, n_in: int, n_out: int, dim: int, config: ArrayConfig):
        self.n_in, self.n_out, self.dim, self.config = n_in, n_out, dim, config
        self.geometry = routing_geometry(n_in, n_out, dim, config)

    @property
    def regions(self) -> dict[str, Region]:
        """The state's regions: "c" (coupling rows), "s", "v" (the block-diagonal rows), "b"."""
        g, cfg = self.geometry, self.config
        return {"c": Region("routing", 0, g["Q"] * self.n_out, cfg.rows),
                "s": Region("psum", g["S"], self.n_out, self.dim),
                "v": Region("weight", g["V"], self.n_out * self.dim, cfg.cols),
                "b": Region("psum", 0, self.n_in, self.n_out)}

    def coupling_rows(self, coupling) -> np.ndarray:
        """The routing-buffer rows (Q*J, R) holding coupling c (I, J)."""
        rows, q = self.config.rows, self.geometry["Q"]
        padded = _pad(coupling, q * rows, self.n_out)
        return padded.reshape(q, rows, self.n_out).transpose(0, 2, 1).reshape(q * self.n_out, rows)

    def coupling(self, rows) -> np.ndarray:
        """c (I, J) from the routing-buffer rows of `coupling_rows`."""
        q, r = self.geometry["Q"], self.config.rows
        return np.asarray(rows).reshape(q, self.n_out, r).transpose(0, 2, 1).reshape(q * r, self.n_out)[:self.n_in]

    def v_rows(self, v) -> np.ndarray:
        """The weight rows (kf*R, C) of the output capsules v (J, D) as block-diagonal tiles."""
        out = np.zeros((self.geometry["kf"] * self.config.rows, self.config.cols), dtype=np.int64)
        for j in range(self.n_out):
            out[j * self.dim:(j + 1) * self.dim, j] = np.asarray(v)[j]
        return out

    def v(self, rows) -> np.ndarray:
        """v (J, D) from the block-diagonal weight rows (at least J*D of them)."""
        rows = np.asarray(rows)
        return np.stack([rows[j * self.dim:(j + 1) * self.dim, j] for j in range(self.n_out)])

    def phase(self, kind: str, u_hat, shift_logits: int = 0, shift_sum: int = 0,
              coupling=None) -> list[Workload]:
        """The runs of one phase over predictions u_hat (I, J, D) int8. "routing_uniform" writes
        `coupling` (I, J), the uniform first coupling, into the routing buffer with its first run;
        "routing_softmax" computes c from the logits (requantized by `shift_logits`); both then form
        s and v (squash after requantizing by `shift_sum`); "routing_update" adds the agreement to the
        logits. Phases read the state the previous ones left (class docstring)."""
        u = np.asarray(u_hat)
        g, rows, cols = self.geometry, self.config.rows, self.config.cols
        n_in, n_out, dim = self.n_in, self.n_out, self.dim
        runs = []
        if kind == "routing_update":
            flat = u.reshape(n_in, n_out * dim)
            for i0 in range(0, n_in, g["na"]):
                na = min(g["na"], n_in - i0)
                data = np.zeros((g["kf"] * na, rows), dtype=np.int64)
                for k in range(g["kf"]):
                    part = flat[i0:i0 + na, k * rows:(k + 1) * rows]
                    data[k * na:(k + 1) * na, :part.shape[1]] = part
                runs.append(Workload([MatMul(d_addr=k * na, w_addr=g["V"] + k * rows, p_addr=i0, n=na,
                                             accumulate=True) for k in range(g["kf"])], data={0: data}))
            return runs
        if kind == "routing_softmax":
            acts = [Act("softmax", p_addr=q * rows, n=min(rows, n_in - q * rows), length=n_out, shift=shift_logits,
                        dst="routing", dst_addr=q * n_out, column=True, stride=0) for q in range(g["Q"])]
            runs += [Workload(acts[a:a + g["acts_per_run"]]) for a in range(0, len(acts), g["acts_per_run"])]
        elif kind != "routing_uniform":
            raise ValueError(f"unknown routing phase {kind!r}")
        elif coupling is None:
            raise ValueError("routing_uniform: the uniform coupling (I, J) is needed")
        pairs = [(q, j) for q in range(g["Q"]) for j in range(n_out)]
        for p0 in range(0, len(pairs), g["pairs_per_run"]):
            batch = pairs[p0:p0 + g["pairs_per_run"]]
            tiles = np.zeros((len(batch) * rows, cols), dtype=np.int64)
            program = []
            for index, (q, j) in enumerate(batch):
                tile = u[q * rows:(q + 1) * rows, j, :]
                tiles[index * rows:index * rows + len(tile), :dim] = tile
                program.append(MatMul(d_addr=q * n_out + j, w_addr=index * rows, p_addr=g["S"] + j, n=1,
                                      accumulate=q > 0, src="routing"))
            runs.append(Workload(program, weight={0: tiles}))
        if kind == "routing_uniform":
            runs[0].routing[0] = self.coupling_rows(coupling)
        runs.append(Workload([Act("squash", p_addr=g["S"], n=n_out, length=dim, shift=shift_sum, dst="weight",
                                  dst_addr=g["V"], column=True, stride=dim)]))
        return runs

    def routing(self, u_hat, routings: int, shift_logits: int, shift_sum: int, coupling) -> list[Workload]:
        """The runs of a whole routing of `routings` iterations (`capsacc.mapping.routing_phases`);
        the logits must start at zero in the partial-sum memory."""
        return [run for kind in routing_phases(routings)
                for run in self.phase(kind, u_hat, shift_logits, shift_sum, coupling)]
