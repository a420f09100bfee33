"""Every operation of the search spaces maps: 500 seeded random genotypes of `nascaps search --space
quick` and of `--space paper` on the calibrated 16x16 CapsAcc (`capsacc.mapping.plan_counts` for every
operation kind)."""

from collections import Counter

import numpy as np
import pytest

from capsacc.calibrated import Calibration
from capsacc.mapping import MappingError, classcaps_dims, operation_kinds, plan_counts, routing_geometry
from nas.cli import load_space
from nas.operators import random_genotype


@pytest.mark.parametrize("name", ["quick", "paper"])
def test_every_operation_of_500_space_genotypes_maps_on_the_calibrated_array(name):
    config = Calibration.shipped().config
    space = load_space(name)
    rng = np.random.default_rng(0)
    checked, refused, first_refusal = Counter(), Counter(), {}
    recomputed = 0
    for _ in range(500):
        operations = random_genotype(space, rng).to_network().operations
        for op, kind in zip(operations, operation_kinds(operations)):
            checked[kind] += 1
            try:
                plan_counts(kind, op, config)
            except MappingError as error:
                refused[kind] += 1
                first_refusal.setdefault(kind, f"{op.name} {op}: {error}")
                continue
            if kind == "routing_update":
                n_in, _, n_out, dim = classcaps_dims(op)
                recomputed += not routing_geometry(n_in, n_out, dim, config)["resident"]
    assert not refused, (f"{sum(refused.values())} of {sum(checked.values())} operations refused on "
                         f"{config.rows}x{config.cols}, by kind: {dict(refused)}; first of each: {first_refusal}")
    assert {"conv", "convcaps", "classcaps", "routing_uniform", "routing_update", "routing_softmax"} <= set(checked)
    assert recomputed > 0 or name == "quick"  # some paper class layers have more inputs than the partial sums hold logits for
