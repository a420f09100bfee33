"""Closed forms against SCALE-Sim 3.0.0 runs recorded in data/scalesim_reports.csv
(data/record_scalesim.py regenerates them)."""

import csv
from pathlib import Path

import numpy as np
import pytest

from capsacc.dse.systolic import DATAFLOWS, layer_reports, sram_words
from capsacc.dse.topology import builtin_topology, read_topology
from capsacc.dse.workload import topology_workload

DATA = Path(__file__).parent / "data"
LAYERS = read_topology(DATA / "scalesim_layers.csv")
TABLE = topology_workload("scalesim_layers", LAYERS, "inference").gemm_table()


def _recorded():
    with (DATA / "scalesim_reports.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    configs = {}
    for row in rows:
        key = (row["dataflow"], int(row["rows"]), int(row["cols"]), float(row["ifmap_sram_kB"]),
               float(row["filter_sram_kB"]), float(row["ofmap_sram_kB"]))
        configs.setdefault(key, []).append(row)
    return configs


RECORDED = _recorded()


def _ours(dataflow, rows, cols, ifmap_kB, filter_kB, ofmap_kB=64):
    return layer_reports(TABLE, rows, cols, DATAFLOWS.index(dataflow), sram_words(ifmap_kB), sram_words(filter_kB),
                         sram_words(ofmap_kB))


def test_recording_covers_every_dataflow_and_several_arrays():
    assert {key[0] for key in RECORDED} == set(DATAFLOWS)
    assert len({key[1:3] for key in RECORDED}) >= 4
    assert all(len(rows) == len(LAYERS) for rows in RECORDED.values())


@pytest.mark.parametrize("config", sorted(RECORDED), ids=lambda c: "-".join(map(str, c)))
def test_compute_cycles_and_sram_accesses_match_scalesim(config):
    ours = _ours(*config)
    for layer, recorded, mine in zip(LAYERS, RECORDED[config], ours):
        assert recorded["layer"] == layer.name
        expected = [int(recorded[c]) for c in ("total_cycles", "sram_ifmap_reads", "sram_filter_reads",
                                               "sram_ofmap_writes")]
        assert list(mine[:4]) == expected, layer.name
        assert int(recorded["stall_cycles"]) == 0


@pytest.mark.parametrize("config", sorted(c for c in RECORDED if c[3] == 64), ids=lambda c: "-".join(map(str, c)))
def test_dram_accesses_match_scalesim_when_operands_fit(config):
    ours = _ours(*config)
    for recorded, mine in zip(RECORDED[config], ours):
        expected = [int(recorded[c]) for c in ("dram_ifmap_reads", "dram_filter_reads", "dram_ofmap_writes",
                                               "total_cycles_incl_prefetch")]
        assert list(mine[4:]) == expected, recorded["layer"]


@pytest.mark.parametrize("config", sorted(c for c in RECORDED if c[3] == 1), ids=lambda c: "-".join(map(str, c)))
def test_cycles_incl_prefetch_close_to_scalesim_with_small_srams(config):
    for recorded, mine in zip(RECORDED[config], _ours(*config)):
        assert mine[7] == pytest.approx(int(recorded["total_cycles_incl_prefetch"]), rel=0.06), recorded["layer"]


def test_closed_forms_by_hand():
    # conv_a: 10x10x4 input, 3x3 filters, 8 of them -> M = 64, K = 36, N = 8; a 4x4 array.
    ws, os_, is_ = (_ours(d, 4, 4, 64, 64)[0] for d in DATAFLOWS)
    assert ws[0] == 9 * 2 * (8 + 4 + 64 - 2) - 1
    assert os_[0] == 16 * 2 * (4 + 4 + 36 - 2) - 1
    assert is_[0] == 9 * 16 * (8 + 4 + 8 - 2) - 1
    assert list(ws[1:4]) == [64 * 36 * 2, 36 * 8, 9 * 64 * 8]
    assert list(os_[1:4]) == [64 * 36 * 2, 36 * 8 * 16, 64 * 8 + (4 + 4) * 16 * 2]
    assert list(is_[1:4]) == [64 * 36, 36 * 8 * 16, 9 * 64 * 8]


def test_small_srams_refetch_the_streamed_operand():
    # conv_e (M 49, K 72, N 33): its 648-value ifmap does not fit the 512-word active half of 1 kB.
    big = _ours("ws", 4, 4, 64, 64)[4]
    small = _ours("ws", 4, 4, 1, 1)[4]
    assert big[4] == 648 and small[4] == 648 * 9
    assert small[5] == big[5] == 72 * 33
    is_small = _ours("is", 4, 4, 1, 1)[4]
    assert is_small[5] == 72 * 33 * 13


def test_counts_scale_with_gemm_count():
    table = TABLE[:1].copy()
    doubled = table.copy()
    doubled[0, 3] = 2
    np.testing.assert_array_equal(layer_reports(doubled, 8, 8, 0, 1024, 1024, 1024),
                                  2 * layer_reports(table, 8, 8, 0, 1024, 1024, 1024))


def _gemm_records():
    with (DATA / "scalesim_gemm_reports.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_training_gemms_match_scalesim_gemm_mode():
    """LeNet's conv2 and fc2 training passes, recorded with SCALE-Sim's GEMM input (`-i gemm`)."""
    gemm_layers = read_topology(DATA / "scalesim_gemms.csv")
    training = topology_workload("lenet", builtin_topology("lenet"), "training")
    ours = {f"{g.layer}_{g.phase}": g for g in training.gemms if g.layer in ("conv2", "fc2")}
    # the recorded GEMM rows are exactly this workload's passes
    assert [(l.name, l.gemm_mkn) for l in gemm_layers] == [(n, (g.m, g.k, g.n)) for n, g in ours.items()]
    records = _gemm_records()
    assert len(records) == 3 * 2 * len(gemm_layers)
    from_csv = topology_workload("gemms", gemm_layers, "inference").gemm_table()
    from_workload = np.array([[g.m, g.k, g.n, g.count, g.ifmap_words, g.filter_words] for g in ours.values()])
    for record in records:
        index = [l.name for l in gemm_layers].index(record["layer"])
        args = (int(record["rows"]), int(record["cols"]), DATAFLOWS.index(record["dataflow"]), 65536, 65536, 65536)
        parsed = layer_reports(from_csv[index:index + 1], *args)[0]
        mine = layer_reports(from_workload[index:index + 1], *args)[0]
        expected = [int(record[c]) for c in ("total_cycles", "sram_ifmap_reads", "sram_filter_reads",
                                             "sram_ofmap_writes")]
        assert list(parsed[:4]) == list(mine[:4]) == expected, record
        # GEMM mode's left operand is m x k distinct values: DRAM ifmap and filter reads match
        assert list(parsed[4:6]) == [int(record["dram_ifmap_reads"]), int(record["dram_filter_reads"])], record


def test_replay_matches_scalesim_everywhere():
    """DRAM reads and writes and cycles incl. prefetch replayed through SCALE-Sim's buffer models:
    identical on all 156 recorded runs, small SRAMs included; the closed-form ofmap writes too."""
    from capsacc.dse.replay import replay_layer

    cases = [(LAYERS, TABLE, row) for rows in RECORDED.values() for row in rows]
    gemm_layers = read_topology(DATA / "scalesim_gemms.csv")
    gemm_table = topology_workload("gemms", gemm_layers, "inference").gemm_table()
    cases += [(gemm_layers, gemm_table, row) for row in _gemm_records()]
    assert len(cases) == 156
    columns = ("dram_ifmap_reads", "dram_filter_reads", "dram_ofmap_writes", "total_cycles_incl_prefetch")
    for layers, table, row in cases:
        index = [layer.name for layer in layers].index(row["layer"])
        rows, cols, flow = int(row["rows"]), int(row["cols"]), DATAFLOWS.index(row["dataflow"])
        words = [sram_words(float(row[f"{b}_sram_kB"])) for b in ("ifmap", "filter", "ofmap")]
        replayed = replay_layer(layers[index], rows, cols, flow, *words)
        expected = tuple(int(row[c]) for c in columns)
        assert tuple(getattr(replayed, c) for c in columns) == expected, row
        assert replayed.stall_cycles == int(row["stall_cycles"]) == 0
        assert layer_reports(table[index:index + 1], rows, cols, flow, *words)[0, 6] == expected[2]
