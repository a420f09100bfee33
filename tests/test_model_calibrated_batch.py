"""The calibrated model's batch kernel (`estimate_many` on a `GenotypeBatch`) against `estimate`: the
same totals, bit for bit, for genotypes of the search's operators on several arrays and batches;
refusals located as `estimate` locates them."""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsacc import Accelerator, GenotypeBatch, Network, estimate, estimate_many
from capsacc.calibrated import BATCH_MEMO, DEFAULT_BATCH, Calibration, StepMemo, _memo_fits, energy_share, image_energy
from capsacc.errors import AcceleratorConfigError
from capsacc.mapping import MappingError, step_shape
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
@given(st.lists(search_genotypes(), min_size=1, max_size=12), st.sampled_from(ARRAYS), st.sampled_from((1, 3, 8)),
       st.sampled_from((1, 4, 16, 64)), st.sampled_from((0.0, 7.3, 162.5)))
def test_batch_totals_equal_estimate_bit_for_bit(genotypes, array, batch, bytes_per_cycle, offchip_pJ_per_byte):
    """Equal totals, the energy with the data movement through any port among them, and no genotype of the
    search refused on any array of the sweep (issue 16 item 2)."""
    import dataclasses
    acc = dataclasses.replace(accelerator(*array, batch), offchip_bytes_per_cycle=bytes_per_cycle,
                              offchip_pJ_per_byte=offchip_pJ_per_byte)
    single = [estimate(Network.from_genotype(genotype), acc) for genotype in genotypes]
    many = estimate_many(flatten(genotypes), acc)
    assert many.cycles.tolist() == [e.cycles for e in single]
    assert many.energy_mJ.tolist() == [e.energy_mJ for e in single]
    assert many.total_energy_mJ.tolist() == [e.total_energy_mJ for e in single]
    assert all(e.total_energy_mJ >= e.energy_mJ for e in single)
    assert offchip_pJ_per_byte == 0.0 or all(e.total_energy_mJ > e.energy_mJ for e in single)
    assert many.latency_ms.tolist() == [e.latency_ms for e in single]
    assert many.weights.tolist() == [e.weights for e in single]
    assert many.memory_KiB.tolist() == [e.memory_KiB for e in single]
    assert all(e.cycles > 0 and e.energy_mJ > 0 for e in single)


SPACE_GENOTYPES = 1500
"""Genotypes drawn per space by `test_every_genotype_of_the_search_spaces_costs_on_every_array`."""


@pytest.mark.parametrize("array", ARRAYS)
@pytest.mark.parametrize("space_name", ["quick", "paper"])
def test_every_genotype_of_the_search_spaces_costs_on_every_array(space_name, array):
    """`SPACE_GENOTYPES` seeded genotypes of the search's sampler (`nas.operators.random_genotype`) in each
    space cost on each array of the sweep with batches of `DEFAULT_BATCH` images: no `MappingError`
    (before issue 16, 24 of 3,000 paper genotypes were refused on 12x8 and 2 on 8x12: a wide layer's
    MATMULs and ACTs did not fit one program), every cost positive."""
    from nas.cli import load_space
    from nas.operators import random_genotype
    space = load_space(space_name)
    rng = np.random.default_rng(16)
    genotypes = [random_genotype(space, rng).to_list() for _ in range(SPACE_GENOTYPES)]
    costs = estimate_many(flatten(genotypes), accelerator(*array, DEFAULT_BATCH))
    assert len(costs.cycles) == SPACE_GENOTYPES
    assert np.all(costs.cycles > 0) and np.all(costs.energy_mJ > 0)


def test_a_refused_genotype_is_named_with_the_located_error_of_estimate():
    wide = [[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 9, 2, 14, 32, 65],  # capsules of 65 atoms
            [1, 14, 32, 65, 14, 1, 1, 10, 16], [-1], [1]]
    capsnet = [[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 9, 2, 14, 32, 8], [1, 14, 32, 8, 14, 1, 1, 10, 16],
               [-1], [1]]
    acc = Accelerator.calibrated()
    with pytest.raises(MappingError) as scalar:
        estimate(Network.from_genotype(wide), acc)
    with pytest.raises(MappingError) as batch:
        estimate_many(flatten([capsnet, wide]), acc)
    assert str(batch.value) == f"genotype 1: {scalar.value}"
    assert str(scalar.value) == ("operation convcaps1 (convcaps) on the calibrated 16x16 array: capsules of 65 atoms: "
                                 "the activation unit takes 1..64")


