"""How the calibrated model maps an operation onto CapsAcc: matrix shapes, tiling and run counts.

One rule set serves both sides: `sim.driver` builds the RTL programs by these rules, and the
calibrated model (`capsacc.calibrated`) counts the instructions they produce in closed form
(`plan_counts`), without simulating. The rules are numba-compiled integer functions (`count_step`,
`chain_steps`, `_routing_geometry`, ...): `plan_counts`, `chain` and the shape functions the driver
uses call them, and so do the calibrated model's kernels, which cost whole batches of genotypes. A
refusal is a code of `REFUSALS` and its numbers, which the Python functions raise as `MappingError`. The
rules that take arrays (`count_step` and the plans, geometry and counting helpers it calls) are compiled
without numba's reference counting (`_nrt=False`): they allocate no array, and with it each of their calls
incremented and decremented the count of every array it was given by atomic instructions (docs/model.md,
"Speed of the two models"). The rules of convolutions, classcaps and routings (`_matmul_plan` and
`_matmul_counts`, `_classcaps_plan` and `_classcaps_counts`, `_routing_geometry` and `_routing_counts`, and the
helpers they call) write nothing, hold no loop and divide by `floor_div`, `ceil_div` and `remainder`, so that
they also compile for float64 fields (integer values below 2^53, where floor(a / b) is exact): the calibrated
model runs them so in loops over many steps that LLVM vectorizes (`VECTOR_LOOPS`, inlined there by
`into_vector_loops`), with the integer rules' results bit for bit (tests/test_model_calibrated_batch.py).
The rules place one batch of B = `ArrayConfig.batch` images (the same network, so the same weights): the
counts are the batch's. Shapes of the operations (a NASCaps `Operation`):

- conv / convcaps: im2col with a bias column, the B images' rows stacked (image b's first):
  N = B·n_out² data rows, K = k²·ch_in·caps_in + 1, M = ch_out·caps_out outputs; ReLU (conv) or
  squash over each output capsule (convcaps).
- convcaps3d: the votes of a 3-D capsule convolution over (y, x, capsule type) with a k x k x k kernel
  ('same' along the type axis) and caps_in features: N = B·n_out²·ch_in (the B images' rows
  stacked), K = k³·caps_in + 1, M = ch_out·caps_out, requantized (no activation: the routing over
  the ch_in types, "route3d", squashes), in column blocks of C lanes as for ReLU.
- route3d (`chain`): a ConvCaps3D's dynamic routing of its votes at each of the n_out² positions:
  I = ch_in input capsule types, J = ch_out output types of D = caps_out atoms, `routings`
  iterations (`route3d_routing`): the B·n_out² routings run one after the other with the programs of
  one routing (below), as a batch's images do (B·n_out² times the counts of one).
- chained CapsCell networks (`chain`, `ELEMENTWISE_KINDS`): element-wise sums of int8 capsule maps
  (`elementwise_shape`; the B images' positions stacked: n = B·positions rows): column blocks as a
  conv kind's (C lanes without activation; whole capsules, or a capsule over ceil(L / C) blocks, for
  squash); each operand's block streams through ceil(width / R) identity weight tiles accumulating
  into the same partial sums (n = rows of the chunk, `elementwise_chunking`), and the chunk's last
  run has the ACTs (or, when one operand's MATMULs and the ACTs do not fit a program, a run of their
  own after it, as a conv kind's); when one operand's chunks·mb MATMULs alone do not fit a program,
  each operand runs over column groups of gb = ceil(mb / ceil(mb / ((P - 1) // chunks))) blocks, the
  ACTs apart.
- classcaps: I = n_in²·ch_in input capsules of caps_in atoms, each its own weight matrix
  (caps_in x J·D with J = ch_out classes of D = caps_out atoms): I products with N = B (each capsule's
  weights serve the B images); no activation (requantization only).
- routing over I input capsules and J output capsules of D atoms, `routings` iterations (default
  `ROUTINGS` = 3, the trained ClassCaps's), in phases (`ROUTING_PHASES`): "routing_uniform" (the
  first iteration's weighted sums with the uniform coupling c = 1/J, written by the host: no softmax
  over zero logits; squash), "routing_first_update" (the agreement of the uniform iteration's
  output capsules: the logits' first values, written over whatever the partial-sum rows hold, so no
  zero logits are written), "routing_update" (the agreement added to the logits) and
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
  When one K chunk's mb MATMULs and mb ACT words do not fit a program (2 mb > P - 1: wide layers on
  narrow arrays, e.g. 64 capsules of 62 atoms on 8 columns, mb = 512), the ACTs run apart: kr =
  min(D // nc, (D - mb nc) // (mb R), (P - 1) // mb), and after the chunk's last run its
  ceil(mb / span) ACTs in runs of their own, at most P - 1 each (`matmul_acts_apart`; the partial sums
  stay in their memory between runs). When not even one K chunk over the mb blocks fits a run (mb R
  weight rows beyond D - mb nc, or mb > P - 1: 64 capsule types of 64 atoms on 4 columns, mb = 1,024),
  the chunk runs in column groups: per K chunk, its data rows loaded once, runs over gb < mb blocks
  each, gb = ceil(mb / ceil(mb / min((D - mb nc) // R, P - 1))) (`matmul_chunking`), and the ACTs
  apart. Refused only when not one block fits ((D - mb nc) < R).
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
  When not even one group over the mb tiles fits a run (kc·mb MATMULs beyond the program: 39 atoms x
  420 outputs on 4x4, 10 K chunks x 105 tiles), each group runs over tile groups of tb < mb tiles,
  tb = ceil(mb / ceil(mb / min(D // (kc R + B k), (P - 2) // kc, max(1, 1023 // (B k))))), its data
  loaded once before the first (`classcaps_per_run`).
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

import numpy as np
from numba import njit, types
from numba.extending import overload

from capsacc.array import ArrayConfig
from capsacc.errors import InputError
from capsacc.network import (OP_CLASSCAPS, OP_CONV, OP_CONVCAPS, OP_CONVCAPS3D, OP_FIELDS, OP_ROUTING,
                             operation_rows)

ROUTINGS = 3
"""Routing iterations of a class layer on CapsAcc: the default `routings` of the trained ClassCaps
(`nas.layers`). The published expansion's five `routing` operations are its 2·3 - 1 phases."""
ROUTING_PHASES = ("routing_uniform", "routing_softmax", "routing_update", "routing_first_update")
"""The phases of a routing (see the module docstring); each is one operation of the calibrated model."""
UPDATE_PHASES = ("routing_update", "routing_first_update")
"""The routing phases that update the logits by the agreement (the first writes them, the others add)."""
KINDS = ("conv", "convcaps", "convcaps3d", "classcaps") + ROUTING_PHASES
"""Operation kinds the calibrated model covers: those of `capsacc.network.OP_KINDS`, routing by phase."""
ELEMENTWISE_KINDS = ("tocaps", "capsadd")
"""Element-wise sums of capsule maps through identity-weight MATMULs, then one ACT (`ElementwiseShape`)."""
CHAIN_KINDS = ELEMENTWISE_KINDS + ("route3d",)
"""Operations a chained CapsCell network runs beyond the published expansion's (`chain`): the
`ELEMENTWISE_KINDS` and "route3d", a ConvCaps3D's routing at each position (`route3d_routing`)."""
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


STEP_KINDS = KINDS + CHAIN_KINDS + ACTIVATIONS + ("routing",)
"""Every kind `plan_counts` takes; a step's kind code (the numba rules') is its index here."""
(CONV, CONVCAPS, CONVCAPS3D, CLASSCAPS, ROUTING_UNIFORM, ROUTING_SOFTMAX, ROUTING_UPDATE, ROUTING_FIRST_UPDATE, TOCAPS,
 CAPSADD, ROUTE3D, RELU, SQUASH, SOFTMAX, ROUTING) = range(len(STEP_KINDS))
FUNCS = ("none", "relu", "squash", "softmax")
"""Activation functions of an ACT; a function's code (the numba rules') is its index here."""
FUNC_NONE, FUNC_RELU, FUNC_SQUASH, FUNC_SOFTMAX = range(len(FUNCS))

REFUSALS = (
    "",
    "capsules of {0} atoms: the activation unit takes 1..{1}",
    "capsules of {0} atoms do not fit the {1} columns",
    "{0} column blocks do not fit buffers of {1} rows",
    "{0} column blocks of {1} rows do not fit buffers of {2} rows and a program of {3} words",
    "{0} capsule(s) of {1} x {2} weights for a batch of {3} image(s) do not fit the buffers or the program",
    "routing needs 1..{0} classes and atoms and an input, got I = {1}, J = {2}, D = {3}",
    "routing: capsules of D = {0} atoms on {1} columns need a column-mode stride of {2} (at most {3})",
    "routing over {0} capsules, {1} classes of {2} atoms does not fit buffers of {3} rows and a program of {4} words",
    "{0} column blocks of capsule sums do not fit buffers of {1} rows and a program of {2} words",
)
"""The reasons the tiling rules refuse an operation (`MappingError`), by refusal code (0: none): the
numba rules return the code and write the numbers of the message into an `args` array."""
(FITS, REFUSED_CAPSULE, REFUSED_WIDTH, REFUSED_CHUNK, REFUSED_RUN, REFUSED_CLASSCAPS, REFUSED_ROUTING_SIZE,
 REFUSED_ROUTING_STRIDE, REFUSED_ROUTING_FIT, REFUSED_ELEMENTWISE) = range(len(REFUSALS))
REFUSAL_ARGS = 6
"""Length of the `args` array of the numba rules."""

MAX_CAPSULE = 64
"""Longest capsule (squash) or logit vector (softmax) one ACT takes, atoms."""
ACT_MAX_ROWS = 1023
"""Most partial-sum rows one ACT instruction processes (its 10-bit n field)."""
ACT_MAX_STRIDE = 63
"""Largest row stride of an ACT (its 6-bit stride field): in strided row mode, the data rows of a
chunk whose capsules span column blocks; in column mode, a routing's capsule period."""
MATMUL_MAX_ROWS = (1 << 14) - 1
"""Most data rows one MATMUL streams (its 14-bit n field)."""


class MappingError(InputError):
    """An operation the tiling rules cannot place on the array (too wide for its columns, too large
    for its buffers or program memory); a `ValueError` too."""


def _refusal(code: int, args) -> MappingError:
    """The `MappingError` of refusal `code` (`REFUSALS`) with the numbers `args`."""
    return MappingError(REFUSALS[code].format(*[int(value) for value in args]))


VECTOR_LOOPS = ("_cost_matmul_steps", "_cost_classcaps_steps", "_cost_elementwise_steps", "_routing_inputs",
                "_routing_results", "_cost_routing_steps", "_cost_update_steps", "_cost_route3d_steps")
"""The functions that run the counting rules over many steps on float64 in one loop (`capsacc.calibrated`), which
LLVM vectorizes only when the loop calls no function, and the parts of the routing loops they inline."""


def into_vector_loops(call, caller, callee):
    """numba's inlining decision (`inline=`) for the counting rules: inlined into `VECTOR_LOOPS`, called
    elsewhere (inlined everywhere, `count_step` took minutes to compile and ran no faster; docs/model.md)."""
    return caller.func_id.func_name in VECTOR_LOOPS


def floor_div(a, b):
    """floor(a / b) of integers (b > 0), or of integer-valued float64 values below 2^53 (compiled as
    floor(a / b), exact there, with no check of b (`np.true_divide`), so that the counting rules also run on float64
    in vectorized loops)."""
    return a // b


@overload(floor_div, inline="always")
def _floor_div(a, b):
    if isinstance(a, types.Float) or isinstance(b, types.Float):
        return lambda a, b: np.floor(np.true_divide(a, b))
    return lambda a, b: a // b


