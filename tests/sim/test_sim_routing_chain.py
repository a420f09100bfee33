"""A ClassCaps's routing as a chained network runs it (`OperationDriver.run_routing`): its phases in one
session, the partial-sum state kept on chip from phase to phase. On a 4x4 array with 32-row buffers
and the off-chip memory (Amaranth, every buffer row moved by the DMA), batch of 2, for a routing whose
images' states lie side by side, one whose do not (image after image) and one whose logits are
recomputed: every phase bit-exact, each phase's cycles and total_cycles those of the lone phase (the
calibrated model's), the last capsules those of `sim.golden.routing`, and no partial sums written by
the host: the first update writes the logits. Image after image, the second image's first update
finds the first image's last logits in those rows, so it fails unless it writes over them."""

import dataclasses

import numpy as np
import pytest

from capsacc.array import ArrayConfig, buffer_depths
from capsacc.mapping import classcaps_dims, routing_phases
from capsacc.network import Operation
from capsacc.programs import RoutingPlan, chained_routing_session, operation_total_cycles
from sim import golden
from sim.driver import OperationDriver

CONFIG = ArrayConfig(4, 4, 25, **buffer_depths(32), program_depth=32, batch=2, offchip_bytes_per_cycle=2,
                     offchip_latency_cycles=9)
SHIFT_LOGITS, SHIFT_SUM = 3, 2

ROUTINGS = {  # Operation("x", "routing", n_in, ch_in, 1, n_in, 1, 1, J, D): I = n_in² ch_in inputs
    "side by side": Operation("u", "routing", 2, 2, 1, 2, 1, 1, 4, 5),  # 8 inputs, 16 state rows an image
    "image after image": Operation("x", "routing", 2, 4, 1, 2, 1, 1, 3, 4),  # 16 inputs, 19 rows an image
    "recomputed": Operation("n", "routing", 4, 2, 1, 4, 1, 1, 2, 3),  # 32 inputs: the logits do not fit
}


@pytest.mark.parametrize("name", ROUTINGS)
def test_a_chained_routing_keeps_its_state_on_chip_and_costs_its_lone_phases(name):
    op = ROUTINGS[name]
    n_in, _, n_out, dim = classcaps_dims(op)
    plan = RoutingPlan(n_in, n_out, dim, CONFIG, images=CONFIG.batch)
    assert (plan.side_by_side, plan.geometry["resident"]) == {"side by side": (True, True),
                                                              "image after image": (False, True),
                                                              "recomputed": (False, False)}[name]
    u_hat = np.random.default_rng(5).integers(-128, 128, size=(CONFIG.batch, n_in, n_out, dim))
    driver = OperationDriver(CONFIG, "amaranth", offchip=True)
    kinds = routing_phases()
    ops = [dataclasses.replace(op, name=f"routing{position}") for position in range(len(kinds))]
    runs = driver.run_routing(ops, seed=3, inputs={"u_hat": u_hat, "shift_logits": SHIFT_LOGITS,
                                                   "shift_sum": SHIFT_SUM})
    assert [(run.kind, run.op) for run in runs] == list(zip(kinds, ops))
    for kind, run in zip(kinds, runs):
        for output, want in run.golden.items():
            assert np.array_equal(run.outputs[output], want), (kind, output)
        assert run.total_cycles == operation_total_cycles(kind, op, CONFIG), kind
        lone = driver.prepare(kind, op)[0]  # the lone phase's session, not simulated
        assert run.cycles == lone.compute_cycles, kind
        assert not [stream for stream in run.streams if stream.psum_writes], kind
    for image in range(CONFIG.batch):
        v = golden.routing(u_hat[image], len(kinds) // 2 + 1, SHIFT_LOGITS, SHIFT_SUM, CONFIG.acc_bits)[2]
        assert np.array_equal(runs[-1].outputs["v"][image], v)
    order = [position for position, _ in chained_routing_session(op, CONFIG, shift_logits=SHIFT_LOGITS,
                                                                  shift_sum=SHIFT_SUM)]
    phases = list(range(len(kinds)))
    assert order == (phases if plan.side_by_side else phases * CONFIG.batch)