def test_memo_keys_are_distinct_and_a_step_beyond_the_bounds_skips_the_memo():
    """`_memo_key` packs a step's kind and shape (`step_shape`) without collisions, gives steps of the same
    shape the same key (the stride and the fields the shape does not read do not count), and gives a step
    whose shape does not fit the key's bits no key: it is costed without the memo."""
    from capsacc.calibrated import KEY_BITS, _memo_key
    from capsacc.mapping import STEP_KINDS
    base = np.array([0, 0, 14, 32, 8, 3, 1, 14, 16, 8, 1, 0, -1], np.int64)
    keys = {}
    for kind in range(len(STEP_KINDS)):
        for field in (2, 3, 4, 5, 7, 8, 9):
            for value in (1, 2, 5):
                step = base.copy()
                step[1], step[field] = kind, value
                shape = (kind,) + step_shape(*step[[1, 2, 3, 4, 5, 7, 8, 9]])
                keys.setdefault(_memo_key(step), set()).add(shape)
    assert all(len(shapes) == 1 for shapes in keys.values())
    assert len(keys) > 3 * len(STEP_KINDS) and min(min(key) for key in keys) >= 0
    stride = base.copy()
    stride[6] = 2
    assert _memo_key(stride) == _memo_key(base)
    twin = base.copy()  # a convolution of the same matrix shape: K = 3·3·32·8 + 1 either way
    twin[[2, 3, 4, 5]] = (9, 256, 9, 1)
    assert _memo_key(twin) == _memo_key(base)
    for kind, field, value in ((0, 7, 1 << 14), (1, 3, 1 << 28), (0, 8, 1 << 30), (3, 2, 1 << 12), (1, 9, -1)):
        step = base.copy()
        step[1], step[field] = kind, value
        shape = step_shape(*step[[1, 2, 3, 4, 5, 7, 8, 9]])
        assert any(x < 0 or x >> bits for x, bits in zip(shape, KEY_BITS))
        assert _memo_key(step) == (-1, -1)


STEP_SHAPE_FIELDS = st.tuples(st.integers(1, 64), st.integers(1, 64), st.integers(1, 64), st.integers(1, 9),
                              st.integers(1, 64), st.integers(1, 64), st.integers(1, 64))


def twin_fields(kind: int, fields: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
    """Other shape fields (n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out) of a `kind` step with the
    same `step_shape`: those the shape does not read redrawn, and products split otherwise (K of a
    convolution as kernel 1 and ch_in = K - 1, I of a routing as n_in 1 and ch_in = I, ...)."""
    from capsacc.mapping import (CAPSADD, CLASSCAPS, CONV, CONVCAPS, CONVCAPS3D, ROUTE3D, ROUTING, ROUTING_FIRST_UPDATE,
                                 ROUTING_SOFTMAX, ROUTING_UNIFORM, ROUTING_UPDATE, TOCAPS)
    n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out = fields
    other = int(rng.integers(1, 65))
    if kind in (CONV, CONVCAPS):
        big_k = kernel * kernel * ch_in * caps_in
        return other, big_k, 1, 1, n_out, ch_out * caps_out // caps_out if kind == CONVCAPS else ch_out * caps_out, \
            caps_out if kind == CONVCAPS else 1
    if kind == CONVCAPS3D:
        return other, ch_in, kernel ** 3 * caps_in, 1, n_out, ch_out * caps_out, 1
    if kind == CLASSCAPS:
        return 1, n_in * n_in * ch_in, caps_in, other, 1, ch_out * caps_out, 1
    if kind in (ROUTING, ROUTING_UNIFORM, ROUTING_SOFTMAX, ROUTING_UPDATE, ROUTING_FIRST_UPDATE):
        return 1, n_in * n_in * ch_in, other, other, other, ch_out, caps_out
    if kind == TOCAPS:
        return n_in, ch_in, caps_in, other, other, other, other
    if kind == CAPSADD:
        return other, other, other, other, n_out, ch_out * caps_out, 1
    if kind == ROUTE3D:
        return other, ch_in, other, other, n_out, ch_out, caps_out
    return n_in, other, caps_in, other, other, other, other


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 14), STEP_SHAPE_FIELDS, st.sampled_from(ARRAYS), st.sampled_from((1, 3, 8)),
       st.integers(0, 2 ** 32 - 1))
