"""How the calibrated model maps an operation onto CapsAcc: matrix shapes, tiling and run counts.

One rule set serves both sides: `sim.driver` builds the RTL programs by these rules, and the
calibrated model (`capsacc.calibrated`) counts the instructions they produce in closed form
(`plan_counts`), without simulating. The rules place one batch of B = `ArrayConfig.batch` images
(the same network, so the same weights): the counts are the batch's. Shapes of the operations (a
NASCaps `Operation`):

- conv / convcaps: im2col with a bias column, the B images' rows stacked (image b's first):
  N = B·n_out² data rows, K = k²·ch_in·caps_in + 1, M = ch_out·caps_out outputs; ReLU (conv) or
  squash over each output capsule (convcaps).
- convcaps3d: the votes of a 3-D capsule convolution over (y, x, capsule type) with a k x k x k kernel
  ('same' along the type axis) and caps_in features: N = B·n_out²·ch_in (the B images' rows
  stacked), K = k³·caps_in + 1, M = ch_out·caps_out, requantized (no activation: the routing over
  the ch_in types, "route3d", squashes), in column blocks of C lanes as for ReLU.
- chained CapsCell networks (`chain`, `CHAIN_KINDS`): element-wise sums of int8 capsule maps
  (`elementwise_shape`; the B images' positions stacked: n = B·positions rows): column blocks as a
  conv kind's (C lanes without activation; whole capsules, or a capsule over ceil(L / C) blocks, for
  squash); each operand's block streams through ceil(width / R) identity weight tiles accumulating
  into the same partial sums (n = rows of the chunk, `elementwise_chunking`), and the chunk's last
  run has the ACTs.
- classcaps: I = n_in²·ch_in input capsules of caps_in atoms, each its own weight matrix
  (caps_in x J·D with J = ch_out classes of D = caps_out atoms): I products with N = B (each capsule's
  weights serve the B images); no activation (requantization only).
- routing over I input capsules and J output capsules of D atoms, `routings` iterations (default
  `ROUTINGS` = 3, the trained ClassCaps's), in phases (`ROUTING_PHASES`): "routing_uniform" (the
  first iteration's weighted sums with the uniform coupling c = 1/J, written by the host: no softmax
  over zero logits; squash), "routing_update" (the agreement update of the logits) and
  "routing_softmax" (softmax of the logits, weighted sums, squash). A routing is the phases of
  `routing_phases(routings)`: 2·routings - 1 of them, the published expansion's five `routing`
  operations for routings = 3 (`operation_kinds`). A routing's u_hat is per image: the B images'
  routings run one after the other, each with the programs of one image (B times the counts).

Tiling on an R x C array with buffers of `buffer_depth` rows and a program memory of
`program_depth` words (rules of `rtl.isa`; one "run" is one program from start to HALT):

- matmul (conv kinds): column blocks of C lanes (ReLU) or of floor(C / L) whole capsules of
  L = caps_out atoms (squash, L <= C: floor(C / L)·L lanes, the last block the remaining
  capsules; the block's ACT is a segmented squash with length L, `MatmulShape.act_length`), or,
  for L > C, each capsule type over span = ceil(L / C) blocks (C lanes, the last L - (span - 1)·C);
  mb blocks (`MatmulShape.blocks`). Data rows in the fewest chunks of at most min(D // (2 mb),
  1023 // span) rows, and 63 when span > 1, balanced: nc = ceil(N / chunks) (`matmul_chunk_rows`,
  the last chunk the rest); per chunk, K chunks of R rows grouped kr at a time per run,
  kr = min(D // nc, (D - mb nc) // (mb R), (P - 1 - mb) // mb); each run one MATMUL per
  (K chunk, block) with n = nc (block b's results in partial-sum rows b·nc ..), the last run of a
  chunk one ACT per span blocks: n = span·nc rows from the first block's, in strided row mode
  (stride nc, `rtl.isa`) when span > 1, so that capsule g's rows are read from its span blocks.
- classcaps: kc = ceil(caps_in / R) K chunks and mb = ceil(J D / C) column tiles per capsule;
  capsules packed k = max(1, R // caps_in) to a weight tile (`classcaps_packing`): a group of k
  capsules shares each tile, capsule s's caps_in x C weights in tile rows s·caps_in.., and streams
  B·k data rows, row b·k + s holding image b's capsule s's atoms in lanes s·caps_in.. and zeros
  elsewhere, so result row b·k + s is that capsule's prediction alone (block-diagonal data; the last
  group of an operation is padded with zero rows to k). Each tile is so loaded once per batch: the
  MATMUL phase is stream bound (B·k rows per R-cycle load) once B·k >= R. ci = g·k capsules per run,
  with h = mb·B·k partial-sum rows per group, g = min(D // (B k kc), D // (mb (kc R + B k)),
  (P - 2) // (kc mb), max(1, 1023 // h)) groups; one MATMUL (n = B·k) per (group, K chunk, tile),
  then ACTs "none" (length C) over the run's g·h rows in pieces of 1023 (`ACT_MAX_ROWS`; one ACT
  when h <= 1023). A group of h > 1023 rows runs alone and needs kc·mb + ceil(h / 1023) <= P - 1
  program words. k > 1 only when caps_in <= R / 2, so kc = 1 there; k = 1 is one capsule per tile.
- lone activations (relu, squash, softmax): one run with one row-mode ACT of n_in rows (rounded up
  to whole capsules), L = caps_in (1..64).
- routing phases (programs of `rtl.workloads.RoutingLayout`, any I, J and D = 1..64, `routing_geometry`):
  tJ = ceil(J / C) class tiles, tD = ceil(D / C) rows per capsule (s_j spans tD partial-sum rows,
  the logits of an input tJ rows); output capsules as KF = sum over class tiles of ceil(J_t P / R)
  weight tiles (P = tD ceil(D / tD) rows per class, one lane per class). Inputs in chunks of
  q_in = min(R, 1023 // tJ) (one coupling row per class and chunk), chunks in blocks of nq (the
  block's couplings in the routing buffer). The logits stay in the partial-sum memory ("resident")
  when J tD + I tJ rows fit; otherwise each softmax phase recomputes a block's logits from the
  output capsules of the earlier iterations (max(1, routings - 1) sets, those not yet computed zero)
  and the update phase has no runs. Softmax (routing_softmax only): per block, the recomputation
  (`sets` x ceil(KF / mpr) runs of KF MATMULs with n = inputs tJ, mpr = min(KF, P - 1)), then one
  column-mode ACT per chunk (n = q_in tJ but the last, length J) in runs of P - 1; weighted sums
  (uniform and softmax): per block chunks x J x tD MATMULs (n = 1) in runs of min(V // R, P - 1),
  V the first weight row of the output capsules; then one run of tJ column-mode squash ACTs
  (n = classes x tD, length D, stride ceil(D / tD)); update (resident): input chunks of
  na = min(I, depth // (mpr tJ), 16383 // tJ), each ceil(KF / mpr) runs of KF MATMULs (n = na tJ).
  Each image of the batch runs these programs in turn.
"""

