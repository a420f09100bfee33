"""SCALE-Sim 3.0.0's DRAM traffic and `Total Cycles (incl. prefetch)`, replayed.

The closed forms of `systolic` give SCALE-Sim's cycles and SRAM counts exactly, and its DRAM counts
and cycles incl. prefetch exactly only when the operands fit their SRAMs. This module reproduces
them in every case by replaying, in numba, SCALE-Sim's memory model on its request streams:

- reads: the ifmap and filter addresses in the order SCALE-Sim's demand matrices request them (its
  im2col layout, fold loops, skews and flips) run through its estimate-bandwidth read buffer (CALC
  mode): misses are grouped in sets of floor(SRAM words / 100) addresses; an address hits while it
  is in the set being filled or in a completed set of the current epoch of 50 sets (the active
  half); after 50 completed sets the window starts empty again. Every miss is one DRAM read. The
  first fill (10 words a cycle) ends before cycle 0, or before the first request when the active
  half fills up;
- writes: the ofmap requests, cycle by cycle, into its write buffer: lines of `cols` words; when
  more than the drain half is occupied the partial line is forced out and up to a drain half of
  lines is written to DRAM, a line a cycle (SCALE-Sim counts the padding of all but the last line
  of a drain as data); the rest is drained after the last request.

The work is proportional to the layer's SRAM accesses (tens of millions for AlexNet's layers), so
this serves `nascaps systolic --replay` and the benchmark, not the design grid.

Addresses (SCALE-Sim's layout): ifmap (y·W + x)·C + c, with im2col column k = (f_y·F_w + f_x)·C + c
and windows past the edge requesting nothing; filter n·K + k.
"""

from dataclasses import dataclass

import numpy as np
from numba import njit

from capsacc.dse.systolic import OS, PREFETCH_WORDS_PER_CYCLE, WS, sram_accesses
from capsacc.dse.topology import ConvLayer
from capsacc.errors import InputError

SETS_PER_EPOCH = 50
"""Sets in the active half of SCALE-Sim's read buffer (100 sets in all, active fraction 0.5)."""


@njit(cache=True, inline="always")
def _ifmap_address(m, k, ofmap_w, stride, ifmap_h, ifmap_w, filter_w, channels):
    oy, ox = divmod(m, ofmap_w)
    row, col = oy * stride, ox * stride
    fy, rest = divmod(k, filter_w * channels)
    fx, ch = divmod(rest, channels)
    if fy + row >= ifmap_h or fx + col >= ifmap_w:
        return -1
    return (row * ifmap_w + col) * channels + (fy * ifmap_w + fx) * channels + ch


@njit(cache=True, inline="always")
def _touch(address, cycle, set_of, state, per_set):
    """One request to a read buffer at `cycle`; `state`: current set id, epoch start, fill of the
    current set, misses, cycle of the first request (-1 before it)."""
    if address < 0:
        return
    if state[4] < 0:
        state[4] = cycle
    s = set_of[address]
    if s == state[0] or (state[1] <= s < state[0]):
        return
    set_of[address] = state[0]
    state[3] += 1
    state[2] += 1
    if state[2] == per_set:
        state[0] += 1
        state[2] = 0
        if state[0] == state[1] + SETS_PER_EPOCH:
            state[1] += SETS_PER_EPOCH


