"""Random small genotypes run end to end on a 4x4 RTL array (Amaranth), chained and bit-exact."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from capsacc.array import ArrayConfig, buffer_depths
from capsacc.mapping import plan_counts
from capsacc.network import Network
from genotype_strategies import small_genotypes
from sim.driver import OperationDriver
from sim.network_run import run_network

CONFIG = ArrayConfig(4, 4, 34, **buffer_depths(512), program_depth=64)
"""4x4 with 512-row buffers: routings over more inputs than the partial sums hold logits for
recompute them, classes and atoms beyond 4 use class and atom tiles."""


@pytest.mark.slow
@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(genotype=small_genotypes())
def test_random_small_genotypes_run_bit_exact_on_4x4(genotype):
    """(About 20 s per network, loaded.) Every operation of a random small Sabour-style network
    (CapsCell networks are left out: a cell is several times the operations, too long for this
    test) maps, runs chained on the RTL,
    equals the golden model (the driver raises otherwise; checked again here) and costs what the
    closed-form counts say."""
    network = Network.from_genotype(genotype)
    side = genotype[0][1]
    images = np.random.default_rng(len(network.operations)).integers(0, 128, size=(1, side, side, 1))
    result = run_network(network, OperationDriver(CONFIG, "amaranth"), images)
    assert [run.op for run in result.runs] == list(network.operations)
    for run in result.runs:
        for name, want in run.golden.items():
            assert np.array_equal(run.outputs[name], want), (run.kind, name)
        assert run.counts == plan_counts(run.kind, run.op, CONFIG)
    assert result.output.shape == (1, genotype[-3][7], genotype[-3][8])
