"""SCALE-Sim 3.0.0's DRAM reads, replayed: its address streams through its read-buffer model.

The closed forms of `systolic` give SCALE-Sim's cycles and SRAM counts exactly, and its DRAM reads
exactly only when an operand fits its SRAM. This module reproduces SCALE-Sim's read counts in every
case by generating, in numba, the ifmap and filter addresses in the order SCALE-Sim's demand
matrices request them, and running them through its estimate-bandwidth read buffer (CALC mode):
misses are grouped in sets of floor(SRAM words / 100) addresses; an address hits while it is in the
set being filled or in a completed set of the current epoch of 50 sets (the active half); after 50
completed sets the window starts empty again. Every missed address is read from DRAM once.

The work is proportional to the layer's SRAM reads (tens of millions of addresses for AlexNet's
layers), so this is for `nascaps systolic --dram replay`, not for the design grid.

Addresses (SCALE-Sim's layout): ifmap (y·W + x)·C + c, with im2col column k = (f_y·F_w + f_x)·C + c
and windows past the edge requesting nothing; filter n·K + k.
"""

import numpy as np
from numba import njit

from capsacc.dse.systolic import IS, OS, WS
from capsacc.dse.topology import ConvLayer

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
def _touch(address, set_of, state, per_set):
    """One request to a read buffer; `state`: current set id, epoch start, fill of the current
    set, misses."""
    if address < 0:
        return
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
    ifmap_state = np.zeros(4, np.int64)
    filter_state = np.zeros(4, np.int64)
    if dataflow == WS:
        for fc in range((n + cols - 1) // cols):
            for fr in range((k_total + rows - 1) // rows):
                for t in range(rows + m_total + cols - 1 + rows - 1):
                    for c in range(rows):
                        m = t - rows - c
                        k = fr * rows + c
                        if 0 <= m < m_total and k < k_total:
                            _touch(_ifmap_address(m, k, ofmap_w, stride, ifmap_h, ifmap_w, filter_w, channels),
                                   ifmap_set, ifmap_state, ifmap_per_set)
                for r in range(rows - 1, -1, -1):
                    k = fr * rows + r
                    for c in range(cols):
                        f = fc * cols + c
                        if k < k_total and f < n:
                            _touch(f * k_total + k, filter_set, filter_state, filter_per_set)
    elif dataflow == OS:
        for fc in range((n + cols - 1) // cols):
            for fr in range((m_total + rows - 1) // rows):
                for t in range(k_total + cols - 1 + rows - 1):
                    for c in range(rows):
                        k = t - c
                        m = fr * rows + c
                        if 0 <= k < k_total and m < m_total:
                            _touch(_ifmap_address(m, k, ofmap_w, stride, ifmap_h, ifmap_w, filter_w, channels),
                                   ifmap_set, ifmap_state, ifmap_per_set)
                for t in range(k_total + rows - 1 + cols - 1):
                    for c in range(cols):
                        k = t - c
                        f = fc * cols + c
                        if 0 <= k < k_total and f < n:
                            _touch(f * k_total + k, filter_set, filter_state, filter_per_set)
    else:
        for fc in range((m_total + cols - 1) // cols):
            for fr in range((k_total + rows - 1) // rows):
                for r in range(rows - 1, -1, -1):
                    k = fr * rows + r
                    for c in range(cols):
                        m = fc * cols + c
                        if k < k_total and m < m_total:
                            _touch(_ifmap_address(m, k, ofmap_w, stride, ifmap_h, ifmap_w, filter_w, channels),
                                   ifmap_set, ifmap_state, ifmap_per_set)
                for t in range(rows + n + cols - 1 + rows - 1):
                    for c in range(rows):
                        f = t - rows - c
                        k = fr * rows + c
                        if 0 <= f < n and k < k_total:
                            _touch(f * k_total + k, filter_set, filter_state, filter_per_set)
    return ifmap_state[3], filter_state[3]


def replay_dram_reads(layer: ConvLayer, rows: int, cols: int, dataflow: int, ifmap_sram_words: int,
                      filter_sram_words: int) -> tuple[int, int]:
    """SCALE-Sim's (DRAM ifmap reads, DRAM filter reads) of one layer, in words; `dataflow` a code
    of `systolic.DATAFLOWS`, SRAM sizes in words (bytes)."""
    dims = np.array([layer.ifmap_h, layer.ifmap_w, layer.filter_h, layer.filter_w, layer.channels,
                     layer.num_filter, layer.stride, layer.ofmap_h, layer.ofmap_w], np.int64)
    # SCALE-Sim fills sets of floor(words / 100); with fewer than 100 words a set never completes
    ifmap_per_set = ifmap_sram_words // 100 or -1
    filter_per_set = filter_sram_words // 100 or -1
    ifmap, filter_ = _replay(dims, rows, cols, dataflow, ifmap_per_set, filter_per_set)
    return int(ifmap), int(filter_)
