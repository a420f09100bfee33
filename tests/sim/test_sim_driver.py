"""The operation driver: every kind bit-exact on the RTL, on both back ends, with the instruction
counts the calibrated model assumes and the cycles the ISA documents."""

import dataclasses
import shutil

import numpy as np
import pytest

from capsacc.array import ArrayConfig, buffer_depths
from capsacc.mapping import (ACT_MAX_ROWS, CHAIN_KINDS, ROUTING_PHASES, ceil_div, classcaps_packing, classcaps_per_run,
                             elementwise_chunking, elementwise_shape, matmul_acts_apart, matmul_chunk_rows,
                             matmul_chunking, matmul_shape, plan_counts, routing_geometry, routing_phases)
from capsacc.network import Operation
from capsacc.programs import operation_total_cycles
from rtl.isa import act_unit_cycles
from sim.driver import DRIVER_KINDS, LAST_SUMS, MismatchError, OperationDriver

CONFIG = ArrayConfig(rows=3, cols=4, acc_bits=25, **buffer_depths(64), program_depth=32)
"""Non-square and small, with buffers and program short enough that operations need several runs."""

OPS = {
    "conv": Operation("conv", "conv", 6, 2, 1, 3, 1, 5, 5, 1),
    "convcaps": Operation("convcaps", "convcaps", 6, 2, 2, 3, 2, 3, 2, 4),
    "convcaps3d": Operation("convcaps3d", "convcaps3d", 3, 3, 2, 3, 1, 3, 2, 2),
    "convcaps_packed": Operation("convcaps", "convcaps", 4, 2, 2, 3, 1, 4, 3, 2),
    "convcaps_wide": Operation("convcaps", "convcaps", 4, 2, 1, 3, 1, 4, 2, 7),  # 7 atoms: blocks of 4 + 3
    "classcaps": Operation("classcaps", "classcaps", 2, 3, 5, 2, 1, 1, 3, 4),
    "routing_uniform": Operation("routing", "routing", 3, 1, 4, 3, 1, 1, 3, 4),
    "routing_softmax": Operation("routing", "routing", 3, 1, 4, 3, 1, 1, 3, 4),
    "routing_update": Operation("routing", "routing", 3, 1, 4, 3, 1, 1, 3, 4),
    "routing_first_update": Operation("routing", "routing", 3, 1, 4, 3, 1, 1, 3, 4),
    "routing": Operation("routing", "routing", 3, 1, 4, 3, 1, 1, 3, 4),
    "tocaps": Operation("convcaps", "convcaps", 3, 3, 2, 3, 1, 3, 2, 2),  # 2 blocks of 2 identity tiles
    "capsadd": Operation("convcaps", "convcaps", 3, 2, 2, 3, 1, 3, 3, 2),
    "route3d": Operation("convcaps3d", "convcaps3d", 3, 5, 2, 3, 1, 2, 2, 3),  # 4 positions: routings of I = 5
    "relu": Operation("relu", "relu", 5, 1, 4, 1, 1, 1, 1, 1),
    "squash": Operation("squash", "squash", 5, 1, 4, 1, 1, 1, 1, 1),
    "softmax": Operation("softmax", "softmax", 5, 1, 3, 1, 1, 1, 1, 1),
    "squash_spanning": Operation("squash", "squash", 5, 1, 9, 1, 1, 1, 1, 1),
    "softmax_64": Operation("softmax", "softmax", 3, 1, 64, 1, 1, 1, 1, 1),
}


def isa_cycles(counts: dict, config: ArrayConfig) -> int:
    """Busy cycles of `rtl.isa.timing` for these counts: per run 2 (start, first dispatch) plus its
    MATMUL phase; per ACT 2 (issue, start) plus the activation unit: rows + latency + 1 (row mode)
    or elements + latency + 2 (column mode), latency = 20 + 4 ceil(log2 C) + 2 span."""
    per_act = 2 + act_unit_cycles(config.cols, "none", 1, 1) - 1 - 2  # one row, span 1
    assert per_act == 23 + 4 * (config.cols - 1).bit_length()
    assert act_unit_cycles(config.cols, "none", 1, 1, column=True) == act_unit_cycles(config.cols, "none", 1, 1) + 1
    acts = (per_act * counts["acts"] + counts["acts_column"] + 2 * counts["act_spans"] + counts["act_rows_row"]
            + counts["act_elements_column"])
    return 2 * counts["runs"] + counts["matmul_phase_cycles"] + acts


