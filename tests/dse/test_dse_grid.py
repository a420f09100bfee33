"""Design-grid figures checked by hand, and the `nascaps dse` / `nascaps systolic` commands."""

import csv
import json
import math

import numpy as np
import pytest

from capsacc.cli import main
from capsacc.dse.cli import parse_values
from capsacc.dse.grid import COLUMNS, DesignGrid, evaluate
from capsacc.dse.topology import builtin_topology
from capsacc.dse.workload import capsule_workload, topology_workload
from capsacc.errors import InputError
from capsacc.network import PRESETS, Network
from capsacc.tables import pe_figures, register_figures


def brute_force(points):
    """Indices of the points that no other point dominates (minimisation), by pairwise checks."""
    return [i for i, p in enumerate(points) if not any(np.all(q <= p) and np.any(q < p) for q in points)]


def test_one_design_point_by_hand():
    workload = topology_workload("lenet", builtin_topology("lenet"), "inference")
    grid = DesignGrid(rows=(8,), cols=(16,), dataflows=("ws",), ifmap_sram_kB=(8.0,), filter_sram_kB=(32.0,),
                      ofmap_sram_kB=(2.0,), period_ns=(3.0,), sram_overhead=1.5)
    row = dict(zip(COLUMNS, evaluate(workload, grid).table[0]))
    cycles = sram = dram = 0
    sram_pj = 0.0
    for g in workload.gemms:
        m, k, n = g.m, g.k, g.n
        cycles += math.ceil(k / 8) * math.ceil(n / 16) * (16 + 16 + m - 2) - 1
        reads_i, reads_f, writes_o = m * k * math.ceil(n / 16), k * n, math.ceil(k / 8) * m * n
        dram_i = g.ifmap_words if g.ifmap_words <= 4096 else g.ifmap_words * math.ceil(n / 16)
        dram_f = g.filter_words
        dram_o = writes_o + (16 - 1 if writes_o > 1024 else 0)  # padding of a line forced out early
        sram += reads_i + reads_f + writes_o
        dram += dram_i + dram_f + dram_o
        sram_pj += ((reads_i + dram_i) * 10 * math.sqrt(8 / 8) / 8 + (reads_f + dram_f) * 10 * math.sqrt(32 / 8) / 8
                    + (writes_o + dram_o) * 10 * math.sqrt(2 / 8) / 8)
    pe_power, pe_area = pe_figures(3.0, 25, 1, 1)
    reg_power, reg_area = register_figures(3.0, 25)
    latency_ns = cycles * 3.0
    energy_pj = (128 * pe_power + 16 * reg_power) * latency_ns + sram_pj
    area_um2 = 128 * pe_area + 16 * reg_area + (8 + 32 + 2) * 1024 * 8 * 0.346 * 1.5
    ops = 2 * workload.macs
    assert row["cycles"] == cycles
    assert row["sram_accesses"] == sram and row["dram_accesses"] == dram
    assert row["latency_ms"] == pytest.approx(latency_ns * 1e-6, rel=1e-12)
    assert row["energy_mJ"] == pytest.approx(energy_pj * 1e-9, rel=1e-12)
    assert row["dram_energy_mJ"] == pytest.approx(dram * 1950 / 8 * 1e-9, rel=1e-12)
    assert row["power_mW"] == pytest.approx(energy_pj / latency_ns, rel=1e-12)
    assert row["area_mm2"] == pytest.approx(area_um2 * 1e-6, rel=1e-12)
    assert row["TOPS_per_mm2"] == pytest.approx(ops / (latency_ns * 1e-9) / 1e12 / (area_um2 * 1e-6), rel=1e-12)
    assert row["fJ_per_op"] == pytest.approx(energy_pj * 1e3 / ops, rel=1e-12)


def test_activation_unit_adds_cycles_energy_and_area():
    workload = capsule_workload(Network.preset("capsnet"), "inference")
    grid = DesignGrid(rows=(16,), cols=(16,), dataflows=("os",), ifmap_sram_kB=(64.0,), filter_sram_kB=(64.0,),
                      ofmap_sram_kB=(64.0,), period_ns=(3.0,))
    with_unit = dict(zip(COLUMNS, evaluate(workload, grid).table[0]))
    without = dict(zip(COLUMNS, evaluate(workload.__class__(workload.name, workload.mode, workload.batch,
                                                           workload.gemms, ()), grid).table[0]))
    assert with_unit["cycles"] - without["cycles"] == math.ceil(workload.vector_elements / 16)
    lanes = 16 * 2 * (3495 + 137) * 1e-6
    assert with_unit["area_mm2"] - without["area_mm2"] == pytest.approx(lanes, rel=1e-9)
    assert with_unit["energy_mJ"] > without["energy_mJ"]


