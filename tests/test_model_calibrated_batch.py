"""The calibrated model's batch kernel (`estimate_many` on a `GenotypeBatch`) against `estimate`: the
same totals, bit for bit, for genotypes of the search's operators on several arrays and batches;
refusals located as `estimate` locates them."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsacc import Accelerator, GenotypeBatch, Network, estimate, estimate_many
from capsacc.calibrated import Calibration
from capsacc.mapping import MappingError
from genotype_strategies import search_genotypes

ARRAYS = [(16, 16), (8, 12), (12, 8)]
"""The arrays of the shipped calibration's sweep (docs/calibration.md)."""


def accelerator(rows: int, cols: int, batch: int) -> Accelerator:
    """The shipped calibration on R x C (its features scale with R and C) with batches of `batch` images."""
    import dataclasses
    calibration = Calibration.shipped()
    calibration = dataclasses.replace(calibration, config=dataclasses.replace(calibration.config, rows=rows,
                                                                              cols=cols, batch=batch))
    base = Accelerator.calibrated()
    return dataclasses.replace(base, rows=rows, cols=cols, calibration=calibration)


def flatten(genotypes: list[list]) -> GenotypeBatch:
    layers = [genotype[:-2] for genotype in genotypes]
    offsets = np.cumsum([0] + [len(descriptors) for descriptors in layers])
    return GenotypeBatch(np.array([d for descriptors in layers for d in descriptors], np.int64), offsets)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(search_genotypes(), min_size=1, max_size=12), st.sampled_from(ARRAYS), st.sampled_from((1, 3, 8)))
def test_batch_totals_equal_estimate_bit_for_bit(genotypes, array, batch):
    acc = accelerator(*array, batch)
    many = estimate_many(flatten(genotypes), acc)
    single = [estimate(Network.from_genotype(genotype), acc) for genotype in genotypes]
    assert many.cycles.tolist() == [e.cycles for e in single]
    assert many.energy_mJ.tolist() == [e.energy_mJ for e in single]
    assert many.latency_ms.tolist() == [e.latency_ms for e in single]
    assert many.weights.tolist() == [e.weights for e in single]
    assert many.memory_KiB.tolist() == [e.memory_KiB for e in single]
    assert all(e.cycles > 0 and e.energy_mJ > 0 for e in single)


def test_a_refused_genotype_is_named_with_the_located_error_of_estimate():
    wide = [[0, 28, 1, 1, 9, 1, 28, 65536, 1], [1, 28, 65536, 1, 9, 2, 14, 32, 8],
            [1, 14, 32, 8, 14, 1, 1, 10, 16], [-1], [1]]
    capsnet = [[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 9, 2, 14, 32, 8], [1, 14, 32, 8, 14, 1, 1, 10, 16],
               [-1], [1]]
    acc = Accelerator.calibrated()
    with pytest.raises(MappingError) as scalar:
        estimate(Network.from_genotype(wide), acc)
    with pytest.raises(MappingError) as batch:
        estimate_many(flatten([capsnet, wide]), acc)
    assert str(batch.value) == f"genotype 1: {scalar.value}"
    assert str(scalar.value).startswith("operation conv0 (conv) on the calibrated 16x16 array: 4096 column blocks")


def test_memo_keys_are_distinct_and_a_step_beyond_the_bounds_skips_the_memo():
    """`_memo_key` packs a step's kind and shape fields (all but the stride) without collisions up to the
    bounds of the genotype rules (`capsacc.network.FIELD_LIMITS`), and gives a step with a field that
    does not fit its bits no key: it is costed without the memo."""
    from capsacc.calibrated import _memo_key
    base = np.array([0, 3, 4096, 65536, 4096, 4096, 7, 4096, 65536, 4096, 1, 0, -1], np.int64)
    keys = {_memo_key(base)}
    for field in (1, 2, 3, 4, 5, 7, 8, 9):
        for value in (1, 2):
            step = base.copy()
            step[field] = value
            keys.add(_memo_key(step))
    assert len(keys) == 1 + 8 * 2 and min(min(key) for key in keys) >= 0
    stride = base.copy()
    stride[6] = 1
    assert _memo_key(stride) == _memo_key(base)
    for field, value in ((2, 1 << 13), (3, 1 << 17), (9, -1)):
        step = base.copy()
        step[field] = value
        assert _memo_key(step) == (-1, -1)