def run_exact(config: ArrayConfig, kind: str, op: Operation, seed: int, output: str):
    """`op` run as `kind` on Amaranth: its result `output` equals the golden model's (not all zeros),
    its instruction counts are `plan_counts`' and its busy cycles the ISA formulas' (`isa_cycles`)."""
    run = OperationDriver(config, "amaranth").run(kind, op, seed=seed)
    assert np.array_equal(run.outputs[output], run.golden[output]) and np.any(run.golden[output])
    assert run.counts == plan_counts(kind, op, config)
    assert run.cycles == isa_cycles(run.counts, config)
    return run


@pytest.fixture(scope="module")
def amaranth_runs():
    driver = OperationDriver(CONFIG, "amaranth")
    return {name: driver.run(kind_of(name), op, seed=3) for name, op in OPS.items()}


def kind_of(name: str) -> str:
    """The driver kind of an OPS entry: its name, or for the extra activation cases its op's kind."""
    return name if name in DRIVER_KINDS else OPS[name].kind


def test_every_kind_is_run():
    assert set(DRIVER_KINDS) <= set(OPS)


@pytest.mark.parametrize("name", OPS)
def test_amaranth_runs_are_bit_exact_with_the_modelled_counts(name, amaranth_runs, record_property):
    run = amaranth_runs[name]
    for output, want in run.golden.items():
        assert np.array_equal(run.outputs[output], want), output
    assert run.counts == plan_counts(kind_of(name), OPS[name], CONFIG)
    assert run.cycles == isa_cycles(run.counts, CONFIG)
    assert run.counters["pe_active_cycles"] == run.counts["matmul_rows"] * CONFIG.rows * CONFIG.cols
    assert run.counters["weight_loads"] == run.counts["matmuls"]
    assert run.counters["act_ops"] == run.counts["act_elements"]
    assert run.counters["instructions"] == run.counts["matmuls"] + run.counts["acts"] + run.runs
    record_property("cycles", run.cycles)
    print(f"{name}: {run.cycles} RTL cycles, {run.host_cycles} host cycles, {run.runs} runs")


def test_several_runs_are_exercised(amaranth_runs):
    assert amaranth_runs["conv"].runs > 1 and amaranth_runs["classcaps"].runs > 1 and amaranth_runs["route3d"].runs > 1
    assert amaranth_runs["routing"].runs >= 4


def test_a_wrong_golden_result_is_caught(monkeypatch):
    import sim.golden as golden
    monkeypatch.setattr(golden, "activate_rows", lambda sums, shift, func, length: np.zeros_like(sums))
    with pytest.raises(MismatchError, match="differs from the golden model"):
        OperationDriver(CONFIG, "amaranth").run("relu", OPS["relu"], seed=1)


@pytest.mark.parametrize("routings", [1, 2, 3])
def test_a_routing_of_each_iteration_count_is_bit_exact_and_counted_exactly(routings):
    """Golden model and RTL agree on a whole routing of 1, 2 and 3 iterations (uniform first
    coupling, then update and softmax per iteration) on a 3x4 array with 7 inputs (three R-chunks),
    and the calibrated model's counts give its cycles exactly: the sum of its phases'."""
    op = Operation("routing", "routing", 1, 7, 4, 1, 1, 1, 3, 4)
    run = OperationDriver(CONFIG, "amaranth").run("routing", op, seed=routings, inputs={"routings": routings})
    for name, want in run.golden.items():
        assert np.array_equal(run.outputs[name], want), name
    assert np.any(run.outputs["b"]) == (routings > 1)
    counts = plan_counts("routing", op, CONFIG, routings)
    assert run.counts == counts
    assert run.cycles == isa_cycles(counts, CONFIG)
    phases = [plan_counts(kind, op, CONFIG) for kind in routing_phases(routings)]
    assert run.cycles == sum(isa_cycles(p, CONFIG) for p in phases)
    # every routing ACT is column mode: a squash per weighted-sum phase, 3 softmax ACTs (7 inputs on 3
    # rows) per softmax phase
    assert counts["acts_column"] == counts["acts"] == routings + 3 * (routings - 1)
    print(f"routing, {routings} iterations: {run.cycles} RTL cycles")