def test_grid_order_and_size():
    workload = topology_workload("lenet", builtin_topology("lenet"), "training")
    grid = DesignGrid(rows=(4, 8), cols=(4, 16, 32), ifmap_sram_kB=(8.0, 64.0), filter_sram_kB=(8.0,),
                      ofmap_sram_kB=(8.0, 16.0), period_ns=(2.0, 4.0))
    table = evaluate(workload, grid).table
    assert table.shape == (grid.size, len(COLUMNS)) == (2 * 3 * 3 * 2 * 1 * 2 * 2, 17)
    assert sorted(set(zip(table[:, 0], table[:, 1]))) == [(r, c) for r in (4, 8) for c in (4, 16, 32)]
    faster = table[table[:, 6] == 2.0, 8]
    slower = table[table[:, 6] == 4.0, 8]
    np.testing.assert_allclose(slower, 2 * faster)


def test_bad_grids():
    with pytest.raises(InputError, match="unknown dataflow 'rs'"):
        DesignGrid(rows=(4,), cols=(4,), dataflows=("rs",))
    with pytest.raises(InputError, match="--rows: must be integers in 1..65536, got 0"):
        DesignGrid(rows=(0,), cols=(4,))


def test_parse_values():
    assert parse_values("4:128", "--rows", int) == (4, 8, 16, 32, 64, 128)
    assert parse_values("4:16:4", "--rows", int) == (4, 8, 12, 16)
    assert parse_values("32,128", "--sram-kB") == (32.0, 128.0)
    for bad in ("8:4", "a:b", "1:2:3:4", "x"):
        with pytest.raises(InputError, match="--rows: cannot read"):
            parse_values(bad, "--rows", int)


def test_separate_sram_sizes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["dse", "--network", "lenet", "--rows", "8", "--cols", "8", "--dataflow", "ws", "--period-ns", "3",
                 "--sram-kB", "16", "--filter-sram-kB", "4,64", "--out", str(out)]) == 0
    designs = _read_csv(out / "designs.csv")
    assert [(d["ifmap_sram_kB"], d["filter_sram_kB"], d["ofmap_sram_kB"]) for d in designs] == [
        ("16", "4", "16"), ("16", "64", "16")]
    assert "--filter-sram-kB 4,64" in json.loads((out / "run.json").read_text())["command"]
    capsys.readouterr()
    assert main(["dse", "--network", "lenet", "--ofmap-sram-kB", "x", "--out", str(out)]) == 2
    assert "--ofmap-sram-kB: cannot read 'x'" in capsys.readouterr().err


def _read_csv(path):
    with path.open() as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return list(csv.DictReader(lines))


def test_dse_command_writes_designs_and_pareto(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["dse", "--network", "lenet", "--mode", "training", "--rows", "4:32", "--cols", "4:32",
                 "--sram-kB", "8,64", "--period-ns", "2,4", "--out", str(out)])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "best TOPS/mm2 (Pareto set):" in stdout and "best fJ/op (all designs):" in stdout
    designs = _read_csv(out / "designs.csv")
    assert list(designs[0]) == list(COLUMNS)
    assert len(designs) == 4 * 4 * 3 * 8 * 2
    pareto = _read_csv(out / "pareto.csv")
    objectives = np.array([[float(d["power_mW"]), float(d["area_mm2"]), float(d["latency_ms"])] for d in designs])
    expected = brute_force(objectives)
    assert len(pareto) == len(expected)
    keys = {tuple(d.values()) for d in pareto}
    assert keys == {tuple(designs[i].values()) for i in expected}
    header = [line for line in (out / "designs.csv").read_text().splitlines() if line.startswith("#")]
    assert '# network: "lenet"' in header and '# mode: "training"' in header
    run = json.loads((out / "run.json").read_text())
    assert run["design_points"] == len(designs) and run["pareto_points"] == len(pareto)
    png = (out / "pareto.png").read_bytes()
    assert png[:4] == b"\x89PNG" and b'"network": "lenet"' in png