def test_steps_of_the_same_shape_count_alike(kind, fields, array, batch, seed):
    """`count_step` depends on a step's kind and `step_shape` alone (the memo's key): a step and a twin of
    the same shape but other fields (`twin_fields`) give the same counts, rows moved and refusal."""
    from capsacc.mapping import (COUNT_FIELDS, REFUSAL_ARGS, ROUTING_FIRST_UPDATE, ROUTING_UPDATE, ROUTINGS,
                                 TRANSFER_FIELDS, count_step)
    twin = twin_fields(kind, fields, np.random.default_rng(seed))
    assert step_shape(kind, *twin) == step_shape(kind, *fields)
    results = []
    for shape in (fields, twin):
        counts, moved = np.zeros(len(COUNT_FIELDS), np.int64), np.zeros(len(TRANSFER_FIELDS), np.int64)
        args = np.zeros(REFUSAL_ARGS, np.int64)
        refusal = count_step(kind, *shape, *array, 512, 256, batch, ROUTINGS, counts, moved, args)
        results.append((refusal, counts.tolist(), moved.tolist(), args.tolist() if refusal else []))
    assert results[0] == results[1]
    assert results[0][0] or results[0][1][0] > 0 or kind in (ROUTING_UPDATE, ROUTING_FIRST_UPDATE)  # recomputed logits


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(search_genotypes(), min_size=1, max_size=8), min_size=2, max_size=4),
       st.sampled_from(ARRAYS), st.sampled_from((1, 8)), st.booleans())
def test_a_step_memo_kept_across_calls_gives_the_totals_of_a_fresh_one(calls, array, batch, vector_steps):
    """A `StepMemo` kept across `estimate_many` calls (as a search keeps one across generations), small
    enough to grow and to start again, gives every call the totals of a fresh memo (`estimate_many` without
    one, which keeps no steps of `VECTOR_KINDS`), bit for bit, whether it keeps those steps or not."""
    acc = accelerator(*array, batch)
    memo = StepMemo(acc.calibration, most_slots=BATCH_MEMO, vector_steps=vector_steps)
    for genotypes in calls + calls[:1]:
        try:
            fresh = estimate_many(flatten(genotypes), acc)
        except MappingError as refusal:  # a step that does not fit this array: the same error with the memo
            with pytest.raises(MappingError, match=re.escape(str(refusal))):
                estimate_many(flatten(genotypes), acc, memo=memo)
            continue
        kept = estimate_many(flatten(genotypes), acc, memo=memo)
        assert kept.cycles.tolist() == fresh.cycles.tolist()
        assert kept.energy_mJ.tolist() == fresh.energy_mJ.tolist()
        assert kept.weights.tolist() == fresh.weights.tolist()
    assert _memo_fits(len(memo), memo.slots) and memo.slots == BATCH_MEMO


def test_a_step_memo_grows_and_serves_only_its_calibration():
    """A `StepMemo` grows its table to hold more steps than its first one can, keeps the steps of earlier
    calls (a second call costs none anew: its size does not change), and refuses another calibration, the
    published model and a list of networks."""
    genotypes = [[[0, 28, 1, 1, 9, 1, 28, channels, 1], [1, 28, channels, 1, 9, 2, 14, 32, 8],
                  [1, 14, 32, 8, 14, 1, 1, 10, 16], [-1], [1]] for channels in range(1, 2400)]
    acc = Accelerator.calibrated()
    memo = StepMemo(acc.calibration)
    first = estimate_many(flatten(genotypes), acc, memo=memo)
    held, slots = len(memo), memo.slots
    again = estimate_many(flatten(genotypes), acc, memo=memo)
    assert again.cycles.tolist() == first.cycles.tolist() and len(memo) == held
    assert slots > BATCH_MEMO and _memo_fits(held, slots) and not _memo_fits(held, BATCH_MEMO)
    for other in (accelerator(16, 16, 3), Accelerator.published()):
        with pytest.raises(AcceleratorConfigError, match="StepMemo"):
            estimate_many(flatten(genotypes[:2]), other, memo=memo)
    with pytest.raises(AcceleratorConfigError, match="StepMemo"):
        estimate_many([Network.from_genotype(genotypes[0])], acc, memo=memo)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False), st.integers(1, 4096))