@pytest.mark.parametrize("config, shape", [
    (CONFIG, (7, 9, 3)),  # J > C: 3 class tiles, the logits of an input span 3 rows
    (CONFIG, (5, 3, 9)),  # D > C: 3 rows per capsule, each squashed capsule scattered into one lane
    (ArrayConfig(4, 4, 25, **buffer_depths(128), program_depth=32), (6, 6, 7)),  # both
    (ArrayConfig(3, 4, 25, **buffer_depths(64), program_depth=16), (70, 2, 2)),  # I beyond the partial sums: logits recomputed, 3 blocks
    (ArrayConfig(3, 4, 25, **buffer_depths(128), program_depth=16), (70, 5, 5)),  # recomputed, J > C and D > C
])
def test_a_routing_of_any_shape_is_bit_exact_and_counted_exactly(config, shape):
    """Whole routings of 3 iterations with J classes and D atoms beyond the C columns, and with more
    inputs than the partial-sum memory holds logits for (recomputed per block from the earlier
    iterations' capsules): RTL and golden model agree, the closed-form counts are the driver's, and
    the ISA cycle formulas give the RTL cycles."""
    n_in, n_out, dim = shape
    op = Operation("routing", "routing", 1, n_in, 4, 1, 1, 1, n_out, dim)
    geometry = routing_geometry(n_in, n_out, dim, config)
    assert geometry["resident"] == (n_in < 50)
    run = OperationDriver(config, "amaranth").run("routing", op, seed=n_in + dim)
    for name, want in run.golden.items():
        assert np.array_equal(run.outputs[name], want), name
    assert np.any(run.outputs["v"]) and len(np.unique(run.outputs["c"])) > 2
    assert run.counts == plan_counts("routing", op, config)
    assert run.cycles == isa_cycles(run.counts, config)
    assert run.counters["weight_loads"] == run.counts["matmuls"]
    print(f"routing {config.rows}x{config.cols}, I = {n_in}, J = {n_out}, D = {dim}: {run.cycles} RTL cycles, "
          f"{run.runs} runs")


def test_routing_closed_form_matches_the_driver_for_any_shape():
    """`plan_counts` of every routing phase equals the counts of the driver's programs over random
    I, J, D (J and D up to 64, beyond the 6 columns) on small buffers, resident or recomputed logits,
    for 1 to 4 iterations."""
    rng = np.random.default_rng(5)
    resident = set()
    for _ in range(16):
        config = ArrayConfig(int(rng.integers(2, 6)), int(rng.integers(2, 8)), 25,
                             **buffer_depths(int(rng.choice([256, 1024]))), program_depth=int(rng.choice([8, 32])))
        n_in, n_out, dim = int(rng.integers(1, 160)), int(rng.integers(1, 65)), int(rng.integers(1, 65))
        routings = int(rng.integers(1, 5))
        op = Operation("routing", "routing", 1, n_in, 4, 1, 1, 1, n_out, dim)
        driver = OperationDriver(config, "amaranth")
        for kind in (*ROUTING_PHASES, "routing"):
            try:
                expected = plan_counts(kind, op, config, routings)
            except ValueError:
                with pytest.raises(ValueError):
                    driver.prepare(kind, op, seed=0, inputs={"routings": routings})
                continue
            _, counts, _ = driver.prepare(kind, op, seed=0, inputs={"routings": routings})
            assert counts == expected, (kind, config, shape := (n_in, n_out, dim), routings)
            resident.add(routing_geometry(n_in, n_out, dim, config, routings)["resident"])
    assert resident == {True, False}