@njit(cache=True)
def _replay(dims, rows, cols, dataflow, ifmap_per_set, filter_per_set):
    ifmap_h, ifmap_w, filter_h, filter_w, channels, n, stride, ofmap_h, ofmap_w = (
        dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6], dims[7], dims[8])
    m_total = ofmap_h * ofmap_w
    k_total = filter_h * filter_w * channels
    ifmap_set = np.full(ifmap_h * ifmap_w * channels, -1, np.int64)
    filter_set = np.full(k_total * n, -1, np.int64)
    ifmap_state = np.zeros(5, np.int64)
    filter_state = np.zeros(5, np.int64)
    ifmap_state[4] = filter_state[4] = -1
    cycle = 0
    if dataflow == WS:
        fold_rows = 2 * rows + cols + m_total - 2
        for fc in range((n + cols - 1) // cols):
            for fr in range((k_total + rows - 1) // rows):
                for t in range(fold_rows):
                    for c in range(rows):
                        m = t - rows - c
                        k = fr * rows + c
                        if 0 <= m < m_total and k < k_total:
                            _touch(_ifmap_address(m, k, ofmap_w, stride, ifmap_h, ifmap_w, filter_w, channels),
                                   cycle + t, ifmap_set, ifmap_state, ifmap_per_set)
                for t in range(rows):
                    k = fr * rows + rows - 1 - t
                    for c in range(cols):
                        f = fc * cols + c
                        if k < k_total and f < n:
                            _touch(f * k_total + k, cycle + t, filter_set, filter_state, filter_per_set)
                cycle += fold_rows
    elif dataflow == OS:
        fold_rows = rows + cols + k_total - 2
        for fc in range((n + cols - 1) // cols):
            for fr in range((m_total + rows - 1) // rows):
                for t in range(fold_rows):
                    for c in range(rows):
                        k = t - c
                        m = fr * rows + c
                        if 0 <= k < k_total and m < m_total:
                            _touch(_ifmap_address(m, k, ofmap_w, stride, ifmap_h, ifmap_w, filter_w, channels),
                                   cycle + t, ifmap_set, ifmap_state, ifmap_per_set)
                for t in range(fold_rows):
                    for c in range(cols):
                        k = t - c
                        f = fc * cols + c
                        if 0 <= k < k_total and f < n:
                            _touch(f * k_total + k, cycle + t, filter_set, filter_state, filter_per_set)
                cycle += fold_rows
    else:
        fold_rows = 2 * rows + cols + n - 2
        for fc in range((m_total + cols - 1) // cols):
            for fr in range((k_total + rows - 1) // rows):
                for t in range(rows):
                    k = fr * rows + rows - 1 - t
                    for c in range(cols):
                        m = fc * cols + c
                        if k < k_total and m < m_total:
                            _touch(_ifmap_address(m, k, ofmap_w, stride, ifmap_h, ifmap_w, filter_w, channels),
                                   cycle + t, ifmap_set, ifmap_state, ifmap_per_set)
                for t in range(fold_rows):
                    for c in range(rows):
                        f = t - rows - c
                        k = fr * rows + c
                        if 0 <= f < n and k < k_total:
                            _touch(f * k_total + k, cycle + t, filter_set, filter_state, filter_per_set)
                cycle += fold_rows
    return ifmap_state, filter_state


@njit(cache=True, inline="always")
def _drain(start, lines, state, lines_per_drain, width):
    """Drain up to `lines_per_drain` lines from `start`; `state`: free words, drained lines, lines,
    DRAM writes, last write cycle. Returns the cycle of the last line written."""
    end_line = min(state[1] + lines_per_drain, state[2])
    count = end_line - state[1]
    if count <= 0:
        return start - 1
    data = count * width - (width - lines[end_line - 1])  # SCALE-Sim subtracts the last line's padding only
    state[3] += data
    state[0] += data
    state[4] = max(state[4], start + count - 1)
    state[1] = end_line
    return start + count - 1


@njit(cache=True)
def _ofmap_replay(m_total, k_total, n, rows, cols, dataflow, ofmap_words, total_writes):
    """SCALE-Sim's ofmap write buffer: (DRAM writes, cycle of the last DRAM write, stall cycles).
    Lines are `cols` words wide; when more than the drain half is occupied, the partial line is
    forced out and up to a drain half of lines goes to DRAM, one line a cycle."""
    active = (ofmap_words + 1) // 2
    drain_size = ofmap_words - active
    lines_per_drain = -(-drain_size // cols)
    lines = np.zeros(total_writes // cols + total_writes // max(drain_size, 1) + 4, np.int64)
    state = np.zeros(5, np.int64)
    state[0] = ofmap_words
    state[4] = -1
    fill = 0
    drain_end = 0
    stalls = 0
    row = 0
    last_out = 0
    if dataflow == WS:
        folds, inner, fold_rows = -(-n // cols), -(-k_total // rows), 2 * rows + cols + m_total - 2
    elif dataflow == OS:
        folds, inner, fold_rows = -(-n // cols), -(-m_total // rows), rows + cols + k_total - 2
    else:
        folds, inner, fold_rows = -(-m_total // cols), -(-k_total // rows), 2 * rows + cols + n - 2
    for fc in range(folds):
        for fr in range(inner):
            for t in range(fold_rows):
                current = row + stalls
                offset = 0
                for c in range(cols):
                    if dataflow == WS:
                        m = t - (2 * rows - 1) - c
                        valid = 0 <= m < m_total and fc * cols + c < n
                    elif dataflow == OS:
                        r = t - c - (k_total - 1)
                        valid = 0 <= r < rows and fr * rows + rows - 1 - r < m_total and fc * cols + c < n
                    else:
                        f = t - (2 * rows - 1) - c
                        valid = 0 <= f < n and fc * cols + c < m_total
                    if not valid:
                        continue
                    fill += 1
                    state[0] -= 1
                    if fill == cols:
                        lines[state[2]] = cols
                        state[2] += 1
                        fill = 0
                    if current < drain_end:
                        if state[0] <= 0:
                            offset += max(drain_end - current, 0)
                            current = drain_end
                    elif state[0] < active:
                        if fill != 0:
                            lines[state[2]] = fill
                            state[2] += 1
                            fill = 0
                        drain_end = _drain(current, lines, state, lines_per_drain, cols)
                last_out = current
                stalls += offset
                row += 1
    if fill != 0:
        lines[state[2]] = fill
        state[2] += 1
    cycle = last_out
    while state[1] < state[2]:
        cycle = _drain(cycle, lines, state, lines_per_drain, cols) + 1
    return state[3], state[4], stalls


def _dram_start(state: np.ndarray, per_set: int) -> int:
    """Cycle of a read buffer's first DRAM read: its first fill (sets of `per_set` words at 10 words
    a cycle) ends just before the first request."""
    if per_set <= 0 or state[3] == 0:
        return 0
    if state[1] > 0:  # the active half filled up: the first fill was 50 sets, before the first request
        return int(state[4]) + (-SETS_PER_EPOCH * per_set // PREFETCH_WORDS_PER_CYCLE)
    sets = -(-int(state[3]) // per_set)  # otherwise all of it, before cycle 0
    return -(sets * per_set) // PREFETCH_WORDS_PER_CYCLE


MAX_REPLAY_STEPS = 10 ** 10
"""The most inner-loop steps `check_replay` lets one replay take (about 30-60 million a second on one
core: minutes)."""
MAX_REPLAY_BYTES = 2 * 2 ** 30
"""The most memory one layer's replay may allocate, 2 GiB."""


def replay_cost(layer: ConvLayer, rows: int, cols: int, dataflow: int, ofmap_sram_words: int) -> tuple[int, int]:
    """(inner-loop steps, bytes) of `replay_layer` on this layer, in exact integers: the read and
    write loops visit every (cycle, lane) of every fold; the buffers hold one int64 per ifmap and
    filter address and per ofmap line."""
    m, k, n = layer.gemm_mkn
    if dataflow == WS:
        fold_rows, outer, inner = 2 * rows + cols + m - 2, -(-n // cols), -(-k // rows)
        steps = outer * inner * (fold_rows * rows + rows * cols + fold_rows * cols)
    elif dataflow == OS:
        fold_rows, outer, inner = rows + cols + k - 2, -(-n // cols), -(-m // rows)
        steps = outer * inner * fold_rows * (rows + 2 * cols)
    else:
        fold_rows, outer, inner = 2 * rows + cols + n - 2, -(-m // cols), -(-k // rows)
        steps = outer * inner * (rows * cols + fold_rows * rows + fold_rows * cols)
    writes = m * n if dataflow == OS else -(-k // rows) * m * n  # the total_writes of `replay_layer`
    drain = max(ofmap_sram_words - (ofmap_sram_words + 1) // 2, 1)
    lines = writes // cols + writes // drain + 4
    return steps, 8 * (layer.ifmap_h * layer.ifmap_w * layer.channels + k * n + lines)


def check_replay(layers: list[ConvLayer], rows: int, cols: int, dataflow: int, ofmap_sram_words: int) -> None:
    """Raise `InputError` before a replay that would take more than `MAX_REPLAY_STEPS` steps in all,
    or more than `MAX_REPLAY_BYTES` for one layer, or whose ofmap SRAM (fewer than 2 words) could never
    drain."""
    if ofmap_sram_words < 2:
        raise InputError(f"--replay: an ofmap SRAM of {ofmap_sram_words} words cannot drain (at least 2)")
    total = 0
    for layer in layers:
        steps, size = replay_cost(layer, rows, cols, dataflow, ofmap_sram_words)
        if size > MAX_REPLAY_BYTES:
            raise InputError(f"--replay: layer {layer.name} needs about {size / 2 ** 30:,.1f} GiB, more than the "
                             f"{MAX_REPLAY_BYTES / 2 ** 30:g} GiB limit; use the closed forms (no --replay)")
        total += steps
    if total > MAX_REPLAY_STEPS:
        raise InputError(f"--replay: about {total:.2e} steps, more than the limit of {MAX_REPLAY_STEPS:.0e} "
                         "(minutes at 30-60 million a second); use the closed forms (no --replay) or a larger array")


@dataclass(frozen=True)
class ReplayReport:
    """SCALE-Sim's DRAM figures of one layer, replayed (words and cycles)."""

    dram_ifmap_reads: int
    dram_filter_reads: int
    dram_ofmap_writes: int
    total_cycles_incl_prefetch: int
    stall_cycles: int


def replay_layer(layer: ConvLayer, rows: int, cols: int, dataflow: int, ifmap_sram_words: int,
                 filter_sram_words: int, ofmap_sram_words: int) -> ReplayReport:
    """SCALE-Sim's DRAM reads and writes and `Total Cycles (incl. prefetch)` of one layer; `dataflow`
    a code of `systolic.DATAFLOWS`, SRAM sizes in words (bytes). Refuses (`check_replay`) a replay too
    long or too large, and an ofmap SRAM that could never drain."""
    check_replay([layer], rows, cols, dataflow, ofmap_sram_words)
    dims = np.array([layer.ifmap_h, layer.ifmap_w, layer.filter_h, layer.filter_w, layer.channels,
                     layer.num_filter, layer.stride, layer.ofmap_h, layer.ofmap_w], np.int64)
    # SCALE-Sim fills sets of floor(words / 100); with fewer than 100 words a set never completes
    ifmap_per_set = ifmap_sram_words // 100 or -1
    filter_per_set = filter_sram_words // 100 or -1
    ifmap, filter_ = _replay(dims, rows, cols, dataflow, ifmap_per_set, filter_per_set)
    m, k, n = layer.gemm_mkn
    base = sram_accesses(m, k, n, rows, cols, dataflow)[2] if dataflow != OS else m * n
    writes, stop, stalls = _ofmap_replay(m, k, n, rows, cols, dataflow, ofmap_sram_words, base)
    start = min(_dram_start(ifmap, ifmap_per_set), _dram_start(filter_, filter_per_set))
    return ReplayReport(int(ifmap[3]), int(filter_[3]), int(writes), int(stop - start), int(stalls))
