"""A whole Sabour-style network on the RTL, chained layer after layer: the routing runs the trained
layer's three iterations (uniform first coupling), bit-exact, and the calibrated model counts it."""

import dataclasses

import numpy as np
import pytest

from capsacc import Accelerator, estimate
from capsacc.array import ArrayConfig, buffer_depths
from capsacc.calibrated import TARGET_FEATURES, Calibration
from capsacc.energy import EventEnergies
from capsacc.mapping import ROUTINGS
from capsacc.network import Network
from sim import golden
from sim.driver import LAST_SUMS, OperationDriver, shift_for
from sim.network_run import SHIFT_LOGITS, run_network
from test_sim_calibrated_model import ISA

GENOTYPE = [[0, 4, 1, 1, 3, 1, 4, 2, 1], [1, 4, 2, 1, 3, 2, 2, 2, 2], [1, 2, 2, 2, 2, 1, 1, 3, 2], [-1], [1]]
"""A 4x4 image, a convolution, a capsule layer of 2x2x2 capsules of 2 atoms, 3 classes of 2 atoms."""
WIDE_GENOTYPE = [[0, 4, 1, 1, 3, 1, 4, 2, 1], [1, 4, 2, 1, 3, 2, 2, 2, 6], [1, 2, 2, 6, 2, 1, 1, 3, 2], [-1], [1]]
"""The same with capsules of 6 atoms, wider than the 4 columns (2 column blocks each), feeding a
ClassCaps whose 6-atom input capsules exceed the 3 rows (2 K chunks)."""
CONFIG = ArrayConfig(3, 4, 25, **buffer_depths(64), program_depth=32)


@pytest.mark.parametrize("genotype", [GENOTYPE, WIDE_GENOTYPE], ids=["narrow", "wide"])
def test_a_network_runs_three_routing_iterations_bit_exact_and_costed_exactly(genotype):
    network = Network.from_genotype(genotype)
    image = np.random.default_rng(0).integers(0, 128, size=(1, 4, 4, 1))
    result = run_network(network, OperationDriver(CONFIG, "amaranth"), image)
    assert [run.kind for run in result.runs] == ["conv", "convcaps", "classcaps", "routing_uniform",
                                                 "routing_first_update", "routing_softmax", "routing_update",
                                                 "routing_softmax"]
    convcaps = result.runs[1].counts
    assert convcaps["act_spans"] == convcaps["acts"] * (2 if genotype is WIDE_GENOTYPE else 1)
    u_hat = result.runs[2].outputs["u_hat"][0]
    n_in = u_hat.shape[0]
    c, s, v, b = golden.routing(u_hat, ROUTINGS, SHIFT_LOGITS, max(1, shift_for(n_in) - 2), CONFIG.acc_bits)
    assert np.array_equal(result.output[0], v) and np.any(v)
    assert np.array_equal(result.runs[-2].outputs["b"][0], b)
    coefficients = {t: tuple(1.0 for _ in names) for t, names in TARGET_FEATURES.items()}
    coefficients["cycles"] = tuple(float(ISA[n]) for n in TARGET_FEATURES["cycles"])
    calibration = Calibration(CONFIG, coefficients, EventEnergies.from_tables(CONFIG), 1.0e6)
    accelerator = dataclasses.replace(Accelerator.from_tables(rows=3, cols=4), calibration=calibration)
    costed = estimate(network, accelerator)
    assert [op.cycles for op in costed.operations] == [run.cycles for run in result.runs]


def test_a_batch_of_two_images_runs_each_image_as_alone_in_fewer_classcaps_cycles():
    """A batch of 2 images: each image's outputs equal its run alone (bit-exact, chained), the
    routing costs twice one image's, ClassCaps less than twice (a weight tile serves both images),
    and the calibrated model counts the batch exactly."""
    network = Network.from_genotype(GENOTYPE)
    images = np.random.default_rng(1).integers(0, 128, size=(2, 4, 4, 1))
    batched = run_network(network, OperationDriver(dataclasses.replace(CONFIG, batch=2), "amaranth"), images)
    alone = [run_network(network, OperationDriver(CONFIG, "amaranth"), images[b:b + 1]) for b in range(2)]
    for b in range(2):
        assert np.array_equal(batched.output[b], alone[b].output[0]) and np.any(alone[b].output)
        for run, single in zip(batched.runs, alone[b].runs):
            for name, value in single.outputs.items():
                if name != LAST_SUMS:  # not per image
                    assert np.array_equal(run.outputs[name][b], value[0]), (run.kind, name)
    kinds = [run.kind for run in batched.runs]
    for index, kind in enumerate(kinds):
        pair = alone[0].runs[index].cycles + alone[1].runs[index].cycles
        if kind.startswith("routing"):
            assert batched.runs[index].cycles == pair, kind
    classcaps = kinds.index("classcaps")
    assert batched.runs[classcaps].cycles < alone[0].runs[classcaps].cycles + alone[1].runs[classcaps].cycles
    coefficients = {t: tuple(1.0 for _ in names) for t, names in TARGET_FEATURES.items()}
    coefficients["cycles"] = tuple(float(ISA[n]) for n in TARGET_FEATURES["cycles"])
    calibration = Calibration(dataclasses.replace(CONFIG, batch=2), coefficients,
                              EventEnergies.from_tables(CONFIG), 1.0e6)
    assert [calibration.predict(kind, op)["cycles"] for kind, op in zip(kinds, network.operations)] == \
        [run.cycles for run in batched.runs]