@pytest.mark.parametrize("config, op", [
    (ArrayConfig(3, 4, 25, **buffer_depths(64), program_depth=8), Operation("classcaps", "classcaps", 2, 5, 1, 2, 1, 1, 3, 3)),  # 3 per tile, 20
    (ArrayConfig(4, 4, 25, **buffer_depths(64), program_depth=8), Operation("classcaps", "classcaps", 3, 1, 2, 3, 1, 1, 3, 2)),  # 2 per tile, 9
])
def test_packed_classcaps_is_bit_exact_and_counted_exactly(config, op):
    """ClassCaps capsules of caps_in <= R / 2 atoms share weight tiles (`classcaps_packing`): each
    capsule's prediction comes out alone (block-diagonal data rows), bit-exact, with a last group
    padded with zero rows, over several runs; k-fold fewer weight tiles than capsules x tiles."""
    k = classcaps_packing(op.caps_in, config)
    capsules, tiles = op.n_in ** 2 * op.ch_in, ceil_div(op.ch_out * op.caps_out, config.cols)
    assert k > 1 and capsules % k
    run = run_exact(config, "classcaps", op, 4, "u_hat")
    assert run.counters["weight_loads"] == ceil_div(capsules, k) * tiles
    assert run.counters["pe_active_cycles"] == run.counts["matmul_rows"] * config.rows * config.cols
    assert run.runs > 1


def test_packed_convcaps_is_bit_exact_and_counted_exactly():
    """ConvCaps capsules of L <= C / 2 atoms share column blocks, floor(C / L) per block, squashed by
    segmented ACTs of length L: 3 capsules of 2 atoms on 4 columns are 2 blocks (4 + 2 lanes), not 3."""
    config = ArrayConfig(4, 4, 25, **buffer_depths(256), program_depth=32)
    op = Operation("convcaps", "convcaps", 4, 2, 2, 3, 1, 4, 3, 2)
    run = run_exact(config, "convcaps", op, 5, "out")
    k_chunks = ceil_div(3 * 3 * 2 * 2 + 1, config.rows)
    assert run.counters["weight_loads"] == run.counts["matmuls"] == k_chunks * 2
    assert run.counts["acts"] == 2 and run.counters["act_ops"] == 2 * 16 * 4


@pytest.mark.parametrize("config, op", [
    (ArrayConfig(4, 4, 25, **buffer_depths(256), program_depth=32), Operation("convcaps", "convcaps", 4, 2, 2, 3, 1, 4, 3, 5)),
    (ArrayConfig(4, 4, 25, **buffer_depths(256), program_depth=32), Operation("convcaps", "convcaps", 3, 1, 2, 3, 2, 2, 2, 9)),
    (ArrayConfig(3, 4, 25, **buffer_depths(64), program_depth=32), Operation("convcaps", "convcaps", 5, 1, 2, 3, 1, 5, 2, 7)),
])
def test_wide_convcaps_is_bit_exact_and_counted_exactly(config, op):
    """Capsules of L > C atoms span ceil(L / C) column blocks (C lanes, the last L - (span - 1) C):
    one MATMUL per (K chunk, block) writes nc rows per block, and one strided ACT per capsule type
    (stride nc) squashes each capsule over its blocks, bit-exact against the golden squash of the
    whole capsule; every atom is written once. On 3x4 the 25 data rows need several chunks."""
    config_span = ceil_div(op.caps_out, config.cols)
    run = run_exact(config, op.kind, op, 6, "out")
    assert np.array_equal(run.outputs[LAST_SUMS], run.golden[LAST_SUMS])
    rows = op.n_out ** 2 * (op.ch_in if op.kind == "convcaps3d" else 1)
    k = (op.kernel ** 3 if op.kind == "convcaps3d" else op.kernel ** 2 * op.ch_in) * op.caps_in + 1
    chunks = run.counts["acts"] // op.ch_out
    assert run.counts["act_spans"] == run.counts["acts"] * config_span > run.counts["acts"]
    assert run.counters["weight_loads"] == chunks * ceil_div(k, config.rows) * op.ch_out * config_span
    assert run.counters["act_ops"] == rows * op.ch_out * op.caps_out
    assert chunks == 1 or op.n_out == 5


