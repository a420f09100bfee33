"""Golden model of the CapsAcc RTL (`rtl/`): numpy functions with exactly its integer semantics.

Every function here mirrors one datapath of the hardware bit for bit; the RTL tests compare the
Amaranth simulation against them. Fixed-point formats (also in docs/rtl.md):

- data and weights: signed 8-bit integers (int8).
- partial sums: `acc_bits`-bit two's complement (`ACC_BITS` = 34 by default). Every product is added to the
  partial sum coming from the PE above and the result keeps its low `acc_bits` bits (wraps, no
  saturation); the accumulator's additions of tile results wrap the same way.
- requantization (`requantize`): arithmetic shift right by `shift` bits with round-half-up
  (add 2**(shift-1) first), then saturation to [-128, 127].
- squash: input int8 in Q3.4 (value q / 16), output int8 in Q0.7 (value y / 128).
- softmax: input int8 logits in Q3.4, output int8 in Q0.7 (saturated to 127, so 1.0 reads 127).

Arrays: `x` data tiles have shape (N, K) (N data vectors of K elements), weights (K, M);
results (N, M) of dtype int64 holding the wrapped values.
"""

import math
from dataclasses import dataclass

import numpy as np

from capsacc.mapping import MAX_CAPSULE, act_lanes
from rtl.widths import ACC_BITS as RTL_ACC_BITS

ACC_BITS = RTL_ACC_BITS
"""Accumulator width (bits) of the RTL, `rtl.widths.ACC_BITS` (34: no sum of the search space
wraps; the published CapsAcc has 25)."""

SQUASH_FRAC_BITS = 4
"""Fractional bits of the squash input (Q3.4)."""

SOFTMAX_FRAC_BITS = 4
"""Fractional bits of the softmax input logits (Q3.4)."""

SQRT_TABLE_FRAC_BITS = 4
"""The square-root table holds sqrt(m) with 4 fractional bits (values 0..256, 9 bits)."""

RECIP_TABLE_BITS = 17
"""The reciprocal table holds 2**17 / d for a 9-bit mantissa d in [256, 512) (values 256..511)."""

EXP_TABLE_BITS = 15
"""exp(-d / 16) is tabulated as round(2**15 * exp(-d / 16)) for d in 0..255 (16-bit unsigned)."""

OUT_FRAC_BITS = 7
"""Fractional bits of squash and softmax outputs (Q0.7)."""


def exp_table() -> np.ndarray:
    """The softmax lookup table: entry d is round(2**15 * exp(-d / 2**4)), shape (256,), int64."""
    d = np.arange(256, dtype=np.float64)
    return np.round(2.0 ** EXP_TABLE_BITS * np.exp(-d / 2.0 ** SOFTMAX_FRAC_BITS)).astype(np.int64)


def wrap(values, bits: int = ACC_BITS) -> np.ndarray:
    """`values` reduced to `bits`-bit two's complement (int64 array)."""
    v = np.asarray(values, dtype=np.int64)
    half = np.int64(1) << (bits - 1)
    return ((v + half) & ((np.int64(1) << bits) - 1)) - half


