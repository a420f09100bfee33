"""The calibrated model's total cycles and program bytes (`capsacc.programs.operation_cost`: data
movement and port stalls included, overlay programs' words, no simulation) against the RTL run with the
off-chip memory (Amaranth, every buffer row moved by the DMA): equal on operations of every kind that no
other test uses (a routing whose logits are recomputed too), on a 4x4 array with 32-row buffers, a
32-word program memory, a batch of 2 and a narrow, slow port."""

import numpy as np
import pytest

from capsacc.array import ArrayConfig, buffer_depths
from capsacc.mapping import ROUTING_PHASES, classcaps_dims, routing_geometry
from capsacc.network import Operation
from capsacc.programs import RoutingPlan, ScheduledCost, operation_cost
from sim.driver import OperationDriver

CONFIG = ArrayConfig(4, 4, 25, **buffer_depths(32), program_depth=32, batch=2, offchip_bytes_per_cycle=2,
                     offchip_latency_cycles=9)

HELD_OUT = {
    "conv": Operation("c", "conv", 5, 2, 1, 3, 2, 3, 6, 1),
    "convcaps": Operation("p", "convcaps", 4, 1, 3, 2, 1, 4, 2, 6),  # capsules of 6 atoms over 2 blocks
    "convcaps3d": Operation("v", "convcaps3d", 2, 2, 3, 3, 1, 2, 2, 2),
    "classcaps": Operation("k", "classcaps", 2, 2, 3, 2, 1, 1, 3, 3),
    "capsadd": Operation("a", "convcaps", 2, 3, 2, 3, 1, 2, 3, 2),
    "route3d": Operation("r", "convcaps3d", 2, 3, 2, 3, 1, 2, 2, 3),
    "squash": Operation("s", "squash", 7, 1, 6, 1, 1, 1, 1, 1),
    "routing_uniform": Operation("u", "routing", 2, 2, 1, 2, 1, 1, 4, 5),  # capsules of 5 atoms over 2 rows
    "routing_softmax": Operation("m", "routing", 2, 2, 1, 2, 1, 1, 3, 4),
    "routing_update": Operation("d", "routing", 2, 3, 1, 2, 1, 1, 3, 4),
    "routing_first_update": Operation("f", "routing", 2, 3, 1, 2, 1, 1, 3, 4),
    "routing": Operation("w", "routing", 2, 1, 1, 2, 1, 1, 2, 3),
    "routing_softmax recomputed": Operation("n", "routing", 4, 2, 1, 4, 1, 1, 2, 3),  # 32 inputs: logits recomputed
}


@pytest.mark.parametrize("name", HELD_OUT)
def test_model_total_cycles_equal_the_rtl_with_the_dma(name, record_property):
    kind, op = name.split()[0], HELD_OUT[name]
    if name.endswith("recomputed"):
        assert not routing_geometry(classcaps_dims(op)[0], op.ch_out, op.caps_out, CONFIG)["resident"]
    run = OperationDriver(CONFIG, "amaranth", offchip=True).run(kind, op, seed=11)
    for output, want in run.golden.items():
        assert np.array_equal(run.outputs[output], want), output
    assert run.total_cycles > run.cycles  # the data movement costs cycles the compute alone does not
    assert operation_cost(kind, op, CONFIG) == ScheduledCost(run.total_cycles, run.program_bytes)
    record_property("total_cycles", run.total_cycles)
    record_property("program_bytes", run.program_bytes)
    if kind in ("conv", "convcaps", "convcaps3d", "classcaps") or name in ROUTING_PHASES:
        n_in, _, n_out, dim = classcaps_dims(op)
        assert kind not in ROUTING_PHASES or RoutingPlan(n_in, n_out, dim, CONFIG, images=CONFIG.batch).side_by_side
        assert run.runs == 1  # the batch's whole operation: one program, started once
