"""SCALE-Sim's closed forms for a systolic array: compute cycles, SRAM and DRAM accesses per GEMM.

An R x C array runs an M x K times K x N GEMM (SCALE-Sim's naming: M output pixels, K products per
output, N filters). Dataflow codes: 0 `ws` (weight stationary), 1 `os` (output stationary), 2 `is`
(input stationary). Compute cycles are the `Total Cycles` column of SCALE-Sim 3.0.0's
COMPUTE_REPORT.csv in its CALC interface-bandwidth mode (docs/energy_tables.md, last section):

    ws: ceil(K/R)·ceil(N/C)·(2R + C + M - 2) - 1
    os: ceil(M/R)·ceil(N/C)·(R + C + K - 2) - 1
    is: ceil(K/R)·ceil(M/C)·(2R + C + N - 2) - 1

SRAM accesses (one word = one byte) are SCALE-Sim's read and write request counts, derived from its
fold loops (column folds outer, row folds inner) and checked against recorded runs
(tests/dse/data/scalesim_reports.csv):

    ifmap reads   ws: M·K·ceil(N/C)   os: M·K·ceil(N/C)   is: M·K
    filter reads  ws: K·N             os: K·N·ceil(M/R)   is: K·N·ceil(M/C)
    ofmap writes  ws: ceil(K/R)·M·N   os: M·N + (R+C)·ceil(M/R)·ceil(N/C)   is: ceil(K/R)·M·N

SCALE-Sim's `Total Cycles (incl. prefetch)` runs from the first DRAM prefetch to the last DRAM write
of the ofmap: compute cycles, plus the first fill (SCALE-Sim's CALC mode fetches in sets of
floor(SRAM words / 100) at 10 words a cycle, up to the 50 sets of the active half, the longer of
the ifmap and filter fills), plus the final drain of the ofmap buffer (at most its drain half, one
line of `cols` words a cycle), minus one. This is exact when the operands fit their SRAMs.

ws and is write every partial sum (one per row fold); os counts (R + C) extra writes per fold,
SCALE-Sim's os defect (its drain rows are counted as writes), kept here for fidelity.

DRAM traffic is this module's own model of SCALE-Sim's double-buffered scratchpads: an operand is
read from DRAM once when its distinct values (`*_words`) fit in the active half of its SRAM
(SCALE-Sim's active-buffer fraction 0.5), otherwise once per pass of the fold loop that streams it
again (ws and os: the ifmap once per column fold; os: the filter once per row fold when a column
fold's K x C slice does not fit; is: the filter once per column fold). Every SRAM ofmap write goes to
DRAM except the os defect's extra counts (SCALE-Sim's convention), plus cols - 1 when the ofmap
overflows the drain half of its SRAM (SCALE-Sim counts the padding of a line it forces out early;
checked on every recorded run). With operands that fit their SRAMs the reads equal SCALE-Sim's;
with smaller SRAMs SCALE-Sim's set-granular buffer refetches part of an operand and this model
differs (`replay` reproduces SCALE-Sim's reads exactly, at the cost of walking every address).
"""

import numpy as np
from numba import njit

DATAFLOWS = ("ws", "os", "is")
WS, OS, IS = range(3)
PREFETCH_WORDS_PER_CYCLE = 10
"""DRAM words a cycle of SCALE-Sim's first prefetch in CALC mode."""
REPORT_COLUMNS = ("total_cycles", "sram_ifmap_reads", "sram_filter_reads", "sram_ofmap_writes", "dram_ifmap_reads",
                  "dram_filter_reads", "dram_ofmap_writes", "total_cycles_incl_prefetch")
"""Columns of `layer_reports`, SCALE-Sim's report columns."""