import dataclasses
from dataclasses import dataclass

from capsacc.array import ArrayConfig
from capsacc.errors import InputError

ROUTINGS = 3
"""Routing iterations of a class layer on CapsAcc: the default `routings` of the trained ClassCaps
(`nas.layers`). The published expansion's five `routing` operations are its 2·3 - 1 phases."""
ROUTING_PHASES = ("routing_uniform", "routing_softmax", "routing_update")
"""The phases of a routing (see the module docstring); each is one operation of the calibrated model."""
KINDS = ("conv", "convcaps", "convcaps3d", "classcaps") + ROUTING_PHASES
"""Operation kinds the calibrated model covers: those of `capsacc.network.OP_KINDS`, routing by phase."""
CHAIN_KINDS = ("tocaps", "capsadd", "route3d")
"""Operations a chained CapsCell network runs beyond the published expansion's (`chain`): element-wise
sums of capsule maps through identity-weight MATMULs, then one ACT (`ElementwiseShape`)."""
ACTIVATIONS = ("relu", "squash", "softmax")
"""Lone activations: one ACT over op.n_in partial-sum rows of op.caps_in lanes (calibration points)."""

COUNT_FIELDS = ("runs", "matmuls", "matmul_rows", "matmul_rows_accumulate", "matmul_rows_routing",
                "matmul_phase_cycles", "acts", "act_rows", "act_elements", "acts_column", "act_spans",
                "act_rows_row", "act_elements_column")
"""What `plan_counts` returns: programs run, MATMUL instructions, data rows they stream (sum of
n; those added to stored partial sums; those read from the routing buffer), the cycles of the
runs' MATMUL phases (`matmul_run_cycles`, summed over runs), ACT instructions, partial-sum rows
they process (n rounded up to whole capsules), elements they write (`act_lanes` per row),
column-mode ACTs, the sum of their capsule spans (rows per capsule; 1 for none and ReLU), the rows
of row-mode ACTs and the elements of column-mode ACTs (the activation unit takes a row per cycle
in row mode and an element per cycle in column mode)."""


def result_delay_cycles(rows: int, cols: int) -> int:
    """Cycles from the read of a MATMUL's data row to the write of its partial-sum row on an R x C
    CapsAcc: R + C + 2 (the buffer read 1, the array's input register 1, the array R + C: input
    skew, R multiply-then-add stages, output de-skew; `rtl.capsacc`)."""
    return rows + cols + 2


