"""CapsAcc top level: control unit programs end to end, bit-exact against sim.golden."""

import numpy as np
import pytest

from capsacc.array import ArrayConfig
from rtl import workloads
from rtl.isa import MatMul, act_cycles, matmul_cycles, program_cycles
from sim import golden
from rtl_bench import run_workload


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
    assert cycles == chunks * matmul_cycles(rows, cols, n) + act_cycles("relu", n, cols) + 2
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


@pytest.mark.parametrize("rows,cols", [(4, 4), (3, 4)])
def test_routing_phases(rows, cols, record_property):
    """Each phase of a routing from the state the previous left: the uniform first coupling's sums
    and squash, the agreement update, a softmax iteration; I = 5 inputs (two R-chunks on 3 rows),
    J = 3, D = 4."""
    rng = np.random.default_rng(11 + rows)
    n_in, n_out, dim = 5, 3, 4
    u_hat = rng.integers(-128, 128, size=(n_in, n_out, dim))
    layout = workloads.RoutingLayout(n_in, n_out, dim, ArrayConfig(rows, cols, 25, 128, 64))
    coupling = golden.uniform_coupling(n_in, n_out)
    with pytest.raises(ValueError, match="uniform coupling"):
        layout.phase("routing_uniform", u_hat, 8, 9)
    with pytest.raises(ValueError, match="unknown routing phase"):
        layout.phase("routing", u_hat, 8, 9, coupling)
    runs = layout.phase("routing_uniform", u_hat, 8, 9, coupling)
    got, cycles, _ = run_workload(runs, layout.regions, rows, cols)
    s, v = golden.routing_sum(coupling, u_hat, 9)
    assert np.array_equal(layout.coupling(got["c"]), coupling)
    assert np.array_equal(got["s"], s) and np.array_equal(layout.v(got["v"]), v)
    assert np.any(v != 0) and not np.any(got["b"])
    assert cycles == sum(program_cycles(run.program, rows, cols) for run in runs)
    runs += layout.phase("routing_update", u_hat) + layout.phase("routing_softmax", u_hat, 8, 9)
    got, cycles, _ = run_workload(runs, layout.regions, rows, cols)
    b = golden.routing_update(np.zeros((n_in, n_out), dtype=np.int64), u_hat, v)
    c = golden.activate(b, 8, "softmax")
    s, v = golden.routing_sum(c, u_hat, 9)
    assert np.array_equal(got["b"], b) and np.array_equal(layout.coupling(got["c"]), c)
    assert np.array_equal(got["s"], s) and np.array_equal(layout.v(got["v"]), v)
    assert len(np.unique(c)) > 2
    assert cycles == sum(program_cycles(run.program, rows, cols) for run in runs)
    record_property("cycles", cycles)
    print(f"routing of 2 iterations {rows}x{cols}: {cycles} cycles")


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
    got, cycles, counters = run_workload(work, regions, rows, cols)
    want = golden.accumulate(stored[0], golden.matmul_tile(x, w).sum(axis=0))
    assert np.array_equal(got["sum"][0], want)
    assert np.array_equal(got["next"][0], [0, 0, 0])
    assert counters["psum_writes"] == 9
    assert cycles == matmul_cycles(rows, cols, 9) + 2
    record_property("cycles", cycles)