@pytest.mark.parametrize("kind, op", [
    ("convcaps3d", Operation("convcaps3d", "convcaps3d", 3, 2, 2, 3, 1, 3, 2, 6)),
    ("tocaps", Operation("convcaps", "convcaps", 3, 2, 6, 3, 1, 3, 2, 2)),
])
def test_wide_capsule_votes_and_sums_are_bit_exact_and_counted_exactly(kind, op):
    """ConvCaps3D votes (no activation: C-lane blocks, whatever the capsule width) and the squashed
    element-wise sums of capsules wider than the 4 columns (6 atoms over 2 blocks, one strided ACT
    per capsule type), bit-exact, counts and ISA cycles exact."""
    config = ArrayConfig(4, 4, 25, **buffer_depths(256), program_depth=32)
    run = run_exact(config, kind, op, 8, "out")
    if kind != "convcaps3d":
        assert run.counts["act_spans"] == 2 * run.counts["acts"]


def test_classcaps_wider_than_the_array_is_bit_exact_and_counted_exactly():
    """ClassCaps applies no squash: caps_in > R (K chunks), J·D > C and D > C (column tiles cut
    through capsules) map as they are."""
    config = ArrayConfig(3, 4, 25, **buffer_depths(64), program_depth=16)
    op = Operation("classcaps", "classcaps", 2, 2, 5, 2, 1, 1, 2, 6)
    run = run_exact(config, "classcaps", op, 7, "u_hat")
    assert run.counters["weight_loads"] == 8 * ceil_div(5, 3) * ceil_div(12, 4)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", ["conv", "convcaps", "convcaps3d", "classcaps", *ROUTING_PHASES, "routing",
                                  *CHAIN_KINDS])
def test_closed_form_counts_match_the_driver_programs(kind, batch):
    """The calibrated model's closed-form counts equal the driver's programs over random shapes and
    batches, including operations large enough to be split into many runs and capsules wider than
    the 6 columns (caps_out up to 14: up to 3 blocks per capsule)."""
    rng = np.random.default_rng(11)
    driver = OperationDriver(ArrayConfig(4, 6, 25, **buffer_depths(128), program_depth=16, batch=batch), "amaranth")
    checked = 0
    for _ in range(8):
        ch_out, caps_out = int(rng.integers(1, 5)), int(rng.integers(1, 15))
        n_out = int(rng.integers(1, 6))
        n_in = int(rng.integers(1, 4)) if kind.startswith("routing") else int(rng.integers(n_out, 9))
        op = Operation(kind, kind, n_in, int(rng.integers(1, 5)), int(rng.integers(1, 5)),
                       int(rng.integers(1, 4)), 1, n_out, ch_out, caps_out)
        try:
            expected = plan_counts(kind, op, driver.config)
        except ValueError:
            with pytest.raises(ValueError):
                driver.prepare(kind, op, seed=0)
            continue
        _, counts, _ = driver.prepare(kind, op, seed=0)
        assert counts == expected, op
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("config, op", [
    (ArrayConfig(3, 4, 25, **buffer_depths(64), program_depth=8), Operation("classcaps", "classcaps", 2, 5, 1, 2, 1, 1, 3, 3)),  # 3 per tile, 20
    (ArrayConfig(4, 4, 25, **buffer_depths(64), program_depth=8), Operation("classcaps", "classcaps", 3, 1, 2, 3, 1, 1, 3, 2)),  # 2 per tile, 9
    (ArrayConfig(2, 3, 25, **buffer_depths(64), program_depth=8), Operation("classcaps", "classcaps", 2, 2, 3, 2, 1, 1, 2, 2)),  # k = 1, 2 K chunks
])
def test_a_batch_of_classcaps_loads_each_weight_tile_once(config, op, batch):
    """A batch of B images streams B·k data rows through each weight tile: every image's predictions
    bit-exact (packed capsules, a padded last group, several runs), the weight loads those of one
    image whatever B, and the closed form counts the batch exactly."""
    config = dataclasses.replace(config, batch=batch)
    k = classcaps_packing(op.caps_in, config)
    capsules, tiles = op.n_in ** 2 * op.ch_in, ceil_div(op.ch_out * op.caps_out, config.cols)
    k_chunks = ceil_div(op.caps_in, config.rows)
    run = run_exact(config, "classcaps", op, 4 + batch, "u_hat")
    assert run.outputs["u_hat"].shape == (batch, capsules, op.ch_out, op.caps_out)
    assert all(np.any(run.golden["u_hat"][b] != run.golden["u_hat"][0]) for b in range(1, batch))
    assert run.counters["weight_loads"] == ceil_div(capsules, k) * k_chunks * tiles
    assert run.counts["matmul_rows"] == ceil_div(capsules, k) * k_chunks * tiles * batch * k
    assert run.counters["pe_active_cycles"] == run.counts["matmul_rows"] * config.rows * config.cols
    assert run.runs > 1


