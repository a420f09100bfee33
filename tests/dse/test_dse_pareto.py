"""The numba non-dominated filter against a brute-force check."""

import numpy as np
import pytest

from capsacc.dse.pareto import non_dominated


def brute_force(points):
    keep = []
    for i, p in enumerate(points):
        if not any(np.all(q <= p) and np.any(q < p) for q in points):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    dims = 2 + seed % 3
    # few distinct values, so ties and duplicates are common
    points = rng.integers(0, 6 + 10 * seed, size=(300, dims)).astype(float)
    np.testing.assert_array_equal(non_dominated(points), brute_force(points))


def test_continuous_points_and_trade_off_curve():
    rng = np.random.default_rng(7)
    points = rng.random((500, 3))
    np.testing.assert_array_equal(non_dominated(points), brute_force(points))
    x = np.linspace(0, 1, 50)
    curve = np.column_stack([x, 1 - x])
    worse = curve + 0.1
    both = np.vstack([worse, curve])
    np.testing.assert_array_equal(non_dominated(both), np.arange(50, 100))


def test_edge_cases():
    assert non_dominated(np.empty((0, 3))).size == 0
    np.testing.assert_array_equal(non_dominated(np.ones((4, 3))), np.arange(4))
    with pytest.raises(ValueError):
        non_dominated(np.ones(3))
