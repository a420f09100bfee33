"""Genotypes and the search space: form, rules, repair, files, identity."""

import json
from dataclasses import replace

import pytest

from capsacc.errors import InputError
from capsacc.network import PRESETS, Network
from nas.genotype import Genotype, GenotypeError
from nas.space import SearchSpace

CAPSNET = PRESETS["capsnet"]


def test_presets_and_published_genotypes_validate(published_records):
    for genotype in list(PRESETS.values()) + [r["genotype"] for r in published_records]:
        Genotype.from_list(genotype).validate()


def test_published_search_results_fit_the_default_space_except_single_capsule_layers(published_records):
    """Every published search result has a class kernel equal to its input side, as the search's
    class layer; its stride and n_out (which neither the trained ClassCaps nor the cost model uses)
    become 1, and the results then fit the default space but for the reference networks' channels
    and two single-capsule-layer networks."""
    rejected = []
    for record in published_records:
        layers = [list(layer) for layer in record["genotype"][:-2]]
        if record["name"].startswith("NASCaps-"):
            assert layers[-1][4] == layers[-1][1], record["name"]
        layers[-1][5:7] = [1, 1]
        space = SearchSpace(input_side=layers[0][1] // record["genotype"][-1][0], input_channels=layers[0][2])
        try:
            Genotype.from_list(layers + record["genotype"][-2:]).validate(space)
        except GenotypeError as error:
            rejected.append((record["name"], error.field))
    assert sorted(rejected) == [("CapsNet", "ch_out"), ("DeepCaps", "ch_out"),
                                ("NASCaps-FMNIST-d96", "type"), ("NASCaps-SVHN-4f6", "type")]


@pytest.mark.parametrize("class_layer, field", [
    ([1, 14, 8, 8, 9, 1, 1, 10, 16], "kernel"),
    ([1, 14, 8, 8, 14, 2, 1, 10, 16], "stride"),
    ([1, 14, 8, 8, 14, 1, 14, 10, 16], "n_out"),
    ([1, 14, 8, 8, 14, 1, 1, 10, 16], None),
])
def test_the_search_space_class_layer_is_fully_connected(class_layer, field):
    genotype = Genotype.from_list([[0, 28, 1, 1, 9, 1, 28, 8, 1], [1, 28, 8, 1, 9, 2, 14, 8, 8], class_layer,
                                   [-1], [1]])
    genotype.validate()
    if field is None:
        genotype.validate(SearchSpace())
        return
    with pytest.raises(GenotypeError, match="fully connected") as info:
        genotype.validate(SearchSpace())
    assert (info.value.index, info.value.field) == (2, field)
    assert genotype.repair(SearchSpace()).layers[2][4:7] == (14, 1, 1)


def test_list_round_trip_and_network(published_records):
    for record in published_records:
        genotype = Genotype.from_list(record["genotype"])
        assert genotype.to_list() == record["genotype"]
        assert genotype.to_network() == Network.from_genotype(record["genotype"])


def test_repair_keeps_valid_genotypes(published_records):
    for record in published_records:
        genotype = Genotype.from_list(record["genotype"])
        assert genotype.repair() == genotype


def test_key_is_stable_and_distinguishes():
    a, b = Genotype.from_list(CAPSNET), Genotype.from_list(json.loads(json.dumps(CAPSNET)))
    assert a.key() == b.key() and a == b and hash(a) == hash(b)
    assert a.key() != Genotype.preset("deepcaps").key()


def test_save_load(tmp_path):
    path = tmp_path / "g.chr"
    Genotype.preset("deepcaps").save(path)
    assert Genotype.load(path) == Genotype.preset("deepcaps")
    wrapped = tmp_path / "w.json"
    wrapped.write_text(json.dumps({"genotype": CAPSNET, "name": "x"}))
    assert Genotype.load(wrapped) == Genotype.preset("capsnet")


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.json: cannot read"):
        Genotype.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(InputError, match="bad.json: not JSON"):
        Genotype.load(bad)
    bad.write_text(json.dumps([[0, 28, 1, 1, 9, 1, 28, "x", 1], [-1], [1]]))
    with pytest.raises(GenotypeError, match="bad.json.*must be an integer") as info:
        Genotype.load(bad)
    assert (info.value.index, info.value.field) == (0, "ch_out")


def _broken(index, field, value, base=CAPSNET):
    data = json.loads(json.dumps(base))
    data[index][("type", "n_in", "ch_in", "caps_in", "kernel", "stride", "n_out", "ch_out", "caps_out")
                .index(field)] = value
    return Genotype.from_list(data)


@pytest.mark.parametrize("genotype, index, field, reason", [
    (_broken(1, "n_in", 27), 1, "n_in", "n_in 27 != n_out 28"),
    (_broken(2, "caps_in", 4), 2, "caps_in", "caps_in 4 != caps_out 8"),
    (_broken(1, "ch_in", 128), 1, "ch_in", "256"),
    (_broken(0, "type", 1), 0, "type", "first layer must be a convolution"),
    (_broken(1, "type", 7), 1, "type", "unknown layer type 7"),
    (_broken(2, "kernel", 15), 2, "kernel", "kernel 15 larger than its input side 14"),
    (_broken(1, "n_out", 13), 1, "n_out", "ceil"),
    (_broken(1, "ch_out", 0), 1, "ch_out", "must be positive"),
    (Genotype.from_list([[0, 28, 1, 1, 9, 1, 28, 256, 1], [-1], [1]]), 0, "type", "at least one capsule layer"),
    (Genotype.from_list([[0, 28, 1, 1, 9, 2, 14, 32, 8], [2, 14, 32, 8, 14, 1, 1, 10, 16], [-1], [1]]), 1,
     "type", "at least one CapsCell"),
    (Genotype.from_list([[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 9, 2, 14, 32, 8],
                         [0, 14, 32, 8, 3, 1, 14, 32, 8], [1, 14, 32, 8, 9, 2, 7, 10, 16], [-1], [1]]),
     2, "type", "convolution cannot follow a capsule layer"),
    (Genotype.from_list([[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 9, 2, 14, 32, 8],
                         [2, 14, 32, 8, 3, 1, 14, 32, 8], [1, 14, 32, 8, 9, 2, 7, 10, 16], [-1], [1]]),
     2, "type", "mixed types"),
    (Genotype.from_list(CAPSNET[:-2] + [[2], [1]]), None, "skip", "skip must be -1"),
    (Genotype.from_list(PRESETS["deepcaps"][:-2] + [[5], [2]]), None, "skip", "before the last"),
    (Genotype.from_list(CAPSNET[:-1] + [[3]]), None, "resize", "resize must be 1 or 2"),
    (Genotype.from_list([[0, 28, 1, 1, 3, 1, 28, 32, 1], [2, 28, 32, 1, 3, 2, 14, 8, 4], [2, 14, 8, 4, 3, 2, 7, 8, 8],
                         [2, 7, 8, 8, 3, 2, 4, 8, 8], [2, 4, 8, 8, 4, 1, 1, 10, 16], [2], [1]]), None, "skip",
     "has 4 atoms, the class layer takes 8"),
])
def test_validate_names_index_field_reason(genotype, index, field, reason):
    with pytest.raises(GenotypeError, match=reason) as info:
        genotype.validate()
    assert (info.value.index, info.value.field) == (index, field)
    if index is not None:
        assert f"descriptor {index}" in str(info.value)
    assert f"'{field}'" in str(info.value)


def test_validate_space_limits():
    g = Genotype.from_list([[0, 28, 1, 1, 9, 2, 14, 8, 1], [1, 14, 8, 1, 3, 2, 7, 8, 5],
                            [1, 7, 8, 5, 7, 1, 1, 10, 4], [-1], [1]])
    g.validate(SearchSpace())
    with pytest.raises(GenotypeError, match="kernel 9 not in") as info:
        g.validate(SearchSpace(kernels=(3, 5)))
    assert info.value.index == 0
    with pytest.raises(GenotypeError, match="input side 32"):
        g.validate(SearchSpace(input_side=32))
    with pytest.raises(GenotypeError, match="100 classes"):
        g.validate(SearchSpace(n_classes=100))
    with pytest.raises(GenotypeError, match="1 convolutions, the search space allows 2-6"):
        g.validate(SearchSpace(convolutions=(2, 6)))


def test_repair_propagates_sizes_and_channels():
    broken = Genotype.from_list([[0, 28, 1, 1, 9, 2, 10, 8, 1], [1, 3, 5, 5, 3, 2, 1, 8, 5],
                                 [1, 99, 1, 1, 9, 1, 7, 3, 4], [3], [1]])
    repaired = broken.repair(SearchSpace())
    assert repaired.to_list() == [[0, 28, 1, 1, 9, 2, 14, 8, 1], [1, 14, 8, 1, 3, 2, 7, 8, 5],
                                  [1, 7, 8, 5, 7, 1, 1, 10, 4], [-1], [1]]
    repaired.validate(SearchSpace())
    mismatched_skip = Genotype.from_list([[0, 28, 1, 1, 3, 1, 28, 32, 1], [2, 28, 32, 1, 3, 2, 14, 8, 4],
                                          [2, 14, 8, 4, 3, 2, 7, 8, 8], [2, 7, 8, 8, 3, 2, 4, 8, 8],
                                          [2, 4, 8, 8, 4, 1, 1, 10, 16], [2], [1]])
    assert mismatched_skip.repair().skip == -1
    assert replace(mismatched_skip, skip=3).repair().skip == 3


def test_for_input_adapts_deepcaps_to_mnist():
    adapted = Genotype.preset("deepcaps").for_input(28, 1)
    adapted.validate(SearchSpace(channels=(1, 128)))
    assert [layer[1] for layer in adapted.layers] == [56, 56, 28, 14, 7, 4]
    assert adapted.layers[0][2] == 1 and adapted.skip == 4


def test_space_from_toml(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text("kernels = [3, 5]\nchannels = [4, 32]\nallow_resize = false\n")
    space = SearchSpace.from_toml(path)
    assert space.kernels == (3, 5) and space.channels == (4, 32) and space.resizes == (1,)
    path.write_text("[space]\nn_classes = 100\n")
    assert SearchSpace.from_toml(path).n_classes == 100
    path.write_text("kernel = [3]\n")
    with pytest.raises(InputError, match=r"space.toml: unknown key 'kernel'"):
        SearchSpace.from_toml(path)
    path.write_text("channels = [64, 4]\n")
    with pytest.raises(InputError, match=r"space.toml: 'channels' must be"):
        SearchSpace.from_toml(path)
    path.write_text("channels = [")
    with pytest.raises(InputError, match="space.toml: not TOML"):
        SearchSpace.from_toml(path)


@pytest.mark.parametrize("limits, message", [
    ({"channels": (1, 65536)}, "reach .* past the limit of 2\\^"),
    ({"channels": (1, 4096), "capsules": (1, 4096)}, "weights reach .* past the limit of 2\\^48"),
    ({"input_side": 5000}, "field 'n_in': 10000 is larger than the limit of 4096"),
    ({"n_classes": 70000}, "field 'ch_out': 70000 is larger than the limit of 65536"),
    ({"strides": (1, 5000)}, "'strides' must be at most 4096"),
])
def test_a_space_whose_genotypes_break_the_bounds_is_refused_before_any_search(limits, message):
    with pytest.raises(InputError, match=message):
        SearchSpace(**limits)


def test_the_largest_genotype_of_a_space_bounds_every_cost_count_of_its_genotypes():
    import numpy as np

    from nas.operators import random_genotype
    from nas.space import QUICK_SPACE
    for space in (SearchSpace(), QUICK_SPACE, SearchSpace(kernels=(3, 9), channels=(4, 16), capsules=(2, 6))):
        rng = np.random.default_rng(3)
        bounds = {kind: Network.from_genotype(space.largest_genotype(kind) + [[-1], [1]]) for kind in (1, 2)}
        for _ in range(300):
            genotype = random_genotype(space, rng)
            network, bound = genotype.to_network(), bounds[genotype.capsule_type]
            assert network.weights <= bound.weights and network.macs <= bound.macs