def test_an_image_share_of_an_energy_is_the_division_by_the_batch_bit_for_bit(batch_energy, batch):
    """`image_energy` multiplies by 2^-k for a batch of 2^k images and divides otherwise: the quotient either way."""
    assert image_energy(batch_energy, batch, energy_share(batch)) == batch_energy / batch
    assert (energy_share(batch) > 0) == (batch & (batch - 1) == 0)


def step_cost(step, calibration, config=None):
    """`_step_cost` of one `STEP_FIELDS` row under `calibration` (its `kernel_arrays`, or `config` in place of their
    array and routing fields): (code, cycles, MATMULs, narrow, wide, energy pJ)."""
    from capsacc.calibrated import _step_cost
    from capsacc.mapping import COUNT_FIELDS, REFUSAL_ARGS, TRANSFER_FIELDS
    kernel_config, coefficients, energies = calibration.kernel_arrays
    config = kernel_config if config is None else config
    return _step_cost(step, config, coefficients, energies, np.empty(len(COUNT_FIELDS), np.int64),
                      np.empty(len(TRANSFER_FIELDS), np.int64), np.zeros(REFUSAL_ARGS, np.int64),
                      np.zeros(3 + REFUSAL_ARGS, np.int64), np.zeros(1))


WIDE_GENOTYPE = [[0, 28, 1, 1, 9, 1, 28, 600, 1], [1, 28, 600, 1, 9, 2, 14, 32, 8], [1, 14, 32, 8, 14, 1, 1, 10, 16],
                 [-1], [1]]
"""A CapsNet-like genotype with 600 channels: its convolution and PrimaryCaps do not pack (10 bits)."""
LARGE_GENOTYPE = [[0, 64, 1, 1, 9, 1, 64, 64, 1], [1, 64, 64, 1, 9, 1, 64, 64, 64], [1, 64, 64, 64, 9, 1, 64, 64, 64],
                  [1, 64, 64, 64, 64, 1, 1, 10, 16], [-1], [1]]
"""A genotype whose second ConvCaps (64² positions, K = 9²·64·64 + 1, M = 64·64) packs but is beyond float64's exact
range on 16x16 (`_float_exact`)."""


def preset_steps(preset):
    """The chained steps (`STEP_FIELDS` rows) of a preset network (or of `WIDE_GENOTYPE`, "wide", or
    `LARGE_GENOTYPE`, "large") and their count."""
    from capsacc.mapping import STEP_FIELDS, chain_steps, _step_kinds
    genotypes = {"wide": WIDE_GENOTYPE, "large": LARGE_GENOTYPE}
    ops = (Network.from_genotype(genotypes[preset]) if preset in genotypes else Network.preset(preset)).rows
    kinds, steps = np.empty(len(ops), np.int64), np.empty((2 * len(ops) + 1, len(STEP_FIELDS)), np.int64)
    _step_kinds(ops, kinds)
    return steps, chain_steps(ops, kinds, steps)


def assert_rows_hold_step_costs(steps, count, slots, table, own, calibration):
    """Every step's row (a slot of the memo `table`, or -1 - row of `own`) holds `_step_cost` of the step."""
    from capsacc.calibrated import ROW_CODE
    for s in range(count):
        code, *cost = step_cost(steps[s], calibration)
        row = table[slots[s]] if slots[s] >= 0 else own[-1 - slots[s]]
        assert code == row[ROW_CODE] == 0
        assert row[2:6].tolist() == cost[:4] and row[6:7].view(np.float64)[0] == cost[4]


