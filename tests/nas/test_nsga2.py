"""NSGA-II against pymoo: fronts, crowding distance, and hypervolume on ZDT1-3 and DTLZ2."""

import numpy as np
import pytest

from nas.nsga2 import (NSGA2, crowding_distance, domination_matrix, non_dominated_fronts, rank_and_crowding,
                       select_survivors)
from real_vector_operators import real_vector_operators

pymoo = pytest.importorskip("pymoo")
from pymoo.algorithms.moo.nsga2 import NSGA2 as PymooNSGA2  # noqa: E402
from pymoo.indicators.hv import HV  # noqa: E402
from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance  # noqa: E402
from pymoo.optimize import minimize  # noqa: E402
from pymoo.problems import get_problem  # noqa: E402
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting  # noqa: E402


@pytest.mark.parametrize("n_points,n_objectives,levels", [(30, 2, 5), (80, 3, 4), (120, 4, 3), (50, 2, 1000)])
@pytest.mark.parametrize("seed", range(5))
def test_fronts_equal_pymoo_with_ties(n_points, n_objectives, levels, seed):
    rng = np.random.default_rng(seed)
    F = rng.integers(0, levels, size=(n_points, n_objectives)).astype(float)
    ours = [sorted(front.tolist()) for front in non_dominated_fronts(F)]
    theirs = [sorted(front.tolist()) for front in NonDominatedSorting().do(F)]
    assert ours == theirs
    assert sorted(i for front in ours for i in front) == list(range(n_points))


@pytest.mark.parametrize("seed", range(5))
def test_crowding_distance_equals_pymoo_up_to_objective_count(seed):
    rng = np.random.default_rng(seed)
    F = rng.random((25, 3))
    ours = crowding_distance(F)
    theirs = calc_crowding_distance(F) * F.shape[1]
    assert np.array_equal(np.isinf(ours), np.isinf(theirs))
    finite = np.isfinite(ours)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-12)


def test_equal_points_share_a_front_and_do_not_dominate_each_other():
    F = np.array([[1.0, 2.0], [1.0, 2.0], [0.5, 3.0], [2.0, 3.0]])
    fronts = non_dominated_fronts(F)
    assert [sorted(f.tolist()) for f in fronts] == [[0, 1, 2], [3]]
    assert not domination_matrix(F)[0, 1] and not domination_matrix(F)[1, 0]


def test_infeasible_points_are_dominated_by_every_feasible_one():
    F = np.array([[0.0, 0.0], [5.0, 5.0], [9.0, 9.0], [0.1, 0.1]])
    V = np.array([2.0, 0.0, 0.0, 1.0])
    rank, _ = rank_and_crowding(F, V)
    assert rank.tolist() == [3, 0, 1, 2]
    assert select_survivors(F, V, 2).tolist() == [1, 2]


def test_survivors_take_whole_fronts_then_the_least_crowded():
    F = np.array([[0.0, 4.0], [1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [4.0, 0.0], [5.0, 5.0]])
    survivors = select_survivors(F, None, 3)
    assert len(survivors) == 3 and {0, 4} <= set(survivors.tolist()) and 5 not in survivors
    assert sorted(select_survivors(F, None, 6).tolist()) == list(range(6))


def test_ask_tell_sizes_and_elitism():
    problem = get_problem("zdt1", n_var=5)
    sample, vary = real_vector_operators(problem.xl, problem.xu)
    algorithm = NSGA2(sample, vary, population_size=8, offspring_size=5, rng=np.random.default_rng(0))
    first = algorithm.ask()
    assert len(first) == 8
    algorithm.tell(first, problem.evaluate(np.array(first)))
    best_before = algorithm.population.objectives.min(axis=0)
    for _ in range(5):
        offspring = algorithm.ask()
        assert len(offspring) == 5
        algorithm.tell(offspring, problem.evaluate(np.array(offspring)))
        assert len(algorithm.population.genotypes) == 8
    assert np.all(algorithm.population.objectives.min(axis=0) <= best_before)
    assert algorithm.generation == 5


def test_duplicate_redraws_are_bounded():
    """A sampler and variation that always give the same genotype still fill the population."""
    algorithm = NSGA2(lambda rng: (rng.random() < 2, 0), lambda a, b, rng: (a, b), population_size=4,
                      offspring_size=3, rng=np.random.default_rng(1), key=lambda g: g, max_redraws=7)
    first = algorithm.ask()
    assert len(first) == 4
    algorithm.tell(first, np.zeros((4, 2)))
    assert len(algorithm.ask()) == 3


def test_same_seed_same_run():
    problem = get_problem("zdt2", n_var=6)

    def run(seed):
        sample, vary = real_vector_operators(problem.xl, problem.xu)
        algorithm = NSGA2(sample, vary, 10, 10, np.random.default_rng(seed), key=lambda x: x.tobytes())
        for _ in range(6):
            xs = algorithm.ask()
            algorithm.tell(xs, problem.evaluate(np.array(xs)))
        return algorithm.population.objectives

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def _our_front(problem, population, generations, seed):
    sample, vary = real_vector_operators(problem.xl, problem.xu)
    algorithm = NSGA2(sample, vary, population, population, np.random.default_rng(seed),
                      key=lambda x: x.tobytes())
    for _ in range(generations):
        xs = algorithm.ask()
        algorithm.tell(xs, problem.evaluate(np.array(xs)))
    return algorithm.population.objectives


@pytest.mark.slow
@pytest.mark.parametrize("name,options", [("zdt1", {"n_var": 30}), ("zdt2", {"n_var": 30}),
                                          ("zdt3", {"n_var": 30}), ("dtlz2", {"n_var": 12, "n_obj": 3})])
def test_median_hypervolume_matches_pymoo(name, options):
    """Same budget (100 parents, 100 offspring, 100 generations), 10 seeds each."""
    problem = get_problem(name, **options)
    indicator = HV(ref_point=np.full(problem.n_obj, 1.1))
    ours = [indicator(_our_front(problem, 100, 100, seed)) for seed in range(10)]
    theirs = [indicator(minimize(problem, PymooNSGA2(pop_size=100), ("n_gen", 100), seed=seed).F)
              for seed in range(10)]
    assert np.median(ours) >= np.median(theirs) * 0.99, (ours, theirs)
