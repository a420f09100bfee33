"""A CapsCell network (DeepCaps) chained end to end on the RTL: ToCapsules, the cells with their skip
branches and sums, the last cell's ConvCaps3D votes and their routing, ClassCaps before its routing,
bit-exact on a 4x4 array with the Amaranth back end, and the calibrated model's cycles equal to the
RTL's for every step and every operation."""

import dataclasses
import shutil

import numpy as np
import pytest

from capsacc import Accelerator, estimate
from capsacc.array import ArrayConfig, buffer_depths
from capsacc.network import Network
from sim import golden
from capsacc.mapping import ROUTINGS
from sim.driver import LAST_SUMS, OperationDriver, shift_for
from sim.network_run import SHIFT_LOGITS, run_network, step_macs, step_name
from test_sim_calibrated_model import isa_calibration
from test_sim_route3d import dynamic_routing

GENOTYPE = [[0, 4, 1, 1, 3, 1, 4, 4, 1], [2, 4, 2, 2, 3, 1, 4, 2, 2], [2, 4, 2, 2, 3, 2, 2, 2, 2],
            [2, 2, 2, 2, 2, 1, 1, 3, 2], [-1], [1]]
"""A 4x4 image, a convolution to 4 channels (2 capsules of 2 atoms), a CapsCell of 2x2-atom capsules,
the last cell (stride 2, to 2x2), 3 classes of 2 atoms."""
CONFIG = ArrayConfig(4, 4, 25, **buffer_depths(64), program_depth=32)

pytestmark = pytest.mark.slow  # 20 steps on Amaranth: 35 s quiet, 90 s on the loaded 2-core machine


def image() -> np.ndarray:
    """A batch of one random 4x4 image, (1, 4, 4, 1)."""
    return np.random.default_rng(0).integers(0, 128, size=(1, 4, 4, 1))


@pytest.fixture(scope="module")
def chained():
    network = Network.from_genotype(GENOTYPE)
    return network, run_network(network, OperationDriver(CONFIG, "amaranth"), image())


def test_every_step_runs_in_data_flow_order(chained):
    network, result = chained
    assert [(step.index, step.kind) for step in result.steps] == [
        (0, "conv"), (1, "tocaps"), (1, "convcaps"), (2, "convcaps"), (3, "convcaps"), (4, "convcaps"),
        (4, "capsadd"), (5, "convcaps"), (6, "convcaps"), (7, "convcaps"), (8, "convcaps3d"), (8, "route3d"),
        (8, "capsadd"), (15, "classcaps"), (9, "routing_uniform"), (10, "routing_first_update"),
        (11, "routing_softmax"), (12, "routing_update"), (13, "routing_softmax"), (14, "routing_update")]
    assert [step_name(network, s) for s in result.steps[:2]] == ["conv0", "convcaps1.tocaps"]


def test_the_cells_compute_the_keras_data_flow_bit_exact(chained):
    """Each step's RTL result equals the golden model (the driver checks it), and the chain feeds them
    as nas.layers.CapsCell does: the skip reads the first convolution, the cell's output is the third's
    capsules plus the skip's, saturated; the ConvCaps3D's votes are routed over its input types at each
    position, three iterations (the reference routing of `test_sim_route3d`)."""
    _, result = chained
    out = [run.outputs["out"][0] if "out" in run.outputs else None for run in result.runs]  # the one image's
    assert np.array_equal(out[1], golden.capsule_sum([out[0]], 0, "squash", 2))  # ToCapsules
    first, third, skip = out[2], out[4], out[5]
    assert np.array_equal(result.runs[5].golden["out"][0], out[5]) and result.steps[5].inputs == (2,)
    assert np.array_equal(out[6], np.clip(third + skip, -128, 127)) and np.any(np.abs(third + skip) > 127)
    votes = out[10].reshape(4, 2, 2, 2)  # 2x2 positions, 2 input types, 2 capsules of 2 atoms
    routed = result.runs[11].outputs["v"]  # one routing per position
    shift_sum = max(1, shift_for(2) - 2)  # the driver's default for 2 inputs
    assert routed.shape == (4, 2, 2) and np.any(routed)
    for position in range(4):
        want = dynamic_routing(votes[position], ROUTINGS, SHIFT_LOGITS, shift_sum, CONFIG.acc_bits)
        assert np.array_equal(routed[position], want)
    assert np.array_equal(out[12], np.clip(out[9] + routed.reshape(4, 4), -128, 127))
    u = out[12].reshape(-1, 2)
    assert result.runs[13].outputs["u_hat"].shape == (1, len(u), 3, 2)
    assert np.array_equal(result.output, result.runs[-2].outputs["v"]) and np.any(result.output)
    assert first.shape == (16, 4)


def test_the_calibrated_model_prices_each_step_and_operation_as_the_rtl_runs_it(chained):
    network, result = chained
    calibration = isa_calibration(CONFIG)
    assert [run.cycles for run in result.runs] == [calibration.predict(s.kind, s.op)["cycles"] for s in result.steps]
    accelerator = dataclasses.replace(Accelerator.from_tables(rows=4, cols=4), calibration=calibration)
    per_operation = [0] * len(network.operations)
    for step, run in zip(result.steps, result.runs):
        per_operation[step.index] += run.cycles
    assert [op.cycles for op in estimate(network, accelerator).operations] == per_operation
    assert step_macs(result.steps[6], CONFIG) == 16 * 4 * 2  # 16 positions x 4 values x 2 operands
    assert step_macs(result.steps[11], CONFIG) == 4 * 5 * 2 * 2 * 2  # 4 positions x 5 phases x I J D


@pytest.mark.verilator
@pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator not installed")
def test_verilator_runs_the_chain_as_amaranth_does(chained, tmp_path):
    network, reference = chained
    result = run_network(network, OperationDriver(CONFIG, "verilator", cache_dir=tmp_path), image())
    assert [(r.cycles, r.host_cycles, r.counters) for r in result.runs] == \
        [(r.cycles, r.host_cycles, r.counters) for r in reference.runs]
    assert np.array_equal(result.output, reference.output)


def test_a_batch_of_two_images_runs_each_image_as_alone(chained):
    """The same CapsCell network on a batch of 2 images (the fixture's first): every step's results for
    image 0 equal its run alone, the ClassCaps step is cheaper than twice one image's, the routing
    phases and the ConvCaps3D's routings cost exactly twice, and the calibrated model counts the
    batch's cycles of every step."""
    network, alone = chained
    images = np.concatenate([image(), np.random.default_rng(1).integers(0, 128, size=(1, 4, 4, 1))])
    config = dataclasses.replace(CONFIG, batch=2)
    batched = run_network(network, OperationDriver(config, "amaranth"), images)
    calibration = isa_calibration(config)
    for step, run, one in zip(batched.steps, batched.runs, alone.runs):
        for name, value in one.outputs.items():
            if name == LAST_SUMS:  # not per image
                continue
            got = run.outputs[name]
            if step.kind == "route3d":  # one routing per image and position: image 0's positions first
                got, value = got.reshape(2, -1, *got.shape[1:]), value.reshape(1, -1, *value.shape[1:])
            assert got.shape[0] == 2 and np.array_equal(got[0], value[0]), (step, name)
        assert run.cycles == calibration.predict(step.kind, step.op)["cycles"]
        if step.kind.startswith("routing") or step.kind == "route3d":
            assert run.cycles == 2 * one.cycles
        if step.kind == "classcaps":
            assert run.cycles < 2 * one.cycles
    assert np.any(batched.output[1] != batched.output[0])