def _int8(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.size and (arr.min() < -128 or arr.max() > 127):
        raise ValueError(f"{name}: values outside int8 [-128, 127]")
    return arr.astype(np.int64)


def matmul_tile(x, w, acc_bits: int = ACC_BITS) -> np.ndarray:
    """One pass of data through the PE array: x (N, R) int8 times w (R, C) int8 -> (N, C).

    The partial sum runs down a column PE by PE (row 0 first), wrapping to `acc_bits` after each
    addition; the result equals the exact product reduced modulo 2**acc_bits.
    """
    x64, w64 = _int8(x, "x"), _int8(w, "w")
    out = np.zeros((x64.shape[0], w64.shape[1]), dtype=np.int64)
    for r in range(x64.shape[1]):
        out = wrap(out + np.outer(x64[:, r], w64[r, :]), acc_bits)
    return out


EXACT_FLOAT_BITS = 53
"""Integers below 2**53 are exact in float64, so a float64 matrix product of int8 operands is exact
while K * 2**14 stays below it."""


def matmul(x, w, acc_bits: int = ACC_BITS) -> np.ndarray:
    """x (..., K) int8 times w (K, M) int8 -> (..., M) wrapped to `acc_bits`, as fast as numpy allows:
    equal to `tiled_matmul` for any tiling, as wrapping after each addition and once at the end give the
    same residue modulo 2**acc_bits. Exact through float64 BLAS when K * 2**14 < 2**53, else int64."""
    x64, w64 = _int8(x, "x"), _int8(w, "w")
    if x64.shape[-1] << 14 < 1 << EXACT_FLOAT_BITS:
        return wrap(np.rint(x64.astype(np.float64) @ w64.astype(np.float64)), acc_bits)
    return wrap(x64 @ w64, acc_bits)


def accumulate(stored, tile, acc_bits: int = ACC_BITS) -> np.ndarray:
    """The accumulator unit: stored partial sums plus a new tile result, wrapped."""
    return wrap(np.asarray(stored, dtype=np.int64) + np.asarray(tile, dtype=np.int64), acc_bits)


def tiled_matmul(x, w, rows: int, acc_bits: int = ACC_BITS) -> np.ndarray:
    """x (N, K) times w (K, M) as the array computes it: K split into chunks of `rows`, each chunk's
    product accumulated (wrapping) into the partial-sum memory. M must fit the array columns."""
    x64, w64 = _int8(x, "x"), _int8(w, "w")
    out = np.zeros((x64.shape[0], w64.shape[1]), dtype=np.int64)
    for k in range(0, x64.shape[1], rows):
        out = accumulate(out, matmul_tile(x64[:, k:k + rows], w64[k:k + rows, :], acc_bits), acc_bits)
    return out


def requantize(values, shift: int) -> np.ndarray:
    """Arithmetic shift right by `shift` (0..31) with round-half-up, saturated to int8 (int64 array)."""
    v = np.asarray(values, dtype=np.int64)
    if shift > 0:
        v = (v + (np.int64(1) << (shift - 1))) >> shift
    return np.clip(v, -128, 127)


def relu(q) -> np.ndarray:
    """max(q, 0) elementwise."""
    return np.maximum(np.asarray(q, dtype=np.int64), 0)


def sqrt_table() -> np.ndarray:
    """The square-root table, shape (512,), int64: entry m (m < 256) is round(16 sqrt(m)), entry
    256 + m is round(16 sqrt(m + 1/2)) (the mid-point of a truncated mantissa; only m >= 64 used)."""
    m = np.arange(512, dtype=np.float64)
    mid = np.where(m < 256, m, m - 256 + 0.5)
    return np.round(2.0 ** SQRT_TABLE_FRAC_BITS * np.sqrt(mid)).astype(np.int64)


def recip_table() -> np.ndarray:
    """The reciprocal table, shape (256,), int64: entry i is round(2**17 / (256 + i + 1/2)), the
    reciprocal of the mid-point of the 9-bit mantissa 256 + i."""
    i = np.arange(256, dtype=np.float64)
    return np.round(2.0 ** RECIP_TABLE_BITS / (256 + i + 0.5)).astype(np.int64)


_SQRT_TABLE = sqrt_table()
_RECIP_TABLE = recip_table()
_EXP_TABLE = exp_table()


def bit_length(values) -> np.ndarray:
    """int.bit_length of every element of `values` (integers in 0 .. 2**53), int64 array of the same shape."""
    v = np.asarray(values, dtype=np.int64)
    return np.frexp(v.astype(np.float64))[1].astype(np.int64)


def sqrt_index(s2):
    """(table index, exponent e) of the square root of s2 >= 0 (an integer or an array of them):
    e = max(0, (bitlen(s2) - 7) // 2), m = s2 >> 2e < 256; the index is m when e = 0 (exact), else
    256 + m (m in [64, 256)). sqrt(s2) ~ SQRT[index] * 2**(e - 4)."""
    s2 = np.asarray(s2, dtype=np.int64)
    e = np.maximum(0, (bit_length(s2) - 7) // 2)
    m = s2 >> (2 * e)
    return np.where(e > 0, m + 256, m), e


def recip_index(divisor):
    """(table index, exponent f) of the reciprocal of divisor >= 256 (an integer or an array of them):
    f = bitlen(divisor) - 9, index = (divisor >> f) - 256. 1 / divisor ~ RECIP[index] * 2**-(17 + f)."""
    divisor = np.asarray(divisor, dtype=np.int64)
    f = bit_length(divisor) - 9
    return (divisor >> f) - 256, f


def squash_scale(s2):
    """(factor, shift) of squash for a capsule with sum of squares s2 (0 .. 64 * 128**2; an integer or an
    array of them): factor = SQRT[.] * RECIP[.] (18 bits), shift = f - e + 14 (14..20), so that
    factor / 2**shift ~ 128 sqrt(s2) / (256 + s2)."""
    si, e = sqrt_index(s2)
    ri, f = recip_index(256 + np.asarray(s2, dtype=np.int64))
    return _SQRT_TABLE[si] * _RECIP_TABLE[ri], f - e + 14


def softmax_scale(total):
    """(factor, shift) of softmax for a sum of exponentials `total` (2**15 .. 64 * 2**15; an integer or
    an array of them): factor = RECIP[.] (9 bits), shift = f + 10, so that factor / 2**shift ~ 128 / total."""
    ri, f = recip_index(total)
    return _RECIP_TABLE[ri], f + 10


def scale(operand, factor, shift) -> np.ndarray:
    """sat8((operand * factor + 2**(shift - 1)) >> shift), shift >= 1, elementwise (broadcast): the
    unit's output stage."""
    operand, factor, shift = (np.asarray(a, dtype=np.int64) for a in (operand, factor, shift))
    return np.clip((operand * factor + (np.int64(1) << (shift - 1))) >> shift, -128, 127)


def squash(q) -> np.ndarray:
    """Squash of capsule vectors q (int8, Q3.4, 1..64 atoms along the last axis; any leading axes),
    output int8 Q0.7 of the same shape.

    S2 = sum q_i**2, (factor, shift) = squash_scale(S2), y_i = scale(q_i, factor, shift):
    y_i / 128 ~ s_i |s| / (1 + |s|**2) with s = q / 16 (table-based square root and reciprocal).
    """
    qs = _int8(q, "q")
    factor, shift = squash_scale(np.sum(qs * qs, axis=-1, keepdims=True))
    return scale(qs, factor, shift)


def softmax(q) -> np.ndarray:
    """Softmax of int8 logits q (Q3.4, 1..64 of them along the last axis; any leading axes), output
    int8 Q0.7 saturated to 127, of the same shape.

    m = max q, e_i = EXP[m - q_i], E = sum e_i, (factor, shift) = softmax_scale(E),
    y_i = scale(e_i, factor, shift).
    """
    qs = _int8(q, "q")
    e = _EXP_TABLE[qs.max(axis=-1, keepdims=True) - qs]
    factor, shift = softmax_scale(e.sum(axis=-1, keepdims=True))
    return scale(e, factor, shift)


def activate(sums, shift: int, function: str) -> np.ndarray:
    """The activation unit on partial-sum rows (N, L) (or any (..., L)): requantize, then `function`
    per row (along the last axis).

    function: "none", "relu", "squash" (each row one capsule vector) or "softmax" (each row one
    set of logits). Returns int8 values (int64 array) of the same shape.
    """
    q = requantize(np.atleast_2d(sums), shift)
    if function == "none":
        return q
    if function == "relu":
        return relu(q)
    if function == "squash":
        return squash(q)
    if function == "softmax":
        return softmax(q)
    raise ValueError(f"function: unknown activation {function!r} (none, relu, squash, softmax)")


def rows_per_capsule(length: int, cols: int) -> int:
    """Partial-sum rows one capsule of `length` atoms occupies on C = `cols` lanes: ceil(L / C)."""
    return -(-length // cols)


def capsules_per_row(length: int, cols: int) -> int:
    """Capsules of `length` atoms in one row of `cols` lanes: floor(C / L) (0 when L > C)."""
    return cols // length


def activate_rows(sums, shift: int, function: str, length: int) -> np.ndarray:
    """The vector activation unit on partial-sum rows (N, C) of C lanes: requantize every lane,
    then `function` over capsules of `length` (L, 1..64) atoms. Returns (N, C) int8 values (int64).

    - none / relu: every lane, `length` does not matter.
    - squash / softmax, L <= C (segmented): row r holds floor(C / L) capsules, capsule k in lanes
      k L .. k L + L - 1; lanes from floor(C / L) L on are 0.
    - squash / softmax, L > C (spanning): a capsule fills ceil(L / C) consecutive rows, atom a in
      row a // C, lane a % C; N must be a multiple of ceil(L / C); lanes of a capsule's last row
      from L - (ceil(L / C) - 1) C on are 0.
    """
    q = requantize(np.atleast_2d(np.asarray(sums, dtype=np.int64)), shift)
    n, cols = q.shape
    if function in ("none", "relu"):
        return q if function == "none" else relu(q)
    if function not in ("squash", "softmax"):
        raise ValueError(f"function: unknown activation {function!r} (none, relu, squash, softmax)")
    if not 1 <= length <= MAX_CAPSULE:
        raise ValueError(f"length: {length} outside [1, {MAX_CAPSULE}]")
    vector = squash if function == "squash" else softmax
    out = np.zeros_like(q)
    if length <= cols:
        used = capsules_per_row(length, cols) * length
        for r in range(n):
            out[r, :used] = np.concatenate([vector(seg) for seg in q[r, :used].reshape(-1, length)])
        return out
    span = rows_per_capsule(length, cols)
    if n % span:
        raise ValueError(f"{n} rows are not whole capsules of {span} rows ({length} atoms on {cols} lanes)")
    for r in range(0, n, span):
        flat = np.zeros(span * cols, dtype=np.int64)
        flat[:length] = vector(q[r:r + span].reshape(-1)[:length])
        out[r:r + span] = flat.reshape(span, cols)
    return out


def conv_tile(patches, weights, rows: int, shift: int, acc_bits: int = ACC_BITS) -> np.ndarray:
    """A convolution tile: im2col `patches` (N, K) int8 against `weights` (K, M) int8, K tiled by
    `rows` with accumulation, then requantization and ReLU. Returns (N, M) int8 values."""
    return activate(tiled_matmul(patches, weights, rows, acc_bits), shift, "relu")


def im2col(image, kernel: int, stride: int) -> np.ndarray:
    """Patches of an image (H, W, Ch) -> (N_out**2, kernel*kernel*Ch), rows in raster order,
    each row ordered (ky, kx, ch). No padding."""
    img = np.asarray(image)
    h, w, _ = img.shape
    out_h = (h - kernel) // stride + 1
    out_w = (w - kernel) // stride + 1
    rows = [img[y * stride:y * stride + kernel, x * stride:x * stride + kernel, :].reshape(-1)
            for y in range(out_h) for x in range(out_w)]
    return np.stack(rows)


def classcaps_sums(u, w, acc_bits: int = ACC_BITS) -> np.ndarray:
    """ClassCaps partial sums: u (..., I, Din) int8 input capsules (any leading batch axes), w (I, Din,
    J*Dout) int8 transformation matrices -> (..., I, J*Dout) u[i] @ w[i], wrapped to acc_bits (`matmul`)."""
    u64, w64 = _int8(u, "u"), _int8(w, "w")
    return np.stack([matmul(u64[..., i, :], w64[i], acc_bits) for i in range(w64.shape[0])], axis=-2)


def classcaps(u, w, shift: int, acc_bits: int = ACC_BITS) -> np.ndarray:
    """ClassCaps predictions u_hat (..., I, J*Dout) int8: `classcaps_sums` requantized by `shift`."""
    return requantize(classcaps_sums(u, w, acc_bits), shift)


def capsule_sum(maps, shift: int, function: str, length: int, acc_bits: int = ACC_BITS) -> np.ndarray:
    """The element-wise sum of int8 maps (P of them, each (N, M): N positions of M values, capsules of
    `length` atoms side by side), wrapped to acc_bits, then `activate` over each capsule: requantize by
    `shift`, `function` "none" (saturation only) or "squash". (N, M) int8 values (int64).

    The chained CapsCell network's element-wise steps (`capsacc.mapping.ELEMENTWISE_KINDS`): a cell's
    output is its two branches' squashed capsules added ("none", shift 0: saturated to int8; Keras adds
    them after the squashes and does not squash the sum), and ToCapsules squashes one map (a
    ConvCaps3D's votes are routed: `routing`, at each position). The RTL streams each operand through
    identity weight tiles into the same partial sums."""
    stacked = np.stack([_int8(m, "maps") for m in maps])
    sums = wrap(stacked.sum(axis=0), acc_bits)
    n, m = sums.shape
    return activate(sums.reshape(-1, length), shift, function).reshape(n, m)


def uniform_coupling(n_in: int, n_out: int) -> np.ndarray:
    """The first routing iteration's coupling c_ij = 1/J for every (i, j), as a constant in the
    activation unit's output format Q0.7: round-half-up(128 / J), saturated to 127 (J = 1 reads 127,
    as the softmax's 1.0 does). No softmax runs over the zero logits. (I, J) int8 values."""
    one = 1 << OUT_FRAC_BITS
    value = min(one - 1, (2 * one + n_out) // (2 * n_out))
    return np.full((n_in, n_out), value, dtype=np.int64)


def routing_sum(coupling, u_hat, shift_sum: int, acc_bits: int = ACC_BITS):
    """The weighted sum and squash of a routing iteration (any leading batch axes `...`).

    coupling: (..., I, J) int8 Q0.7 c; u_hat: (..., I, J, D) int8 predictions.
    s_j = sum_i c_ij u_hat[i, j]                          (..., J, D) wrapped sums
    v = squash(requantize(s, shift_sum)) per j            (..., J, D) int8 Q0.7
    Returns (s, v).
    """
    u = _int8(u_hat, "u_hat")
    c = _int8(coupling, "coupling")
    s = wrap(np.einsum("...ij,...ijd->...jd", c, u), acc_bits)
    return s, activate(s, shift_sum, "squash")


def routing_update(logits, u_hat, v, acc_bits: int = ACC_BITS) -> np.ndarray:
    """The agreement update of a routing iteration: b_ij += sum_d u_hat[i, j, d] v_jd, (..., I, J)
    wrapped to acc_bits (logits: (..., I, J) partial sums; u_hat: (..., I, J, D) int8; v: (..., J, D)
    int8; any leading batch axes)."""
    u = _int8(u_hat, "u_hat")
    v = _int8(v, "v")
    agreement = np.einsum("...ijd,...jd->...ij", u, v)
    return accumulate(logits, wrap(agreement, acc_bits), acc_bits)


def routing(u_hat, routings: int, shift_logits: int, shift_sum: int, acc_bits: int = ACC_BITS):
    """Dynamic routing with `routings` iterations (>= 1), as the trained ClassCaps runs it, on u_hat
    (..., I, J, D) (any leading batch axes): the first coupling is `uniform_coupling`, each later one
    the softmax over j of requantize(b, shift_logits); every iteration sums and squashes
    (`routing_sum`), every one but the last updates the logits (`routing_update`, from zero). Returns
    (c, s, v, b) of the last iteration: its coupling, sums, output capsules, and the logits it started
    from (zeros when routings = 1)."""
    if routings < 1:
        raise ValueError(f"routings: {routings} must be at least 1")
    u = _int8(u_hat, "u_hat")
    logits = np.zeros(u.shape[:-1], dtype=np.int64)
    c = np.broadcast_to(uniform_coupling(*u.shape[-3:-1]), logits.shape)
    for iteration in range(routings):
        if iteration:
            logits = routing_update(logits, u, v, acc_bits)
            c = activate(logits, shift_logits, "softmax")
        s, v = routing_sum(c, u, shift_sum, acc_bits)
    return c, s, v, logits


@dataclass
class MachineState:
    """Memories of a CapsAcc (rows x cols array, `depth` rows per buffer): int64 arrays
    data (depth, rows), weight (depth, cols), routing (depth, rows), psum (depth, cols); the
    off-chip memory the DMA moves rows from and to, `offchip` (beats, bytes_per_cycle) uint8; and
    the program memory, `program` (program_depth,) uint64 words."""
    rows: int
    cols: int
    depth: int
    acc_bits: int = ACC_BITS
    data: np.ndarray = None
    weight: np.ndarray = None
    routing: np.ndarray = None
    psum: np.ndarray = None
    bytes_per_cycle: int = 16
    offchip: np.ndarray = None
    program_depth: int = 64
    program: np.ndarray = None

    def __post_init__(self):
        if self.offchip is None:
            self.offchip = np.zeros((0, self.bytes_per_cycle), dtype=np.uint8)
        self.program = np.zeros(self.program_depth, dtype=np.uint64) if self.program is None \
            else np.array(self.program, dtype=np.uint64).reshape(self.program_depth)
        shapes = {"data": self.rows, "weight": self.cols, "routing": self.rows, "psum": self.cols}
        for name, lanes in shapes.items():
            value = getattr(self, name)
            setattr(self, name, np.zeros((self.depth, lanes), dtype=np.int64) if value is None
                    else np.array(value, dtype=np.int64).reshape(self.depth, lanes))


def act_row_offsets(n_rows: int, span: int, stride: int) -> list[int]:
    """The partial-sum rows an ACT visits, in order, relative to its p_addr: capsule g's row t
    (t < span, g < n_rows / span) at g span + t (consecutive; stride 0, and every column-mode ACT) or
    at g + t stride (strided row mode, stride 1..63: a capsule over column blocks whose MATMULs
    wrote stride rows each). A row-mode result goes to the same offset from dst_addr."""
    if stride == 0:
        return list(range(n_rows))
    return [g + t * stride for g in range(n_rows // span) for t in range(span)]


def host_words(program) -> list[int]:
    """The words the host writes into the program memory for `program`: 64-bit words as given (an
    overlay program's first segment, `capsacc.schedule.resident_words`), instructions of `rtl.isa`
    assembled (`rtl.isa.assemble`: a HALT appended when missing)."""
    from rtl.isa import assemble

    if program and all(isinstance(item, (int, np.integer)) for item in program):
        return [int(item) for item in program]
    return assemble(program)


def execute(program, state: MachineState) -> dict[str, int]:
    """Run a CapsAcc program (instructions of `rtl.isa`, or their 64-bit words) on `state` in place
    as the RTL does: the host writes its words (`host_words`) into the program memory from word 0,
    then the words run from the program counter 0, which wraps
    at `program_depth`, until a HALT. Integer semantics of the RTL: addresses wrap modulo the depth,
    lanes past a destination row are dropped, sums wrap to acc_bits. An ACT processes n
    partial-sum rows rounded up to whole capsules (`activate_rows`), visited in the order of
    `act_row_offsets` (row j of the visit at p_addr + offset_j), and writes lanes 0 .. k - 1 of each
    result row (`capsacc.mapping.act_lanes`), in row mode (element (j, l) to row dst_addr +
    offset_j, lane l) or column mode (to row dst_addr + j * stride + l, lane j; with span =
    ceil(L / C) > 1, row j = g span + t is row t of capsule g and its lane l atom a = t C + l, to
    row dst_addr + g span stride + a, lane g). A DMA load into the program memory writes word
    (addr + k) mod program_depth from the 8 bytes of its row (byte j in bits 8j + 7..8j); a store
    from it writes zero beats. Fetch runs two words ahead in the RTL, so a word a load writes is
    executed as loaded only when fetched after the engine was idle: ValueError when a word is
    executed that a load may still be writing (a word of a load before the next WAIT or DMA, or the
    one word after it). Returns the performance counters the RTL reports (`rtl.capsacc.COUNTERS`),
    busy_cycles excepted."""
    from rtl.isa import Act, Dma, Halt, MatMul, Wait, beats_per_row, buffer_lanes, disassemble

    counts = dict.fromkeys(("instructions", "weight_loads", "weight_load_cycles", "data_reads", "data_writes",
                            "weight_reads", "weight_writes", "routing_reads", "routing_writes",
                            "pe_active_cycles", "psum_reads", "psum_writes", "act_ops", "offchip_read_beats",
                            "offchip_write_beats"), 0)
    r, c, depth, program_depth = state.rows, state.cols, state.depth, state.program_depth
    words = host_words(program)
    if len(words) > program_depth:
        raise ValueError(f"program of {len(words)} words exceeds the program memory ({program_depth} words)")
    state.program[:len(words)] = words
    pc, loading, settling = 0, frozenset(), frozenset()  # words a load may be writing; for one more fetch
    while True:
        if pc in loading or pc in settling:
            raise ValueError(f"program word {pc} executed while a DMA load may still be writing it")
        settling = frozenset()
        instruction = disassemble(int(state.program[pc]))
        pc = (pc + 1) % program_depth
        counts["instructions"] += 1
        if isinstance(instruction, (Dma, Wait)):  # both wait for the DMA engine to be idle
            settling, loading = loading, frozenset()
        if isinstance(instruction, MatMul):
            tile = np.stack([state.weight[(instruction.w_addr + i) % depth] for i in range(r)])
            source = state.routing if instruction.src == "routing" else state.data
            counts["weight_loads"] += 1
            counts["weight_load_cycles"] += r
            counts["weight_reads"] += r
            counts[f"{instruction.src}_reads"] += instruction.n
            counts["pe_active_cycles"] += instruction.n * r * c
            counts["psum_writes"] += instruction.n
            if instruction.accumulate:
                counts["psum_reads"] += instruction.n
            for k in range(instruction.n):
                result = matmul_tile(source[(instruction.d_addr + k) % depth][None, :], tile, state.acc_bits)[0]
                row = (instruction.p_addr + (0 if instruction.hold else k)) % depth
                stored = state.psum[row] if instruction.accumulate else 0
                state.psum[row] = accumulate(stored, result, state.acc_bits)
        elif isinstance(instruction, Act):
            target = getattr(state, instruction.dst)
            length, func = instruction.length, instruction.func
            capsule = func in ("squash", "softmax")
            span = rows_per_capsule(length, c) if capsule else 1
            n_rows = -(-instruction.n // span) * span
            counts["psum_reads"] += n_rows
            offsets = act_row_offsets(n_rows, span, 0 if instruction.column else instruction.stride)
            sums = np.stack([state.psum[(instruction.p_addr + offset) % depth] for offset in offsets])
            values = activate_rows(sums, instruction.shift, func, length)
            _, width, last_width = act_lanes(c, func, length)
            for j, offset in enumerate(offsets):
                for lane in range(last_width if j % span == span - 1 else width):
                    if instruction.column:
                        group, slot = divmod(j, span)
                        row, col = instruction.dst_addr + group * span * instruction.stride + slot * c + lane, group
                    else:
                        row, col = instruction.dst_addr + offset, lane
                    counts["act_ops"] += 1
                    counts[f"{instruction.dst}_writes"] += 1
                    if col < target.shape[1]:
                        target[row % depth, col] = values[j, lane]
        elif isinstance(instruction, Dma):
            lanes = buffer_lanes(instruction.buffer, r, c)
            per_row = beats_per_row(lanes, state.bytes_per_cycle)
            to_program = instruction.buffer == "program"
            rows = [(instruction.addr + k) % (program_depth if to_program else depth) for k in range(instruction.n)]
            for k, row in enumerate(rows):
                first = instruction.ext + k * per_row
                if instruction.store:
                    values = np.zeros(per_row * state.bytes_per_cycle, dtype=np.uint8)
                    if not to_program:
                        values[:lanes] = getattr(state, instruction.buffer)[row] & 0xFF
                    state.offchip[first:first + per_row] = values.reshape(per_row, -1)
                    continue
                values = state.offchip[first:first + per_row].reshape(-1)[:lanes]
                if to_program:
                    state.program[row] = values.view("<u8")[0]
                else:
                    getattr(state, instruction.buffer)[row] = values.astype(np.int8)
            if to_program and not instruction.store:
                loading = frozenset(rows)
            counts["offchip_write_beats" if instruction.store else "offchip_read_beats"] += instruction.n * per_row
        elif isinstance(instruction, Halt):
            break
    return counts