def matmul_run_cycles(m: int, n: int, rows: int, cols: int) -> int:
    """Cycles a run that starts with m MATMULs of n data rows each spends before its first ACT or
    HALT can issue, counted from its first DISPATCH cycle (0 when m = 0).

    The closed form of `rtl.isa.timing` for such a run (tests compare the two): MATMUL i issues
    at F_i = max(F_{i-1} + R, M_{i-1}, S_{i-2} + C - 2) (F_1 = 2, the first DISPATCH), streams
    from M_i = max(F_i + 1, S_{i-1}) to S_i = M_i + n, and every result is written from
    S_m + D + 1 on (D = `result_delay_cycles`; the ACT or HALT issues at S_m + D + 1). From the sixth MATMUL on, S_i - S_{i-2} is constant, so the recurrence
    runs at most six steps and extrapolates by pairs (exact; tested for R, C <= 64, n <= 16383).
    """
    if m <= 0:
        return 0
    offered, load_free, slot_free, stream_free = 2, 0, 0, 0
    bank_ready = [0, 0]
    last = []
    for i in range(min(m, 6)):
        fire = max(offered, load_free, slot_free, bank_ready[i % 2])
        move = max(fire + 1, stream_free)
        last.append(move + n)
        load_free, slot_free, stream_free, offered = fire + rows, move, last[-1], fire + 1
        bank_ready[i % 2] = last[-1] + cols - 2
    extra = m - len(last)
    final = last[-1]
    if extra > 0:
        pair = last[-1] - last[-3]
        final = (last[-2] if extra % 2 else last[-1]) + pair * ((extra + 1) // 2)
    return final + result_delay_cycles(rows, cols) + 1 - 2  # results written from S_m + D + 1; the run began at 2

MAX_CAPSULE = 64
"""Longest capsule (squash) or logit vector (softmax) one ACT takes, atoms."""


def act_lanes(cols: int, func: str, length: int) -> tuple[int, int, int]:
    """(span, width, last_width) of an ACT with `length` L on C = `cols` lanes: the partial-sum rows
    of one capsule, and how many lanes (0 .. k - 1) of each result row it writes, of a capsule's
    last row. none / relu: (1, min(L, C), min(L, C)); squash / softmax with L <= C: a row holds
    floor(C / L) capsules, (1, floor(C / L) L, same); L > C: a capsule spans ceil(L / C) rows,
    (ceil(L / C), C, L - (ceil(L / C) - 1) C)."""
    if func in ("none", "relu"):
        return 1, min(length, cols), min(length, cols)
    span = ceil_div(length, cols)
    if span == 1:
        return 1, (cols // length) * length, (cols // length) * length
    return span, cols, length - (span - 1) * cols


ACT_MAX_ROWS = 1023
"""Most partial-sum rows one ACT instruction processes (its 10-bit n field)."""
ACT_MAX_STRIDE = 63
"""Largest row stride of an ACT (its 6-bit stride field): in strided row mode, the data rows of a
chunk whose capsules span column blocks."""


class MappingError(InputError):
    """An operation the tiling rules cannot place on the array (too wide for its columns, too large
    for its buffers or program memory); a `ValueError` too."""


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class MatmulShape:
    """A conv-kind operation as a matrix product: data (n, k) x weights (k, m); activation `func`
    over column blocks of `width` lanes. `capsule`: atoms of an output capsule (squash; the ACT's
    segment length L, `width` = floor(C / L)·L packs floor(C / L) capsules per block when L <= C),
    0 for ReLU. `span`: column blocks per capsule, ceil(L / C) when L > C (`width` = C), else 1."""

    n: int
    k: int
    m: int
    func: str
    width: int
    capsule: int = 0
    span: int = 1

    @property
    def blocks(self) -> int:
        """mb: column blocks, `matmul_blocks` in closed form."""
        if self.span > 1:
            return self.m // self.capsule * self.span
        return ceil_div(self.m, self.width)

    def act_length(self, width: int) -> int:
        """The ACT `length` of a column block of `width` lanes: the capsule's atoms (squash, the
        unit's segmented mode: a block's capsules side by side), the block's width (ReLU)."""
        return self.capsule if self.func == "squash" else width


def matmul_shape(kind: str, op, config: ArrayConfig) -> MatmulShape:
    """The matrix product of a conv, convcaps or convcaps3d operation over a batch of `config.batch`
    images (see the module docstring)."""
    batch = config.batch
    if kind == "conv":
        return _check_width(MatmulShape(batch * op.n_out ** 2, op.kernel ** 2 * op.ch_in * op.caps_in + 1,
                                        op.ch_out * op.caps_out, "relu", config.cols), config)
    if kind == "convcaps":
        return _capsule_shape(batch * op.n_out ** 2, op.kernel ** 2 * op.ch_in * op.caps_in + 1, op, config)
    if kind == "convcaps3d":
        return MatmulShape(batch * op.n_out ** 2 * op.ch_in, op.kernel ** 3 * op.caps_in + 1, op.ch_out * op.caps_out,
                           "none", config.cols)
    raise MappingError(f"{kind!r} is not a convolution kind")


def _capsule_shape(n: int, k: int, op, config: ArrayConfig) -> MatmulShape:
    """A squash product: floor(C / L) capsules of L = caps_out atoms per column block, or a capsule
    over ceil(L / C) blocks of C lanes when L > C."""
    length, cols = op.caps_out, config.cols
    if not 1 <= length <= MAX_CAPSULE:
        raise MappingError(f"capsules of {length} atoms: the activation unit takes 1..{MAX_CAPSULE}")
    if length > cols:
        return MatmulShape(n, k, op.ch_out * length, "squash", cols, length, ceil_div(length, cols))
    return MatmulShape(n, k, op.ch_out * length, "squash", (cols // length) * length, length)


def _check_width(shape: MatmulShape, config: ArrayConfig) -> MatmulShape:
    if shape.width > min(config.cols, 63):
        raise MappingError(f"capsules of {shape.width} atoms do not fit the {config.cols} columns")
    return shape


def matmul_blocks(shape: MatmulShape) -> list[tuple[int, int]]:
    """Column blocks (first output column, width): every `width` columns, or (span > 1) capsule by
    capsule, span blocks each."""
    if shape.span > 1:
        return [(c + t * shape.width, min(shape.width, shape.capsule - t * shape.width))
                for c in range(0, shape.m, shape.capsule) for t in range(shape.span)]
    return [(c, min(shape.width, shape.m - c)) for c in range(0, shape.m, shape.width)]


def matmul_chunking(shape: MatmulShape, config: ArrayConfig, nc: int) -> int:
    """kr: K chunks per run for data chunks of nc rows."""
    mb = shape.blocks
    depth, rows = config.buffer_depth, config.rows
    kr = min(depth // nc, (depth - mb * nc) // (mb * rows), (config.program_depth - 1 - mb) // mb)
    if kr < 1:
        raise MappingError(f"{mb} column blocks of {nc} rows do not fit buffers of {depth} rows "
                         f"and a program of {config.program_depth} words")
    return kr


def matmul_chunk_rows(shape: MatmulShape, config: ArrayConfig) -> int:
    """nc: data rows per chunk, the N rows split into the fewest chunks within the bound
    min(D // (2 mb), 1023 // span, and 63 when span > 1), of equal sizes (the last one smaller by
    less than the number of chunks): a chunk's ACT covers span·nc rows, with stride nc when
    span > 1, and no chunk of a few rows is left to stream in fewer cycles than its tiles load."""
    mb = shape.blocks
    bound = min(config.buffer_depth // (2 * mb), ACT_MAX_ROWS // shape.span,
                ACT_MAX_STRIDE if shape.span > 1 else ACT_MAX_ROWS)
    if bound < 1:
        raise MappingError(f"{mb} column blocks do not fit buffers of {config.buffer_depth} rows")
    return ceil_div(shape.n, ceil_div(shape.n, bound))


def classcaps_dims(op) -> tuple[int, int, int, int]:
    """(I input capsules, caps_in atoms, J classes, D atoms) of a classcaps or routing operation."""
    return op.n_in ** 2 * op.ch_in, op.caps_in, op.ch_out, op.caps_out


def classcaps_packing(d_in: int, config: ArrayConfig) -> int:
    """k: ClassCaps input capsules of `d_in` atoms packed into one R-row weight tile (module docstring).

    A MATMUL of n < R rows is load bound (R cycles per tile, docs/rtl.md): one capsule per tile
    (n = 1) loads R - d_in rows of zeros and streams one row in the R cycles. k capsules per tile
    load k·d_in useful rows and stream k rows in the same R cycles, so the layer's MATMUL phase
    shrinks k-fold, to the bound of a one-row-per-cycle weight port when d_in divides R."""
    return max(1, config.rows // d_in)


def classcaps_per_run(d_in: int, flat: int, config: ArrayConfig) -> int:
    """ci: input capsules per run (a multiple of `classcaps_packing`), each streamed for the batch's
    `config.batch` images (module docstring)."""
    k, batch = classcaps_packing(d_in, config), config.batch
    kc, mb = ceil_div(d_in, config.rows), ceil_div(flat, config.cols)
    depth, group_rows = config.buffer_depth, mb * batch * k
    groups = min(depth // (batch * k * kc), depth // (mb * (kc * config.rows + batch * k)),
                 (config.program_depth - 2) // (kc * mb), max(1, ACT_MAX_ROWS // group_rows))
    if groups < 1 or groups * kc * mb + ceil_div(groups * group_rows, ACT_MAX_ROWS) > config.program_depth - 1:
        raise MappingError(f"{k} capsule(s) of {d_in} x {flat} weights for a batch of {batch} image(s) do not fit "
                           "the buffers or the program")
    return groups * k


def classcaps_act_pieces(rows: int) -> list[tuple[int, int]]:
    """The ACTs "none" of a ClassCaps run over `rows` partial-sum rows: (first row, rows), at most
    `ACT_MAX_ROWS` each, in order."""
    return [(first, min(ACT_MAX_ROWS, rows - first)) for first in range(0, rows, ACT_MAX_ROWS)]


@dataclass(frozen=True)
class ElementwiseShape:
    """A `CHAIN_KINDS` operation: `operands` int8 maps of n rows (positions) x m values (capsules of
    `length` atoms side by side) summed element-wise, then the ACT `func` ("none" or a squash of
    each capsule). `columns`: its column blocks and ACTs, as a conv kind's (`MatmulShape` with k = 0:
    C lanes for "none"; for squash floor(C / L) whole capsules per block, or a capsule over
    span = ceil(L / C) blocks, one strided ACT each); each operand's block enters the array through
    `chunks` = ceil(width / R) identity weight tiles."""

    columns: MatmulShape
    length: int
    operands: int
    chunks: int

    @property
    def n(self) -> int:
        return self.columns.n

    @property
    def m(self) -> int:
        return self.columns.m

    @property
    def func(self) -> str:
        return self.columns.func


def elementwise_shape(kind: str, op, config: ArrayConfig) -> ElementwiseShape:
    """The sum of a `CHAIN_KINDS` operation (`op` the operation `chain` runs it for):
    "tocaps": a CapsCell's input feature map read as capsules (nas.layers.ToCapsules: n_in² positions
    of ch_in capsules of caps_in atoms, one operand, squash); "capsadd": a CapsCell's output, its third
    convolution's capsules plus its skip branch's (n_out² positions of ch_out x caps_out, two operands,
    no activation: saturated); "route3d": a ConvCaps3D's routing over its ch_in input capsule types
    with the uniform coupling (one iteration: the sum of the ch_in vote maps, squash). The n rows are
    the `config.batch` images' positions, stacked."""
    if kind == "tocaps":
        n, m, length, operands, func = config.batch * op.n_in ** 2, op.ch_in * op.caps_in, op.caps_in, 1, "squash"
    elif kind in ("capsadd", "route3d"):
        n, m, length = config.batch * op.n_out ** 2, op.ch_out * op.caps_out, op.caps_out
        operands, func = (2, "none") if kind == "capsadd" else (op.ch_in, "squash")
    else:
        raise MappingError(f"{kind!r} is not one of {', '.join(CHAIN_KINDS)}")
    cols = config.cols
    if func == "none":
        columns = MatmulShape(n, 0, m, "none", cols)
    elif not 1 <= length <= MAX_CAPSULE:
        raise MappingError(f"capsules of {length} atoms: the activation unit takes 1..{MAX_CAPSULE}")
    elif length > cols:
        columns = MatmulShape(n, 0, m, "squash", cols, length, ceil_div(length, cols))
    else:
        columns = MatmulShape(n, 0, m, "squash", (cols // length) * length, length)
    return ElementwiseShape(columns, length, operands, ceil_div(columns.width, config.rows))


def elementwise_chunking(shape: ElementwiseShape, config: ArrayConfig) -> tuple[int, int]:
    """(nc, pr): rows per chunk and operands per run of an `ElementwiseShape`. A run holds, per
    operand, block and identity tile, nc data rows; the tiles and the chunk's mb·nc results share
    the weight buffer; one MATMUL per (operand, tile, block), the chunk's last run one ACT per block
    (per capsule type over its span blocks, stride nc <= 63, when span > 1)."""
    span = shape.columns.span
    mb, kc, depth = shape.columns.blocks, shape.chunks, config.buffer_depth
    nc = min(shape.n, ACT_MAX_ROWS // span, ACT_MAX_STRIDE if span > 1 else ACT_MAX_ROWS, depth // (mb * kc),
             (depth - kc * config.rows) // mb)
    acts = ceil_div(mb, span)
    pr = (min(shape.operands, (config.program_depth - 1 - acts) // (mb * kc), depth // (mb * kc * nc))
          if nc > 0 else 0)
    if pr < 1:
        raise MappingError(f"{mb} column blocks of capsule sums do not fit buffers of {depth} rows and a program "
                           f"of {config.program_depth} words")
    return nc, pr


@dataclass(frozen=True)
class Step:
    """One operation of a chained run (`chain`): `kind` (`KINDS` or `CHAIN_KINDS`) on the shape `op`,
    costed under the network's operation `index`, reading the outputs of the steps at positions
    `inputs` (none: the network's input image)."""

    index: int
    kind: str
    op: object
    inputs: tuple[int, ...]


def chain(operations) -> list[Step]:
    """The steps of a chained run of a network's operations (`capsacc.network.Operation`s in the
    order of the published expansion), in data-flow order.

    Sabour networks: each operation once, reading the previous one (a routing phase the ClassCaps
    before it: its predictions; the phases pass their logits and capsules on in order). CapsCell networks (those with a
    ConvCaps3D; nas.layers.CapsCell): a "tocaps" after the convolutions (the cell reads the feature
    map as squashed capsules); per cell, its first convolution (the cell's input), second (the
    first's output), third (the second's), the skip branch (the first's output: a convcaps, or in the
    last cell the convcaps3d run on the first's n_out-sided output with stride 1, the same matrix
    shape as the expansion's, and its "route3d"), and "capsadd" (third plus skip: the cell's output,
    summed after the squashes as in Keras); then the class layer's classcaps before its routing
    phases (the expansion lists the routing first)."""
    kinds = operation_kinds(operations)
    steps: list[Step] = []
    if not any(op.kind == "convcaps3d" for op in operations):
        feeds = -1  # the step a routing reads: the last classcaps (none: the previous step)
        for i, (op, kind) in enumerate(zip(operations, kinds)):
            reads = (feeds,) if op.kind == "routing" and feeds >= 0 else (i - 1,) if i else ()
            steps.append(Step(i, kind, op, reads))
            feeds = i if op.kind == "classcaps" else feeds if op.kind == "routing" else -1
        return steps

    def add(index, kind, op, *inputs):
        steps.append(Step(index, kind, op, tuple(inputs)))
        return len(steps) - 1

    last = -1
    i = 0
    while i < len(operations):
        op = operations[i]
        if op.kind == "conv":
            last = add(i, "conv", op, *([last] if steps else []))
            i += 1
        elif op.kind == "convcaps":
            if steps and steps[last].kind == "conv":
                last = add(i, "tocaps", op, last)
            first = add(i, "convcaps", op, last)
            second = add(i + 1, "convcaps", operations[i + 1], first)
            third = add(i + 2, "convcaps", operations[i + 2], second)
            skip_op = operations[i + 3]
            if skip_op.kind == "convcaps3d":
                run_op = dataclasses.replace(skip_op, n_in=skip_op.n_out, stride=1)
                skip = add(i + 3, "route3d", skip_op, add(i + 3, "convcaps3d", run_op, first))
            else:
                skip = add(i + 3, "convcaps", skip_op, first)
            last = add(i + 3, "capsadd", skip_op, third, skip)
            i += 4
        else:
            end = next(j for j in range(i, len(operations)) if operations[j].kind == "classcaps")
            u_hat = add(end, "classcaps", operations[end], last)
            for j in range(i, end):
                add(j, kinds[j], operations[j], u_hat)
            i = end + 1
    return steps


MATMUL_MAX_ROWS = (1 << 14) - 1
"""Most data rows one MATMUL streams (its 14-bit n field)."""
ACT_MAX_STRIDE = 63
"""Largest column-mode row stride of an ACT (its 6-bit stride field)."""


def routing_geometry(n_in: int, n_out: int, dim: int, config: ArrayConfig, routings: int = ROUTINGS) -> dict:
    """Layout and chunk sizes of a routing over I = `n_in` inputs, J = `n_out` classes of D = `dim`
    atoms with `routings` iterations (names as in the module docstring); `MappingError` when it does
    not fit."""
    rows, cols, depth, words = config.rows, config.cols, config.buffer_depth, config.program_depth
    if not (1 <= n_out <= MAX_CAPSULE and 1 <= dim <= MAX_CAPSULE and n_in >= 1):
        raise MappingError(f"routing needs 1..{MAX_CAPSULE} classes and atoms and an input, "
                           f"got I = {n_in}, J = {n_out}, D = {dim}")
    t_j, t_d = ceil_div(n_out, cols), ceil_div(dim, cols)
    stride = ceil_div(dim, t_d)
    if stride > ACT_MAX_STRIDE:
        raise MappingError(f"routing: capsules of D = {dim} atoms on {cols} columns need a column-mode stride "
                           f"of {stride} (at most {ACT_MAX_STRIDE})")
    period = t_d * stride
    last = n_out - (t_j - 1) * cols
    kf_full, kf_last = ceil_div(cols * period, rows), ceil_div(last * period, rows)
    kf = (t_j - 1) * kf_full + kf_last
    sums = n_out * t_d
    resident = sums + n_in * t_j <= depth
    recompute = max(1, routings - 1)  # the output-capsule sets a recomputation of the logits reads
    sets = 1 if resident else recompute + 1
    v_base = depth - sets * kf * rows
    q_in = min(rows, ACT_MAX_ROWS // t_j)
    chunks = ceil_div(n_in, q_in)
    mpr = min(kf, words - 1)
    if resident:
        nq = min(chunks, depth // n_out)
        na = min(n_in, depth // (mpr * t_j), MATMUL_MAX_ROWS // t_j)
    else:
        block = min(depth - sums, depth // mpr, MATMUL_MAX_ROWS) // t_j
        nq = min(chunks, depth // n_out, block // q_in)
        na = nq * q_in
    geometry = {"tJ": t_j, "tD": t_d, "stride": stride, "period": period, "kf_full": kf_full, "kf_last": kf_last,
                "KF": kf, "sets": sets, "recompute": recompute, "resident": resident, "S": 0, "B": sums, "V": v_base,
                "q_in": q_in, "Q": chunks, "nq": nq, "na": na, "mpr": mpr, "acts_per_run": words - 1,
                "pairs_per_run": min(v_base // rows if v_base > 0 else 0, words - 1)}
    if geometry["pairs_per_run"] < 1 or nq < 1 or na < 1 or q_in < 1:
        raise MappingError(f"routing over {n_in} capsules, {n_out} classes of {dim} atoms does not fit buffers of "
                           f"{depth} rows and a program of {words} words")
    return geometry


def routing_phases(routings: int = ROUTINGS) -> tuple[str, ...]:
    """The phases of a routing with `routings` iterations (>= 1), in order: the uniform first
    iteration, then an update and a softmax iteration per further iteration."""
    if isinstance(routings, bool) or not isinstance(routings, int) or routings < 1:
        raise MappingError(f"routings: {routings!r} must be an integer >= 1")
    return ("routing_uniform",) + ("routing_update", "routing_softmax") * (routings - 1)


def operation_kinds(operations) -> list[str]:
    """The calibrated model's kind of each operation of a network (`capsacc.network.Operation`s in
    order): its own kind, and for a `routing` operation the phase at its position in its run of
    consecutive routing operations (uniform, update, softmax, update, softmax, ...). The five routing
    operations of a Sabour class layer are so the phases of `ROUTINGS` = 3 iterations; a DeepCaps
    class layer's six end with a sixth, an update whose logits no iteration reads (the published
    expansion's count, kept)."""
    kinds, position = [], 0
    for op in operations:
        if op.kind != "routing":
            kinds.append(op.kind)
            position = 0
            continue
        kinds.append("routing_uniform" if position == 0 else ROUTING_PHASES[1 + position % 2])
        position += 1
    return kinds


def plan_counts(kind: str, op, config: ArrayConfig, routings: int = ROUTINGS) -> dict[str, int]:
    """Instruction counts (`COUNT_FIELDS`) of `op` for one batch of `config.batch` images under the
    tiling rules (lone activations: one ACT, whatever the batch), in closed form: exact integers, and
    no memory or time that grows with the operation's size or the batch. `kind` is one of `KINDS`,
    a lone activation, or "routing": a whole routing of `routings` iterations (the sum of its
    phases' counts), or one of `CHAIN_KINDS`. `MappingError` when the operation does not fit the array."""
    if kind == "routing":
        phases = [plan_counts(phase, op, config, routings) for phase in routing_phases(routings)]
        return {name: sum(counts[name] for counts in phases) for name in phases[0]}
    if kind in ROUTING_PHASES and config.batch > 1:  # per image: the batch's routings run in turn
        single = plan_counts(kind, op, dataclasses.replace(config, batch=1), routings)
        return {name: config.batch * value for name, value in single.items()}
    counts = {name: 0 for name in COUNT_FIELDS}

    def act(func, n, length, times=1, column=False):
        span, width, last_width = act_lanes(config.cols, func, length)
        groups = ceil_div(n, span)
        rows, elements = groups * span, groups * ((span - 1) * width + last_width)
        counts["acts"] += times
        counts["act_rows"] += times * rows
        counts["act_elements"] += times * elements
        counts["act_spans"] += times * span
        if column:
            counts["acts_column"] += times
            counts["act_elements_column"] += times * elements
        else:
            counts["act_rows_row"] += times * rows

    if kind in ("conv", "convcaps", "convcaps3d"):
        shape = matmul_shape(kind, op, config)
        mb, kc = shape.blocks, ceil_div(shape.k, config.rows)
        nc = matmul_chunk_rows(shape, config)
        for chunk_rows, times in ((nc, shape.n // nc), (shape.n % nc, 1)):
            if chunk_rows == 0 or times == 0:
                continue
            kr = matmul_chunking(shape, config, chunk_rows)
            runs = ceil_div(kc, kr)
            counts["runs"] += times * runs
            counts["matmul_phase_cycles"] += times * (
                (runs - 1) * matmul_run_cycles(kr * mb, chunk_rows, config.rows, config.cols)
                + matmul_run_cycles((kc - (runs - 1) * kr) * mb, chunk_rows, config.rows, config.cols))
            counts["matmuls"] += times * kc * mb
            counts["matmul_rows"] += times * kc * mb * chunk_rows
            counts["matmul_rows_accumulate"] += times * (kc - 1) * mb * chunk_rows
            if shape.span > 1:  # one ACT per capsule type, over its span blocks
                act(shape.func, shape.span * chunk_rows, shape.capsule, times * (shape.m // shape.capsule))
                continue
            full_blocks, last_width = divmod(shape.m, shape.width)  # `matmul_blocks` in closed form
            act(shape.func, chunk_rows, shape.act_length(shape.width), times * full_blocks)
            if last_width:
                act(shape.func, chunk_rows, shape.act_length(last_width), times)
    elif kind == "classcaps":
        n_in, d_in, n_out, dim = classcaps_dims(op)
        kc, mb = ceil_div(d_in, config.rows), ceil_div(n_out * dim, config.cols)
        k, ci = classcaps_packing(d_in, config), classcaps_per_run(d_in, n_out * dim, config)
        rows = config.batch * k  # data rows per MATMUL
        for run_caps, times in ((ci, n_in // ci), (n_in % ci, 1)):
            if run_caps and times:
                groups = ceil_div(run_caps, k)
                counts["runs"] += times
                counts["matmuls"] += times * groups * kc * mb
                counts["matmul_rows"] += times * groups * rows * kc * mb
                counts["matmul_rows_accumulate"] += times * groups * rows * (kc - 1) * mb
                full_acts, last_rows = divmod(groups * rows * mb, ACT_MAX_ROWS)  # `classcaps_act_pieces`
                act("none", ACT_MAX_ROWS, config.cols, times * full_acts)
                if last_rows:
                    act("none", last_rows, config.cols, times)
                counts["matmul_phase_cycles"] += times * matmul_run_cycles(groups * kc * mb, rows, config.rows,
                                                                           config.cols)
    elif kind in ROUTING_PHASES:
        n_in, _, n_out, dim = classcaps_dims(op)
        g = routing_geometry(n_in, n_out, dim, config, routings)
        t_j, q_in, rows, cols = g["tJ"], g["q_in"], config.rows, config.cols

        def update(inputs, times, sets=1):
            """`sets` x KF MATMULs of inputs x tJ rows in runs of mpr (`RoutingLayout._update_runs`),
            `times` over; all accumulate but the first of a recomputation (sets > 1: it writes)."""
            n = inputs * t_j
            full, rest = divmod(g["KF"], g["mpr"])
            counts["runs"] += times * sets * (full + (rest > 0))
            counts["matmul_phase_cycles"] += times * sets * (full * matmul_run_cycles(g["mpr"], n, rows, cols)
                                                             + matmul_run_cycles(rest, n, rows, cols))
            counts["matmuls"] += times * sets * g["KF"]
            counts["matmul_rows"] += times * sets * g["KF"] * n
            counts["matmul_rows_accumulate"] += times * (sets * g["KF"] - (not g["resident"])) * n

        if kind == "routing_update":
            if g["resident"]:
                update(g["na"], n_in // g["na"])
                if n_in % g["na"]:
                    update(n_in % g["na"], 1)
            return counts
        last_inputs = n_in - (g["Q"] - 1) * q_in  # the last chunk's
        per_pair = n_out * g["tD"]
        full_blocks, rest_chunks = divmod(g["Q"], g["nq"])
        blocks = ([(g["nq"], full_blocks, False), (rest_chunks, 1, True)] if rest_chunks
                  else [(g["nq"], full_blocks - 1, False), (g["nq"], 1, True)])
        for chunks, times, has_last in blocks:
            if not times:
                continue
            if kind == "routing_softmax":
                inputs = chunks * q_in - (q_in - last_inputs if has_last else 0)
                if not g["resident"]:
                    update(inputs, times, g["recompute"])
                act("softmax", q_in * t_j, n_out, times * (chunks - has_last), column=True)
                if has_last:
                    act("softmax", last_inputs * t_j, n_out, times, column=True)
                counts["runs"] += times * ceil_div(chunks, g["acts_per_run"])
            pairs = chunks * per_pair
            full_runs, rest = divmod(pairs, g["pairs_per_run"])
            counts["runs"] += times * (full_runs + (rest > 0))
            counts["matmul_phase_cycles"] += times * (full_runs * matmul_run_cycles(g["pairs_per_run"], 1, rows, cols)
                                                      + matmul_run_cycles(rest, 1, rows, cols))
            counts["matmuls"] += times * pairs
            counts["matmul_rows"] += times * pairs
            counts["matmul_rows_routing"] += times * pairs
        counts["matmul_rows_accumulate"] += (g["Q"] - 1) * per_pair
        act("squash", cols * g["tD"], dim, t_j - 1, column=True)
        act("squash", (n_out - (t_j - 1) * cols) * g["tD"], dim, 1, column=True)
        counts["runs"] += 1
    elif kind in CHAIN_KINDS:
        shape = elementwise_shape(kind, op, config)
        columns = shape.columns
        full_blocks, last_width = divmod(shape.m, columns.width)
        mb, tiles = columns.blocks, shape.operands * shape.chunks
        nc, pr = elementwise_chunking(shape, config)
        runs = ceil_div(shape.operands, pr)
        for chunk_rows, times in ((nc, shape.n // nc), (shape.n % nc, 1)):
            if chunk_rows == 0 or times == 0:
                continue
            counts["runs"] += times * runs
            counts["matmul_phase_cycles"] += times * (
                (runs - 1) * matmul_run_cycles(pr * shape.chunks * mb, chunk_rows, config.rows, config.cols)
                + matmul_run_cycles((shape.operands - (runs - 1) * pr) * shape.chunks * mb, chunk_rows,
                                    config.rows, config.cols))
            counts["matmuls"] += times * tiles * mb
            counts["matmul_rows"] += times * tiles * mb * chunk_rows
            counts["matmul_rows_accumulate"] += times * (tiles - 1) * mb * chunk_rows
            if columns.span > 1:
                act("squash", columns.span * chunk_rows, shape.length, times * (shape.m // shape.length))
                continue
            act(shape.func, chunk_rows, columns.act_length(columns.width), times * full_blocks)
            if last_width:
                act(shape.func, chunk_rows, columns.act_length(last_width), times)
    elif kind in ACTIVATIONS:
        counts["runs"] += 1
        act(kind, op.n_in, op.caps_in)
    else:
        known = ", ".join(KINDS + CHAIN_KINDS + ACTIVATIONS + ("routing",))
        raise MappingError(f"unknown operation kind {kind!r} (known: {known})")
    return counts
