"""Workloads: GEMM dimensions of layers and training passes, checked by hand."""

from capsacc.dse.topology import builtin_topology
from capsacc.dse.workload import (capsule_workload, preset_network, rescaled_genotype, topology_workload,
                                  training_passes)
from capsacc.network import PRESETS, Network


def _dims(workload, layer):
    return {g.phase: (g.m, g.k, g.n, g.count) for g in workload.gemms if g.layer == layer}


def test_alexnet_conv2_training_passes_by_hand():
    # conv2: 31x31x96 input (padding 2 folded in), 5x5 filters, 256 of them, stride 1 -> 27x27 output.
    # forward Y(729 x 256) = X(729 x 2400) W(2400 x 256); dX(729 x 2400) = dY(729 x 256) Wt(256 x 2400);
    # dW(2400 x 256) = Xt(2400 x 729) dY(729 x 256).
    workload = topology_workload("alexnet", builtin_topology("alexnet"), "training")
    assert _dims(workload, "conv2") == {"forward": (729, 2400, 256, 1), "data_gradient": (729, 256, 2400, 1),
                                        "weight_gradient": (2400, 729, 256, 1)}
    # fc7: 4096 -> 4096, batch 1: forward 1x4096 by 4096x4096, dW = 4096x1 by 1x4096.
    assert _dims(workload, "fc7") == {"forward": (1, 4096, 4096, 1), "data_gradient": (1, 4096, 4096, 1),
                                      "weight_gradient": (4096, 1, 4096, 1)}
    assert len(workload.gemms) == 3 * 8
    assert workload.macs == 3 * topology_workload("alexnet", builtin_topology("alexnet"), "inference").macs


def test_lenet_batch_scales_the_pixel_dimension():
    workload = topology_workload("lenet", builtin_topology("lenet"), "training", batch=32)
    # conv1: 32x32x1, 5x5, 6 filters -> 28x28 per sample.
    assert _dims(workload, "conv1") == {"forward": (32 * 784, 25, 6, 1), "data_gradient": (32 * 784, 6, 25, 1),
                                        "weight_gradient": (25, 32 * 784, 6, 1)}
    forward = next(g for g in workload.gemms if g.layer == "conv1" and g.phase == "forward")
    assert forward.ifmap_words == 32 * 32 * 32 and forward.filter_words == 25 * 6


def test_training_pass_footprints():
    forward, data_gradient, weight_gradient = training_passes(
        next(g for g in topology_workload("lenet", builtin_topology("lenet"), "inference").gemms))
    assert (data_gradient.ifmap_words, data_gradient.filter_words) == (784 * 6, 25 * 6)
    assert (weight_gradient.ifmap_words, weight_gradient.filter_words) == (forward.ifmap_words, 784 * 6)


def test_capsnet_operations_by_hand():
    workload = capsule_workload(Network.preset("capsnet"), "training")
    # conv0: 28x28x1 -> 28x28x256 with 9x9 kernels (NASCaps' preset keeps the side).
    assert _dims(workload, "conv0")["forward"] == (784, 81, 256, 1)
    # PrimaryCaps convcaps1: 28x28x256 -> 14x14, 32 capsule types of 8 atoms.
    assert _dims(workload, "convcaps1") == {"forward": (196, 81 * 256, 256, 1),
                                            "data_gradient": (196, 256, 81 * 256, 1),
                                            "weight_gradient": (81 * 256, 196, 256, 1)}
    # ClassCaps: ch_in·k² = 32·81 input capsules of 8 atoms, 10 classes of 16: one 1x8 by 8x160 GEMM each.
    assert _dims(workload, "classcaps2") == {"forward": (1, 8, 160, 2592), "data_gradient": (1, 160, 8, 2592),
                                             "weight_gradient": (8, 1, 160, 2592)}
    # routing: sums (1 x 2592 by 2592 x 16 per class) and updates (2592 x 16 by 16 x 1 per class).
    assert _dims(workload, "routing3")["forward"] == (1, 2592, 16, 10)
    assert _dims(workload, "routing4")["forward"] == (2592, 16, 1, 10)
    inference = capsule_workload(Network.preset("capsnet"), "inference")
    # three sums, each with a softmax over 2592 x 10 logits and a squash of 10 x 16 outputs.
    assert inference.vector_elements == 3 * (2592 * 10 + 160)
    assert workload.vector_elements == 2 * inference.vector_elements


def test_rescaled_deepcaps():
    genotype = PRESETS["deepcaps"]
    assert rescaled_genotype(genotype, 64, 3) == [list(d) for d in genotype]
    mnist = rescaled_genotype(genotype, 28, 1)
    assert [d[1] for d in mnist[:-2]] == [28, 28, 14, 7, 4, 2]
    assert [d[6] for d in mnist[:-2]] == [28, 14, 7, 4, 2, 1]
    assert mnist[0][2] == 1 and mnist[-3][4] == 2
    network = preset_network("deepcaps", 28, 1)
    assert network.name == "deepcaps-28x28x1"
    first = network.operations[0]
    assert (first.n_in, first.ch_in, first.n_out) == (28, 1, 28)
