"""Every operation of the search spaces maps: 500 seeded random genotypes of `nascaps search --space
quick` and of `--space paper` on the calibrated 16x16 CapsAcc (`capsacc.mapping.plan_counts` for every
operation kind), and on narrow arrays down to 1x1 with the default buffers and program memory, where the
widest layers run over column groups."""

from collections import Counter

import numpy as np
import pytest

from capsacc.array import ArrayConfig
from capsacc.calibrated import Calibration
from capsacc.mapping import (MappingError, classcaps_dims, classcaps_per_run, matmul_chunk_rows, matmul_chunking,
                             matmul_shape, operation_kinds, plan_counts, routing_geometry)
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


@pytest.mark.parametrize("rows, cols", [(4, 4), (2, 2), (1, 3)])
def test_every_paper_operation_maps_on_narrow_arrays_through_column_groups(rows, cols):
    """On narrow arrays the widest layers of the paper space have more column blocks (conv kinds) or
    K chunks x column tiles (ClassCaps) than a program of 1,023 MATMULs holds: they run over column
    groups (`matmul_chunking`, `classcaps_per_run`) instead of being refused (140 operations of these
    500 genotypes were refused on 4x4 before)."""
    config = ArrayConfig(rows, cols, 25)
    space = load_space("paper")
    rng = np.random.default_rng(0)
    refused, grouped = [], Counter()
    for _ in range(500):
        operations = random_genotype(space, rng).to_network().operations
        for op, kind in zip(operations, operation_kinds(operations)):
            try:
                plan_counts(kind, op, config)
            except MappingError as error:
                refused.append(f"{kind} {op}: {error}")
                continue
            if kind in ("conv", "convcaps", "convcaps3d"):
                shape = matmul_shape(kind, op, config)
                grouped[kind] += matmul_chunking(shape, config, matmul_chunk_rows(shape, config))[1] < shape.blocks
            elif kind == "classcaps":
                _, d_in, n_out, dim = classcaps_dims(op)
                grouped[kind] += classcaps_per_run(d_in, n_out * dim, config)[1] < -(-n_out * dim // cols)
    assert not refused, f"{len(refused)} refused on {rows}x{cols}, first: {refused[0]}"
    assert grouped["classcaps"] > 0 and grouped["convcaps"] + grouped["convcaps3d"] > 0, dict(grouped)