def test_dse_command_on_a_genotype_rescaled(tmp_path, capsys):
    genotype = tmp_path / "deep.json"
    genotype.write_text(json.dumps(PRESETS["deepcaps"]))
    args = ["--rows", "16", "--cols", "16", "--dataflow", "ws", "--sram-kB", "64", "--period-ns", "3"]
    assert main(["dse", "--network", str(genotype), "--input-side", "28", "--input-channels", "1", *args,
                 "--out", str(tmp_path / "a")]) == 0
    assert main(["dse", "--network", "deepcaps", "--input-side", "28", "--input-channels", "1", *args,
                 "--out", str(tmp_path / "b")]) == 0
    a = _read_csv(tmp_path / "a" / "designs.csv")
    b = _read_csv(tmp_path / "b" / "designs.csv")
    assert a == b and len(a) == 1
    capsys.readouterr()
    assert main(["dse", "--network", str(tmp_path / "missing.json"), *args, "--out", str(tmp_path / "c")]) == 2
    assert "neither a shipped network (alexnet, lenet" in capsys.readouterr().err


def test_systolic_command_json_and_table(capsys):
    assert main(["systolic", "--topology", "alexnet", "--rows", "16", "--cols", "16", "--dataflow", "os",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    conv1 = report["layers"][0]
    # conv1: M = 55·55, K = 11·11·3, N = 96 on 16x16, os.
    assert conv1["total_cycles"] == math.ceil(3025 / 16) * 6 * (16 + 16 + 363 - 2) - 1
    assert conv1["sram_filter_reads"] == 363 * 96 * math.ceil(3025 / 16)
    assert report["config"]["dataflow"] == "os" and len(report["layers"]) == 8
    assert main(["systolic", "--topology", "lenet", "--rows", "8", "--cols", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "total_cycles" in lines[1] and lines[2].split()[1] == "conv1" and lines[-1].split()[0] == "total"


def test_bad_cli_input_exits_2(tmp_path, capsys):
    out = str(tmp_path / "x")
    assert main(["dse", "--network", "lenet", "--period-ns", "1", "--out", out]) == 2
    assert "no synthesized PE for period_ns=1.0" in capsys.readouterr().err
    assert main(["dse", "--network", "lenet", "--batch", "0", "--out", out]) == 2
    assert "--batch: must be in 1..1048576, got 0" in capsys.readouterr().err
    assert main(["systolic", "--topology", "lenet", "--rows", "4", "--cols", "4", "--sram-kB", "64,64"]) == 2
    assert "--sram-kB: give three positive sizes" in capsys.readouterr().err


def test_grid_agrees_with_layer_reports():
    from capsacc.dse.systolic import DATAFLOWS, layer_reports, sram_words

    workload = capsule_workload(Network.preset("deepcaps"), "training")
    grid = DesignGrid(rows=(4, 24), cols=(8, 128), ifmap_sram_kB=(2.0, 512.0), filter_sram_kB=(8.0,),
                      ofmap_sram_kB=(16.0,), period_ns=(4.0,))
    table = evaluate(workload, grid).table
    gemms = workload.gemm_table()
    for row in table:
        r, c, flow, ifmap_kB, filter_kB, ofmap_kB = int(row[0]), int(row[1]), int(row[2]), row[3], row[4], row[5]
        reports = layer_reports(gemms, r, c, flow, sram_words(ifmap_kB), sram_words(filter_kB),
                                sram_words(ofmap_kB)).sum(axis=0)
        assert row[7] == reports[0] + math.ceil(workload.vector_elements / c), (r, c, DATAFLOWS[flow])
        assert row[15] == reports[1:4].sum() and row[16] == reports[4:7].sum()


def test_systolic_replay_option(capsys):
    from pathlib import Path

    topology = str(Path(__file__).parent / "data" / "scalesim_layers.csv")
    args = ["systolic", "--topology", topology, "--rows", "4", "--cols", "4", "--sram-kB", "1,1,1", "--json"]
    assert main(args) == 0
    closed = json.loads(capsys.readouterr().out)
    assert main(args + ["--replay"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["config"]["model"] == "scalesim-3.0.0-replay"
    conv_e = {"closed": closed["layers"][4], "replayed": replayed["layers"][4]}
    # SCALE-Sim's recorded 15532 DRAM ifmap reads (ws, 4x4, 1 kB); the closed form's refetch model gives 648·9
    assert (conv_e["closed"]["dram_ifmap_reads"], conv_e["replayed"]["dram_ifmap_reads"]) == (5832, 15532)
    same = ("total_cycles", "sram_ifmap_reads", "sram_filter_reads", "sram_ofmap_writes")
    assert all(conv_e["closed"][c] == conv_e["replayed"][c] for c in same)