@pytest.mark.parametrize("preset", ["capsnet", "deepcaps"])
def test_a_step_of_the_key_of_one_of_the_two_before_it_takes_that_steps_row(preset):
    """`_claim_steps` gives a step whose memo key is that of one of the two steps before it (CapsNet's repeated
    routing phases, DeepCaps' inner ConvCaps) that step's slot with no look-up, claims each other key's slot once
    (code `PENDING`, queued for costing), and `_cost_queue` writes into every claimed row `_step_cost` of its
    step, with the steps of `VECTOR_KINDS` costed in float64 (vectorized) or one by one alike."""
    from capsacc.calibrated import (PENDING, ROW_CODE, VECTOR_KINDS, _claim_steps, _cost_packed, _cost_queue, _memo,
                                    _memo_size, _scratch)
    calibration = Calibration.shipped()
    config, coefficients, energies = calibration.kernel_arrays
    ops = Network.preset(preset).rows
    steps, count = preset_steps(preset)
    tables = []
    for vector in (False, True):
        table, used = _memo(_memo_size(count))
        keys, slots, queue = (np.empty((count, 2), np.int64), np.empty(count, np.int64),
                              np.empty(count, np.int64))
        sums = np.empty(len(ops), np.int64), np.empty(len(ops), np.int64), np.empty(len(ops)), \
            np.empty((len(ops), 3), np.int64)
        queued, own_rows, pending = _claim_steps(steps, 0, count, table, used, keys, slots, queue, 0, 0, sums)
        assert pending and own_rows == 0 and queued == used[0] == len(set(slots.tolist()))
        assert np.all(table[slots, ROW_CODE] == PENDING)
        repeats = [s for s in range(2, count) if tuple(keys[s]) in (tuple(keys[s - 1]), tuple(keys[s - 2]))]
        assert repeats and all(slots[s] in (slots[s - 1], slots[s - 2]) for s in repeats)
        scratch = _scratch(count, len(VECTOR_KINDS))
        _cost_queue(steps, queue, queued, slots, table, np.empty((0, 8), np.int64), config, coefficients, energies,
                    scratch, vector)
        _cost_packed(steps, slots, table, np.empty((0, 8), np.int64), config, coefficients, energies, scratch)
        assert_rows_hold_step_costs(steps, count, slots, table, np.empty((0, 8), np.int64), calibration)
        tables.append(table)
    assert np.array_equal(tables[0], tables[1])


@pytest.mark.parametrize("preset", ["capsnet", "deepcaps", "wide"])
def test_a_memo_without_vector_steps_packs_them_and_claims_only_the_others(preset):
    """`_claim_vector_steps` packs each step of `VECTOR_KINDS` for its kind's float64 loop with a row of its own,
    except a step of the kind and fields of one of the two before it (CapsNet's repeated routing phases, DeepCaps'
    inner ConvCaps), which takes that step's row; it claims the other steps' keys in the memo (the wide genotype's
    steps beyond the packed fields); and the rows `_cost_packed` and `_cost_queue` write hold `_step_cost` of their
    step."""
    from capsacc.calibrated import (PENDING, ROW_CODE, VECTOR_KINDS, _claim_vector_steps, _cost_packed, _cost_queue,
                                    _memo, _memo_size, _scratch)
    calibration = Calibration.shipped()
    config, coefficients, energies = calibration.kernel_arrays
    steps, count = preset_steps(preset)
    table, used = _memo(_memo_size(count))
    keys, slots, queue = np.empty((count, 2), np.int64), np.empty(count, np.int64), np.empty(count, np.int64)
    scratch = _scratch(count, len(VECTOR_KINDS))
    queued = _claim_vector_steps(steps, 0, count, table, used, keys, slots, queue, 0, scratch[5:8])
    vector = [s for s in range(count) if steps[s, 1] in VECTOR_KINDS and keys[s, 0] >= 0]
    repeats = [s for s in vector if s >= 2 and tuple(steps[s, 1:10]) in (tuple(steps[s - 1, 1:10]),
                                                                         tuple(steps[s - 2, 1:10]))]
    assert repeats and all(slots[s] in (slots[s - 1], slots[s - 2]) for s in repeats)
    assert sorted(slots[s] for s in vector if s not in repeats) == sorted(-1 - s for s in vector if s not in repeats)
    assert scratch[5].sum() == len(vector) - len(repeats)
    others = [s for s in range(count) if s not in vector]
    assert queued == used[0] == len({slots[s] for s in others}) and all(slots[s] >= 0 for s in others)
    assert (preset == "wide") == bool(others)
    assert np.all(table[[slots[s] for s in others], ROW_CODE] == PENDING)
    own = np.full((count, 8), -1, np.int64)
    _cost_queue(steps, queue, queued, slots, table, own, config, coefficients, energies, scratch, False)
    _cost_packed(steps, slots, table, own, config, coefficients, energies, scratch)
    assert_rows_hold_step_costs(steps, count, slots, table, own, calibration)