def test_a_classcaps_group_of_more_than_1023_rows_is_activated_in_pieces():
    """mb·B·k > ACT_MAX_ROWS partial-sum rows per capsule group: the group runs alone and its
    requantization is split into ACTs of at most 1023 rows, bit-exact and counted exactly."""
    config = ArrayConfig(2, 2, 25, **buffer_depths(2048), program_depth=64, batch=17)
    op = Operation("classcaps", "classcaps", 1, 3, 1, 1, 1, 1, 8, 8)  # 3 capsules of 1 atom, k = 2, mb = 32
    assert classcaps_packing(1, config) == 2 and classcaps_per_run(1, 64, config) == (2, 32)
    assert 32 * 17 * 2 > ACT_MAX_ROWS
    run = run_exact(config, "classcaps", op, 9, "u_hat")
    assert run.runs == 2 and run.counts["acts"] == 2 * 2 and run.counts["act_rows"] == 2 * 32 * 17 * 2


@pytest.mark.parametrize("kind, op", [
    ("conv", Operation("conv", "conv", 4, 2, 1, 3, 1, 4, 16, 1)),  # 4 blocks: 4 MATMULs + 4 ACTs > 7 words
    ("convcaps", Operation("convcaps", "convcaps", 3, 2, 1, 3, 1, 3, 2, 9)),  # 2 capsules over 3 blocks each
    ("capsadd", Operation("convcaps", "convcaps", 3, 2, 2, 3, 1, 3, 3, 4)),  # 3 blocks of 2 identity tiles
])
def test_acts_that_do_not_fit_beside_the_matmuls_run_apart_bit_exact(kind, op):
    """When one K chunk's (one operand's) MATMULs and the chunk's ACTs do not fit a program of 8 words,
    the ACTs run in a program of their own after the chunk's last run (issue 16: wide layers on narrow
    arrays were refused): bit-exact, the closed form's counts and the ISA's cycles; with the off-chip
    memory, bit-exact and the model's total cycles (`operation_total_cycles`)."""
    config = ArrayConfig(3, 4, 25, **buffer_depths(64), program_depth=8)
    if kind in CHAIN_KINDS:
        assert elementwise_chunking(elementwise_shape(kind, op, config), config)[2]
    else:
        shape = matmul_shape(kind, op, config)
        assert matmul_acts_apart(shape, config, matmul_chunking(shape, config, matmul_chunk_rows(shape, config))[1])
    run = run_exact(config, kind, op, 4, "out")
    assert run.runs == run.counts["runs"] > 1
    moved = OperationDriver(config, "amaranth", offchip=True).run(kind, op, seed=4)
    assert np.array_equal(moved.outputs["out"], moved.golden["out"])
    assert operation_total_cycles(kind, op, config) == moved.total_cycles > moved.cycles


