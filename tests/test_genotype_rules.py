"""One definition of the genotype rules (capsacc.network.check_genotype): `nascaps estimate`, the
train path and `GenotypeBatch` refuse the same genotypes with the same located message, and every
count the cost model derives fits 64-bit integers or the genotype is refused."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsacc import Accelerator, GenotypeBatch, InputError, Network, estimate, estimate_many
from capsacc.cli import main
from capsacc.errors import GenotypeFormatError
from capsacc.network import FIELD_LIMITS, MAX_COUNT, PRESETS
from nas.genotype import Genotype, GenotypeError

CAPSNET = PRESETS["capsnet"]
DEEPCAPS = PRESETS["deepcaps"]

BAD_GENOTYPES = {
    "convolution after a capsule layer": (
        [[0, 28, 1, 1, 9, 1, 28, 16, 1], [1, 28, 16, 1, 9, 2, 14, 8, 4], [0, 14, 8, 4, 3, 1, 14, 32, 1],
         [1, 14, 32, 1, 14, 1, 1, 10, 16], [-1], [1]], 2, "type", "a convolution cannot follow a capsule layer"),
    "kernel larger than its input": (
        [[0, 28, 1, 1, 9, 1, 28, 16, 1], [1, 28, 16, 1, 9, 4, 7, 8, 4], [1, 7, 8, 4, 9, 1, 1, 10, 16], [-1], [1]],
        2, "kernel", "kernel 9 larger than its input side 7"),
    "n_out disagreeing with n_in and stride": (
        [[0, 28, 1, 1, 9, 1, 28, 16, 1], [1, 28, 16, 1, 9, 2, 12, 8, 4], [1, 12, 8, 4, 12, 1, 1, 10, 16],
         [-1], [1]], 1, "n_out", "n_out 12 != ceil(n_in 28 / stride 2) = 14"),
    "convolutions only": (
        [[0, 28, 1, 1, 9, 1, 28, 16, 1], [0, 28, 16, 1, 9, 2, 14, 10, 1], [-1], [1]], 1, "type",
        "needs at least one capsule layer"),
    "skip on a Sabour network": (CAPSNET[:-2] + [[1], [1]], None, "skip", "skip must be -1 or the position"),
    "huge integer": ([[0, 28, 1, 1, 9, 1, 28, 10 ** 30, 1]] + CAPSNET[1:], 0, "ch_out",
                     "larger than the limit of 65536"),
    "float size": ([[0, 28, 1, 1, 9.0, 1, 28, 256, 1]] + CAPSNET[1:], 0, "kernel", "must be an integer"),
    "boolean size": ([[0, 28, True, 1, 9, 1, 28, 256, 1]] + CAPSNET[1:], 0, "ch_in", "must be an integer"),
    "2^21-channel convolutions": (
        [[0, 64, 3, 1, 3, 1, 64, 2 ** 21, 1]] + [[0, 64, 2 ** 21, 1, 3, 1, 64, 2 ** 21, 1]] * 4
        + [[1, 64, 2 ** 21, 1, 3, 1, 64, 10, 16], [-1], [1]], 0, "ch_out", "larger than the limit"),
}


def _write(tmp_path, genotype) -> str:
    path = tmp_path / "g.json"
    path.write_text(json.dumps(genotype))
    return str(path)


def _estimate_error(path: str, capsys) -> str:
    assert main(["estimate", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nascaps estimate: error: ")
    return err.removeprefix("nascaps estimate: error: ").rstrip("\n")


@pytest.mark.parametrize("case", list(BAD_GENOTYPES))
def test_estimate_and_the_nas_path_refuse_with_the_same_located_message(case, tmp_path, capsys):
    genotype, index, field, reason = BAD_GENOTYPES[case]
    path = _write(tmp_path, genotype)
    message = _estimate_error(path, capsys)
    with pytest.raises(GenotypeError) as loaded:
        Genotype.load(path)
    assert str(loaded.value) == message
    assert message.startswith(f"{path}: ") and reason in message
    assert (loaded.value.index, loaded.value.field) == (index, field)
    if index is not None:
        assert f"descriptor {index}, field '{field}'" in message
    with pytest.raises(GenotypeFormatError) as direct:
        Network.from_genotype(genotype)
    assert direct.value.in_file(path).args == loaded.value.args
    try:
        parsed = Genotype.from_list(genotype)
    except GenotypeError as error:
        assert error.in_file(path).args == loaded.value.args
    else:
        with pytest.raises(GenotypeError) as validated:
            parsed.validate()
        assert validated.value.in_file(path).args == loaded.value.args


@pytest.mark.keras
@pytest.mark.parametrize("case", list(BAD_GENOTYPES)[:5])
def test_train_refuses_what_estimate_refuses_before_training(case, tmp_path, capsys):
    genotype = BAD_GENOTYPES[case][0]
    path = _write(tmp_path, genotype)
    message = _estimate_error(path, capsys)
    assert main(["train", path, "--epochs", "1", "--train-samples", "100", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"nascaps train: error: {message}\n"


def test_the_one_error_class():
    assert GenotypeError is GenotypeFormatError and issubclass(GenotypeError, InputError)


def test_capscell_inner_convolutions_take_the_first_convolutions_output():
    """A CapsCell's second, third and skip convolutions read the first one's ch_out x caps_out
    capsules (as the Keras CapsCell does), whatever its input's channels."""
    genotype = [[0, 28, 1, 1, 3, 1, 28, 8, 1], [2, 28, 8, 1, 3, 2, 14, 4, 2], [2, 14, 4, 2, 3, 2, 7, 6, 3],
                [2, 7, 6, 3, 3, 1, 7, 5, 4], [2, 7, 5, 4, 7, 1, 1, 10, 8], [-1], [1]]
    operations = Network.from_genotype(genotype).operations
    first_cell, last_cell = operations[1:5], operations[9:13]
    assert [(op.ch_in, op.caps_in, op.stride) for op in first_cell] == [(8, 1, 2)] + [(4, 2, 1)] * 3
    assert [(op.kind, op.ch_in, op.caps_in) for op in last_cell] == [
        ("convcaps", 6, 3), ("convcaps", 5, 4), ("convcaps", 5, 4), ("convcaps3d", 6, 3)]
    assert first_cell[1].weights == (4 * 9 + 1) * 4 * 2 * 2


