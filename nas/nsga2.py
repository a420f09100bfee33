"""NSGA-II (Deb et al. 2002) as NASCaps' Algorithm 1, generic and free of Keras.

Every objective is minimized. `objectives` arrays have shape (n_points, n_objectives);
`violations` arrays have shape (n_points,), 0 for a feasible point and a positive amount of
constraint violation otherwise (constrained domination: a feasible point dominates every
infeasible one, and of two infeasible points the smaller violation dominates).

`NSGA2` has an ask/tell interface: `ask()` returns the genotypes to evaluate (|P| random ones
first, then |Q| offspring per generation), `tell(genotypes, objectives, violations)` takes
their figures and keeps the |P| best of parents and offspring by fronts, then crowding distance.
The caller owns the random generator, so a search can journal and restore its state.
"""

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Sampler = Callable[[np.random.Generator], Any]
"""Draws one random genotype."""
Variation = Callable[[Any, Any, np.random.Generator], tuple[Any, Any]]
"""Crossover then mutation of two parents into two children."""


def _as_arrays(objectives, violations) -> tuple[np.ndarray, np.ndarray]:
    F = np.asarray(objectives, dtype=float)
    if F.ndim != 2:
        raise ValueError(f"objectives must have shape (n_points, n_objectives), got {F.shape}")
    V = np.zeros(len(F)) if violations is None else np.asarray(violations, dtype=float)
    if V.shape != (len(F),):
        raise ValueError(f"violations must have shape ({len(F)},), got {V.shape}")
    return F, V


def domination_matrix(objectives, violations=None) -> np.ndarray:
    """Boolean (n, n) matrix, [i, j] true when point i constrained-dominates point j."""
    F, V = _as_arrays(objectives, violations)
    le = np.all(F[:, None, :] <= F[None, :, :], axis=2)
    lt = np.any(F[:, None, :] < F[None, :, :], axis=2)
    pareto = le & lt
    feasible = V == 0
    both_feasible = feasible[:, None] & feasible[None, :]
    by_violation = V[:, None] < V[None, :]
    return np.where(both_feasible, pareto, by_violation)


def non_dominated_fronts(objectives, violations=None) -> list[np.ndarray]:
    """Fast non-dominated sorting: the fronts as arrays of point indices, best front first.

    Equal points do not dominate each other and share a front.
    """
    dominates = domination_matrix(objectives, violations)
    dominated_by = dominates.sum(axis=0)
    remaining = np.ones(len(dominated_by), dtype=bool)
    fronts = []
    while remaining.any():
        front = np.flatnonzero(remaining & (dominated_by == 0))
        fronts.append(front)
        remaining[front] = False
        dominated_by = dominated_by - dominates[front].sum(axis=0)
    return fronts


def crowding_distance(objectives) -> np.ndarray:
    """Crowding distance of the points of one front (shape (n,)); boundary points get inf.

    Each objective's contribution is the gap between a point's two neighbours in that
    objective, divided by the objective's range on the front.
    """
    F = np.asarray(objectives, dtype=float)
    n = len(F)
    distance = np.zeros(n)
    if n <= 2:
        distance[:] = np.inf
        return distance
    for column in F.T:
        order = np.argsort(column, kind="stable")
        ordered = column[order]
        span = ordered[-1] - ordered[0]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (ordered[2:] - ordered[:-2]) / span
    return distance


def rank_and_crowding(objectives, violations=None) -> tuple[np.ndarray, np.ndarray]:
    """Front rank (0 = best) and crowding distance within its front, per point."""
    F, V = _as_arrays(objectives, violations)
    rank = np.empty(len(F), dtype=int)
    crowding = np.empty(len(F))
    for number, front in enumerate(non_dominated_fronts(F, V)):
        rank[front] = number
        crowding[front] = crowding_distance(F[front])
    return rank, crowding


def select_survivors(objectives, violations, count: int) -> np.ndarray:
    """Indices of the `count` best points: whole fronts first, the last one by crowding distance."""
    F, V = _as_arrays(objectives, violations)
    chosen: list[int] = []
    for front in non_dominated_fronts(F, V):
        if len(chosen) + len(front) <= count:
            chosen.extend(front.tolist())
            if len(chosen) == count:
                break
            continue
        crowding = crowding_distance(F[front])
        order = np.argsort(-crowding, kind="stable")
        chosen.extend(front[order[:count - len(chosen)]].tolist())
        break
    return np.array(chosen, dtype=int)


