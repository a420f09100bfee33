"""Non-dominated filtering (minimisation) in numba."""

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _dominates(objectives, a, b):
    """True when point a is no worse than b in every objective and better in one."""
    better = False
    for j in range(objectives.shape[1]):
        if objectives[a, j] > objectives[b, j]:
            return False
        if objectives[a, j] < objectives[b, j]:
            better = True
    return better


@njit(cache=True)
def _front(objectives, order):
    front = np.empty(order.shape[0], np.int64)
    size = 0
    for position in range(order.shape[0]):
        p = order[position]
        dominated = False
        for f in range(size):
            if _dominates(objectives, front[f], p):
                dominated = True
                break
        if not dominated:
            front[size] = p
            size += 1
    return front[:size]


def non_dominated(objectives: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the rows of `objectives` (float (n, d), all minimised) that no other
    row dominates. Points are visited in lexicographic order of their objectives, so only an
    earlier point can dominate a later one and each point is compared with the front found so
    far; equal points are all kept."""
    objectives = np.ascontiguousarray(objectives, dtype=np.float64)
    if objectives.ndim != 2:
        raise ValueError(f"objectives must be 2-D (n, d), got shape {objectives.shape}")
    if objectives.shape[0] == 0:
        return np.empty(0, np.int64)
    order = np.lexsort(objectives.T[::-1]).astype(np.int64)
    return np.sort(_front(objectives, order))