def ceil_div(a, b):
    """ceil(a / b) of integers (b > 0), or of integer-valued float64 values below 2^53 (as `floor_div`)."""
    return -(-a // b)


@overload(ceil_div, inline="always")
def _ceil_div(a, b):
    if isinstance(a, types.Float) or isinstance(b, types.Float):
        return lambda a, b: np.ceil(np.true_divide(a, b))
    return lambda a, b: -(-a // b)


def remainder(a, b):
    """a mod b of integers (b > 0), or of integer-valued float64 values below 2^53 (as `floor_div`)."""
    return a % b


@overload(remainder, inline="always")
def _remainder(a, b):
    if isinstance(a, types.Float) or isinstance(b, types.Float):
        return lambda a, b: a - np.floor(np.true_divide(a, b)) * b
    return lambda a, b: a % b


@njit(cache=True, inline=into_vector_loops)
def equal_parts(total, bound):
    """The size of each part when `total` items split into the fewest parts of at most `bound` items
    (bound >= 1) of equal sizes, the last one smaller by less than the number of parts: `total` itself
    when it fits one part (no division)."""
    if total <= bound:
        return total
    return ceil_div(total, ceil_div(total, bound))


@njit(cache=True, inline=into_vector_loops)
def apart_acts_per_run(words):
    """ACTs in one run of the ACTs that run in programs of their own (`_acts_apart`): a program of
    `words` words holds them and its HALT."""
    return words - 1


@njit(cache=True, inline=into_vector_loops)
def result_delay_cycles(rows, cols):
    """Cycles from the read of a MATMUL's data row to the write of its partial-sum row on an R x C
    CapsAcc: R + C + 3 (the buffer read 1, the read data's register 1, the array's input register 1,
    the array R + C: input skew, R multiply-then-add stages, output de-skew; `rtl.capsacc`)."""
    return rows + cols + 3


@njit(cache=True)
def matmul_run_cycles(m, n, rows, cols):
    """Cycles a run that starts with m MATMULs of n data rows each spends before its first ACT or
    HALT can issue, counted from its first DISPATCH cycle (0 when m = 0).

    The closed form of `rtl.isa.timing` for such a run (tests compare the two): MATMUL i issues
    at F_i = max(F_{i-1} + R, M_{i-1}, S_{i-2} + C - 2) (F_1 = 2, the first DISPATCH), streams
    from M_i = max(F_i + 1, S_{i-1}) to S_i = M_i + n, and every result is written from
    S_m + D + 1 on (D = `result_delay_cycles`; the ACT or HALT issues at S_m + D + 1). From the first
    MATMUL on, S_{i+2} - S_i is one period d for every i, so the recurrence runs three steps
    (`_matmul_stream_ends`: S_1, S_2 and d = S_3 - S_1) and S_m is S_1 or S_2, by the parity of m, plus
    d per pair of MATMULs after it (`_matmul_run_cycles`, which the counting rules call with the ends of
    each n once). The period holds for all R, C, n >= 1 (d = max(2R, 2n, n + C - 1)): a symbolic proof
    in tests/test_mapping_stream_period.py, by induction from the first six MATMULs.
    """
    return _matmul_run_cycles(_matmul_stream_ends(n, rows, cols), m, rows, cols)


@njit(cache=True, inline=into_vector_loops)
def _matmul_stream_ends(n, rows, cols):
    """(S_1, S_2, d): the cycles at which the streams of the first two MATMULs of n rows of a run end, and
    the period d = S_3 - S_1 = S_{i+2} - S_i of every later pair (the recurrence of `matmul_run_cycles`;
    MATMUL i waits for its partial-sum bank, that of MATMUL i - 2, until S_{i-2} + C - 2)."""
    fire, move = 2, 3  # F_1, M_1
    end1 = move + n
    fire, move, end2 = _next_matmul(fire, move, end1, 0, n, rows)
    _, _, end3 = _next_matmul(fire, move, end2, end1 + cols - 2, n, rows)
    return end1, end2, end3 - end1


@njit(cache=True, inline=into_vector_loops)
def _next_matmul(fire, move, end, ready, n, rows):
    """(F_i, M_i, S_i) of the next MATMUL of n rows (`matmul_run_cycles`) from (F_{i-1}, M_{i-1},
    S_{i-1}) and the cycle `ready` its partial-sum bank frees."""
    fire = max(fire + 1, fire + rows, move, ready)
    move = max(fire + 1, end)
    return fire, move, move + n


@njit(cache=True, inline=into_vector_loops)
def _matmul_run_cycles(ends, m, rows, cols):
    """`matmul_run_cycles` of m MATMULs whose n gives the stream ends `ends` (`_matmul_stream_ends`): S_m is S_1
    (m odd) or S_2 (m even) plus a period per pair before it, with one selection (the chain of selections by m
    that it replaces took a third of a convolution step's time in the vectorized loops, docs/model.md)."""
    end1, end2, period = ends
    final = (end2 if remainder(m - 1, 2) != 0 else end1) + period * floor_div(m - 1, 2)
    return final + result_delay_cycles(rows, cols) + 1 - 2 if m > 0 else 0  # results from S_m + D + 1; began at 2


@njit(cache=True, inline=into_vector_loops)
def _column_groups(mb, gb, grouped):
    """ceil(mb / gb): the runs of a chunk's K chunk (or operand) over mb column blocks in groups of gb
    (`_matmul_runs`, `_elementwise_chunking`); 1 with no division when gb = mb >= 1 (every block in one run,
    the common case), and always for a plan made without `grouped` (gb = mb: the float64 loops cannot fold the
    test gb == mb, which is false for NaN)."""
    if not grouped or (gb == mb and mb >= 1):
        return 1
    return ceil_div(mb, gb)


@njit(cache=True, inline=into_vector_loops)
def _grouped_run_cycles(ends, chunks, groups, gb, mb, rows, cols):
    """The MATMUL phase cycles of the runs of `chunks` MATMULs per block (K chunks, or operands x tiles)
    over mb column blocks in `groups` groups of gb (`_column_groups`; `_matmul_runs`, `_elementwise_chunking`;
    one run when groups = 1): groups - 1 runs of chunks·gb MATMULs and one of the rest, each with the stream
    ends `ends`."""
    last = _matmul_run_cycles(ends, chunks * (mb - (groups - 1) * gb), rows, cols)
    if groups == 1:
        return last
    return (groups - 1) * _matmul_run_cycles(ends, chunks * gb, rows, cols) + last


@njit(cache=True, inline=into_vector_loops)
def _chunk_run_cycles(ends, total, per_run, runs, groups, gb, mb, rows, cols):
    """The MATMUL phase cycles of the runs of a chunk (`_grouped_run_cycles` of each): `total` MATMULs per
    block (K chunks, or operands x tiles) in runs = ceil(total / per_run) runs of `per_run`, the last the
    rest, over mb column blocks in `groups` groups of gb, with the stream ends `ends`."""
    last = _grouped_run_cycles(ends, total - (runs - 1) * per_run, groups, gb, mb, rows, cols)
    if runs == 1:
        return last
    return (runs - 1) * _grouped_run_cycles(ends, per_run, groups, gb, mb, rows, cols) + last


@njit(cache=True, inline=into_vector_loops)
def _act_lanes(cols, func, length):
    """`act_lanes` of function code `func` (`FUNCS`)."""
    if func <= FUNC_RELU:  # none or relu (one compare: no switch, which a vectorized loop cannot hold)
        return 1, min(length, cols), min(length, cols)
    if 1 <= length <= cols:  # span = ceil(L / C) = 1, with no division
        return 1, floor_div(cols, length) * length, floor_div(cols, length) * length
    span = ceil_div(length, cols)
    return span, cols, length - (span - 1) * cols


def act_lanes(cols: int, func: str, length: int) -> tuple[int, int, int]:
    """(span, width, last_width) of an ACT with `length` L on C = `cols` lanes: the partial-sum rows
    of one capsule, and how many lanes (0 .. k - 1) of each result row it writes, of a capsule's
    last row. none / relu: (1, min(L, C), min(L, C)); squash / softmax with L <= C: a row holds
    floor(C / L) capsules, (1, floor(C / L) L, same); L > C: a capsule spans ceil(L / C) rows,
    (ceil(L / C), C, L - (ceil(L / C) - 1) C)."""
    return _act_lanes(cols, FUNCS.index(func), length)


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
        return _blocks(self.m, self.width, self.capsule, self.span)

    def act_length(self, width: int) -> int:
        """The ACT `length` of a column block of `width` lanes: the capsule's atoms (squash, the
        unit's segmented mode: a block's capsules side by side), the block's width (ReLU)."""
        return _act_length(FUNCS.index(self.func), self.capsule, width)


@njit(cache=True, inline=into_vector_loops)
def _blocks(m, width, capsule, span):
    """mb of a `MatmulShape`."""
    if span > 1:
        return floor_div(m, capsule) * span
    return ceil_div(m, width)


@njit(cache=True, inline=into_vector_loops)
def _act_length(func, capsule, width):
    """`MatmulShape.act_length` of function code `func`."""
    return capsule if func == FUNC_SQUASH else width


@njit(cache=True, inline=into_vector_loops)
def _block_acts(cols, func, m, width, capsule, span):
    """(acts, span, width, last_width, last_acts, span, width, last_width): the ACTs of a chunk of a conv kind
    or an `ELEMENTWISE_KINDS` step over its m output columns in blocks of `width` lanes (`_columns`), each
    count followed by the lanes of those ACTs (`_act_lanes`): one per capsule type over its span blocks when
    span > 1 (m // capsule of them, and no last block), else one per full block (m // width) and one for a
    last block of m mod width columns (last_acts 1, else 0). The lanes' span is the shape's, so each ACT of a
    chunk of nc data rows covers nc capsules (span·nc partial-sum rows, `_act_groups`). The same for the
    step's chunks of every size: computed once per step."""
    if span > 1:
        act_span, act_width, act_last = _act_lanes(cols, func, capsule)
        return floor_div(m, capsule), act_span, act_width, act_last, 0, 1, 0, 0
    full_blocks, last_width = floor_div(m, width), remainder(m, width)  # `matmul_blocks` in closed form
    full_length, last_length = _act_length(func, capsule, width), _act_length(func, capsule, last_width)
    act_span, act_width, act_last = _act_lanes(cols, func, full_length)
    if last_width == 0:
        return full_blocks, act_span, act_width, act_last, 0, 1, 0, 0
    if last_length == full_length:
        return full_blocks, act_span, act_width, act_last, 1, act_span, act_width, act_last
    last_span, last_block_width, last_last = _act_lanes(cols, func, last_length)
    return full_blocks, act_span, act_width, act_last, 1, last_span, last_block_width, last_last


@njit(cache=True, inline=into_vector_loops)
def _columns(n, k, m, func, length, cols):
    """(refusal, n, k, m, func, width, capsule, span) of a product whose activation `func` takes
    output capsules of `length` atoms (squash: floor(C / L) capsules per block of floor(C / L)·L
    lanes, or a capsule over ceil(L / C) blocks of C lanes when L > C; refused outside 1..64) or
    blocks of C lanes (none, relu)."""
    if func != FUNC_SQUASH:
        return FITS, n, k, m, func, cols, 0, 1
    if not 1 <= length <= MAX_CAPSULE:
        return REFUSED_CAPSULE, n, k, m, func, cols, 0, 1
    if length > cols:
        return FITS, n, k, m, func, cols, length, ceil_div(length, cols)
    return FITS, n, k, m, func, floor_div(cols, length) * length, length, 1


@njit(cache=True, inline=into_vector_loops)
def _matmul_shape(kind, n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out, cols, batch):
    """(refusal, n, k, m, func, width, capsule, span) of a conv kind (the module docstring); the refusal's
    numbers are `_matmul_refusal_args`'."""
    if kind == CONV:
        if cols > 63:
            return REFUSED_WIDTH, 0, 0, 0, FUNC_RELU, cols, 0, 1
        return _columns(batch * n_out * n_out, kernel * kernel * ch_in * caps_in + 1, ch_out * caps_out, FUNC_RELU,
                        0, cols)
    if kind == CONVCAPS:
        return _columns(batch * n_out * n_out, kernel * kernel * ch_in * caps_in + 1, ch_out * caps_out,
                        FUNC_SQUASH, caps_out, cols)
    return _columns(batch * n_out * n_out * ch_in, kernel * kernel * kernel * caps_in + 1, ch_out * caps_out,
                    FUNC_NONE, 0, cols)


def _op_fields(op) -> tuple[int, ...]:
    """The shape fields of an operation in the order the numba rules take them."""
    return op.n_in, op.ch_in, op.caps_in, op.kernel, op.stride, op.n_out, op.ch_out, op.caps_out


def _config_fields(config: ArrayConfig) -> tuple[int, ...]:
    """The array fields in the order the numba rules take them."""
    return config.rows, config.cols, config.buffer_depth, config.program_depth, config.batch


def matmul_shape(kind: str, op, config: ArrayConfig) -> MatmulShape:
    """The matrix product of a conv, convcaps or convcaps3d operation over a batch of `config.batch`
    images (see the module docstring)."""
    if kind not in ("conv", "convcaps", "convcaps3d"):
        raise MappingError(f"{kind!r} is not a convolution kind")
    n_in, ch_in, caps_in, kernel, _, n_out, ch_out, caps_out = _op_fields(op)
    refusal, n, k, m, func, width, capsule, span = _matmul_shape(
        STEP_KINDS.index(kind), n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out, config.cols, config.batch)
    if refusal:
        raise _refusal(refusal, _shape_refusal_args(refusal, caps_out, config.cols))
    return MatmulShape(n, k, m, FUNCS[func], width, capsule, span)


def matmul_blocks(shape: MatmulShape) -> list[tuple[int, int]]:
    """Column blocks (first output column, width): every `width` columns, or (span > 1) capsule by
    capsule, span blocks each."""
    if shape.span > 1:
        return [(c + t * shape.width, min(shape.width, shape.capsule - t * shape.width))
                for c in range(0, shape.m, shape.capsule) for t in range(shape.span)]
    return [(c, min(shape.width, shape.m - c)) for c in range(0, shape.m, shape.width)]


@njit(cache=True, inline=into_vector_loops)
def _acts_apart(matmuls, acts, words):
    """Whether a chunk's ACTs run in programs of their own (module docstring): when `matmuls`, the
    MATMULs of one step of its runs, and `acts` ACT words do not fit one program of `words` words."""
    return matmuls + acts > words - 1


@njit(cache=True, inline=into_vector_loops)
def _program_chunks(mb, words):
    """The K chunks over mb column blocks whose MATMULs a program of `words` words holds beside its HALT:
    each run holds back mb words for the ACTs of the chunk's last run, unless the ACTs run apart
    (`_acts_apart` of one K chunk's mb MATMULs). The same for a step's chunks of every size."""
    reserve = 0 if _acts_apart(mb, mb, words) else mb
    return floor_div(words - 1 - reserve, mb)


@njit(cache=True, inline=into_vector_loops)
def _matmul_chunking(mb, nc, depth, rows, program_chunks):
    """kr of `matmul_chunking` (< 1: refused): the K chunks of R rows over mb blocks that the buffers hold
    beside nc data rows and the mb·nc results, at most `program_chunks` (`_program_chunks`)."""
    return min(floor_div(depth, nc), floor_div(depth - mb * nc, mb * rows), program_chunks)


@njit(cache=True, inline=into_vector_loops)
def _matmul_runs(mb, nc, depth, rows, words, program_chunks, grouped):
    """(kr, gb) of `matmul_chunking` ((0, 0): refused); `program_chunks` of mb and `words`
    (`_program_chunks`). Without `grouped`, no column groups: kr < 1 where they would be needed (the float64
    loops of `capsacc.calibrated` plan so, and leave those steps to the integer rules: the groups' division and
    second run of every chunk cost a quarter of a convolution step there, docs/model.md)."""
    kr = _matmul_chunking(mb, nc, depth, rows, program_chunks)
    if kr >= 1 or not grouped:
        return kr, mb
    bound = min(floor_div(depth - mb * nc, rows), words - 1)
    if bound < 1:
        return 0, 0
    return 1, equal_parts(mb, bound)


@njit(cache=True, inline=into_vector_loops)
def _matmul_acts_apart(mb, gb, words):
    """Whether a chunk's ACTs run in programs of their own (`matmul_acts_apart`), for runs of gb of its mb blocks."""
    return gb < mb or _acts_apart(mb, mb, words)


def matmul_chunking(shape: MatmulShape, config: ArrayConfig, nc: int) -> tuple[int, int]:
    """(kr, gb) for data chunks of nc rows: each run holds kr K chunks over gb column blocks. gb = mb
    (every block) when a run holds at least one K chunk over all of them; else column groups: kr = 1
    and gb < mb blocks, at most min((D - mb nc) // R, P - 1) (the weight rows below the results, the
    program's words), in the fewest groups of equal sizes (the last smaller by less than the number of
    groups). Refused when not one block fits."""
    mb = shape.blocks
    kr, gb = _matmul_runs(mb, nc, config.buffer_depth, config.rows, config.program_depth,
                          _program_chunks(mb, config.program_depth), True)
    if kr < 1:
        raise _refusal(REFUSED_RUN, (mb, nc, config.buffer_depth, config.program_depth))
    return kr, gb


def matmul_acts_apart(shape: MatmulShape, config: ArrayConfig, gb: int) -> bool:
    """Whether the ACTs of a chunk of a conv kind whose runs span gb column blocks (`matmul_chunking`)
    run in programs of their own (`apart_acts_per_run` ACTs each) after its last run: when its runs are
    column groups (gb < mb), or when one K chunk's mb MATMULs and mb ACT words do not fit a program
    (`_acts_apart`)."""
    return bool(_matmul_acts_apart(shape.blocks, gb, config.program_depth))


@njit(cache=True, inline=into_vector_loops)
def _matmul_chunk_rows(n, mb, span, depth):
    """nc of `matmul_chunk_rows` (< 1: refused)."""
    bound = min(floor_div(depth, 2 * mb), ACT_MAX_STRIDE if span > 1 else ACT_MAX_ROWS)
    if bound * span > ACT_MAX_ROWS:  # the bound 1023 // span, divided only when it is the least
        bound = floor_div(ACT_MAX_ROWS, span)
    if bound < 1:
        return 0
    return equal_parts(n, bound)


def matmul_chunk_rows(shape: MatmulShape, config: ArrayConfig) -> int:
    """nc: data rows per chunk, the N rows split into the fewest chunks within the bound
    min(D // (2 mb), 1023 // span, and 63 when span > 1), of equal sizes (the last one smaller by
    less than the number of chunks): a chunk's ACT covers span·nc rows, with stride nc when
    span > 1, and no chunk of a few rows is left to stream in fewer cycles than its tiles load."""
    nc = _matmul_chunk_rows(shape.n, shape.blocks, shape.span, config.buffer_depth)
    if nc < 1:
        raise _refusal(REFUSED_CHUNK, (shape.blocks, config.buffer_depth))
    return nc


def classcaps_dims(op) -> tuple[int, int, int, int]:
    """(I input capsules, caps_in atoms, J classes, D atoms) of a classcaps or routing operation."""
    return op.n_in ** 2 * op.ch_in, op.caps_in, op.ch_out, op.caps_out


def classcaps_packing(d_in: int, config: ArrayConfig) -> int:
    """k: ClassCaps input capsules of `d_in` atoms packed into one R-row weight tile (module docstring,
    `_classcaps_packing`)."""
    return _classcaps_packing(d_in, config.rows)


@njit(cache=True, inline=into_vector_loops)
def _classcaps_packing(d_in, rows):
    """k of `classcaps_packing` on R = `rows`.

    A MATMUL of n < R rows is load bound (R cycles per tile, docs/rtl.md): one capsule per tile
    (n = 1) loads R - d_in rows of zeros and streams one row in the R cycles. k capsules per tile
    load k·d_in useful rows and stream k rows in the same R cycles, so the layer's MATMUL phase
    shrinks k-fold, to the bound of a one-row-per-cycle weight port when d_in divides R."""
    return max(1, floor_div(rows, d_in))


@njit(cache=True, inline=into_vector_loops)
def _classcaps_groups(d_in, tiles, rows, depth, words, batch):
    """Groups of k capsules per run for runs over `tiles` column tiles of each (module docstring; 0: none)."""
    k = _classcaps_packing(d_in, rows)
    kc = ceil_div(d_in, rows)
    group_rows = tiles * batch * k
    groups = min(floor_div(depth, batch * k * kc), floor_div(depth, tiles * (kc * rows + batch * k)),
                 floor_div(words - 2, kc * tiles), max(1, floor_div(ACT_MAX_ROWS, group_rows)))
    if groups < 1 or groups * kc * tiles + ceil_div(groups * group_rows, ACT_MAX_ROWS) > words - 1:
        return 0
    return groups


@njit(cache=True, inline=into_vector_loops)
def _classcaps_per_run(d_in, flat, rows, cols, depth, words, batch):
    """(ci, tb) of `classcaps_per_run` ((0, 0): refused)."""
    k = _classcaps_packing(d_in, rows)
    kc, mb = ceil_div(d_in, rows), ceil_div(flat, cols)
    groups = _classcaps_groups(d_in, mb, rows, depth, words, batch)
    if groups >= 1:
        return groups * k, mb
    bound = min(floor_div(depth, kc * rows + batch * k), floor_div(words - 2, kc),
                max(1, floor_div(ACT_MAX_ROWS, batch * k)))
    if bound < 1:
        return 0, 0
    tb = equal_parts(mb, bound)
    if _classcaps_groups(d_in, tb, rows, depth, words, batch) < 1:
        return 0, 0
    return k, tb


def classcaps_per_run(d_in: int, flat: int, config: ArrayConfig) -> tuple[int, int]:
    """(ci, tb): input capsules per run (a multiple of `classcaps_packing`), each streamed for the
    batch's `config.batch` images, and column tiles per run (module docstring): every one of the mb
    tiles when a run holds at least one group of k capsules over all of them; else tile groups: one
    group (ci = k) over tb < mb tiles per run, at most min(D // (kc R + B k), (P - 2) // kc,
    max(1, 1023 // (B k))), in the fewest groups of equal sizes."""
    ci, tb = _classcaps_per_run(d_in, flat, config.rows, config.cols, config.buffer_depth, config.program_depth,
                                config.batch)
    if ci < 1:
        raise _refusal(REFUSED_CLASSCAPS, (classcaps_packing(d_in, config), d_in, flat, config.batch))
    return ci, tb


def classcaps_act_pieces(rows: int) -> list[tuple[int, int]]:
    """The ACTs "none" of a ClassCaps run over `rows` partial-sum rows: (first row, rows), at most
    `ACT_MAX_ROWS` each, in order."""
    return [(first, min(ACT_MAX_ROWS, rows - first)) for first in range(0, rows, ACT_MAX_ROWS)]


@dataclass(frozen=True)
class ElementwiseShape:
    """An `ELEMENTWISE_KINDS` operation: `operands` int8 maps of n rows (positions) x m values (capsules of
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


@njit(cache=True, inline=into_vector_loops)
def _elementwise_shape(kind, n_in, ch_in, caps_in, n_out, ch_out, caps_out, rows, cols, batch):
    """(refusal, n, m, func, width, capsule, span, length, operands, chunks) of `elementwise_shape` (refused:
    `REFUSED_CAPSULE`, its numbers `_shape_refusal_args` of the length). It writes nothing, so that it also runs
    on float64 fields in a vectorized loop."""
    if kind == TOCAPS:
        n, m, length, operands, func = batch * n_in * n_in, ch_in * caps_in, caps_in, 1, FUNC_SQUASH
    else:
        n, m, length, operands, func = batch * n_out * n_out, ch_out * caps_out, caps_out, 2, FUNC_NONE
    refusal, n, _, m, func, width, capsule, span = _columns(n, n - n, m, func, length, cols)
    return refusal, n, m, func, width, capsule, span, length, operands, ceil_div(width, rows)


def elementwise_shape(kind: str, op, config: ArrayConfig) -> ElementwiseShape:
    """The sum of an `ELEMENTWISE_KINDS` operation (`op` the operation `chain` runs it for):
    "tocaps": a CapsCell's input feature map read as capsules (nas.layers.ToCapsules: n_in² positions
    of ch_in capsules of caps_in atoms, one operand, squash); "capsadd": a CapsCell's output, its third
    convolution's capsules plus its skip branch's (n_out² positions of ch_out x caps_out, two operands,
    no activation: saturated). The n rows are the `config.batch` images' positions, stacked."""
    if kind not in ELEMENTWISE_KINDS:
        raise MappingError(f"{kind!r} is not one of {', '.join(ELEMENTWISE_KINDS)}")
    refusal, n, m, func, width, capsule, span, length, operands, chunks = _elementwise_shape(
        STEP_KINDS.index(kind), op.n_in, op.ch_in, op.caps_in, op.n_out, op.ch_out, op.caps_out, config.rows,
        config.cols, config.batch)
    if refusal:
        raise _refusal(refusal, _shape_refusal_args(refusal, length, config.cols))
    return ElementwiseShape(MatmulShape(n, 0, m, FUNCS[func], width, capsule, span), length, operands, chunks)


@njit(cache=True, inline=into_vector_loops)
def _elementwise_chunking(n, m, width, capsule, span, operands, chunks, rows, depth, words, grouped):
    """(nc, pr, apart, gb) of `elementwise_chunking` (pr < 1: refused; without `grouped`, also where column groups
    would be needed, as `_matmul_runs`). It writes nothing, so that it also runs on float64 fields in a vectorized
    loop."""
    mb = _blocks(m, width, capsule, span)
    nc = min(n, floor_div(ACT_MAX_ROWS, span), ACT_MAX_STRIDE if span > 1 else ACT_MAX_ROWS,
             floor_div(depth, mb * chunks), floor_div(depth - chunks * rows, mb))
    acts = ceil_div(mb, span)
    apart = _acts_apart(mb * chunks, acts, words)
    reserve = 0 if apart else acts
    pr = (min(operands, floor_div(words - 1 - reserve, mb * chunks), floor_div(depth, mb * chunks * nc)) if nc > 0
          else nc - nc)
    if pr >= 1 or nc < 1 or not grouped:
        return nc, pr, apart, mb
    bound = floor_div(words - 1, chunks)  # column groups: one operand over gb blocks per run
    if bound < 1:  # (pr - pr: 0 of the fields' type, integer or float64)
        return nc, pr - pr, True, mb - mb
    return nc, pr - pr + 1, True, equal_parts(mb, bound)


def elementwise_chunking(shape: ElementwiseShape, config: ArrayConfig) -> tuple[int, int, bool, int]:
    """(nc, pr, apart, gb): rows per chunk, operands per run, whether each chunk's ACTs run in programs
    of their own after its last run, and column blocks per run, of an `ElementwiseShape`. A run holds,
    per operand, block and identity tile, nc data rows; the tiles and the chunk's mb·nc results share
    the weight buffer; one MATMUL per (operand, tile, block), one ACT per block (per capsule type over
    its span blocks, stride nc <= 63, when span > 1) at the end of the chunk's last run, or, when one
    operand's MATMULs and the ACTs do not fit a program (`_acts_apart`), in a run of their own after it
    (they fit one: a run that fits holds at least mb MATMULs). gb = mb, or, when one operand's
    chunks·mb MATMULs alone do not fit a program, column groups: pr = 1 and gb < mb blocks per run, at
    most (P - 1) // chunks, in the fewest groups of equal sizes, and the ACTs apart in programs of at
    most P - 1."""
    columns = shape.columns
    nc, pr, apart, gb = _elementwise_chunking(shape.n, shape.m, columns.width, columns.capsule, columns.span,
                                              shape.operands, shape.chunks, config.rows, config.buffer_depth,
                                              config.program_depth, True)
    if pr < 1:
        raise _refusal(REFUSED_ELEMENTWISE, (columns.blocks, config.buffer_depth, config.program_depth))
    return nc, pr, bool(apart), gb


@dataclass(frozen=True)
class Step:
    """One operation of a chained run (`chain`): `kind` (`KINDS` or `CHAIN_KINDS`) on the shape `op`,
    costed under the network's operation `index`, reading the outputs of the steps at positions
    `inputs` (none: the network's input image)."""

    index: int
    kind: str
    op: object
    inputs: tuple[int, ...]


STEP_FIELDS = ("index", "kind") + OP_FIELDS[1:] + ("inputs", "input0", "input1")
"""Columns of a step row (`chain_steps`): the operation's index, the step's kind code (`STEP_KINDS`), the
eight shape fields, and its inputs (how many, then up to two step positions)."""


@njit(cache=True, inline="always")
def _is_update(kind):
    """Whether step kind code `kind` is an update phase (`UPDATE_PHASES`)."""
    return kind == ROUTING_UPDATE or kind == ROUTING_FIRST_UPDATE


@njit(cache=True, inline="always")
def _is_routing(kind):
    """Whether step kind code `kind` is a routing phase (`ROUTING_PHASES`) or a whole routing."""
    return kind == ROUTING or kind == ROUTING_UNIFORM or kind == ROUTING_SOFTMAX or _is_update(kind)


@njit(cache=True)
def routing_phase(position):
    """Kind code (`STEP_KINDS`) of the routing operation at `position` of its run of consecutive
    routing operations: uniform, first update, softmax, update, softmax, ..."""
    if position < 2:
        return ROUTING_FIRST_UPDATE if position else ROUTING_UNIFORM
    return ROUTING_UPDATE if position % 2 else ROUTING_SOFTMAX


@njit(cache=True, inline="always")
def _step_kinds(ops, out):
    """Write into `out` the step kind code of each operation row of `ops` (`operation_kinds`)."""
    position = 0
    for i in range(ops.shape[0]):
        if ops[i, 0] == OP_ROUTING:
            out[i] = routing_phase(position)
            position += 1
        else:
            out[i] = ops[i, 0]  # the conv kinds and classcaps have the same codes in OP_KINDS and STEP_KINDS
            position = 0


def operation_kinds(operations) -> list[str]:
    """The calibrated model's kind of each operation of a network (`capsacc.network.Operation`s in
    order): its own kind, and for a `routing` operation the phase at its position in its run of
    consecutive routing operations (uniform, update, softmax, update, softmax, ...). The five routing
    operations of a Sabour class layer are so the phases of `ROUTINGS` = 3 iterations; a DeepCaps
    class layer's six end with a sixth, an update whose logits no iteration reads (the published
    expansion's count, kept)."""
    ops = operation_rows(operations)
    kinds = np.empty(len(ops), np.int64)
    _step_kinds(ops, kinds)
    return [STEP_KINDS[kind] for kind in kinds.tolist()]


@njit(cache=True, inline="always")
def _add_step(steps, count, index, kind, op, inputs, first, second):
    """Write step `count` (`STEP_FIELDS`) of operation `index` and return its position."""
    steps[count, 0], steps[count, 1] = index, kind
    for field in range(1, 9):
        steps[count, 1 + field] = op[field]
    steps[count, 10], steps[count, 11], steps[count, 12] = inputs, first, second
    return count


@njit(cache=True, inline="always")
def chain_steps(ops, kinds, steps):
    """Write the steps of the chained run of operation rows `ops` (`OP_FIELDS`; `kinds` their
    `_step_kinds`) into `steps` (at least 2·len(ops) rows of `STEP_FIELDS`), by the rules of `chain`;
    return their count, -1 when the operations are not in the order of the published expansion."""
    n = ops.shape[0]
    capscell = False
    for i in range(n):
        capscell = capscell or ops[i, 0] == OP_CONVCAPS3D
    count = 0
    if not capscell:
        feeds = -1  # the step a routing reads: the last classcaps (none: the previous step)
        for i in range(n):
            if ops[i, 0] == OP_ROUTING and feeds >= 0:
                _add_step(steps, i, i, kinds[i], ops[i], 1, feeds, -1)
            else:
                _add_step(steps, i, i, kinds[i], ops[i], 1 if i else 0, i - 1, -1)
            feeds = i if ops[i, 0] == OP_CLASSCAPS else feeds if ops[i, 0] == OP_ROUTING else -1
        return n
    last = -1
    i = 0
    while i < n:
        if ops[i, 0] == OP_CONV:
            last = _add_step(steps, count, i, CONV, ops[i], 1 if count else 0, last, -1)
            count += 1
            i += 1
        elif ops[i, 0] == OP_CONVCAPS:
            if i + 3 >= n:
                return -1
            if count and steps[last, 1] == CONV:
                last = _add_step(steps, count, i, TOCAPS, ops[i], 1, last, -1)
                count += 1
            first = _add_step(steps, count, i, CONVCAPS, ops[i], 1, last, -1)
            second = _add_step(steps, count + 1, i + 1, CONVCAPS, ops[i + 1], 1, first, -1)
            third = _add_step(steps, count + 2, i + 2, CONVCAPS, ops[i + 2], 1, second, -1)
            count += 3
            if ops[i + 3, 0] == OP_CONVCAPS3D:  # run on the first's n_out-sided output, stride 1
                votes = _add_step(steps, count, i + 3, CONVCAPS3D, ops[i + 3], 1, first, -1)
                steps[votes, 2], steps[votes, 6] = ops[i + 3, 6], 1
                skip = _add_step(steps, count + 1, i + 3, ROUTE3D, ops[i + 3], 1, votes, -1)
                count += 2
            else:
                skip = _add_step(steps, count, i + 3, CONVCAPS, ops[i + 3], 1, first, -1)
                count += 1
            last = _add_step(steps, count, i + 3, CAPSADD, ops[i + 3], 2, third, skip)
            count += 1
            i += 4
        else:
            end = i
            while end < n and ops[end, 0] != OP_CLASSCAPS:
                end += 1
            if end == n:
                return -1
            u_hat = _add_step(steps, count, end, CLASSCAPS, ops[end], 1, last, -1)
            count += 1
            for j in range(i, end):
                _add_step(steps, count, j, kinds[j], ops[j], 1, u_hat, -1)
                count += 1
            i = end + 1
    return count


def chain(operations) -> list[Step]:
    """The steps of a chained run of a network's operations (`capsacc.network.Operation`s in the
    order of the published expansion), in data-flow order (`chain_steps`).

    Sabour networks: each operation once, reading the previous one (a routing phase the ClassCaps
    before it: its predictions; the phases pass their logits and capsules on in order). CapsCell networks (those with a
    ConvCaps3D; nas.layers.CapsCell): a "tocaps" after the convolutions (the cell reads the feature
    map as squashed capsules); per cell, its first convolution (the cell's input), second (the
    first's output), third (the second's), the skip branch (the first's output: a convcaps, or in the
    last cell the convcaps3d run on the first's n_out-sided output with stride 1, the same matrix
    shape as the expansion's, and its "route3d"), and "capsadd" (third plus skip: the cell's output,
    summed after the squashes as in Keras); then the class layer's classcaps before its routing
    phases (the expansion lists the routing first)."""
    ops = operation_rows(operations)
    kinds = np.empty(len(ops), np.int64)
    _step_kinds(ops, kinds)
    steps = np.empty((2 * len(ops) + 1, len(STEP_FIELDS)), np.int64)
    count = chain_steps(ops, kinds, steps)
    if count < 0:
        raise MappingError("the operations are not in the order of the published expansion")
    result = []
    for index, kind, *fields, inputs, first, second in steps[:count].tolist():
        op = operations[index]
        if tuple(fields) != _op_fields(op):
            op = dataclasses.replace(op, **dict(zip(OP_FIELDS[1:], fields)))
        result.append(Step(index, STEP_KINDS[kind], op, (first, second)[:inputs]))
    return result


@njit(cache=True, inline=into_vector_loops)
def _no_geometry(refusal):
    """The result of `_routing_geometry` for a refused routing."""
    return refusal, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0


@njit(cache=True, inline=into_vector_loops)
def _routing_geometry(n_in, n_out, dim, rows, cols, depth, words, routings):
    """(refusal, tJ, tD, stride, period, kf_full, kf_last, KF, sets, recompute, resident, B, V, q_in, Q,
    nq, na, mpr, acts_per_run, pairs_per_run) of `routing_geometry`; the refusal's numbers are
    `_routing_refusal_args`'. It writes nothing, so that it also runs on float64 fields in a vectorized loop."""
    if not (1 <= n_out <= MAX_CAPSULE and 1 <= dim <= MAX_CAPSULE and n_in >= 1):
        return _no_geometry(REFUSED_ROUTING_SIZE)
    t_j, t_d = ceil_div(n_out, cols), ceil_div(dim, cols)
    stride = ceil_div(dim, t_d)
    if stride > ACT_MAX_STRIDE:
        return _no_geometry(REFUSED_ROUTING_STRIDE)
    period = t_d * stride
    last = n_out - (t_j - 1) * cols
    kf_full, kf_last = ceil_div(cols * period, rows), ceil_div(last * period, rows)
    kf = (t_j - 1) * kf_full + kf_last
    sums = n_out * t_d
    resident = sums + n_in * t_j <= depth
    recompute = max(1, routings - 1)  # the output-capsule sets a recomputation of the logits reads
    sets = 1 if resident else recompute + 1
    v_base = depth - sets * kf * rows
    q_in = min(rows, floor_div(ACT_MAX_ROWS, t_j))
    chunks = ceil_div(n_in, q_in)
    mpr = min(kf, words - 1)
    if resident:
        nq = min(chunks, floor_div(depth, n_out))
        na = min(n_in, floor_div(depth, mpr * t_j), floor_div(MATMUL_MAX_ROWS, t_j))
    else:
        block = floor_div(min(depth - sums, floor_div(depth, mpr), MATMUL_MAX_ROWS), t_j)
        nq = min(chunks, floor_div(depth, n_out), floor_div(block, q_in))
        na = nq * q_in
    pairs_per_run = min(floor_div(v_base, rows) if v_base > 0 else 0, words - 1)
    refusal = REFUSED_ROUTING_FIT if pairs_per_run < 1 or nq < 1 or na < 1 or q_in < 1 else FITS
    return (refusal, t_j, t_d, stride, period, kf_full, kf_last, kf, sets, recompute, 1 if resident else 0, sums,
            v_base, q_in, chunks, nq, na, mpr, apart_acts_per_run(words), pairs_per_run)


@njit(cache=True, _nrt=False)
def _routing_refusal_args(geometry, n_in, n_out, dim, cols, depth, words, args):
    """Write the numbers of the refusal of a `_routing_geometry` `geometry` into `args`."""
    refusal, t_d = geometry[0], ceil_div(dim, cols)
    if refusal == REFUSED_ROUTING_SIZE:
        args[0], args[1], args[2], args[3] = MAX_CAPSULE, n_in, n_out, dim
    elif refusal == REFUSED_ROUTING_STRIDE:
        args[0], args[1], args[2], args[3] = dim, cols, ceil_div(dim, t_d), ACT_MAX_STRIDE
    elif refusal == REFUSED_ROUTING_FIT:
        args[0], args[1], args[2], args[3], args[4] = n_in, n_out, dim, depth, words


def routing_geometry(n_in: int, n_out: int, dim: int, config: ArrayConfig, routings: int = ROUTINGS) -> dict:
    """Layout and chunk sizes of a routing over I = `n_in` inputs, J = `n_out` classes of D = `dim`
    atoms with `routings` iterations (names as in the module docstring); `MappingError` when it does
    not fit."""
    geometry = _routing_geometry(n_in, n_out, dim, config.rows, config.cols, config.buffer_depth,
                                 config.program_depth, routings)
    (refusal, t_j, t_d, stride, period, kf_full, kf_last, kf, sets, recompute, resident, sums, v_base, q_in, chunks,
     nq, na, mpr, acts_per_run, pairs_per_run) = geometry
    if refusal:
        args = np.zeros(REFUSAL_ARGS, np.int64)
        _routing_refusal_args(geometry, n_in, n_out, dim, config.cols, config.buffer_depth, config.program_depth,
                              args)
        raise _refusal(refusal, args)
    return {"tJ": t_j, "tD": t_d, "stride": stride, "period": period, "kf_full": kf_full, "kf_last": kf_last,
            "KF": kf, "sets": sets, "recompute": recompute, "resident": bool(resident), "S": 0, "B": sums,
            "V": v_base, "q_in": q_in, "Q": chunks, "nq": nq, "na": na, "mpr": mpr, "acts_per_run": acts_per_run,
            "pairs_per_run": pairs_per_run}


def route3d_routing(op, config: ArrayConfig) -> tuple[object, int]:
    """(routing operation, routings) of the "route3d" step of a ConvCaps3D `op` (`chain`): the routing
    of the votes at one position, over I = op.ch_in input capsule types (`classcaps_dims` of the
    returned operation), J = op.ch_out output types of D = op.caps_out atoms; and how many run, one
    after the other as a batch's images' routings do: config.batch·n_out² (each image's positions in
    order, y then x)."""
    return dataclasses.replace(op, n_in=1, kernel=1, stride=1, n_out=1), config.batch * op.n_out * op.n_out


def routing_phases(routings: int = ROUTINGS) -> tuple[str, ...]:
    """The phases of a routing with `routings` iterations (>= 1), in order: the uniform first
    iteration, then an update and a softmax iteration per further iteration."""
    if isinstance(routings, bool) or not isinstance(routings, int) or routings < 1:
        raise MappingError(f"routings: {routings!r} must be an integer >= 1")
    return routing_run_kinds(2 * routings - 1)


def routing_run_kinds(operations: int) -> tuple[str, ...]:
    """The phase kinds of a run of `operations` consecutive routing operations (`routing_phase`): a
    routing's `routing_phases`, or more (a CapsCell network's class layer ends with an update)."""
    return tuple(STEP_KINDS[routing_phase(position)] for position in range(operations))


RUNS, MATMULS, MATMUL_ROWS, ACCUMULATE, ROUTING_ROWS, PHASE_CYCLES, ACTS, ACT_ROWS, ACT_ELEMENTS, ACTS_COLUMN, \
    ACT_SPANS, ACT_ROWS_ROW, ACT_ELEMENTS_COLUMN = range(len(COUNT_FIELDS))


@njit(cache=True, inline="always")
def _act(counts, cols, func, n, length, times, column):
    """Count `times` ACTs of function code `func` over n partial-sum rows with `length` L."""
    span, width, last_width = _act_lanes(cols, func, length)
    _act_groups(counts, span, width, last_width, n if span == 1 else ceil_div(n, span), times, column)


@njit(cache=True, inline=into_vector_loops)
def _act_group_counts(span, width, last_width, groups, times):
    """(ACTs, ACT rows, ACT elements, ACT spans) of `times` ACTs of the lanes (span, width, last_width)
    (`_act_lanes`) over `groups` capsules' rows (span rows each: n = groups·span partial-sum rows)."""
    return times, times * groups * span, times * groups * ((span - 1) * width + last_width), times * span


@njit(cache=True, inline=into_vector_loops)
def _act_counts(cols, func, n, length, times):
    """(ACTs, ACT rows, ACT elements, ACT spans) of `times` ACTs of function code `func` over n partial-sum rows
    with `length` L (`_act_group_counts`)."""
    span, width, last_width = _act_lanes(cols, func, length)
    return _act_group_counts(span, width, last_width, n if span == 1 else ceil_div(n, span), times)


@njit(cache=True, inline="always")
def _act_groups(counts, span, width, last_width, groups, times, column):
    """Count `times` ACTs of the lanes (span, width, last_width) (`_act_lanes`) over `groups` capsules' rows
    (`_act_group_counts`); column mode when `column`."""
    acts, rows, elements, spans = _act_group_counts(span, width, last_width, groups, times)
    counts[ACTS] += acts
    counts[ACT_ROWS] += rows
    counts[ACT_ELEMENTS] += elements
    counts[ACT_SPANS] += spans
    if column:
        counts[ACTS_COLUMN] += acts
        counts[ACT_ELEMENTS_COLUMN] += elements
    else:
        counts[ACT_ROWS_ROW] += rows


@njit(cache=True, inline=into_vector_loops)
def _routing_update(inputs, times, sets, t_j, kf, mpr, writes, rows, cols):
    """(runs, MATMUL phase cycles, MATMULs, MATMUL rows, accumulating rows) of `sets` x KF MATMULs of inputs x tJ
    rows in runs of mpr (`RoutingLayout._update_runs`), `times` over; all accumulate but, with `writes` (1), the
    first (a recomputation, or the first update: it writes the logits)."""
    n = inputs * t_j
    full, rest = floor_div(kf, mpr), remainder(kf, mpr)
    ends = _matmul_stream_ends(n, rows, cols)
    return (times * sets * (full + (1 if rest > 0 else 0)),
            times * sets * (full * _matmul_run_cycles(ends, mpr, rows, cols) + _matmul_run_cycles(ends, rest, rows,
                                                                                                  cols)),
            times * sets * kf, times * sets * kf * n, times * (sets * kf - writes) * n)


@njit(cache=True, inline=into_vector_loops)
def _routing_block_counts(kind, block, n_in, n_out, rows, cols, geometry):
    """(runs, MATMUL phase cycles, MATMULs, MATMUL rows, accumulating rows, routing rows, ACTs, ACT rows, ACT
    elements, ACT spans) of the blocks of input chunks of a softmax or weighted-sum phase (`_routing_counts`):
    `block` 0 the full blocks of nq chunks (but the last), 1 the last block; the softmax phase's recomputation
    and column-mode ACTs, and every phase's weighted sums, in runs of pairs_per_run."""
    (_, t_j, t_d, _, _, _, _, kf, _, recompute, resident, _, _, q_in, chunks_total, nq, _, mpr, acts_per_run,
     pairs_per_run) = geometry
    last_inputs = n_in - (chunks_total - 1) * q_in  # the last chunk's
    full_blocks, rest_chunks = floor_div(chunks_total, nq), remainder(chunks_total, nq)
    if rest_chunks > 0:
        chunks, times, has_last = (nq, full_blocks, 0) if block == 0 else (rest_chunks, 1, 1)
    else:
        chunks, times, has_last = (nq, full_blocks - 1, 0) if block == 0 else (nq, 1, 1)
    if times == 0:
        return 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
    update, full, last, run_acts = (0, 0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0), 0
    if kind == ROUTING_SOFTMAX:
        inputs = chunks * q_in - (q_in - last_inputs if has_last else 0)
        if not resident:
            update = _routing_update(inputs, times, recompute, t_j, kf, mpr, 1, rows, cols)
        full = _act_counts(cols, FUNC_SOFTMAX, q_in * t_j, n_out, times * (chunks - has_last))
        last = _act_counts(cols, FUNC_SOFTMAX, last_inputs * t_j, n_out, times * has_last)
        run_acts = times * ceil_div(chunks, acts_per_run)
    pairs = chunks * n_out * t_d
    full_runs, rest = floor_div(pairs, pairs_per_run), remainder(pairs, pairs_per_run)
    single_rows = _matmul_stream_ends(1, rows, cols)  # the weighted sums' MATMULs stream one row
    return (update[0] + run_acts + times * (full_runs + (1 if rest > 0 else 0)),
            update[1] + times * (full_runs * _matmul_run_cycles(single_rows, pairs_per_run, rows, cols)
                                 + _matmul_run_cycles(single_rows, rest, rows, cols)),
            update[2] + times * pairs, update[3] + times * pairs, update[4], times * pairs, full[0] + last[0],
            full[1] + last[1], full[2] + last[2], full[3] + last[3])


@njit(cache=True, inline=into_vector_loops)
def _routing_phase_counts(kind, n_in, n_out, dim, rows, cols, geometry):
    """The instruction counts (`COUNT_FIELDS`, a tuple) of routing phase `kind` for one image, by its
    `_routing_geometry` `geometry` (a fitting one): `_update_phase_counts` or `_block_phase_counts`."""
    if _is_update(kind):
        return _update_phase_counts(kind, n_in, rows, cols, geometry)
    return _block_phase_counts(kind, n_in, n_out, dim, rows, cols, geometry)


@njit(cache=True, inline=into_vector_loops)
def _update_phase_counts(kind, n_in, rows, cols, geometry):
    """`_routing_phase_counts` of an update phase (`UPDATE_PHASES`): its runs of MATMULs when the logits are resident
    (the na-input chunks and the rest), none otherwise."""
    (_, t_j, _, _, _, _, _, kf, _, _, resident, _, _, _, _, _, na, mpr, _, _) = geometry
    zero = n_in - n_in  # of the fields' type: the tuple is homogeneous
    if not resident:
        return zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero, zero
    writes = 1 if kind == ROUTING_FIRST_UPDATE else 0
    full = _routing_update(na, floor_div(n_in, na), 1, t_j, kf, mpr, writes, rows, cols)
    rest = remainder(n_in, na)
    last = _routing_update(rest, 1 if rest > 0 else 0, 1, t_j, kf, mpr, writes, rows, cols)
    return (full[0] + last[0], full[2] + last[2], full[3] + last[3], full[4] + last[4], zero, full[1] + last[1],
            zero, zero, zero, zero, zero, zero, zero)


@njit(cache=True, inline=into_vector_loops)
def _block_phase_counts(kind, n_in, n_out, dim, rows, cols, geometry):
    """`_routing_phase_counts` of a softmax or weighted-sum phase (uniform, softmax): its blocks of chunks
    (`_routing_block_counts`), then the squash ACTs of the output capsules (column mode) in one run."""
    (_, t_j, t_d, _, _, _, _, _, _, _, _, _, _, _, chunks_total, _, _, _, _, _) = geometry
    zero = n_in - n_in  # of the fields' type: the tuple is homogeneous
    first = _routing_block_counts(kind, 0, n_in, n_out, rows, cols, geometry)
    second = _routing_block_counts(kind, 1, n_in, n_out, rows, cols, geometry)
    full = _act_counts(cols, FUNC_SQUASH, cols * t_d, dim, t_j - 1)
    last = _act_counts(cols, FUNC_SQUASH, (n_out - (t_j - 1) * cols) * t_d, dim, 1)
    acts, act_rows, act_elements, act_spans = (first[6] + second[6] + full[0] + last[0],
                                               first[7] + second[7] + full[1] + last[1],
                                               first[8] + second[8] + full[2] + last[2],
                                               first[9] + second[9] + full[3] + last[3])
    return (first[0] + second[0] + 1, first[2] + second[2], first[3] + second[3],
            first[4] + second[4] + (chunks_total - 1) * n_out * t_d, first[5] + second[5], first[1] + second[1],
            acts, act_rows, act_elements, acts, act_spans, zero, act_elements)


@njit(cache=True, inline=into_vector_loops)
def _matmul_plan(kind, n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out, rows, cols, depth, words, batch,
                 grouped):
    """(refusal, n, m, func, width, capsule, span, mb, kc, nc, chunks, kr, kr_rest, gb, gb_rest) of a conv
    kind's step: its shape (`_matmul_shape`), mb column blocks, kc K chunks of R rows, nc data rows per chunk,
    the n // nc chunks of nc rows, and the K chunks and column blocks per run of a chunk of nc rows and of the
    last one of n mod nc rows (`_matmul_runs`; 0 when n mod nc = 0); refused (`REFUSED_CHUNK`,
    `REFUSED_RUN`) when no chunk fits, or when one of those chunks leaves no block per run: the plan
    `count_step` counts instructions and rows by (`_matmul_counts`), with column groups where needed when
    `grouped` (else `REFUSED_RUN` there too, `_matmul_runs`). It writes nothing, so that it also runs on float64
    fields in a vectorized loop; the refusal's numbers are `_matmul_refusal_args`'."""
    refusal, n, k, m, func, width, capsule, span = _matmul_shape(kind, n_in, ch_in, caps_in, kernel, n_out, ch_out,
                                                                 caps_out, cols, batch)
    if refusal:
        return refusal, n, m, func, width, capsule, span, 0, 0, 0, 0, 0, 0, 0, 0
    mb, kc = _blocks(m, width, capsule, span), ceil_div(k, rows)
    nc = _matmul_chunk_rows(n, mb, span, depth)
    if nc < 1:
        return REFUSED_CHUNK, n, m, func, width, capsule, span, mb, kc, nc, 0, 0, 0, 0, 0
    chunks, rest = floor_div(n, nc), remainder(n, nc)
    program_chunks = _program_chunks(mb, words)
    kr, gb = _matmul_runs(mb, nc, depth, rows, words, program_chunks, grouped)
    kr_rest, gb_rest = _matmul_runs(mb, rest, depth, rows, words, program_chunks, grouped) if rest > 0 else (0, 0)
    if kr < 1 or (rest > 0 and kr_rest < 1):
        return REFUSED_RUN, n, m, func, width, capsule, span, mb, kc, nc, chunks, kr, kr_rest, gb, gb_rest
    return FITS, n, m, func, width, capsule, span, mb, kc, nc, chunks, kr, kr_rest, gb, gb_rest


@njit(cache=True)
def _shape_refusal_args(refusal, caps_out, cols):
    """The numbers of a refusal of `_matmul_shape`: `REFUSED_WIDTH` (C, C) or `REFUSED_CAPSULE` (L, 64)."""
    return (cols, cols) if refusal == REFUSED_WIDTH else (caps_out, MAX_CAPSULE)


@njit(cache=True, _nrt=False)
def _matmul_refusal_args(plan, caps_out, cols, depth, words, args):
    """Write the numbers of the refusal of a conv kind's `_matmul_plan` `plan` into `args`."""
    refusal, n, mb, nc, kr = plan[0], plan[1], plan[7], plan[9], plan[11]
    if refusal == REFUSED_WIDTH or refusal == REFUSED_CAPSULE:
        args[0], args[1] = _shape_refusal_args(refusal, caps_out, cols)
    elif refusal == REFUSED_CHUNK:
        args[0], args[1] = mb, depth
    elif refusal == REFUSED_RUN:
        args[0], args[1], args[2], args[3] = mb, nc if kr < 1 else n % nc, depth, words


@njit(cache=True, inline=into_vector_loops)
def _matmul_part_counts(chunk_rows, times, kr, gb, kc, mb, span, rows, cols, words, block_acts, apart, grouped):
    """(runs, MATMUL phase cycles, MATMULs, MATMUL rows, accumulating rows, ACTs, ACT rows, ACT elements, ACT
    spans) of `times` chunks of `chunk_rows` data rows of a conv kind's plan (`_matmul_plan`: kc K chunks, kr
    per run over gb of its mb column blocks) or of an `ELEMENTWISE_KINDS` plan (`_elementwise_plan`: kc the
    operands' tiles, kr those of pr operands) with the ACTs `block_acts` (`_block_acts`), in runs of their own
    after the chunk's last run when `apart`; zeros when there are none. Every ACT is row mode. Without `grouped`
    the plan has no column groups (gb = mb, `_matmul_runs`)."""
    if chunk_rows == 0 or times == 0:
        return 0, 0, 0, 0, 0, 0, 0, 0, 0
    acts, act_span, act_width, act_last, last_acts, last_span, last_act_width, last_act_last = block_acts
    runs, groups = ceil_div(kc, kr), _column_groups(mb, gb, grouped)
    ends = _matmul_stream_ends(chunk_rows, rows, cols)
    act_runs = ceil_div(floor_div(mb, span), apart_acts_per_run(words)) if apart else 0
    full = _act_group_counts(act_span, act_width, act_last, chunk_rows, times * acts)
    last = _act_group_counts(last_span, last_act_width, last_act_last, chunk_rows, times * last_acts)
    return (times * (runs * groups + act_runs),
            times * _chunk_run_cycles(ends, kc, kr, runs, groups, gb, mb, rows, cols), times * kc * mb,
            times * kc * mb * chunk_rows, times * (kc - 1) * mb * chunk_rows, full[0] + last[0], full[1] + last[1],
            full[2] + last[2], full[3] + last[3])


@njit(cache=True, inline=into_vector_loops)
def _row_mode_counts(runs, matmuls, matmul_rows, accumulate, phase_cycles, acts, act_rows, act_elements, act_spans):
    """The instruction counts (`COUNT_FIELDS`, a tuple) of a step whose ACTs are all row mode (a conv kind's or a
    classcaps'): no routing rows, no column-mode ACTs, every ACT row a row-mode one."""
    zero = runs - runs  # of the counts' type: the tuple is homogeneous
    return (runs, matmuls, matmul_rows, accumulate, zero, phase_cycles, acts, act_rows, act_elements, zero, act_spans,
            act_rows, zero)


@njit(cache=True, inline=into_vector_loops)
def _matmul_counts(plan, rows, cols, words, grouped):
    """(the instruction counts, `COUNT_FIELDS`; the buffer rows the DMA moves, `TRANSFER_FIELDS`) of a conv kind's
    fitting `_matmul_plan` `plan`: its chunks of nc rows and the last of the rest (`_matmul_part_counts`, every ACT
    in row mode), per chunk kc·nc data rows and kc·mb·R weight rows loaded, mb·nc result rows stored; `grouped` that
    of the plan. Two tuples of the plan's type, integers or float64."""
    _, n, m, func, width, capsule, span, mb, kc, nc, full_chunks, kr_full, kr_rest, gb_full, gb_rest = plan
    rest_rows = n - full_chunks * nc
    block_acts = _block_acts(cols, func, m, width, capsule, span)
    full = _matmul_part_counts(nc, full_chunks, kr_full, gb_full, kc, mb, span, rows, cols, words, block_acts,
                               _matmul_acts_apart(mb, gb_full, words), grouped)
    last = _matmul_part_counts(rest_rows, 1, kr_rest, gb_rest, kc, mb, span, rows, cols, words, block_acts,
                               _matmul_acts_apart(mb, gb_rest, words), grouped)
    zero = n - n  # of the plan's type: the tuples are homogeneous
    counts = _row_mode_counts(full[0] + last[0], full[2] + last[2], full[3] + last[3], full[4] + last[4],
                              full[1] + last[1], full[5] + last[5], full[6] + last[6], full[7] + last[7],
                              full[8] + last[8])
    moved = (kc * n, (full_chunks + (1 if rest_rows > 0 else 0)) * kc * mb * rows, zero, zero, mb * n, zero)
    return counts, moved


@njit(cache=True, inline=into_vector_loops)
def _classcaps_plan(n_in, ch_in, caps_in, ch_out, caps_out, rows, cols, depth, words, batch):
    """(refusal, n_caps, kc, mb, k, ci, tb, flat) of a classcaps step: its I = n_caps input capsules, kc K chunks
    and mb column blocks, k capsules packed per tile (`_classcaps_packing`), ci capsules and tb column tiles per run
    (`_classcaps_per_run`; `REFUSED_CLASSCAPS` when none fits, its numbers k, caps_in, flat = J·D and the batch)
    and flat: the plan `count_step` counts by (`_classcaps_counts`). It writes nothing, so that it also runs on
    float64 fields in a vectorized loop."""
    n_caps, flat = n_in * n_in * ch_in, ch_out * caps_out
    kc, mb = ceil_div(caps_in, rows), ceil_div(flat, cols)
    k = _classcaps_packing(caps_in, rows)
    ci, tb = _classcaps_per_run(caps_in, flat, rows, cols, depth, words, batch)
    return REFUSED_CLASSCAPS if ci < 1 else FITS, n_caps, kc, mb, k, ci, tb, flat


@njit(cache=True, inline=into_vector_loops)
def _classcaps_tile_counts(groups, data_rows, kc, tiles, times, ends, rows, cols):
    """(MATMUL phase cycles, ACTs, ACT rows, ACT elements, ACT spans) of `times` runs of `groups` groups of a
    classcaps step over `tiles` column tiles each: the run's MATMULs, then ACTs "none" over its psum rows in pieces
    of `ACT_MAX_ROWS` (`classcaps_act_pieces` in closed form)."""
    if times == 0:
        return 0, 0, 0, 0, 0
    psum_rows = groups * data_rows * tiles
    rest = remainder(psum_rows, ACT_MAX_ROWS)
    full = _act_counts(cols, FUNC_NONE, ACT_MAX_ROWS, cols, times * floor_div(psum_rows, ACT_MAX_ROWS))
    last = _act_counts(cols, FUNC_NONE, rest, cols, times if rest > 0 else 0)
    return (times * _matmul_run_cycles(ends, groups * kc * tiles, rows, cols), full[0] + last[0], full[1] + last[1],
            full[2] + last[2], full[3] + last[3])


@njit(cache=True, inline=into_vector_loops)
def _classcaps_part_counts(run_caps, times, kc, mb, k, tb, tile_runs, data_rows, ends, rows, cols):
    """(runs, MATMULs, MATMUL rows, accumulating rows, MATMUL phase cycles, ACTs, ACT rows, ACT elements, ACT spans,
    groups) of `times` runs of `run_caps` capsules of a classcaps plan, each over the mb column tiles in
    ceil(mb / tb) runs; zeros when there are none."""
    if run_caps == 0 or times == 0:
        return 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
    groups = ceil_div(run_caps, k)
    full = _classcaps_tile_counts(groups, data_rows, kc, tb, times * (tile_runs - 1), ends, rows, cols)
    last = _classcaps_tile_counts(groups, data_rows, kc, mb - (tile_runs - 1) * tb, times, ends, rows, cols)
    return (times * tile_runs, times * groups * kc * mb, times * groups * data_rows * kc * mb,
            times * groups * data_rows * (kc - 1) * mb, full[0] + last[0], full[1] + last[1], full[2] + last[2],
            full[3] + last[3], full[4] + last[4], times * groups)


@njit(cache=True, inline=into_vector_loops)
def _classcaps_counts(plan, rows, cols, batch):
    """(the instruction counts, `COUNT_FIELDS`; the buffer rows the DMA moves, `TRANSFER_FIELDS`) of a classcaps
    step's fitting `_classcaps_plan` `plan`: runs of ci capsules and one of the rest (`_classcaps_part_counts`,
    every ACT in row mode), per run of g groups g·kc·B·k data rows and g·kc·mb·R weight rows loaded, g·mb·B·k
    result rows stored. Two tuples of the plan's type, integers or float64."""
    _, n_caps, kc, mb, k, ci, tb, _ = plan
    data_rows = batch * k  # per MATMUL
    ends = _matmul_stream_ends(data_rows, rows, cols)
    tile_runs = ceil_div(mb, tb)
    full = _classcaps_part_counts(ci, floor_div(n_caps, ci), kc, mb, k, tb, tile_runs, data_rows, ends, rows, cols)
    last = _classcaps_part_counts(remainder(n_caps, ci), 1, kc, mb, k, tb, tile_runs, data_rows, ends, rows, cols)
    zero = n_caps - n_caps  # of the plan's type: the tuples are homogeneous
    counts = _row_mode_counts(full[0] + last[0], full[1] + last[1], full[2] + last[2], full[3] + last[3],
                              full[4] + last[4], full[5] + last[5], full[6] + last[6], full[7] + last[7],
                              full[8] + last[8])
    groups = full[9] + last[9]
    moved = (groups * kc * data_rows, groups * kc * mb * rows, zero, zero, groups * mb * data_rows, zero)
    return counts, moved


@njit(cache=True, inline=into_vector_loops)
def _elementwise_plan(kind, n_in, ch_in, caps_in, n_out, ch_out, caps_out, rows, cols, depth, words, batch, grouped):
    """(refusal, n, m, func, width, capsule, span, length, operands, chunks, mb, nc, pr, apart, gb) of a
    `ELEMENTWISE_KINDS` step: its shape (`_elementwise_shape`), mb column blocks, nc rows per chunk, pr
    operands per run, whether the ACTs run apart and gb column blocks per run (`_elementwise_chunking`;
    `REFUSED_ELEMENTWISE` when no operand fits a run, and without `grouped` where column groups would be needed):
    the plan `count_step` counts by (`_elementwise_counts`). It writes nothing, so that it also runs on float64
    fields in a vectorized loop; the refusal's numbers are `_elementwise_refusal_args`'."""
    refusal, n, m, func, width, capsule, span, length, operands, chunks = _elementwise_shape(
        kind, n_in, ch_in, caps_in, n_out, ch_out, caps_out, rows, cols, batch)
    zero = n - n  # of the fields' type
    if refusal:
        return refusal, n, m, func, width, capsule, span, length, operands, chunks, zero, zero, zero, False, zero
    mb = _blocks(m, width, capsule, span)
    nc, pr, apart, gb = _elementwise_chunking(n, m, width, capsule, span, operands, chunks, rows, depth, words,
                                              grouped)
    return (REFUSED_ELEMENTWISE if pr < 1 else FITS, n, m, func, width, capsule, span, length, operands, chunks, mb,
            nc, pr, apart, gb)


@njit(cache=True, _nrt=False)
def _elementwise_refusal_args(plan, cols, depth, words, args):
    """Write the numbers of the refusal of an `_elementwise_plan` `plan` into `args`."""
    refusal, length, mb = plan[0], plan[7], plan[10]
    if refusal == REFUSED_ELEMENTWISE:
        args[0], args[1], args[2] = mb, depth, words
    else:
        args[0], args[1] = _shape_refusal_args(refusal, length, cols)


@njit(cache=True, inline=into_vector_loops)
def _elementwise_counts(plan, rows, cols, words, grouped):
    """(the instruction counts, `COUNT_FIELDS`; the buffer rows the DMA moves, `TRANSFER_FIELDS`) of an
    `ELEMENTWISE_KINDS` step's fitting `_elementwise_plan` `plan`: its chunks of nc rows and the last of the rest
    (`_matmul_part_counts` over the operands' tiles, pr operands a run, every ACT in row mode); the operands'
    tiles·mb·n data rows and, per chunk and run, chunks·R identity rows per column group loaded, mb·n result rows
    stored; `grouped` that of the plan. Two tuples of the plan's type, integers or float64."""
    _, n, m, func, width, capsule, span, _, operands, chunks, mb, nc, pr, apart, gb = plan
    tiles = operands * chunks
    full_chunks = floor_div(n, nc)
    rest_rows = n - full_chunks * nc
    block_acts = _block_acts(cols, func, m, width, capsule, span)
    full = _matmul_part_counts(nc, full_chunks, pr * chunks, gb, tiles, mb, span, rows, cols, words, block_acts,
                               apart, grouped)
    last = _matmul_part_counts(rest_rows, 1, pr * chunks, gb, tiles, mb, span, rows, cols, words, block_acts, apart,
                               grouped)
    zero = n - n  # of the plan's type: the tuples are homogeneous
    counts = _row_mode_counts(full[0] + last[0], full[2] + last[2], full[3] + last[3], full[4] + last[4],
                              full[1] + last[1], full[5] + last[5], full[6] + last[6], full[7] + last[7],
                              full[8] + last[8])
    loads = (full_chunks + (1 if rest_rows > 0 else 0)) * ceil_div(operands, pr) * _column_groups(mb, gb, grouped)
    moved = (tiles * mb * n, loads * chunks * rows, zero, zero, mb * n, zero)
    return counts, moved


TRANSFER_FIELDS = ("data_loads", "weight_loads", "routing_loads", "data_stores", "weight_stores", "routing_stores")
"""What `count_step` counts beside the instructions: the int8 buffer rows the DMA moves through the
off-chip port (`sim.host.DmaSession`), loaded into and stored from the data, weight and routing buffers."""
DATA_LOADS, WEIGHT_LOADS, ROUTING_LOADS, DATA_STORES, WEIGHT_STORES, ROUTING_STORES = range(len(TRANSFER_FIELDS))
NARROW_TRANSFERS = (DATA_LOADS, ROUTING_LOADS, DATA_STORES, ROUTING_STORES)
"""The `TRANSFER_FIELDS` of rows of R int8 lanes (data and routing buffers)."""
WIDE_TRANSFERS = (WEIGHT_LOADS, WEIGHT_STORES)
"""The `TRANSFER_FIELDS` of rows of C int8 lanes (weight buffer)."""


@njit(cache=True, inline=into_vector_loops)
def _routing_phase_moved(phase, lone, n_in, n_out, rows, geometry):
    """The buffer rows (`TRANSFER_FIELDS`, a tuple) the DMA loads for one routing phase `phase` of one image, of a
    lone phase step (`lone`: it also loads the state the host writes otherwise) or of a whole routing's
    (`_routing_moved`)."""
    (_, _, t_d, _, _, _, _, kf, _, recompute, resident, _, _, _, chunks, _, _, _, _, _) = geometry
    zero = n_in - n_in
    update = kf * n_in * geometry[1]  # the prediction rows of an update (resident) or of a recomputation per set
    state = kf * rows if lone else zero
    if _is_update(phase):
        if not resident:
            return zero, zero, zero, zero, zero, zero
        return update, state, zero, zero, zero, zero
    tiles = chunks * n_out * t_d * rows  # the weighted sums' tiles, one per (chunk, class, row of s_j)
    if phase == ROUTING_UNIFORM:
        return (zero, tiles + ((recompute - 1) * kf * rows if not resident and recompute > 1 else zero),
                chunks * n_out, zero, zero, zero)
    if resident:
        return zero, tiles, zero, zero, zero, zero
    return recompute * update, tiles + recompute * state, zero, zero, zero, zero


@njit(cache=True, inline=into_vector_loops)
def _routing_moved(kind, n_in, n_out, rows, routings, geometry):
    """The buffer rows (`TRANSFER_FIELDS`, a tuple) the DMA moves for routing phase `kind` (or a whole routing,
    `ROUTING`) of one image, by its `_routing_geometry` `geometry` (a fitting one). Loaded once: every row the runs
    of `rtl.workloads.RoutingLayout` write (the weighted sums' tiles, the uniform coupling, the prediction rows of
    an update and of a recomputation, the zeroed output-capsule sets), and for a lone phase the state the host
    writes (the output capsules a resident update reads, the sets a recomputation reads): a whole routing's are
    its uniform phase's and routings - 1 times an update's and a softmax phase's. Stored: the results read, the
    last block's coupling rows and the iteration's output capsules, but after a lone update (its logits lie in the
    partial-sum memory, which the DMA does not move)."""
    (_, _, _, _, _, _, _, kf, _, _, _, _, _, q_in, _, nq, _, _, _, _) = geometry
    if kind == ROUTING:
        uniform = _routing_phase_moved(ROUTING_UNIFORM, False, n_in, n_out, rows, geometry)
        update = _routing_phase_moved(ROUTING_UPDATE, False, n_in, n_out, rows, geometry)
        softmax = _routing_phase_moved(ROUTING_SOFTMAX, False, n_in, n_out, rows, geometry)
        loads = (uniform[0] + (routings - 1) * (update[0] + softmax[0]),
                 uniform[1] + (routings - 1) * (update[1] + softmax[1]),
                 uniform[2] + (routings - 1) * (update[2] + softmax[2]))
    else:
        loads = _routing_phase_moved(kind, True, n_in, n_out, rows, geometry)[:3]
    zero = n_in - n_in
    if _is_update(kind):
        return loads[0], loads[1], loads[2], zero, zero, zero
    block = nq * q_in
    last_inputs = n_in - (ceil_div(n_in, block) - 1) * block
    return loads[0], loads[1], loads[2], zero, kf * rows, ceil_div(last_inputs, q_in) * n_out


@njit(cache=True, inline=into_vector_loops)
def _scaled_sum(first, first_times, second, second_times):
    """first_times x `first` + second_times x `second`, tuples of counts, element by element."""
    return (first[0] * first_times + second[0] * second_times, first[1] * first_times + second[1] * second_times,
            first[2] * first_times + second[2] * second_times, first[3] * first_times + second[3] * second_times,
            first[4] * first_times + second[4] * second_times, first[5] * first_times + second[5] * second_times,
            first[6] * first_times + second[6] * second_times, first[7] * first_times + second[7] * second_times,
            first[8] * first_times + second[8] * second_times, first[9] * first_times + second[9] * second_times,
            first[10] * first_times + second[10] * second_times, first[11] * first_times + second[11] * second_times,
            first[12] * first_times + second[12] * second_times)


@njit(cache=True, inline=into_vector_loops)
def _routing_step(kind, n_in, ch_in, n_out, batch):
    """(kind, I, times) of a routing phase step or a route3d step: a route3d is a whole routing (`ROUTING`) over
    I = ch_in input capsule types at each of its B·n_out² positions, run in turn (`route3d_routing`); a phase runs
    over I = n_in²·ch_in inputs for each of the B images."""
    if kind == ROUTE3D:
        return ROUTING, ch_in, batch * n_out * n_out
    return kind, n_in * n_in * ch_in, batch


@njit(cache=True, inline=into_vector_loops)
def _whole_routing_counts(n_caps, n_out, dim, rows, cols, routings, geometry):
    """The instruction counts (`COUNT_FIELDS`, a tuple) of one whole routing (`ROUTING`: the uniform phase, then an
    update and a softmax phase per further iteration) over n_caps inputs, by its fitting `_routing_geometry`
    `geometry`."""
    softmax = _routing_phase_counts(ROUTING_SOFTMAX, n_caps, n_out, dim, rows, cols, geometry)
    later = _scaled_sum(_routing_phase_counts(ROUTING_UPDATE, n_caps, n_out, dim, rows, cols, geometry),
                        max(routings - 2, 0), softmax, max(routings - 2, 0))
    first = _scaled_sum(_routing_phase_counts(ROUTING_FIRST_UPDATE, n_caps, n_out, dim, rows, cols, geometry),
                        1 if routings > 1 else 0, softmax, 1 if routings > 1 else 0)
    return _scaled_sum(_scaled_sum(later, 1, first, 1), 1,
                       _routing_phase_counts(ROUTING_UNIFORM, n_caps, n_out, dim, rows, cols, geometry), 1)


@njit(cache=True, inline=into_vector_loops)
def _routing_times(kind, counts, n_caps, n_out, rows, routings, times, geometry):
    """(the instruction counts, the buffer rows the DMA moves: `_routing_counts`) of routing phase `kind` or a whole
    routing (`ROUTING`) run `times` over, from the instruction counts `counts` of one run."""
    zero = n_caps - n_caps
    moved = _routing_moved(kind, n_caps, n_out, rows, routings, geometry)
    return (_scaled_sum(counts, times, counts, zero),
            (moved[0] * times, moved[1] * times, moved[2] * times, moved[3] * times, moved[4] * times,
             moved[5] * times))


@njit(cache=True, inline=into_vector_loops)
def _routing_counts(kind, n_caps, n_out, dim, rows, cols, routings, times, geometry):
    """(the instruction counts, `COUNT_FIELDS`; the buffer rows the DMA moves, `TRANSFER_FIELDS`) of routing phase
    `kind` (`_routing_phase_counts`) or a whole routing (`ROUTING`, `_whole_routing_counts`) over n_caps inputs,
    `times` over (the images, or route3d's positions, run in turn), by its fitting `_routing_geometry` `geometry`
    (`_routing_times`). Two tuples of the fields' type, integers or float64."""
    if kind == ROUTING:
        counts = _whole_routing_counts(n_caps, n_out, dim, rows, cols, routings, geometry)
    else:
        counts = _routing_phase_counts(kind, n_caps, n_out, dim, rows, cols, geometry)
    return _routing_times(kind, counts, n_caps, n_out, rows, routings, times, geometry)


@njit(cache=True, inline="always")
def _store_counts(plan_counts, counts, moved):
    """Write the tuples (instruction counts, rows moved) `plan_counts` of a plan into `count_step`'s arrays."""
    step_counts, step_moved = plan_counts
    for field in range(len(COUNT_FIELDS)):
        counts[field] = step_counts[field]
    for field in range(len(TRANSFER_FIELDS)):
        moved[field] = step_moved[field]


@njit(cache=True, inline=into_vector_loops)
def step_shape(kind, n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out):
    """The shape of a step of kind code `kind` (`STEP_KINDS`) that its counts and rows moved (`count_step`)
    depend on, beside the array, the batch and the routing iterations: four integers (a, b, c, d), so that
    two steps of one kind with the same shape count alike (tests check it). Conv kinds: the matrix
    product of one image (rows n_out²·[ch_in for convcaps3d], K, M, and the capsule's atoms for convcaps;
    `_matmul_shape`); classcaps: (I, caps_in, J·D, 0); routing phases and a whole routing: (I, J, D, 0);
    `ELEMENTWISE_KINDS`: the element-wise sum (positions, values, capsule atoms, operands; `_elementwise_shape`:
    no capsule for capsadd, which does not squash); route3d: (positions, J·D, D, I) of its routings
    (`route3d_routing`); lone activations (n_in, caps_in, 0, 0)."""
    if kind == CONV or kind == CONVCAPS:
        return (n_out * n_out, kernel * kernel * ch_in * caps_in + 1, ch_out * caps_out,
                caps_out if kind == CONVCAPS else 0)
    if kind == CONVCAPS3D:
        return n_out * n_out * ch_in, kernel * kernel * kernel * caps_in + 1, ch_out * caps_out, 0
    if kind == CLASSCAPS:
        return n_in * n_in * ch_in, caps_in, ch_out * caps_out, 0
    if _is_routing(kind):
        return n_in * n_in * ch_in, ch_out, caps_out, 0
    if kind == TOCAPS:
        return n_in * n_in, ch_in * caps_in, caps_in, 1
    if kind == CAPSADD:
        return n_out * n_out, ch_out * caps_out, 0, 2
    if kind == ROUTE3D:
        return n_out * n_out, ch_out * caps_out, caps_out, ch_in
    return n_in, caps_in, 0, 0


@njit(cache=True, _nrt=False)
def count_step(kind, n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out, rows, cols, depth, words, batch, routings,
               counts, moved, args):
    """Write the instruction counts (`COUNT_FIELDS`, int64) of a step of kind code `kind` (`STEP_KINDS`)
    for one batch into `counts` and the int8 buffer rows (`TRANSFER_FIELDS`, int64) the DMA moves for it
    into `moved`, by the tiling rules of the module docstring, from one plan of the step (`_matmul_plan`,
    `_classcaps_plan`, `_elementwise_plan`, `_routing_geometry`); return the refusal code (`REFUSALS`, 0
    when it fits; the message's numbers in `args`). The one definition of the counts (`plan_counts`) and
    of the rows moved (`plan_transfers`), run by the calibrated model's kernels too.

    The rows moved are those of the programs run with the off-chip memory (`sim.host.DmaSession`: every
    row a run writes into a buffer is loaded once, every result read is stored; partial sums stay host
    accesses). Per kind: conv kinds, per chunk of nc data rows, kc·nc data rows and kc·mb·R weight rows,
    mb·nc result rows stored; classcaps, per run of g groups, g·kc·B·k data rows, g·kc·mb·R weight rows,
    g·mb·B·k stored; `ELEMENTWISE_KINDS`, per chunk, the operands' chunks·mb·nc data rows and per run its
    chunks·R identity rows, mb·nc stored; a lone activation stores its rows; routing
    `_routing_transfers` per image (route3d: a whole routing's per position and image)."""
    for field in range(len(COUNT_FIELDS)):  # constant lengths: stores, no call of memset
        counts[field] = 0
    for field in range(len(TRANSFER_FIELDS)):
        moved[field] = 0
    if _is_routing(kind) or kind == ROUTE3D:
        whole, n_caps, times = _routing_step(kind, n_in, ch_in, n_out, batch)
        geometry = _routing_geometry(n_caps, ch_out, caps_out, rows, cols, depth, words, routings)
        if geometry[0]:
            _routing_refusal_args(geometry, n_caps, ch_out, caps_out, cols, depth, words, args)
            return geometry[0]
        _store_counts(_routing_counts(whole, n_caps, ch_out, caps_out, rows, cols, routings, times, geometry), counts,
                      moved)
        return FITS
    if kind == CONV or kind == CONVCAPS or kind == CONVCAPS3D:
        plan = _matmul_plan(kind, n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out, rows, cols, depth, words,
                            batch, True)
        if plan[0]:
            _matmul_refusal_args(plan, caps_out, cols, depth, words, args)
            return plan[0]
        _store_counts(_matmul_counts(plan, rows, cols, words, True), counts, moved)
        return FITS
    if kind == CLASSCAPS:
        plan = _classcaps_plan(n_in, ch_in, caps_in, ch_out, caps_out, rows, cols, depth, words, batch)
        if plan[0]:
            args[0], args[1], args[2], args[3] = plan[4], caps_in, plan[7], batch
            return plan[0]
        _store_counts(_classcaps_counts(plan, rows, cols, batch), counts, moved)
        return FITS
    if kind == TOCAPS or kind == CAPSADD:
        plan = _elementwise_plan(kind, n_in, ch_in, caps_in, n_out, ch_out, caps_out, rows, cols, depth, words, batch,
                                 True)
        if plan[0]:
            _elementwise_refusal_args(plan, cols, depth, words, args)
            return plan[0]
        _store_counts(_elementwise_counts(plan, rows, cols, words, True), counts, moved)
        return FITS
    counts[RUNS] += 1  # a lone activation: one ACT, whatever the batch, and its result rows stored
    _act(counts, cols, kind - RELU + FUNC_RELU, n_in, caps_in, 1, False)
    moved[WEIGHT_STORES] = counts[ACT_ROWS]
    return FITS


@njit(cache=True)
def row_bytes(lanes, bytes_per_cycle):
    """Bytes through the off-chip port for one buffer row of `lanes` int8 lanes: ceil(lanes / W) beats of
    W = `bytes_per_cycle` bytes (`rtl.isa.beats_per_row`)."""
    return ceil_div(lanes, bytes_per_cycle) * bytes_per_cycle


@njit(cache=True)
def port_bytes(narrow, wide, rows, cols, bytes_per_cycle):
    """Bytes through the off-chip port for `narrow` rows of R int8 lanes (data, routing) and `wide` rows
    of C lanes (weight), each `row_bytes` (`rows_port_bytes`). Arrays or integers."""
    return rows_port_bytes(narrow, wide, row_bytes(rows, bytes_per_cycle), row_bytes(cols, bytes_per_cycle))


@njit(cache=True)
def rows_port_bytes(narrow, wide, narrow_row_bytes, wide_row_bytes):
    """`port_bytes` of `narrow` and `wide` rows of `narrow_row_bytes` and `wide_row_bytes` bytes each
    (`row_bytes`; a kernel that prices many operations computes those once). Arrays or integers."""
    return narrow * narrow_row_bytes + wide * wide_row_bytes


@njit(cache=True)
def bandwidth_bound(offchip_bytes, bytes_per_cycle, compute_cycles):
    """Whether moving `offchip_bytes` through a port of W = `bytes_per_cycle` bytes a cycle takes more
    cycles than the compute's `compute_cycles`: ceil(bytes / W) > cycles (the `bound` of `nascaps rtl
    run` and of the calibrated model's estimates). Integers."""
    return ceil_div(offchip_bytes, bytes_per_cycle) > compute_cycles


@njit(cache=True)
def transfer_bytes(moved, rows, cols, bytes_per_cycle):
    """Bytes through the off-chip port for the rows `moved` (`TRANSFER_FIELDS`, `port_bytes`)."""
    narrow, wide = 0, 0
    for field in NARROW_TRANSFERS:
        narrow += moved[field]
    for field in WIDE_TRANSFERS:
        wide += moved[field]
    return port_bytes(narrow, wide, rows, cols, bytes_per_cycle)


def plan_transfers(kind: str, op, config: ArrayConfig, routings: int = ROUTINGS) -> dict[str, int]:
    """The buffer rows the DMA moves for `op` (`TRANSFER_FIELDS`, `count_step`) for one batch of
    `config.batch` images, and "offchip_bytes", the bytes through the port of
    `config.offchip_bytes_per_cycle` (`transfer_bytes`); `MappingError` when the operation does not fit."""
    if kind not in STEP_KINDS:
        raise MappingError(f"unknown operation kind {kind!r} (known: {', '.join(STEP_KINDS)})")
    routing_phases(routings)
    counts, moved = np.zeros(len(COUNT_FIELDS), np.int64), np.zeros(len(TRANSFER_FIELDS), np.int64)
    args = np.zeros(REFUSAL_ARGS, np.int64)
    n_in, ch_in, caps_in, kernel, _, n_out, ch_out, caps_out = _op_fields(op)
    refusal = count_step(STEP_KINDS.index(kind), n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out,
                         *_config_fields(config), routings, counts, moved, args)
    if refusal:
        raise _refusal(refusal, args)
    result = dict(zip(TRANSFER_FIELDS, moved.tolist()))
    result["offchip_bytes"] = int(transfer_bytes(moved, config.rows, config.cols, config.offchip_bytes_per_cycle))
    return result


def plan_counts(kind: str, op, config: ArrayConfig, routings: int = ROUTINGS) -> dict[str, int]:
    """Instruction counts (`COUNT_FIELDS`) of `op` for one batch of `config.batch` images under the
    tiling rules (lone activations: one ACT, whatever the batch), in closed form (`count_step`): exact
    integers, and no memory or time that grows with the operation's size or the batch. `kind` is one
    of `KINDS`, a lone activation, or "routing": a whole routing of `routings` iterations (the sum of
    its phases' counts), or one of `CHAIN_KINDS`. `MappingError` when the operation does not fit the
    array."""
    if kind not in STEP_KINDS:
        known = ", ".join(KINDS + CHAIN_KINDS + ACTIVATIONS + ("routing",))
        raise MappingError(f"unknown operation kind {kind!r} (known: {known})")
    routing_phases(routings)  # refuses a malformed `routings`
    counts, moved = np.zeros(len(COUNT_FIELDS), np.int64), np.zeros(len(TRANSFER_FIELDS), np.int64)
    args = np.zeros(REFUSAL_ARGS, np.int64)
    n_in, ch_in, caps_in, kernel, _, n_out, ch_out, caps_out = _op_fields(op)
    refusal = count_step(STEP_KINDS.index(kind), n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out,
                         *_config_fields(config), routings, counts, moved, args)
    if refusal:
        raise _refusal(refusal, args)
    return dict(zip(COUNT_FIELDS, counts.tolist()))
