"""The costed network is the trained network: for genotypes of the search's operators, the weights
the cost model counts for each hardware operation are the trainable weights of the Keras layer that
implements it (nas.builder), under the rules below (also in docs/model.md).

- Bias: Table 1's "+1" term counts one bias per output atom and input atom,
  ch_out · caps_out · caps_in; the Keras Conv2D, PrimaryCaps, ConvCaps2D and ConvCaps3D hold one
  bias per output atom, ch_out · caps_out, and ClassCaps none. So an operation's weights minus
  ch_out · caps_out · caps_in equal the layer's kernel exactly, and the layer's bias times caps_in
  is the cost's bias term (times 0 for ClassCaps).
- Batch normalisation (CapsCell networks' convolutions) is not priced: its scale and shift fold
  into the convolution's kernel and bias for inference.
- Routing operations hold the coupling coefficients, computed at inference, not trained: one per
  (input capsule, class) pair of the class layer, which the cost counts exactly because the search's
  class kernel is its input side.
- Published-model conventions kept because the published figures depend on them (DeepCaps): the
  ConvCaps3D of the last CapsCell is priced at Table 1's (ch_in · k³ + 1) · ch_out · caps_out ·
  caps_in, whose kernel part is ch_in · k · caps_in / caps_out times the Keras layer's
  k² · caps_out · ch_out · caps_out; and a skip connection's capsules, concatenated to the class
  layer's input, are not priced.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsacc.network import CAPSCELL, CONV, SABOUR
from nas.genotype import Genotype
from nas.operators import crossover, mutate, random_genotype
from nas.space import QUICK_SPACE, SearchSpace

pytestmark = pytest.mark.keras

WIDER = SearchSpace(kernels=(3, 5, 9), strides=(1, 2), channels=(1, 6), capsules=(1, 6), convolutions=(1, 3),
                    sabour_layers=(2, 4), capscells=(4, 6), allow_resize=True)
"""The paper space's structure (resize, kernel 9, more layers) with narrow layers, so that models build fast."""


@st.composite
def search_genotypes(draw):
    """A random genotype of the quick or the wider space, then 0-3 rounds of crossover and mutation."""
    space = draw(st.sampled_from([QUICK_SPACE, WIDER]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    genotype = random_genotype(space, rng)
    for _ in range(draw(st.integers(0, 3))):
        genotype = mutate(crossover(genotype, random_genotype(space, rng), rng, space)[0], rng, 0.3, space)
    return genotype


def _counts(layer) -> tuple[int, int]:
    """(kernel, bias) trainable weights of a Keras layer."""
    kernel = bias = 0
    for variable in layer.trainable_weights:
        size = int(np.prod(variable.shape))
        if variable.name == "bias":
            bias += size
        else:
            assert variable.name in ("kernel", "transform"), variable.name
            kernel += size
    return kernel, bias


def _keras_operations(genotype: Genotype, model) -> list:
    """Per hardware operation of `genotype.to_network()`, in order, the Keras layer implementing it
    (None for routing operations)."""
    layers, last = genotype.layers, len(genotype.layers) - 1
    parts = []
    for index, layer in enumerate(layers):
        if layer[0] == CONV:
            parts.append(model.get_layer(f"conv{index}"))
        elif index == last:
            classcaps = model.get_layer(f"classcaps{index}")
            parts += [classcaps] + [None] * 5 if layer[0] == SABOUR else [None] * 6 + [classcaps]
        elif layer[0] == SABOUR:
            after_conv = layers[index - 1][0] == CONV
            parts.append(model.get_layer(f"primarycaps{index}" if after_conv else f"convcaps{index}"))
        else:
            cell = model.get_layer(f"capscell{index}")
            parts += [cell.first, cell.second, cell.third, cell.skip]
    return parts


def _skip_inputs(genotype: Genotype) -> int:
    """Capsules the skip cell adds to the class layer's input (0 without a skip connection)."""
    if genotype.skip == -1:
        return 0
    cell = genotype.layers[genotype.skip - 1]
    return cell[6] ** 2 * cell[7]


@pytest.fixture(scope="module")
def build_models():
    """`nas.builder.build_models`, imported (with the Keras backend) before hypothesis runs."""
    from nas.builder import build_models
    return build_models


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(search_genotypes())
def test_costed_weights_are_the_trained_weights(build_models, genotype):
    model = build_models(genotype, (genotype.input_side // genotype.resize,) * 2 + (genotype.input_channels,),
                         genotype.layers[-1][7]).classifier
    operations = genotype.to_network().operations
    parts = _keras_operations(genotype, model)
    assert len(parts) == len(operations)
    for op, layer in zip(operations, parts):
        cost_bias = op.ch_out * op.caps_out * op.caps_in
        if op.kind == "routing":
            assert layer is None
            class_inputs = op.n_in ** 2 * op.ch_in
            assert op.weights == class_inputs * op.ch_out
            continue
        kernel, bias = _counts(layer)
        if op.kind == "classcaps":
            skip = _skip_inputs(genotype) * op.caps_in * op.ch_out * op.caps_out
            assert (op.weights - cost_bias + skip, 0) == (kernel, bias), op
        elif op.kind == "convcaps3d":
            assert (op.weights - cost_bias) * op.caps_out == kernel * op.ch_in * op.kernel * op.caps_in, op
            assert bias * op.caps_in == cost_bias, op
        else:
            assert (op.weights - cost_bias, bias * op.caps_in) == (kernel, cost_bias), op
    trained = sum(_counts(layer)[0] for layer in set(parts) - {None})
    assert trained > 0


def test_the_strategy_reaches_every_layer_kind():
    """The genotypes drawn above cover conv, PrimaryCaps, ConvCaps, CapsCell, ConvCaps3D, ClassCaps
    and skip connections."""
    rng = np.random.default_rng(0)
    genotypes = [random_genotype(space, rng) for space in (QUICK_SPACE, WIDER) for _ in range(100)]
    kinds = {op.kind for g in genotypes for op in g.to_network().operations}
    assert kinds == {"conv", "convcaps", "convcaps3d", "classcaps", "routing"}
    assert {g.capsule_type for g in genotypes} == {SABOUR, CAPSCELL}
    assert any(g.skip != -1 for g in genotypes) and any(g.resize == 2 for g in genotypes)
    assert any(g.layers[i][0] == SABOUR and g.layers[i - 1][0] == SABOUR and i < len(g.layers) - 1
               for g in genotypes for i in range(1, len(g.layers)))