def binary_tournament(dominates: np.ndarray, crowding: np.ndarray, rng: np.random.Generator,
                      count: int) -> np.ndarray:
    """`count` winners of binary tournaments: a dominating entrant wins, then larger crowding, then a coin.

    `dominates` is the (n, n) matrix of `domination_matrix`, `crowding` the (n,) crowding distances.

    Entrants are drawn from random permutations, so every point enters equally often.
    """
    n = len(crowding)
    permutations = -(-2 * count // n)
    entrants = np.concatenate([rng.permutation(n) for _ in range(permutations)])[:2 * count]
    coins = rng.random(count) < 0.5
    a, b = entrants[0::2], entrants[1::2]
    a_wins = dominates[a, b] | (~dominates[b, a] & (crowding[a] > crowding[b]))
    b_wins = dominates[b, a] | (~dominates[a, b] & (crowding[b] > crowding[a]))
    return np.where(a_wins, a, np.where(b_wins, b, np.where(coins, a, b)))


@dataclass
class Population:
    """Evaluated genotypes with their objectives (n, m) and violations (n,)."""

    genotypes: list
    objectives: np.ndarray
    violations: np.ndarray


class NSGA2:
    """Algorithm 1 of NASCaps: |P| parents, |Q| offspring per generation, elitist selection.

    `key(genotype)` (hashable) identifies equal genotypes: an offspring equal to a parent or to
    an earlier offspring of the same generation is drawn again, at most `max_redraws` times
    (then it is kept), so no loop is unbounded.
    """

    def __init__(self, sample: Sampler, vary: Variation, population_size: int, offspring_size: int,
                 rng: np.random.Generator, key: Callable[[Any], Hashable] | None = None,
                 max_redraws: int = 20):
        if population_size < 2 or offspring_size < 1:
            raise ValueError("NSGA-II needs population_size >= 2 and offspring_size >= 1")
        self.sample = sample
        self.vary = vary
        self.population_size = population_size
        self.offspring_size = offspring_size
        self.rng = rng
        self.key = key
        self.max_redraws = max_redraws
        self.population: Population | None = None
        self.generation = 0
        """Number of completed `tell` calls after the initial population's (0 after the first tell)."""

    def restore(self, population: Population, generation: int) -> None:
        """Continue from a journaled population (the caller restores the generator's state)."""
        self.population = population
        self.generation = generation

    def ask(self) -> list:
        """The genotypes to evaluate next: the initial population, then one generation's offspring."""
        if self.population is None:
            return self._distinct(lambda: [self.sample(self.rng)], self.population_size, [])
        _, crowding = rank_and_crowding(self.population.objectives, self.population.violations)
        dominates = domination_matrix(self.population.objectives, self.population.violations)
        parents = self.population.genotypes

        mates = list(binary_tournament(dominates, crowding, self.rng, 2 * (-(-self.offspring_size // 2))))

        def children():
            if not mates:
                mates.extend(binary_tournament(dominates, crowding, self.rng, 2))
            a, b = mates.pop(0), mates.pop(0)
            return list(self.vary(parents[a], parents[b], self.rng))

        return self._distinct(children, self.offspring_size, parents)

    def _distinct(self, draw: Callable[[], list], count: int, existing: Sequence) -> list:
        out: list = []
        if self.key is None:
            while len(out) < count:
                out.extend(draw())
            return out[:count]
        seen = {self.key(g) for g in existing}
        redraws = 0
        while len(out) < count:
            for genotype in draw():
                k = self.key(genotype)
                if k in seen and redraws < self.max_redraws:
                    redraws += 1
                    continue
                seen.add(k)
                out.append(genotype)
                if len(out) == count:
                    break
        return out

    def tell(self, genotypes: Sequence, objectives, violations=None) -> None:
        """Figures of the genotypes returned by the last `ask`; selects the next parents."""
        F, V = _as_arrays(objectives, violations)
        if len(F) != len(genotypes):
            raise ValueError(f"{len(genotypes)} genotypes but {len(F)} objective rows")
        if self.population is None:
            self.population = Population(list(genotypes), F, V)
            return
        merged = self.population.genotypes + list(genotypes)
        F_all = np.vstack([self.population.objectives, F])
        V_all = np.concatenate([self.population.violations, V])
        keep = select_survivors(F_all, V_all, self.population_size)
        self.population = Population([merged[i] for i in keep], F_all[keep], V_all[keep])
        self.generation += 1