@pytest.mark.parametrize("kind, op", [
    ("conv", Operation("conv", "conv", 4, 2, 1, 3, 1, 4, 40, 1)),  # 10 blocks of one K chunk > 7 words
    ("convcaps", Operation("convcaps", "convcaps", 3, 2, 1, 3, 1, 3, 3, 9)),  # 3 capsules over 3 blocks: 9
    ("convcaps3d", Operation("convcaps3d", "convcaps3d", 3, 2, 2, 3, 1, 3, 16, 3)),  # 12 blocks
    ("capsadd", Operation("convcaps", "convcaps", 3, 2, 2, 3, 1, 3, 9, 4)),  # 9 blocks of one identity tile
])
def test_blocks_beyond_the_program_run_in_column_groups_bit_exact(kind, op):
    """When one K chunk's (one operand's) MATMULs over every column block do not fit a program of 8 words,
    each K chunk (operand) runs over column groups of at most 7 blocks (a K chunk's data loaded once,
    before its first group),
    and the ACTs run apart in programs of at most 7 (4x4 and the paper space's widest layers were
    refused): bit-exact, the closed form's counts and the ISA's cycles; with the off-chip memory,
    bit-exact and the model's total cycles."""
    config = ArrayConfig(3, 4, 25, **buffer_depths(64), program_depth=8)
    if kind in CHAIN_KINDS:
        shape = elementwise_shape(kind, op, config)
        _, pr, _, gb = elementwise_chunking(shape, config)
        blocks, runs = shape.columns.blocks, ceil_div(shape.columns.blocks, gb) * shape.operands
        assert pr == 1
    else:
        shape = matmul_shape(kind, op, config)
        kr, gb = matmul_chunking(shape, config, matmul_chunk_rows(shape, config))
        blocks, runs = shape.blocks, ceil_div(shape.blocks, gb) * ceil_div(shape.k, 3)
        assert kr == 1
    assert gb < blocks and gb <= 7
    run = run_exact(config, kind, op, 5, "out")
    assert run.runs == run.counts["runs"] > runs
    moved = OperationDriver(config, "amaranth", offchip=True).run(kind, op, seed=5)
    assert np.array_equal(moved.outputs["out"], moved.golden["out"])
    assert operation_total_cycles(kind, op, config) == moved.total_cycles > moved.cycles


def test_a_classcaps_capsule_beyond_the_program_runs_in_tile_groups_bit_exact():
    """A ClassCaps capsule whose kc·mb MATMULs do not fit a program of 8 words (2 K chunks x 5 column
    tiles) runs over tile groups of one capsule group each, its data loaded once: bit-exact, counted
    exactly, and with the off-chip memory the model's total cycles."""
    config = ArrayConfig(3, 4, 25, **buffer_depths(64), program_depth=8)
    op = Operation("classcaps", "classcaps", 1, 3, 5, 1, 1, 1, 4, 5)  # 3 capsules of 5 atoms, J = 4, D = 5
    ci, tb = classcaps_per_run(5, 20, config)
    assert (ci, tb) == (1, 3)  # 5 tiles in groups of 3 + 2 (2 x 3 MATMULs and an ACT in 7 words)
    run = run_exact(config, "classcaps", op, 6, "u_hat")
    assert run.runs == run.counts["runs"] == 3 * 2
    moved = OperationDriver(config, "amaranth", offchip=True).run("classcaps", op, seed=6)
    assert np.array_equal(moved.outputs["u_hat"], moved.golden["u_hat"])
    assert operation_total_cycles("classcaps", op, config) == moved.total_cycles > moved.cycles


