"""CapsAcc top level: control unit programs end to end, bit-exact against sim.golden."""

import numpy as np
import pytest

from capsacc.array import ArrayConfig, buffer_depths
from capsacc.mapping import result_delay_cycles
from rtl import workloads
from rtl.export import export_verilog
from rtl.isa import MatMul, act_unit_cycles, program_cycles, timing
from rtl.widths import MAX_SUM_TERMS, product_sum_bits
from sim import golden
from rtl_bench import kept_registers, run_workload


@pytest.mark.parametrize("rows,cols", [(2, 3), (4, 4)])
def test_conv_tile(rows, cols, record_property):
    """im2col rows of a 5x5x2 image, 3x3 kernel (K = 18, tiled by R with accumulation), ReLU."""
    rng = np.random.default_rng(rows * cols)
    image = rng.integers(-128, 128, size=(5, 5, 2))
    image[0, 0, :] = -128
    image[0, 1, :] = 127
    patches = golden.im2col(image, 3, 1)
    weights = rng.integers(-128, 128, size=(18, cols))
    weights[0, :] = -128
    work, regions = workloads.conv_tile(patches, weights, rows, cols, shift=9)
    got, cycles, counters = run_workload(work, regions, rows, cols)
    assert np.array_equal(got["sums"], golden.tiled_matmul(patches, weights, rows))
    assert np.array_equal(got["out"], golden.conv_tile(patches, weights, rows, 9))
    chunks, n = -(-18 // rows), len(patches)
    # MATMULs back to back (n = 9 >= R: the stream is the bound, each tile loads during the
    # previous one's stream), one drain, the ACT, the HALT
    last_read = 3 + chunks * n
    act = last_read + result_delay_cycles(rows, cols) + 1
    assert cycles == act + 2 + act_unit_cycles(cols, "relu", n, cols)
    assert cycles == program_cycles(work.program, rows, cols)
    assert counters["busy_cycles"] == cycles
    assert counters["weight_loads"] == chunks
    assert counters["weight_load_cycles"] == chunks * rows
    assert counters["data_reads"] == chunks * n
    assert counters["pe_active_cycles"] == chunks * n * rows * cols
    assert counters["psum_writes"] == chunks * n
    assert counters["psum_reads"] == (chunks - 1) * n + n
    assert counters["act_ops"] == counters["weight_writes"] == n * cols
    assert counters["instructions"] == chunks + 2
    record_property("cycles", cycles)
    print(f"conv tile {rows}x{cols}: {cycles} cycles, {counters}")


@pytest.mark.parametrize("rows,cols", [(2, 3), (4, 4)])
def test_classcaps_layer(rows, cols, record_property):
    """6 input capsules of `rows` dims, 3 classes of 2 dims (weights tiled over the columns)."""
    rng = np.random.default_rng(7 + rows)
    n_in, d_in, n_out, d_out = 6, rows, 3, 2
    u = rng.integers(-128, 128, size=(n_in, d_in))
    w = rng.integers(-128, 128, size=(n_in, d_in, n_out * d_out))
    u[0, :], w[0] = -128, -128
    work, regions = workloads.classcaps(u, w, rows, cols, shift=7)
    got, cycles, counters = run_workload(work, regions, rows, cols)
    tiles = -(-n_out * d_out // cols)
    u_hat = got["u_hat"].reshape(n_in, tiles * cols)[:, :n_out * d_out]
    assert np.array_equal(u_hat, golden.classcaps(u, w, 7))
    assert counters["weight_loads"] == n_in * tiles
    assert cycles == program_cycles(work.program, rows, cols)
    record_property("cycles", cycles)
    print(f"classcaps {rows}x{cols}: {cycles} cycles")


@pytest.mark.parametrize("rows,cols,n_in,n_out,dim", [
    (4, 4, 5, 3, 4), (3, 4, 5, 3, 4),  # J, D <= C
    (3, 4, 5, 6, 3),  # J > C: logits span 2 rows, softmax over a spanning capsule
    (4, 4, 5, 3, 9),  # D > C: sums span 3 rows, squash scatters each capsule into one lane
    (3, 4, 4, 9, 6),  # both
])
def test_routing_phases(rows, cols, n_in, n_out, dim, record_property):
    """Each phase of a routing from the state the previous left: the uniform first coupling's sums
    and squash, the agreement update, a softmax iteration; I inputs in R-chunks (two on 3 rows), J
    classes and D atoms within or beyond the C columns (`RoutingLayout`'s class and atom tiles)."""
    rng = np.random.default_rng(11 + rows + n_out + dim)
    u_hat = rng.integers(-128, 128, size=(n_in, n_out, dim))
    layout = workloads.RoutingLayout(n_in, n_out, dim, ArrayConfig(rows, cols, 25, **buffer_depths(128), program_depth=64), routings=2)
    assert layout.geometry["resident"] and len(layout.blocks()) == 1
    coupling = golden.uniform_coupling(n_in, n_out)
    with pytest.raises(ValueError, match="uniform coupling"):
        layout.phase("routing_uniform", u_hat, 8, 9)
    with pytest.raises(ValueError, match="unknown routing phase"):
        layout.phase("routing", u_hat, 8, 9, coupling)
    runs = layout.phase("routing_uniform", u_hat, 8, 9, coupling)
    got, cycles, _ = run_workload(runs, layout.regions(), rows, cols)
    s, v = golden.routing_sum(coupling, u_hat, 9)
    assert np.array_equal(layout.coupling(got["c"]), coupling)
    assert np.array_equal(layout.sums(got["s"]), s) and np.array_equal(layout.v(got["v"]), v)
    assert np.any(v != 0) and not np.any(got["b"])
    assert cycles == sum(program_cycles(run.program, rows, cols) for run in runs)
    runs += layout.phase("routing_first_update", u_hat) + layout.phase("routing_softmax", u_hat, 8, 9)
    got, cycles, _ = run_workload(runs, layout.regions(), rows, cols)
    b = golden.routing_update(np.zeros((n_in, n_out), dtype=np.int64), u_hat, v)
    c = golden.activate(b, 8, "softmax")
    s, v = golden.routing_sum(c, u_hat, 9)
    assert np.array_equal(layout.logits(got["b"]), b) and np.array_equal(layout.coupling(got["c"]), c)
    assert np.array_equal(layout.sums(got["s"]), s) and np.array_equal(layout.v(got["v"]), v)
    assert len(np.unique(c)) > 2
    assert cycles == sum(program_cycles(run.program, rows, cols) for run in runs)
    record_property("cycles", cycles)
    print(f"routing of 2 iterations {rows}x{cols}, I = {n_in}, J = {n_out}, D = {dim}: {cycles} cycles")


def test_accumulator_forwarding_hold_and_wrap(record_property):
    """MATMUL hold: all data rows add into one partial-sum row on consecutive cycles (each read
    meets the previous cycle's write: read-after-write forwarding), over a stored value, wrapping."""
    rows, cols = 2, 3
    rng = np.random.default_rng(9)
    x = rng.integers(-128, 128, size=(9, rows))
    x[:4] = -128
    w = np.full((rows, cols), -128)
    w[1, 2] = 127
    stored = np.array([[(1 << 24) - 5, -(1 << 24), 12345]])
    work = workloads.Workload(program=[MatMul(d_addr=0, w_addr=0, p_addr=3, n=9, accumulate=True, hold=True)],
                              data={0: x}, weight={0: w}, psum={3: stored})
    regions = {"sum": workloads.Region("psum", 3, 1, cols), "next": workloads.Region("psum", 4, 1, cols)}
    got, cycles, counters = run_workload(work, regions, rows, cols, acc_bits=25)
    want = golden.accumulate(stored[0], golden.matmul_tile(x, w, 25).sum(axis=0), 25)
    assert np.array_equal(got["sum"][0], want)
    assert np.array_equal(got["next"][0], [0, 0, 0])
    assert counters["psum_writes"] == 9
    assert cycles == 3 + 9 + result_delay_cycles(rows, cols) + 1
    assert cycles == program_cycles(work.program, rows, cols)
    record_property("cycles", cycles)


@pytest.mark.parametrize("ahead", [2, 3, 4])
def test_accumulator_forwarding_rows_ahead(ahead):
    """Two MATMULs streamed back to back into the same `ahead` partial-sum rows (rows p .. p +
    ahead - 1, twice): each read of the second MATMUL meets the write of `ahead` rows before it
    still in flight (a forwarding register each: a row is read three cycles before its sum, and
    its sum lands in the memory a cycle after that), over stored values. One row ahead is the hold
    test's."""
    rows, cols = 2, 3
    rng = np.random.default_rng(10 + ahead)
    x = rng.integers(-128, 128, size=(2 * ahead, rows))
    w = rng.integers(-128, 128, size=(2 * rows, cols))
    stored = rng.integers(-1000, 1000, size=(ahead, cols))
    program = [MatMul(d_addr=0, w_addr=0, p_addr=5, n=ahead, accumulate=True),
               MatMul(d_addr=ahead, w_addr=rows, p_addr=5, n=ahead, accumulate=True)]
    work = workloads.Workload(program=program, data={0: x}, weight={0: w}, psum={5: stored})
    got, cycles, _ = run_workload(work, {"sums": workloads.Region("psum", 5, ahead, cols)}, rows, cols)
    want = stored + golden.matmul_tile(x[:ahead], w[:rows]) + golden.matmul_tile(x[ahead:], w[rows:])
    assert np.array_equal(got["sums"], want)
    issue = timing(program, rows, cols).issue
    # Load bound: the second MATMUL issues R cycles after the first, no later than the first's last
    # read (R <= ahead), so its stream moves then (M = max(F + 1, S')): the rows are read back to back.
    assert rows <= ahead and issue[1] - issue[0] == rows
    assert cycles == program_cycles(program, rows, cols)


@pytest.mark.parametrize("rows,cols,n,gaps", [
    (4, 4, 1, {4}),      # load bound: R cycles per tile
    (3, 5, 2, {3}),      # load bound (R = 3; the bank rule allows (n + C - 1) / 2 = 3)
    (2, 3, 7, {7}),      # stream bound: n cycles per tile
    (2, 6, 1, {2, 4}),   # bank bound: two tiles per n + C - 1 = 6 cycles
])
def test_matmuls_issue_back_to_back(rows, cols, n, gaps, record_property):
    """Eight MATMULs into separate partial-sum rows, weights double-buffered: after the first, one
    issues every max(R, n) cycles, unless the bank rule (the tile before the previous one must
    have left the columns) is slower; one drain at the end. Every result is its own tile's."""
    rng = np.random.default_rng(rows + 10 * n)
    tiles = 8
    x = rng.integers(-128, 128, size=(tiles * n, rows))
    w = rng.integers(-128, 128, size=(tiles * rows, cols))
    program = [MatMul(d_addr=t * n, w_addr=t * rows, p_addr=t * n, n=n) for t in range(tiles)]
    work = workloads.Workload(program=program, data={0: x}, weight={0: w})
    regions = {"sums": workloads.Region("psum", 0, tiles * n, cols)}
    got, cycles, _ = run_workload(work, regions, rows, cols)
    want = np.concatenate([golden.matmul_tile(x[t * n:(t + 1) * n], w[t * rows:(t + 1) * rows])
                           for t in range(tiles)])
    assert np.array_equal(got["sums"], want)
    issue = timing(program, rows, cols).issue
    assert {issue[t + 1] - issue[t] for t in range(2, tiles - 1)} == gaps
    assert cycles == program_cycles(program, rows, cols)
    # against the v1 control unit (fetch, decode, load, stream, drain per MATMUL): n + 2R + C + 3
    assert cycles < tiles * (n + 2 * rows + cols + 3) + 2
    record_property("cycles", cycles)


def test_accumulator_cannot_overflow_on_worst_case_operands(record_property):
    """The longest sum of the search space, MAX_SUM_TERMS products of -128 * -128 (and of
    -128 * 127), on the golden model and on the RTL: the accumulator holds the state after all
    but the last R-term chunk (host-written), the array adds the last chunk; exact, no wrap."""
    rows, cols = 4, 2
    top, bottom = MAX_SUM_TERMS << 14, -MAX_SUM_TERMS * 128 * 127
    assert top < 1 << (product_sum_bits(MAX_SUM_TERMS) - 1) and bottom >= -(1 << (product_sum_bits(MAX_SUM_TERMS) - 1))
    # golden: the whole sum, tiled by 16 rows, accumulated chunk by chunk
    x = np.full((2, MAX_SUM_TERMS), -128)
    x[1] = 127
    w = np.full((MAX_SUM_TERMS, 1), -128)
    assert golden.tiled_matmul(x, w, 16)[:, 0].tolist() == [top, bottom]
    # RTL: the last chunk of R terms onto the stored sums of the other MAX_SUM_TERMS - R terms
    before = MAX_SUM_TERMS - rows
    stored = np.array([[before << 14, before << 14], [-before * 128 * 127, -before * 128 * 127]])
    work = workloads.Workload(program=[MatMul(d_addr=0, w_addr=0, p_addr=0, n=2, accumulate=True)],
                              data={0: np.array([[-128] * rows, [127] * rows])},
                              weight={0: np.full((rows, cols), -128)}, psum={0: stored})
    got, cycles, _ = run_workload(work, {"sums": workloads.Region("psum", 0, 2, cols)}, rows, cols)
    assert got["sums"].tolist() == [[top, top], [bottom, bottom]]
    record_property("cycles", cycles)


def test_every_column_adder_has_its_own_select_registers():
    """Each column's accumulator adder takes the forwarding selects (hit1..4) and the accumulate
    flag from registers of its own, marked `keep` (one flip-flop each after
    `rtl.fpga.KEEP_FLIP_FLOPS`), not from one register driving all C x acc_bits multiplexers."""
    cols = 3
    config = ArrayConfig(2, cols, data_depth=16, weight_depth=16, routing_depth=16, psum_depth=16, program_depth=16)
    kept = kept_registers(export_verilog(config))
    assert {f"{name}_{c}" for name in ("hit1", "hit2", "hit3", "hit4", "accumulate") for c in range(cols)} <= kept


def test_the_partial_sum_read_is_registered_twice_apart_for_each_reader():
    """The accumulator (`psum_q2`) and the activation unit (`r0b`) each register the partial-sum
    memory's read data a second time, behind the register a block RAM can hold (`psum_q`, `r0`,
    equal and merged by synthesis); both second registers are `keep`, so they stay two registers,
    one beside each reader, not one driving both units."""
    config = ArrayConfig(2, 3, data_depth=16, weight_depth=16, routing_depth=16, psum_depth=16, program_depth=16)
    kept = kept_registers(export_verilog(config))
    assert {"psum_q2", "r0b"} <= kept