_SIZES = st.one_of(st.integers(1, 64), st.integers(1, 2 ** 18), st.integers(-2, 2 ** 70),
                   st.sampled_from([2 ** 21, 10 ** 9, 10 ** 30, 0]), st.floats(allow_nan=True), st.booleans())


@st.composite
def fuzzed_genotypes(draw):
    """Genotypes near the rules (sizes propagated, kernels fitting) with fields drawn up to 2^70,
    and sometimes a field of the wrong kind."""
    n_layers = draw(st.integers(2, 8))
    side = draw(st.one_of(st.integers(1, 64), st.integers(1, 2 ** 14)))
    channels, atoms = draw(st.integers(1, 4)), 1
    caps_type = draw(st.sampled_from((1, 2)))
    layers = []
    for index in range(n_layers):
        layer_type = 0 if index < draw(st.integers(1, n_layers - 1)) or index == 0 else caps_type
        if layers and layers[-1][0] != 0:
            layer_type = caps_type
        kernel = min(side, draw(st.sampled_from((1, 3, 5, 9, 2 ** 12))))
        stride = draw(st.sampled_from((1, 2, 3)))
        n_out = 1 if index == n_layers - 1 else -(-side // stride)
        ch_out = draw(st.one_of(st.integers(1, 64), st.integers(1, 2 ** 17)))
        caps_out = 1 if layer_type == 0 else draw(st.one_of(st.integers(1, 16), st.integers(1, 2 ** 13)))
        layers.append([layer_type, side, channels, atoms, kernel, stride, n_out, ch_out, caps_out])
        side, channels, atoms = n_out, ch_out, caps_out
    for _ in range(draw(st.integers(0, 2))):
        layer = draw(st.integers(0, n_layers - 1))
        layers[layer][draw(st.integers(1, 8))] = draw(_SIZES)
    return layers + [[-1], [1]]


def _check_result(genotype, accelerator):
    try:
        network = Network.from_genotype(genotype)
    except InputError as error:
        assert "descriptor" in str(error) or "field" in str(error) or "entry" in str(error)
        return False
    result = estimate(network, accelerator)
    for value in (result.cycles, result.weights, *result.costs[0], *result.costs[1], *result.costs[2]):
        assert 0 <= int(value) < 2 ** 63
    assert result.cycles == sum(op.cycles for op in result.operations)
    assert result.weights == network.weights < MAX_COUNT
    assert math.isfinite(result.energy_mJ) and result.energy_mJ > 0
    assert math.isfinite(result.latency_ms) and result.latency_ms > 0
    return True


@settings(max_examples=300, deadline=None)
@given(st.lists(fuzzed_genotypes(), min_size=1, max_size=4))
def test_fuzzed_genotypes_cost_to_finite_figures_or_raise_a_located_input_error(genotypes):
    """Never an OverflowError or a wrapped int64: the single and batch paths agree on what they
    refuse and give the same totals for what they accept."""
    accelerator = Accelerator.published()
    accepted = [g for g in genotypes if _check_result(g, accelerator)]
    well_formed = [g for g in genotypes if all(isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2 ** 62
                                               for d in g[:-2] for v in d)]
    if not well_formed:
        return
    descriptors = np.array([d for g in well_formed for d in g[:-2]], dtype=np.int64)
    offsets = np.cumsum([0] + [len(g) - 2 for g in well_formed])
    if len(accepted) == len(well_formed) == len(genotypes):
        many = estimate_many(GenotypeBatch(descriptors, offsets), accelerator)
        singles = [estimate(Network.from_genotype(g), accelerator) for g in genotypes]
        assert many.cycles.tolist() == [s.cycles for s in singles]
        assert many.weights.tolist() == [s.weights for s in singles]
        return
    first_refused = next((j for j, g in enumerate(well_formed) if g not in accepted), None)
    if first_refused is None:
        GenotypeBatch(descriptors, offsets)
        return
    with pytest.raises(GenotypeFormatError) as batch_error:
        GenotypeBatch(descriptors, offsets)
    with pytest.raises(GenotypeFormatError) as single_error:
        Network.from_genotype(well_formed[first_refused])
    assert batch_error.value.reason == f"genotype {first_refused}: {single_error.value.reason}"


def test_a_batch_of_integers_past_int64_is_a_located_error():
    with pytest.raises(GenotypeFormatError, match="64-bit integers"):
        GenotypeBatch([[0, 28, 1, 1, 9, 1, 28, 10 ** 30, 1]], [0, 1])
    with pytest.raises(GenotypeFormatError, match="64-bit integers"):
        GenotypeBatch(np.array(CAPSNET[:-2], dtype=float) + 0.5, [0, 3])
    assert len(GenotypeBatch(np.array(CAPSNET[:-2], dtype=np.int32), [0, 3])) == 1


def test_the_largest_fields_still_fit_64_bits():
    """At every field's limit the counts pass their bounds and the genotype is refused at the
    descriptor where they do; with large but accepted fields, every int64 of the cost stays positive."""
    side, channels = FIELD_LIMITS["n_in"], FIELD_LIMITS["ch_out"]
    huge = [[0, side, 1, 1, 3, 1, side, channels, 1], [1, side, channels, 1, 9, 1, side, channels, 16],
            [1, side, channels, 16, side, 1, 1, 10, 16], [-1], [1]]
    with pytest.raises(GenotypeFormatError, match=r"multiply-accumulates reach .* past the limit of 2\^62") as info:
        Network.from_genotype(huge)
    assert info.value.index == 1
    wide_class = [[0, side, 1, 1, 3, 1, side, channels, 1], [1, side, channels, 1, side, 1, 1, 10, 64], [-1], [1]]
    with pytest.raises(GenotypeFormatError, match=r"weights reach .* past the limit of 2\^48") as info:
        Network.from_genotype(wide_class)
    assert info.value.index == 1
    large = [[0, side, 1, 1, 3, 1, side, channels, 1], [1, side, channels, 1, 3, 2, side // 2, 4, 8],
             [1, side // 2, 4, 8, side // 2, 1, 1, 10, 16], [-1], [1]]
    assert _check_result(large, Accelerator.from_tables(rows=4096, cols=4096, pe_stages=2))


def test_a_calibrated_estimate_of_a_billion_channel_layer_is_refused(tmp_path, capsys):
    path = _write(tmp_path, [[0, 28, 1, 1, 9, 1, 28, 10 ** 9, 1]] + CAPSNET[1:])
    assert main(["estimate", path, "--accelerator", "calibrated"]) == 2
    assert "descriptor 0, field 'ch_out': 1000000000 is larger than the limit of 65536" in capsys.readouterr().err


def test_presets_and_published_genotypes_pass_the_rules(published_records):
    for genotype in [CAPSNET, DEEPCAPS] + [record["genotype"] for record in published_records]:
        Genotype.from_list(genotype).validate()
