"""The period of a run of equal MATMULs (`capsacc.mapping.matmul_run_cycles`), proved for every array and stream.

MATMUL i of n data rows issues at F_i = max(F_{i-1} + 1, F_{i-1} + R, M_{i-1}, S_{i-2} + C - 2) (F_1 = 2; no
S_0 term for i = 2), streams from M_i = max(F_i + 1, S_{i-1}) (M_1 = 3) and ends at S_i = M_i + n
(`_next_matmul`). The closed form uses S_{i+2} = S_i + d for every i >= 1, with d = S_3 - S_1. Each quantity is a
maximum of affine functions of (R, C, n) (a set of integer terms aR + bC + cn + k); the proof checks identities
between such maxima for all integers R, C, n >= 1 by linear programs (no point of the reals where one term exceeds
every term of the other side by 1 or more, so no integer point where it exceeds them at all):

- S_3 - S_1 = max(2R, 2n, n + C - 1, R + n), and S_j = S_{j-2} + d for j = 3..6;
- with G_i = F_i + 1 + n, S_i = max(G_i, S_{i-1} + n) and G_i = max(G_{i-1} + R, T_i) where
  T_i = max(S_{i-1} + 1, S_{i-2} + C - 1 + n); while S is periodic, T is, the chain terms k R + T_{i-k} with
  k >= 2 are at most (k - 2) R + T_{i-k+2} (2R <= d), so G_i = max(A_i, B_i) with A_i = max(T_i, R + T_{i-1})
  periodic and B_i = G_2 + (i - 2) R growing by 2R <= d every two MATMULs;
- then S_{i+2} = max(A_i + d, B_i + 2R, S_{i-1} + n + d) equals S_i + d = max(A_i + d, B_i + d, S_{i-1} + n + d)
  exactly where B_i <= A_i, or d = 2R, or B_i <= S_{i-1} + n; each of the three persists from i to i + 2 (the
  first two gaps grow by d - 2R >= 0, and S_{i+1} + n >= S_{i-1} + n + 2R); checked at i = 4 and 5, it holds
  for every i >= 4, which with j = 3..6 gives S_{j+2} = S_j + d for all j >= 1.
"""

import numpy as np
from scipy.optimize import linprog

from capsacc.mapping import _matmul_stream_ends, matmul_run_cycles

R, C, N = frozenset({(1, 0, 0, 0)}), frozenset({(0, 1, 0, 0)}), frozenset({(0, 0, 1, 0)})


def constant(k: int) -> frozenset:
    return frozenset({(0, 0, 0, k)})


def dominated(term: tuple, other: tuple) -> bool:
    """Whether `term` <= `other` for all R, C, n >= 1 (both affine)."""
    gap = [b - a for a, b in zip(term, other)]
    return all(g >= 0 for g in gap[:3]) and sum(gap) >= 0


def simplified(terms) -> frozenset:
    return frozenset(t for t in terms if not any(u != t and dominated(t, u) for u in terms))


def plus(f: frozenset, g: frozenset) -> frozenset:
    """max(f) + max(g) as one maximum."""
    return simplified({tuple(a + b for a, b in zip(s, t)) for s in f for t in g})


def maximum(*fs: frozenset) -> frozenset:
    return simplified(frozenset().union(*fs))


def at_most(f: frozenset, g: frozenset) -> bool:
    """max(f) <= max(g) for all integers R, C, n >= 1."""
    for t in f:
        rows = [[u[0] - t[0], u[1] - t[1], u[2] - t[2]] for u in g]
        bounds = [-1 - (u[3] - t[3]) for u in g]
        if linprog(np.zeros(3), A_ub=rows, b_ub=bounds, bounds=[(1, None)] * 3, method="highs").status != 2:
            return False  # feasible (or not proved infeasible): a point where t exceeds every term of g
    return True


def same(f: frozenset, g: frozenset) -> bool:
    return at_most(f, g) and at_most(g, f)


def stream_ends(count: int):
    """F_i, M_i, S_i (i = 1..count) of the recurrence, as maxima of affine terms."""
    fire, move, end = {1: constant(2)}, {1: constant(3)}, {1: plus(constant(3), N)}
    for i in range(2, count + 1):
        ready = constant(0) if i == 2 else plus(end[i - 2], plus(C, constant(-2)))
        fire[i] = maximum(plus(fire[i - 1], constant(1)), plus(fire[i - 1], R), move[i - 1], ready)
        move[i] = maximum(plus(fire[i], constant(1)), end[i - 1])
        end[i] = plus(move[i], N)
    return fire, move, end


def test_the_stream_ends_repeat_every_two_matmuls_from_the_first_for_every_array():
    fire, _, end = stream_ends(6)
    period = simplified({(a, b, c - 1, k - 3) for a, b, c, k in end[3]})  # S_3 - S_1, S_1 = n + 3
    assert same(period, frozenset({(2, 0, 0, 0), (0, 0, 2, 0), (0, 1, 1, -1), (1, 0, 1, 0)}))
    for j in range(3, 7):
        assert same(end[j], plus(end[j - 2], period)), j
    assert not same(end[4], plus(end[3], period))  # a proof that can fail

    def chain(i):  # T_i
        return maximum(plus(end[i - 1], constant(1)), plus(end[i - 2], plus(C, plus(N, constant(-1)))))

    first = plus(fire[2], plus(N, constant(1)))  # G_2
    two_rows = frozenset({(2, 0, 0, 0)})
    for i in (4, 5):
        periodic = maximum(chain(i), plus(R, chain(i - 1)))  # A_i
        load_bound = plus(first, frozenset({(i - 2, 0, 0, 0)}))  # B_i
        assert same(plus(fire[i], plus(N, constant(1))), maximum(periodic, load_bound)), i
        after = plus(end[i - 1], plus(N, period))
        assert same(maximum(plus(periodic, period), plus(load_bound, period), after),
                    maximum(plus(periodic, period), plus(load_bound, two_rows), after)), i


def test_the_stream_ends_in_code_are_the_proved_closed_form():
    """`_matmul_stream_ends` gives S_1 = n + 3, S_2 = n + 3 + max(R, n) and d = max(2R, 2n, n + C - 1), and
    `matmul_run_cycles` extends them by pairs (the recurrence walked to 40 MATMULs agrees)."""
    for rows in (1, 2, 3, 7, 16, 64, 200, 4096):
        for cols in (1, 2, 3, 5, 16, 63, 300, 4096):
            for n in (1, 2, 3, 15, 16, 17, 100, 1023, 5000, 1 << 20):
                assert _matmul_stream_ends(n, rows, cols) == (n + 3, n + 3 + max(rows, n),
                                                              max(2 * rows, 2 * n, n + cols - 1))
                fire, move, end, ends = 2, 3, n + 3, [n + 3]
                for i in range(2, 41):
                    fire = max(fire + 1, fire + rows, move, ends[i - 3] + cols - 2 if i > 2 else 0)
                    move = max(fire + 1, end)
                    end = move + n
                    ends.append(end)
                for m in (1, 2, 5, 6, 39, 40):
                    assert matmul_run_cycles(m, n, rows, cols) == ends[m - 1] + rows + cols + 3 + 1 - 2  # D = R + C + 3
