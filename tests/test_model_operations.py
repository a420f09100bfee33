"""Single operations worked out by hand from docs/model.md, and the expansion rules."""

import pytest

from capsacc import Accelerator, GenotypeFormatError, Network, estimate

CAPSNET = Network.preset("capsnet")


def test_capsnet_first_convolution_by_hand():
    # conv 28x28x1 -> 28x28x256, k 9: weights (1*81+1)*256, sums_per_out 82, data_per_weight 784;
    # w_loads ceil(20992/16/16) = 82; cycles 16*82 + 784; accumulators 16*(82-16+1) = 1072;
    # power 0.4815*256 + 1072*0.2303 = 370.1456 mW; energy 370.1456 mW * 2096 * 3 ns.
    op = estimate(CAPSNET, Accelerator.published()).operations[0]
    assert (op.kind, op.weights, op.sums_per_out, op.data_per_weight) == ("conv", 20992, 82, 784)
    assert (op.w_loads, op.cycles, op.accumulators) == (82, 2096, 1072)
    assert op.power_mW == pytest.approx(370.1456, rel=1e-12)
    assert op.energy_mJ == pytest.approx(370.1456 * 2096 * 3e-9, rel=1e-12)


def test_classcaps_and_routing_by_hand():
    # classcaps [14, 32, 8, k 9 -> 10 x 16]: weights (32*81+1)*10*16*8 = 3319040, sums (81+1)*32*8 = 20992,
    # data 1 -> accumulators = C = 16; w_loads = ceil(3319040/16/16) = 12965; cycles 16*12965 + 1.
    # routing: weights 32*81*10 = 25920, sums = caps_in = 8; w_loads = ceil(25920/16/8) = 203.
    ops = estimate(CAPSNET, Accelerator.published()).operations
    classcaps, routing = ops[2], ops[3]
    assert (classcaps.weights, classcaps.sums_per_out, classcaps.w_loads, classcaps.cycles,
            classcaps.accumulators) == (3319040, 20992, 12965, 207441, 16)
    assert (routing.weights, routing.sums_per_out, routing.w_loads, routing.cycles) == (25920, 8, 203, 3249)
    assert routing.power_mW == pytest.approx(0.4815 * 256 + 16 * 0.2303, rel=1e-12)


def test_pipeline_stages_and_inputs_per_pe_enter_the_cycles():
    accelerator = Accelerator.from_tables(inputs_per_pe=2, pe_stages=2)
    op = estimate(CAPSNET, accelerator).operations[0]
    # w_load_cycles = 16 + 2 - 1; min(R * inputs, sums) = 32; w_loads = ceil(20992/16/32) = 41
    assert op.w_loads == 41
    assert op.cycles == 17 * 41 + 784
    assert op.accumulators == 16 * (82 - 32 + 1)


def test_expansion_of_capsule_layers():
    assert [op.kind for op in CAPSNET.operations] == ["conv", "convcaps", "classcaps"] + ["routing"] * 5
    deepcaps = Network.preset("deepcaps")
    kinds = [op.kind for op in deepcaps.operations]
    assert kinds == ["conv"] + ["convcaps"] * 12 + ["convcaps"] * 3 + ["convcaps3d"] + ["routing"] * 6 + ["classcaps"]
    first_cell = deepcaps.operations[1:5]
    assert [op.caps_in for op in first_cell] == [4, 4, 4, 4]
    second_cell = deepcaps.operations[5:9]
    assert [op.caps_in for op in second_cell] == [4, 8, 8, 8]


def test_multiply_accumulates_by_hand():
    conv, primary, classcaps, routing = CAPSNET.operations[:4]
    assert conv.macs == 28 * 28 * 81 * 1 * 256  # every 9x9x1 kernel at 28x28 positions, 256 filters
    assert primary.macs == 14 * 14 * 81 * 256 * 32 * 8  # 'same' padding, stride 2: a 14x14 grid
    assert classcaps.macs == 14 * 14 * 32 * 8 * 10 * 16  # one 8x16 matrix per input capsule and class
    assert routing.macs == 25920 * 16  # each coefficient scales a 16-atom vector
    assert CAPSNET.macs == sum(op.macs for op in CAPSNET.operations)


def test_convcaps3d_uses_cubic_kernel():
    op = Network.preset("deepcaps").operations[16]
    assert op.kind == "convcaps3d"
    assert op.weights == (op.ch_in * op.kernel ** 3 + 1) * op.ch_out * op.caps_out * op.caps_in
    assert op.sums_per_out == (op.kernel ** 3 + 1) * op.ch_in * op.caps_in


@pytest.mark.parametrize("genotype, index, field", [
    ([[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 9, 2, 14, 32, 8]], None, None),
    ([[0, 28, 1, 1, 9, 1, 28, 256], [1, 28, 256, 1, 9, 2, 14, 32, 8], [-1], [1]], 0, None),
    ([[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1.5, 9, 2, 14, 32, 8], [-1], [1]], 1, "caps_in"),
    ([[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, -4, 1, 9, 2, 14, 32, 8], [-1], [1]], 1, "ch_in"),
    ([[7, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 9, 2, 14, 32, 8], [-1], [1]], 0, "type"),
    ([[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 9, 2, 14, 32, 8], [1]], None, "skip"),
    ([[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 9, 2, 14, 32, 8], [-1], [3]], None, "resize"),
    ([[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 9, 2, 14, 32, 8], [9], [1]], None, "skip"),
    ("[[0, 28]]", None, None),
])
def test_malformed_genotypes_name_descriptor_and_field(genotype, index, field):
    with pytest.raises(GenotypeFormatError) as raised:
        Network.from_genotype(genotype)
    assert isinstance(raised.value, ValueError)
    assert raised.value.index == index
    assert raised.value.field == field
    if index is not None:
        assert f"descriptor {index}" in str(raised.value)
    if field is not None:
        assert field in str(raised.value)
