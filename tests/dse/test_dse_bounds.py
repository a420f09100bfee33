"""Bounds of the exploration's inputs: no int64 wrap-around, memory preflight, no endless replay."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsacc.cli import main
from capsacc.dse.grid import DesignGrid, evaluate
from capsacc.dse.replay import check_replay, replay_layer
from capsacc.dse.systolic import INT64_MAX, count_bound, layer_reports
from capsacc.dse.topology import ConvLayer, builtin_topology
from capsacc.dse.workload import Gemm, Workload, topology_workload
from capsacc.errors import InputError


def error_line(capsys, command: str) -> str:
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nascaps {command}: error: "), lines
    return lines[0]


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 5000), k=st.integers(1, 5000), n=st.integers(1, 5000), count=st.integers(1, 9),
       ifmap=st.integers(1, 10 ** 6), filter_=st.integers(1, 10 ** 6), rows=st.integers(1, 64),
       cols=st.integers(1, 64), sram=st.integers(2, 10 ** 6))
def test_count_bound_exceeds_every_count_of_every_dataflow(m, k, n, count, ifmap, filter_, rows, cols, sram):
    table = np.array([[m, k, n, count, ifmap, filter_]], np.int64)
    bound = count_bound(m, k, n, count, ifmap, filter_, (rows, rows), (cols, cols))
    for flow in range(3):
        report = layer_reports(table, rows, cols, flow, sram, sram, sram)
        assert report.min() >= 0
        assert int(report.sum()) <= bound


def test_a_huge_input_side_is_refused_not_wrapped(tmp_path, capsys):
    argv = ["dse", "--network", "capsnet", "--rows", "16", "--cols", "16", "--dataflow", "ws", "--sram-kB", "64",
            "--period-ns", "3", "--out", str(tmp_path / "d")]
    assert main(argv + ["--input-side", "100000000"]) == 2
    assert "--input-side: must be in 1..4096, got 100000000" in error_line(capsys, "dse")
    assert main(argv + ["--input-side", "4096"]) == 0
    latency = float(capsys.readouterr().out.split("latency_ms ")[1].split(",")[0])
    assert latency > 0


def test_a_workload_past_int64_is_refused():
    gemm = Gemm("huge", "forward", 2 ** 40, 2 ** 12, 2 ** 12, 1, 2 ** 40, 2 ** 24)
    workload = Workload("w", "inference", 1, (gemm,), ())
    with pytest.raises(InputError, match="more than 64-bit integers hold.*layer huge"):
        evaluate(workload, DesignGrid(rows=(16,), cols=(16,)))
    fits = Workload("w", "inference", 1, (Gemm("ok", "forward", 2 ** 20, 2 ** 10, 2 ** 10, 1, 2 ** 20, 2 ** 20),), ())
    fits.check_int64((1, 128), (1, 128))
    assert count_bound(2 ** 20, 2 ** 10, 2 ** 10, 1, 2 ** 20, 2 ** 20, (1, 128), (1, 128)) < INT64_MAX


def test_a_topology_with_huge_sides_is_refused(tmp_path, capsys):
    topology = tmp_path / "big.csv"
    topology.write_text("name,H,W,FH,FW,C,N,S,\nc1,2000000000,2000000000,3,3,1000,1000,1,\n")
    assert main(["systolic", "--topology", str(topology), "--rows", "16", "--cols", "16"]) == 2
    assert "more than 64-bit integers hold" in error_line(capsys, "systolic")
    topology.write_text("name,H,W,FH,FW,C,N,S,\nc1,99999999999,8,3,3,1,1,1,\n")
    assert main(["systolic", "--topology", str(topology), "--rows", "16", "--cols", "16"]) == 2
    assert "IFMAP Height must be in 1..2147483647" in error_line(capsys, "systolic")
    topology.write_text("name,H,W,FH,FW,C,N,S,\nc1DP,20,20,3,3,1000000000,1,1,\n")
    assert main(["systolic", "--topology", str(topology), "--rows", "16", "--cols", "16"]) == 2
    assert "more than 65536 layers" in error_line(capsys, "systolic")


def test_a_grid_too_large_for_memory_is_refused_before_allocating(tmp_path, capsys):
    assert main(["dse", "--network", "lenet", "--rows", "1:4096:1", "--cols", "1:4096:1",
                 "--out", str(tmp_path / "g")]) == 2
    assert "design points and needs about" in error_line(capsys, "dse")
    assert main(["dse", "--network", "lenet", "--rows", "1:10000000000000:1", "--out", str(tmp_path / "g")]) == 2
    assert "more than the limit of 65,536" in error_line(capsys, "dse")
    grid = DesignGrid(rows=(4,), cols=tuple(range(1, 65)))
    assert grid.memory_bytes >= grid.size * 256
    with pytest.raises(InputError, match="15,552 design points and needs about 4 MiB, more than the 1 MiB limit"):
        grid.check_memory(limit_bytes=2 ** 20)


@pytest.mark.parametrize("flag, value, message", [
    ("--sram-kB", "nan", "sizes must be numbers in 1..1,048,576 kB, got nan"),
    ("--sram-kB", "1e400", "got inf"),
    ("--sram-kB", "0.0001", "got 0.0001"),
    ("--period-ns", "3,nan", "--period-ns: periods must be numbers"),
    ("--sram-overhead", "inf", "--sram-overhead: must be a number in 1..1000, got inf"),
    ("--rows", "99999999999999999999", "--rows: must be integers in 1..65536"),
    ("--batch", "99999999999999999999999", "--batch: must be in 1..1048576"),
    ("--input-channels", "0", "--input-channels: must be in 1..65536, got 0"),
])
def test_bad_numbers_in_flags_are_one_line(tmp_path, capsys, flag, value, message):
    argv = ["dse", "--network", "capsnet", "--rows", "4", "--cols", "4", "--out", str(tmp_path / "d")]
    assert main(argv + [flag, value]) == 2
    assert message in error_line(capsys, "dse")


def test_replay_with_an_ofmap_sram_that_cannot_drain_stops(capsys):
    assert main(["systolic", "--topology", "lenet", "--rows", "16", "--cols", "16", "--sram-kB", "64,64,0.0001",
                 "--replay"]) == 2
    assert "got 0.0001" in error_line(capsys, "systolic")
    layer = builtin_topology("lenet")[0]
    with pytest.raises(InputError, match="cannot drain"):
        replay_layer(layer, 4, 4, 0, 65536, 65536, 0)


def test_replay_too_long_or_too_large_is_refused(capsys):
    assert main(["systolic", "--topology", "alexnet", "--rows", "1", "--cols", "1", "--replay"]) == 2
    assert "--replay: layer conv2 needs about" in error_line(capsys, "systolic")
    long = [ConvLayer("long", 100, 100, 3, 3, 8000, 128, 1)]
    with pytest.raises(InputError, match="steps, more than the limit"):
        check_replay(long, 16, 16, 1, 65536)


def test_topology_workload_of_a_shipped_network_fits():
    topology_workload("alexnet", builtin_topology("alexnet"), "training", 1024).check_int64((1, 65536), (1, 65536))
