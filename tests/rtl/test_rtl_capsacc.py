"""CapsAcc top level: control unit programs end to end, bit-exact against sim.golden."""

import numpy as np
import pytest

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
def test_routing_iteration(rows, cols, record_property):
    """Softmax of the logits, weighted sum, squash, agreement update: I = rows inputs, J = 3, D = 4."""
    rng = np.random.default_rng(11 + rows)
    n_in, n_out, dim = rows, 3, 4
    u_hat = rng.integers(-128, 128, size=(n_in, n_out, dim))
    logits = rng.integers(-(1 << 14), 1 << 14, size=(n_in, n_out))
    work, regions = workloads.routing_iteration(logits, u_hat, rows, cols, shift_logits=8, shift_sum=9)
    got, cycles, _ = run_workload(work, regions, rows, cols)
    c, s, v, b_new = golden.routing_iteration(logits, u_hat, 8, 9)
    assert np.array_equal(got["c"].T, c)
    assert np.array_equal(got["s"], s)
    blocks = got["v_blocks"]
    assert np.array_equal(np.array([[blocks[j * dim + d, j] for d in range(dim)] for j in range(n_out)]), v)
    assert np.array_equal(got["b"], b_new)
    assert np.any(v != 0) and np.any(b_new != logits)
    assert cycles == program_cycles(work.program, rows, cols)
    record_property("cycles", cycles)
    print(f"routing iteration {rows}x{cols}: {cycles} cycles")


def test_routing_iteration_twice_keeps_logits_in_psum():
    """A second iteration starts from the logits the first left in the partial-sum memory."""
    rng = np.random.default_rng(5)
    u_hat = rng.integers(-128, 128, size=(4, 2, 3))
    logits = np.zeros((4, 2), dtype=np.int64)
    work, regions = workloads.routing_iteration(logits, u_hat, 4, 4, 8, 9)
    once = work.program
    work.program = once + once
    got, _, _ = run_workload(work, regions, 4, 4)
    _, _, _, b1 = golden.routing_iteration(logits, u_hat, 8, 9)
    _, _, v2, b2 = golden.routing_iteration(b1, u_hat, 8, 9)
    assert np.array_equal(got["b"], b2)


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
