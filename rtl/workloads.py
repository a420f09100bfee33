"""Workloads for CapsAcc: programs (see `rtl.isa`) with the buffer images they expect.

Each builder returns a `Workload` (program plus the initial rows of every memory, keyed by first
row) and the `Layout` of its results, so a host (the Amaranth test bench, `sim/`'s harnesses)
can load, run and read it without re-deriving encodings. Buffer layouts:

- data / routing buffer rows hold R int8 lanes (lane r meets PE row r);
- weight buffer rows hold C int8 lanes; a weight tile is R consecutive rows (tile row r feeds
  PE row r, lane c PE column c);
- partial-sum rows hold C signed acc_bits lanes (lane c = array column c).
Values past a tile's used rows and lanes are zero.
"""

from dataclasses import dataclass, field

import numpy as np

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


def routing_iteration(logits, u_hat, rows: int, cols: int, shift_logits: int,
                      shift_sum: int) -> tuple[Workload, dict[str, Region]]:
    """One dynamic-routing iteration: logits b (I, J) partial sums, predictions u_hat (I, J, D) int8;
    I <= R, J <= C, D <= C.

    1. ACT softmax over each logit row i (psum rows 0..I-1, J lanes), column mode into the routing
       buffer: c_ij at routing row j, lane i.
    2. For each j a MATMUL (n = 1, src routing row j) against tile U_j (weight rows j*R.., row i =
       u_hat[i, j, :]) gives s_j at psum row I + j.
    3. ACT squash on psum rows I.. (D lanes), column mode with stride D into the weight buffer from
       row J*R: v_jd at row J*R + j*D + d, lane j -- block-diagonal tiles over flat f = j*D + d.
    4. For each chunk k of f (R values) a MATMUL streams data rows k*I + i (u_hat[i] flattened,
       lanes f - k*R) against block-diagonal tile k and accumulates b_ij += u_hat[i, j] . v_j.
    Results: "c" (routing, J x I: c transposed), "s" (psum, J x D), "v_blocks" (weight rows,
    J*D x C: v_jd at row j*D + d lane j), "b" (psum, I x J).
    """
    b, u = np.asarray(logits), np.asarray(u_hat)
    n_in, n_out, dim = u.shape
    _check("input capsules", n_in, rows)
    _check("output capsules", n_out, cols)
    _check("capsule dimension", dim, cols)
    flat = u.reshape(n_in, n_out * dim)
    chunks = -(-(n_out * dim) // rows)
    v_base = n_out * rows
    work = Workload(program=[], psum={0: _pad(b, n_in, cols)})
    work.weight[v_base] = np.zeros((chunks * rows, cols), dtype=np.int64)
    for j in range(n_out):
        work.weight[j * rows] = _pad(u[:, j, :], rows, cols)
    for k in range(chunks):
        work.data[k * n_in] = _pad(flat[:, k * rows:(k + 1) * rows], n_in, rows)
    work.program.append(Act("softmax", p_addr=0, n=n_in, length=n_out, shift=shift_logits,
                            dst="routing", dst_addr=0, column=True, stride=0))
    for j in range(n_out):
        work.program.append(MatMul(d_addr=j, w_addr=j * rows, p_addr=n_in + j, n=1, src="routing"))
    work.program.append(Act("squash", p_addr=n_in, n=n_out, length=dim, shift=shift_sum,
                            dst="weight", dst_addr=v_base, column=True, stride=dim))
    for k in range(chunks):
        work.program.append(MatMul(d_addr=k * n_in, w_addr=v_base + k * rows, p_addr=0, n=n_in,
                                   accumulate=True))
    return work, {"c": Region("routing", 0, n_out, n_in), "s": Region("psum", n_in, n_out, dim),
                  "v_blocks": Region("weight", v_base, n_out * dim, cols),
                  "b": Region("psum", 0, n_in, n_out)}