@njit(cache=True, inline="always")
def _cdiv(a, b):
    return -(-a // b)


@njit(cache=True, inline="always")
def compute_cycles(m, k, n, rows, cols, dataflow):
    """Compute cycles of one GEMM (SCALE-Sim's `Total Cycles`)."""
    if dataflow == WS:
        return _cdiv(k, rows) * _cdiv(n, cols) * (2 * rows + cols + m - 2) - 1
    if dataflow == OS:
        return _cdiv(m, rows) * _cdiv(n, cols) * (rows + cols + k - 2) - 1
    return _cdiv(k, rows) * _cdiv(m, cols) * (2 * rows + cols + n - 2) - 1


@njit(cache=True, inline="always")
def sram_accesses(m, k, n, rows, cols, dataflow):
    """(ifmap reads, filter reads, ofmap writes) of one GEMM, in words."""
    if dataflow == WS:
        return m * k * _cdiv(n, cols), k * n, _cdiv(k, rows) * m * n
    if dataflow == OS:
        return (m * k * _cdiv(n, cols), k * n * _cdiv(m, rows),
                m * n + (rows + cols) * _cdiv(m, rows) * _cdiv(n, cols))
    return m * k, k * n * _cdiv(m, cols), _cdiv(k, rows) * m * n


@njit(cache=True, inline="always")
def dram_accesses(m, k, n, ifmap_words, filter_words, rows, cols, dataflow, ifmap_active, filter_active):
    """(ifmap reads, filter reads, ofmap writes) from and to DRAM of one GEMM, in words;
    `ifmap_active`, `filter_active`: words in the active half of those SRAMs."""
    ifmap = ifmap_words
    filter_ = filter_words
    if dataflow == WS:
        if ifmap_words > ifmap_active:
            ifmap = ifmap_words * _cdiv(n, cols)
        return ifmap, filter_, _cdiv(k, rows) * m * n
    if dataflow == OS:
        if ifmap_words > ifmap_active:
            ifmap = ifmap_words * _cdiv(n, cols)
        if k * min(n, cols) > filter_active:
            filter_ = filter_words * _cdiv(m, rows)
        return ifmap, filter_, m * n
    if filter_words > filter_active:
        filter_ = filter_words * _cdiv(m, cols)
    return ifmap, filter_, _cdiv(k, rows) * m * n


@njit(cache=True, inline="always")
def ofmap_dram_writes(base_writes, cols, ofmap_sram_words):
    """SCALE-Sim's ofmap DRAM writes: `base_writes` (`dram_accesses`), plus cols - 1 padding words
    when the ofmap overflows the drain half of its SRAM."""
    if base_writes > ofmap_sram_words - _cdiv(ofmap_sram_words, 2):
        return base_writes + cols - 1
    return base_writes


@njit(cache=True, inline="always")
def _first_fill_cycles(words, sram_words):
    per_set = max(sram_words // 100, 1)
    sets = min(_cdiv(words, per_set), 50)
    return _cdiv(sets * per_set, PREFETCH_WORDS_PER_CYCLE)


@njit(cache=True, inline="always")
def cycles_incl_prefetch(compute, ifmap_words, filter_words, ofmap_dram_writes, cols, ifmap_sram_words,
                         filter_sram_words, ofmap_sram_words):
    """SCALE-Sim's `Total Cycles (incl. prefetch)` of one GEMM (module docstring)."""
    fill = max(_first_fill_cycles(ifmap_words, ifmap_sram_words), _first_fill_cycles(filter_words, filter_sram_words))
    drain_half = ofmap_sram_words - _cdiv(ofmap_sram_words, 2)
    return compute + fill + _cdiv(min(ofmap_dram_writes, drain_half), cols) - 1


@njit(cache=True)
def layer_reports(table, rows, cols, dataflow, ifmap_sram_words, filter_sram_words, ofmap_sram_words):
    """Per-GEMM figures for one array: int64 (n, 8) of `REPORT_COLUMNS`, each multiplied by the
    GEMM's count. `table`: int64 (n, 6) of m, k, n, count, ifmap_words, filter_words; SRAM sizes
    in words (bytes)."""
    ifmap_active = _cdiv(ifmap_sram_words, 2)
    filter_active = _cdiv(filter_sram_words, 2)
    out = np.empty((table.shape[0], 8), np.int64)
    for i in range(table.shape[0]):
        m, k, n, count = table[i, 0], table[i, 1], table[i, 2], table[i, 3]
        compute = compute_cycles(m, k, n, rows, cols, dataflow)
        out[i, 0] = count * compute
        a, b, c = sram_accesses(m, k, n, rows, cols, dataflow)
        out[i, 1], out[i, 2], out[i, 3] = count * a, count * b, count * c
        a, b, c = dram_accesses(m, k, n, table[i, 4], table[i, 5], rows, cols, dataflow, ifmap_active,
                                filter_active)
        c = ofmap_dram_writes(c, cols, ofmap_sram_words)
        out[i, 4], out[i, 5], out[i, 6] = count * a, count * b, count * c
        out[i, 7] = count * cycles_incl_prefetch(compute, table[i, 4], table[i, 5], c, cols,
                                                 ifmap_sram_words, filter_sram_words, ofmap_sram_words)
    return out


INT64_MAX = 2 ** 63 - 1


def count_bound(m: int, k: int, n: int, count: int, ifmap_words: int, filter_words: int, rows: tuple[int, int],
                cols: tuple[int, int]) -> int:
    """An upper bound, in exact integers, of every count the kernels derive from one GEMM (`count`
    instances) on any array of `rows` = (fewest, most) rows and `cols` = (fewest, most) columns and any
    dataflow: compute cycles incl. prefetch, SRAM and DRAM accesses, summed over the dataflows. The
    kernels compute in int64; a workload whose bounds sum to less than 2^63 cannot wrap around."""
    r_min, r_max = rows
    c_min, c_max = cols
    folds_k, folds_n = -(-k // r_min), -(-n // c_min)
    folds_m = -(-m // min(r_min, c_min))
    cycles = (folds_k * folds_n * (2 * r_max + c_max + m) + folds_m * folds_n * (r_max + c_max + k)
              + folds_k * folds_m * (2 * r_max + c_max + n))
    sram = 2 * m * k * folds_n + m * k + 3 * k * n * folds_m + 3 * folds_k * m * n + m * n \
        + (r_max + c_max) * folds_m * folds_n
    dram = 3 * (ifmap_words * folds_n + filter_words * folds_m + folds_k * m * n + c_max)
    prefetch = 2 * (ifmap_words + filter_words) + m * n + c_max
    return count * (2 * cycles + sram + dram + prefetch)


def sram_words(sram_kB: float, word_bytes: int = 1) -> int:
    """Words in an SRAM of `sram_kB` kB (1 kB = 1024 bytes)."""
    return int(sram_kB * 1024) // word_bytes


def active_words(sram_kB: float, word_bytes: int = 1) -> int:
    """Words in the active half of a double-buffered SRAM of `sram_kB` kB (SCALE-Sim's active-buffer
    fraction is 0.5: the other half is being prefetched)."""
    return -(-sram_words(sram_kB, word_bytes) // 2)
