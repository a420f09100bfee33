"""Genetic operators: every child validates in the search space and estimates in capsacc."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsacc import Accelerator, estimate, estimate_many
from capsacc.network import CAPSCELL, CONV, SABOUR
from nas.genotype import Genotype
from nas.operators import crossover, crossover_cuts, legalize, mutate, random_genotype
from nas.space import QUICK_SPACE, SearchSpace

SPACE = SearchSpace()
SMALL = SearchSpace(kernels=(3, 5), strides=(1, 2), channels=(2, 8), capsules=(1, 4), convolutions=(1, 2),
                    sabour_layers=(2, 3), capscells=(4, 5), allow_resize=False)
ACCELERATOR = Accelerator.published()


def _structure(g: Genotype) -> tuple[int, int, int]:
    types = [layer[0] for layer in g.layers]
    return types.count(CONV), len(types) - types.count(CONV), g.capsule_type


@settings(max_examples=100, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2 ** 32 - 1), p_m=st.sampled_from([0.1, 0.5, 1.0]),
       space=st.sampled_from([SPACE, SMALL]))
def test_ten_thousand_children_validate_and_estimate(seed, p_m, space):
    """100 examples x 50 crossovers x 2 children = 10,000 crossover children, each also mutated."""
    rng = np.random.default_rng(seed)
    pool = [random_genotype(space, rng) for _ in range(12)]
    children = []
    for _ in range(50):
        a, b = (pool[i] for i in rng.choice(len(pool), size=2, replace=False))
        for child in crossover(a, b, rng, space):
            child.validate(space)
            mutant = mutate(child, rng, p_m, space)
            mutant.validate(space)
            children += [child, mutant]
            pool[int(rng.integers(len(pool)))] = mutant
    costs = estimate_many([child.to_network() for child in children], ACCELERATOR)
    assert np.all(np.asarray(costs.energy_mJ) > 0) and np.all(np.asarray(costs.latency_ms) > 0)
    assert np.all(np.asarray(costs.memory_KiB) > 0)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_random_genotypes_fill_the_space(seed):
    rng = np.random.default_rng(seed)
    g = random_genotype(SPACE, rng)
    g.validate(SPACE)
    n_conv, n_caps, kind = _structure(g)
    assert SPACE.convolutions[0] <= n_conv <= SPACE.convolutions[1]
    limits = SPACE.sabour_layers if kind == SABOUR else SPACE.capscells
    assert limits[0] <= n_caps <= limits[1]
    assert estimate(g.to_network(), ACCELERATOR).energy_mJ > 0


TOML_SPACE = """kernels = [3, 9]
strides = [1, 2, 3]
channels = [2, 16]
capsules = [2, 12]
convolutions = [1, 3]
sabour_layers = [2, 4]
capscells = [4, 6]
input_side = 32
input_channels = 3
"""


def _class_layer_fully_connected(g: Genotype) -> bool:
    n_in, kernel, stride, n_out = (g.layers[-1][i] for i in (1, 4, 5, 6))
    return (kernel, stride, n_out) == (n_in, 1, 1)


@pytest.mark.parametrize("name", ["quick", "paper", "toml"])
def test_every_search_genotype_has_a_fully_connected_class_layer(name, tmp_path):
    """2,000 random genotypes and 2,000 children of crossover + mutation chains per space: the class
    layer is the fully connected ClassCaps that the model builder trains (kernel = n_in, stride 1,
    n_out 1), so the cost model prices the trained class layer."""
    if name == "toml":
        (tmp_path / "space.toml").write_text(TOML_SPACE)
        space = SearchSpace.from_toml(tmp_path / "space.toml")
    else:
        space = QUICK_SPACE if name == "quick" else SPACE
    rng = np.random.default_rng(12)
    pool = [random_genotype(space, rng) for _ in range(2000)]
    assert sum(not _class_layer_fully_connected(g) for g in pool) == 0
    children = []
    for _ in range(1000):
        a, b = (pool[i] for i in rng.choice(len(pool), size=2, replace=False))
        for child in crossover(a, b, rng, space):
            child = mutate(child, rng, 0.5, space)
            children.append(child)
            pool[int(rng.integers(len(pool)))] = child
    assert sum(not _class_layer_fully_connected(g) for g in children) == 0
    for g in children[::50]:
        g.validate(space)


def test_random_genotypes_cover_both_kinds_resize_and_skip():
    rng = np.random.default_rng(0)
    genotypes = [random_genotype(SPACE, rng) for _ in range(200)]
    assert {g.capsule_type for g in genotypes} == {SABOUR, CAPSCELL}
    assert {g.resize for g in genotypes} == {1, 2}
    assert any(g.skip != -1 for g in genotypes) and any(g.skip == -1 for g in genotypes)
    assert len({g.key() for g in genotypes}) == 200


def test_crossover_swaps_tails_at_admissible_cuts():
    a, b = Genotype.preset("capsnet"), Genotype.preset("capsnet")
    rng = np.random.default_rng(3)
    space = SearchSpace(channels=(1, 256), convolutions=(1, 6), sabour_layers=(2, 6))
    c = random_genotype(space, rng)
    cuts = crossover_cuts(a, c, space)
    assert cuts
    for i, j in cuts:
        first = a.layers[:i] + c.layers[j:]
        assert first[0][0] == CONV
        types = [layer[0] for layer in first]
        n_conv = types.count(CONV)
        assert types[:n_conv] == [CONV] * n_conv and len(types) - n_conv >= 2
    child, _ = crossover(a, c, rng, space)
    child.validate(space)
    assert crossover_cuts(a, b, space) == []
    assert crossover(a, b, rng, space) == (a, b)


def test_crossover_of_different_kinds_swaps_only_convolution_stems():
    rng = np.random.default_rng(11)
    sabour = next(g for g in iter(lambda: random_genotype(SMALL, rng), None) if g.capsule_type == SABOUR)
    cells = next(g for g in iter(lambda: random_genotype(SMALL, rng), None) if g.capsule_type == CAPSCELL)
    for i, j in crossover_cuts(sabour, cells, SMALL):
        assert i <= _structure(sabour)[0] and j <= _structure(cells)[0]
    first, second = crossover(sabour, cells, rng, SMALL)
    assert first.capsule_type == CAPSCELL and second.capsule_type == SABOUR


def test_mutation_probability_zero_and_one():
    rng = np.random.default_rng(5)
    g = random_genotype(SPACE, rng)
    assert mutate(g, rng, 0.0, SPACE) == g
    changed = sum(mutate(g, rng, 1.0, SPACE) != g for _ in range(20))
    assert changed >= 19


def test_legalize_restores_a_kernel_that_fits_after_strides_shrink_the_input():
    layers = ((0, 28, 1, 1, 9, 2, 14, 8, 1), (0, 14, 8, 1, 9, 2, 7, 8, 1), (0, 7, 8, 1, 5, 2, 4, 8, 1),
              (1, 4, 8, 1, 3, 2, 2, 4, 4), (1, 2, 4, 4, 3, 2, 1, 4, 4), (1, 1, 4, 4, 3, 1, 1, 10, 4))
    g = legalize(Genotype(layers), SPACE)
    g.validate(SPACE)
    assert all(layer[1] >= 3 for layer in g.layers[:-1])
    assert g.layers[-1][1] == math.ceil(g.layers[-2][1] / g.layers[-2][5])


@pytest.mark.keras
def test_a_sample_of_children_builds_in_keras():
    from nas.builder import build_models
    rng = np.random.default_rng(2)
    pool = [random_genotype(SMALL, rng) for _ in range(6)]
    children = [mutate(c, rng, 0.5, SMALL) for _ in range(3) for c in crossover(pool[0], pool[1], rng, SMALL)]
    for genotype in pool[:2] + children[:4]:
        models = build_models(genotype, (28, 28, 1), 10)
        assert models.classifier.output_shape == (None, 10)


@pytest.mark.keras
def test_capscell_networks_with_skip_connections_build():
    from nas.builder import build_models
    rng = np.random.default_rng(4)
    with_skip = [g for g in (random_genotype(SMALL, rng) for _ in range(60)) if g.skip != -1]
    assert with_skip
    for genotype in with_skip[:2] + [mutate(with_skip[0], rng, 1.0, SMALL)]:
        assert build_models(genotype, (28, 28, 1), 10).classifier.output_shape == (None, 10)