VECTOR_STEP_FIELDS = st.tuples(st.sampled_from((0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)), st.integers(1, 64),
                               st.integers(1, 64), st.integers(1, 64), st.integers(1, 9), st.integers(1, 64),
                               st.integers(1, 70), st.integers(1, 70))
"""A step of `VECTOR_KINDS`: kind code (conv, convcaps, convcaps3d, classcaps, the routing phases, tocaps, capsadd,
route3d), n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out (classes and capsules up to 70: 65 to 70 are
refused)."""


@settings(max_examples=60, deadline=None)
@given(st.lists(VECTOR_STEP_FIELDS, min_size=1, max_size=40), st.integers(1, 64), st.integers(1, 64),
       st.sampled_from((16, 64, 512, 4096, 16384)), st.sampled_from((4, 16, 64, 1024)), st.integers(1, 8),
       st.integers(1, 3), st.sampled_from((1.0, 1e17)))
def test_steps_costed_in_float64_equal_the_integer_rules_bit_for_bit(steps, rows, cols, depth, words, batch, routings,
                                                                      scale):
    """`_cost_vector_steps` (the tiling rules and `_step_values` on float64, vectorized) gives every step of
    `VECTOR_KINDS` (convolutions, classcaps, routing phases, tocaps, capsadd and route3d) on any array, with 1 to 3
    routing iterations, the error code, batch cycles, MATMULs, DMA rows and energy of `_step_cost` (the integer
    rules), bit for bit, predictions out of the int64 range included (coefficients scaled by 1e17); and the code
    `INTEGER_RULES` exactly for the steps it leaves to the integer rules: those whose counting could leave float64's
    exact range (`_float_exact` of its integer fields), refused ones (capsules or classes beyond 64, no chunk, run,
    group or routing layout that fits) and convolutions, tocaps and capsadds that need column groups (their plan
    without groups refused)."""
    import dataclasses
    from capsacc.calibrated import (FITS, INTEGER_RULES, PREDICTION_RANGE, VECTOR_KINDS, _cost_vector_steps,
                                    _float_exact, _packed_step)
    from capsacc.mapping import CAPSADD, CONVCAPS3D, STEP_FIELDS, TOCAPS, _elementwise_plan, _matmul_plan
    calibration = Calibration.shipped()
    calibration = dataclasses.replace(
        calibration, config=dataclasses.replace(calibration.config, rows=rows, cols=cols, batch=batch,
                                                data_depth=depth, weight_depth=depth, routing_depth=depth,
                                                psum_depth=depth, program_depth=words),
        coefficients={name: tuple(scale * c for c in values) for name, values in calibration.coefficients.items()})
    config, coefficients, energies = calibration.kernel_arrays
    config = config.copy()
    config[5] = routings
    rows_of = np.zeros((len(steps), len(STEP_FIELDS)), np.int64)
    rows_of[:, 1:6] = [fields[:5] for fields in steps]
    rows_of[:, 7:10] = [fields[5:] for fields in steps]
    for kind in VECTOR_KINDS:
        packed = np.array([_packed_step(step) for step in rows_of], np.int64)
        chosen_rows = (rows_of[:, 1] == kind) & (packed >= 0)
        chosen, packed = rows_of[chosen_rows], packed[chosen_rows]
        out = [np.zeros(len(chosen)) for _ in range(5)]
        _cost_vector_steps(kind, packed, config, coefficients, energies, *out)
        for i, step in enumerate(chosen):
            code, *cost = step_cost(step, calibration, config)
            fields = (*step[2:6], *step[7:10])
            ungrouped = (_matmul_plan(kind, *fields, rows, cols, depth, words, batch, False)[0] if kind <= CONVCAPS3D
                         else _elementwise_plan(kind, *step[2:5], *step[7:10], rows, cols, depth, words, batch,
                                                False)[0] if kind in (TOCAPS, CAPSADD) else FITS)
            integer_rules = (not _float_exact(kind, *fields, rows, cols, batch, routings)
                             or code not in (FITS, PREDICTION_RANGE) or ungrouped != FITS)
            assert (out[1][i] == -INTEGER_RULES) == integer_rules
            if integer_rules:
                continue
            if code != FITS:
                assert out[1][i] == -code
                continue
            assert [int(out[field][i]) for field in range(4)] == cost[:4] and out[4][i] == cost[4]
            assert [out[field][i] for field in range(4)] == cost[:4]