@pytest.mark.parametrize("kind", ["conv", "convcaps3d", "routing"])
def test_a_batch_is_each_image_alone_and_counted_exactly(kind):
    """Convolutions stack the batch's im2col rows and routings run image after image: every image's
    results equal its run alone, and the closed form counts the batch; a routing costs B times one
    image's cycles."""
    op = OPS[kind]
    config = dataclasses.replace(CONFIG, batch=2)
    rng = np.random.default_rng(6)
    if kind == "routing":
        inputs = {"u_hat": rng.integers(-128, 128, size=(2, op.n_in ** 2 * op.ch_in, op.ch_out, op.caps_out))}
        per_image = ["u_hat"]
    else:
        shape = matmul_shape(kind, op, CONFIG)
        features = (op.ch_in, op.caps_in) if kind == "convcaps3d" else (op.ch_in * op.caps_in,)
        inputs = {"image": rng.integers(-128, 128, size=(2, op.n_in, op.n_in) + features),
                  "weights": rng.integers(-128, 128, size=(shape.k, shape.m))}
        per_image = ["image"]
    run = OperationDriver(config, "amaranth").run(kind, op, inputs=inputs)
    per_image_outputs = [name for name in run.golden if name != LAST_SUMS]
    for name in per_image_outputs:
        assert run.golden[name].shape[0] == 2 and np.array_equal(run.outputs[name], run.golden[name]), name
    assert run.counts == plan_counts(kind, op, config)
    assert run.cycles == isa_cycles(run.counts, config)
    single = plan_counts(kind, op, CONFIG)
    if kind == "routing":
        assert run.counts == {name: 2 * value for name, value in single.items()}
    else:
        assert run.counts["matmul_rows"] == 2 * single["matmul_rows"]
    driver = OperationDriver(CONFIG, "amaranth")
    for b in range(2):
        alone = driver.run(kind, op, inputs=inputs | {name: inputs[name][b:b + 1] for name in per_image})
        for name in per_image_outputs:
            assert np.array_equal(run.outputs[name][b], alone.outputs[name][0]), (b, name)


def test_a_batch_input_of_the_wrong_shape_is_refused():
    driver = OperationDriver(dataclasses.replace(CONFIG, batch=2), "amaranth")
    with pytest.raises(ValueError, match=r"input 'u' has shape \(3, 4, 2\), the batch of 2 image\(s\) needs"):
        driver.prepare("classcaps", OPS["classcaps"], inputs={"u": np.zeros((3, 4, 2), np.int64)})


@pytest.mark.verilator
@pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator not installed")
def test_verilator_agrees_with_amaranth_cycle_for_cycle(amaranth_runs, tmp_path_factory):
    driver = OperationDriver(CONFIG, "verilator", cache_dir=tmp_path_factory.mktemp("verilator"))
    for kind, op in OPS.items():
        run = driver.run(kind_of(kind), op, seed=3)
        reference = amaranth_runs[kind]
        assert (run.cycles, run.counters, run.host_cycles) == \
            (reference.cycles, reference.counters, reference.host_cycles), kind
        for name, want in reference.outputs.items():
            assert np.array_equal(run.outputs[name], want), (kind, name)


def test_simulated_cycles_are_the_trace_length():
    driver = OperationDriver(CONFIG, "amaranth")
    session, _, _ = driver.prepare("conv", OPS["conv"], seed=3)
    _, runs, trace = driver.play(session)
    assert trace.cycles == sum(r["busy_cycles"] for r in runs) + session.host_cycles


def test_matmul_run_cycles_is_the_timing_model():
    """`capsacc.mapping.matmul_run_cycles` (closed form) equals `rtl.isa.timing` (the walk) on runs
    of m equal MATMULs: load-, stream- and bank-bound, square and lopsided arrays, long runs."""
    from capsacc.mapping import matmul_run_cycles
    from rtl.isa import Act, MatMul, timing

    checked = 0
    for rows in (1, 2, 3, 16, 64):
        for cols in (1, 2, 3, 5, 16, 63):
            for n in (1, 2, 4, 15, 16, 17, 62, 1023):
                for m in (1, 2, 3, 5, 6, 7, 8, 25, 130):
                    program = [MatMul(0, 0, 0, n)] * m + [Act("none", 0, 1, 1, 0, "data", 0)]
                    assert matmul_run_cycles(m, n, rows, cols) == timing(program, rows, cols).issue[m] - 2, \
                        (m, n, rows, cols)
                    checked += 1
    assert matmul_run_cycles(0, 5, 16, 16) == 0 and checked == 5 * 6 * 8 * 9
