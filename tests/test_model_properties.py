"""Property tests of the cost model on random well-formed genotypes."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from capsacc import Accelerator, GenotypeBatch, Network, OperationBatch, estimate, estimate_many
from genotype_strategies import cost_genotypes

PUBLISHED = Accelerator.published()


@settings(max_examples=60, deadline=None)
@given(st.lists(cost_genotypes(), min_size=1, max_size=8))
def test_batch_is_bit_identical_to_single(genotypes):
    networks = [Network.from_genotype(g) for g in genotypes]
    singles = [estimate(n, PUBLISHED) for n in networks]
    descriptors = np.array([d for g in genotypes for d in g[:-2]])
    offsets = np.cumsum([0] + [len(g) - 2 for g in genotypes])
    genotype_batch = GenotypeBatch(descriptors, offsets)
    for batch in (OperationBatch.from_networks(networks), genotype_batch, genotype_batch.expand()):
        many = estimate_many(batch, PUBLISHED)
        assert many.cycles.tolist() == [s.cycles for s in singles]
        assert many.energy_mJ.tolist() == [s.energy_mJ for s in singles]
        assert many.latency_ms.tolist() == [s.latency_ms for s in singles]
        assert many.weights.tolist() == [s.weights for s in singles]
        assert many.memory_KiB.tolist() == [s.memory_KiB for s in singles]


@settings(max_examples=60, deadline=None)
@given(cost_genotypes(), st.data())
def test_cost_is_monotone_in_output_channels(genotype, data):
    index = data.draw(st.integers(0, len(genotype) - 3))
    wider = [list(d) for d in genotype]
    wider[index][7] += data.draw(st.integers(1, 32))
    if index + 1 < len(genotype) - 2:
        wider[index + 1][2] = wider[index][7]
    before = estimate(Network.from_genotype(genotype), PUBLISHED)
    after = estimate(Network.from_genotype(wider), PUBLISHED)
    assert after.weights > before.weights
    assert after.cycles >= before.cycles
    assert after.energy_mJ >= before.energy_mJ
    assert after.latency_ms >= before.latency_ms


@settings(max_examples=60, deadline=None)
@given(cost_genotypes())
def test_memory_is_the_sum_of_weights(genotype):
    network = Network.from_genotype(genotype)
    result = estimate(network, PUBLISHED)
    assert result.weights == sum(op.weights for op in network.operations)
    assert result.memory_KiB * 1024 == result.weights
    assert result.cycles == sum(op.cycles for op in result.operations)
    assert result.energy_mJ > 0 and result.latency_ms > 0
