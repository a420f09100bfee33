"""A ConvCaps3D's routing ("route3d") in the chained run: a dynamic routing of `ROUTINGS` iterations
over the ch_in input capsule types at each of the n_out² positions, as nas.layers.ConvCaps3D routes
(the first coupling uniform, then softmax over the output types), and priced as the B·n_out²
routings the RTL runs one after the other. Golden level and closed form only (no simulation)."""

import dataclasses

import numpy as np
import pytest

from capsacc.array import ArrayConfig, buffer_depths
from capsacc.mapping import ROUTINGS, chain, plan_counts, plan_transfers, route3d_routing
from capsacc.network import Network, Operation
from sim import golden
from sim.deploy import _route3d_step, routing_shift

CONFIG = ArrayConfig(4, 4, 25, **buffer_depths(64), program_depth=32, batch=2)
VOTES_OP = Operation("convcaps3d16", "convcaps3d", 3, 5, 2, 3, 1, 3, 6, 3)
"""A ConvCaps3D with 5 input capsule types and 6 output types of 3 atoms (J > C = 4) on 3x3 positions."""


def dynamic_routing(u_hat: np.ndarray, routings: int, shift_logits: int, shift_sum: int, acc_bits: int) -> np.ndarray:
    """Reference of one position's routing, written out: u_hat (I, J, D) int8 -> v (J, D) int8. The first
    coupling is round-half-up(128 / J) in Q0.7 for every (i, j); each iteration sums s_j = sum_i c_ij
    u_hat_ij (wrapped), squashes it, and but the last adds the agreement u_hat_ij . v_j to the logits
    b_ij, whose softmax over j is the next coupling."""
    inputs, outputs, _ = u_hat.shape
    coupling = np.full((inputs, outputs), min(127, (256 + outputs) // (2 * outputs)), dtype=np.int64)
    logits = np.zeros((inputs, outputs), dtype=np.int64)
    for iteration in range(routings):
        if iteration:
            agreement = np.array([[int(u_hat[i, j] @ v[j]) for j in range(outputs)] for i in range(inputs)])
            logits = golden.wrap(logits + golden.wrap(agreement, acc_bits), acc_bits)
            coupling = golden.activate(logits, shift_logits, "softmax")
        sums = golden.wrap(sum(coupling[i][:, None] * u_hat[i] for i in range(inputs)), acc_bits)
        v = golden.activate(sums, shift_sum, "squash")
    return v


def test_route3d_routes_every_position_as_the_reference_does():
    """The deployed golden forward of a ConvCaps3D's routing (`sim.deploy._route3d_step`, the RTL's
    route3d) equals the reference routing at each image's each position, and three iterations differ
    from one (the softmax couplings act)."""
    rng = np.random.default_rng(4)
    batch, op = 2, VOTES_OP
    votes = rng.integers(-128, 128, size=(batch, op.n_out ** 2 * op.ch_in, op.ch_out * op.caps_out))
    deployment = type("Deployment", (), {"elementwise": {}})()
    out, frac_bits = _route3d_step(deployment, "convcaps3d16.route3d", op, (votes, 6))
    shift = deployment.elementwise["convcaps3d16.route3d"]
    assert shift == routing_shift(6, op.ch_in, op.caps_out, ROUTINGS, "votes") == 6 + 3 and frac_bits == 7
    assert out.shape == (batch, op.n_out, op.n_out, op.ch_out * op.caps_out)
    positions = votes.reshape(batch, op.n_out ** 2, op.ch_in, op.ch_out, op.caps_out)
    differs = 0
    for image in range(batch):
        for position in range(op.n_out ** 2):
            u_hat = positions[image, position]
            want = dynamic_routing(u_hat, ROUTINGS, shift, shift, golden.ACC_BITS)
            got = out[image].reshape(op.n_out ** 2, op.ch_out, op.caps_out)[position]
            assert np.array_equal(got, want), (image, position)
            differs += not np.array_equal(want, dynamic_routing(u_hat, 1, shift, shift, golden.ACC_BITS))
    assert differs > 0


@pytest.mark.parametrize("batch", [1, 3])
def test_route3d_is_priced_as_its_routings_one_after_the_other(batch):
    """route3d's counts and rows moved are those of B·n_out² whole routings over I = ch_in, J = ch_out,
    D = caps_out (`route3d_routing`), and the chain runs it on the votes with the layer's shape."""
    config = dataclasses.replace(CONFIG, batch=batch)
    routing, routings = route3d_routing(VOTES_OP, config)
    assert routings == batch * VOTES_OP.n_out ** 2
    one = dataclasses.replace(config, batch=1)
    alone = plan_counts("routing", routing, one)
    assert plan_counts("route3d", VOTES_OP, config) == {name: routings * value for name, value in alone.items()}
    moved = plan_transfers("routing", routing, one)
    del moved["offchip_bytes"]
    got = plan_transfers("route3d", VOTES_OP, config)
    del got["offchip_bytes"]
    assert got == {name: routings * value for name, value in moved.items()} and alone["acts_column"] > 0


def test_the_chain_routes_the_last_cells_votes():
    """DeepCaps' ConvCaps3D skip: its votes step, then route3d on the same shape (32 input and output
    types of 8 atoms at 4x4 positions), whose counts are 16 routings of 3 iterations per image."""
    network = Network.preset("deepcaps")
    steps = chain(network.operations)
    votes = next(i for i, step in enumerate(steps) if step.kind == "convcaps3d")
    route = steps[votes + 1]
    assert route.kind == "route3d" and route.inputs == (votes,)
    op = route.op
    routing, routings = route3d_routing(op, ArrayConfig(16, 16, 34))
    assert (routing.n_in ** 2 * routing.ch_in, routing.ch_out, routing.caps_out) == (32, 32, 8) and routings == 16
    counts = plan_counts("route3d", op, ArrayConfig(16, 16, 34))
    assert counts["acts_column"] == 16 * (3 * 2 + 2 * 2)  # per routing: 3 squash x 2 class tiles, 2 softmax x 2 chunks