def test_a_step_beyond_the_packed_fields_or_the_exact_range_is_costed_by_the_integer_rules():
    """`_packed_step` packs a convolution whose fields fit `VECTOR_FIELD_BITS` (a wider one is costed by `_step_cost`:
    -1), and `_float_exact` says whether its counts stay below `VECTOR_BOUND` (a larger one comes back from the float64
    loop as `INTEGER_RULES` and is costed by `_step_cost` too); the batch totals of both still equal `estimate`'s."""
    from capsacc.calibrated import VECTOR_FIELD_BITS, _float_exact, _packed_step
    steps, count = preset_steps("large")
    assert any(_packed_step(step) >= 0 and not _float_exact(step[1], *step[2:6], *step[7:10], 16, 16, 8, 3)
               for step in steps[:count])
    step = np.array([0, 1, 28, 256, 1, 9, 2, 14, 32, 8, 1, 0, -1], np.int64)
    assert _packed_step(step) >= 0 and _float_exact(1, *step[2:6], *step[7:10], 16, 16, 8, 3)
    wide = step.copy()
    wide[3] = 1 << VECTOR_FIELD_BITS
    large = step.copy()
    large[[3, 4, 5, 7, 8, 9]] = 64  # N·K·M = 8·64²·(9²·64² + 1)·64² on 16x16: beyond 2^50 with the MAC slots
    assert _packed_step(wide) == -1
    assert _packed_step(large) >= 0 and not _float_exact(1, *large[2:6], *large[7:10], 16, 16, 8, 3)
    acc = Accelerator.calibrated()
    for genotype in (WIDE_GENOTYPE, LARGE_GENOTYPE):
        single = estimate(Network.from_genotype(genotype), acc)
        many = estimate_many(flatten([genotype]), acc)
        assert many.cycles.tolist() == [single.cycles] and many.energy_mJ.tolist() == [single.energy_mJ]


GROUPED_GENOTYPE = [[0, 28, 1, 1, 3, 2, 14, 200, 1], [1, 14, 200, 1, 3, 2, 7, 2, 8], [1, 7, 2, 8, 7, 1, 1, 10, 16],
                    [-1], [1]]
"""A CapsNet-like genotype whose 200-channel convolution needs column groups on buffers of 256 rows (13 column
blocks: a chunk's results and one K chunk over all of them do not fit)."""


def test_a_step_that_needs_column_groups_is_costed_by_the_integer_rules():
    """On buffers of 256 rows and programs of 64 words (the FPGA build's), a convolution whose plan needs column
    groups (refused without them, `grouped`) is left by the float64 loops to the integer rules (`INTEGER_RULES`),
    and the batch totals still equal `estimate`'s bit for bit."""
    import dataclasses
    from capsacc.array import buffer_depths
    from capsacc.calibrated import INTEGER_RULES, VECTOR_KINDS, _cost_vector_steps, _packed_step
    from capsacc.mapping import CONV, FITS, _matmul_plan
    calibration = Calibration.shipped()
    calibration = dataclasses.replace(calibration, config=dataclasses.replace(calibration.config, **buffer_depths(256),
                                                                              program_depth=64))
    acc = dataclasses.replace(Accelerator.calibrated(), calibration=calibration)
    config, coefficients, energies = calibration.kernel_arrays
    conv = np.array([0, CONV, 28, 1, 1, 3, 2, 14, 200, 1, 0, 0, -1], np.int64)
    plan = [_matmul_plan(CONV, 28, 1, 1, 3, 14, 200, 1, 16, 16, 256, 64, calibration.config.batch, grouped)
            for grouped in (False, True)]
    assert plan[0][0] != FITS and plan[1][0] == FITS and plan[1][13] < plan[1][7]  # gb < mb: column groups
    out = [np.zeros(1) for _ in range(5)]
    _cost_vector_steps(CONV, np.array([_packed_step(conv)]), config, coefficients, energies, *out)
    assert CONV in VECTOR_KINDS and out[1][0] == -INTEGER_RULES
    single = estimate(Network.from_genotype(GROUPED_GENOTYPE), acc)
    many = estimate_many(flatten([GROUPED_GENOTYPE]), acc)
    assert many.cycles.tolist() == [single.cycles] and many.energy_mJ.tolist() == [single.energy_mJ]
    assert many.total_energy_mJ.tolist() == [single.total_energy_mJ]
