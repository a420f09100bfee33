"""`nascaps rtl run`: a whole network on the RTL from the command line, chained and bit-exact, with
its cycles beside the compute bound; operations the mapping cannot place are located errors."""

import dataclasses
import json

import numpy as np
import pytest

import sim.golden as golden
from capsacc import Accelerator, estimate
from capsacc.array import ArrayConfig, buffer_depths
from capsacc.calibrated import TARGET_FEATURES, Calibration
from capsacc.cli import main
from capsacc.energy import EventEnergies
from capsacc.errors import InputError
from capsacc.network import Network, Operation
from sim.network_run import check_chainable
from test_sim_calibrated_model import ISA
from test_sim_network_run import GENOTYPE

ARRAY = ["--rows", "4", "--cols", "4", "--buffer-depth", "64", "--program-depth", "32"]
KEYS = {"macs", "compute_bound_cycles", "cycles", "utilisation", "bit_exact", "batch_cycles"}


def isa_costs(network: Network, batch: int = 1) -> list[int]:
    """The calibrated model's cycles per image of each operation with the RTL's exact timing coefficients
    (cycles do not depend on the accumulator width)."""
    return [op.cycles for op in isa_estimate(network, batch).operations]


def isa_estimate(network: Network, batch: int = 1):
    """`estimate` by the calibrated model with the RTL's exact timing coefficients on the 4x4 array of
    `ARRAY`, its off-chip port the default (16 B/cycle)."""
    coefficients = {t: tuple(1.0 for _ in names) for t, names in TARGET_FEATURES.items()}
    coefficients["cycles"] = tuple(float(ISA[n]) for n in TARGET_FEATURES["cycles"])
    calibration = Calibration(ArrayConfig(4, 4, 25, **buffer_depths(64), program_depth=32, batch=batch), coefficients,
                              EventEnergies.from_tables(ArrayConfig(4, 4, 25, **buffer_depths(64))), 1.0e6)
    accelerator = dataclasses.replace(Accelerator.from_tables(rows=4, cols=4), calibration=calibration)
    return estimate(network, accelerator)


def run_json(tmp_path, capsys, simulator: str, batch: int = 1, array: tuple = ()) -> dict:
    path = tmp_path / "small.json"
    path.write_text(json.dumps(GENOTYPE))
    assert main(["rtl", "run", str(path), *ARRAY, *array, "--batch", str(batch), "--simulator", simulator,
                 "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 8  # one progress line per operation
    return json.loads(out)


def test_rtl_run_json_reports_every_operation_bit_exact(tmp_path, capsys):
    report = run_json(tmp_path, capsys, "amaranth")
    network = Network.from_genotype(GENOTYPE)
    assert KEYS | {"operations", "genotype", "array", "rtl_version", "seed", "image", "batch"} <= set(report)
    assert report["genotype"] == GENOTYPE and report["array"]["rows"] == 4 and report["seed"] == 0
    assert report["batch"] == 1 and "batch" not in report["array"]
    assert "mnist_subset.npz" in report["image"]
    ops = report["operations"]
    assert [o["name"] for o in ops] == [op.name for op in network.operations]
    assert [o["kind"] for o in ops] == ["conv", "convcaps", "classcaps", "routing_uniform", "routing_first_update",
                                        "routing_softmax", "routing_update", "routing_softmax"]
    assert [o["cycles"] for o in ops] == isa_costs(network)
    for o, op in zip(ops, network.operations):
        assert KEYS <= set(o) and o["bit_exact"] is True
        assert o["macs"] == op.macs and o["compute_bound_cycles"] == -(-op.macs // 16)
        assert o["utilisation"] == pytest.approx(op.macs / (16 * o["cycles"]))
    assert report["bit_exact"] is True
    assert report["macs"] == sum(o["macs"] for o in ops) and report["cycles"] == sum(o["cycles"] for o in ops)
    assert 0 < report["utilisation"] < 1
    # Data movement (the DMA from the off-chip memory, 16 B per cycle by default): counted on top of the compute.
    assert report["array"]["offchip_bytes_per_cycle"] == 16 and report["array"]["offchip_latency_cycles"] == 64
    for o in ops:
        assert o["total_cycles"] > o["cycles"] and o["offchip_bytes"] > 0
        assert o["bound"] == ("bandwidth" if -(-o["offchip_bytes"] // 16) > o["batch_cycles"] else "compute")
    assert report["total_cycles"] == sum(o["total_cycles"] for o in ops)
    assert report["offchip_bytes"] == sum(o["offchip_bytes"] for o in ops)
    model = isa_estimate(network).operations  # the RTL's counted beats, predicted (capsacc.mapping.count_step)
    assert [o["offchip_bytes"] for o in ops] == [op.offchip_bytes for op in model]
    assert [o["bound"] for o in ops] == [op.bound for op in model]


def test_rtl_run_builds_each_memory_at_its_own_depth(tmp_path, capsys):
    """Deeper data and partial-sum memories than the other buffers: the RTL is built with them, the
    tiling uses the rows every buffer has (64), so every operation is bit-exact in the same cycles."""
    report = run_json(tmp_path, capsys, "amaranth", array=("--data-depth", "128", "--psum-depth", "256"))
    assert report["array"] == {"rows": 4, "cols": 4, "acc_bits": 34, "data_depth": 128, "weight_depth": 64,
                               "routing_depth": 64, "psum_depth": 256, "program_depth": 32,
                               "offchip_bytes_per_cycle": 16, "offchip_latency_cycles": 64}
    assert report["bit_exact"] is True
    assert [o["cycles"] for o in report["operations"]] == isa_costs(Network.from_genotype(GENOTYPE))


def test_rtl_run_table(capsys, tmp_path):
    path = tmp_path / "small.json"
    path.write_text(json.dumps(GENOTYPE))
    assert main(["rtl", "run", str(path), *ARRAY, "--batch", "1", "--simulator", "amaranth"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["operation", "kind", "macs", "compute_bound_cycles", "cycles", "utilisation",
                                "batch_cycles", "bit_exact"]
    assert len(lines) == 2 + 8 + 1 and lines[-1].split()[0] == "total" and lines[-1].split()[-1] == "yes"
    assert int(lines[-1].split()[3]) == sum(int(line.split()[4]) for line in lines[2:-1])


def test_rtl_run_of_a_batch_reports_per_image_figures(tmp_path, capsys):
    """A batch of 2 MNIST images: each operation's batch cycles are the calibrated model's for the batch,
    its cycles per image their half rounded up, the totals their sums; ClassCaps per image is cheaper
    than at batch 1 and routing is not."""
    report = run_json(tmp_path, capsys, "amaranth", batch=2)
    single = run_json(tmp_path, capsys, "amaranth", batch=1)
    network = Network.from_genotype(GENOTYPE)
    assert report["batch"] == 2 and report["bit_exact"] is True and "x_test[0:2]" in report["image"]
    ops = report["operations"]
    assert [o["cycles"] for o in ops] == isa_costs(network, batch=2)
    for o, one in zip(ops, single["operations"]):
        assert o["cycles"] == -(-o["batch_cycles"] // 2) and o["macs"] == one["macs"]
        assert o["utilisation"] == pytest.approx(o["macs"] / (16 * o["cycles"]))
        if o["kind"].startswith("routing"):
            assert o["batch_cycles"] == 2 * one["cycles"]
        if o["kind"] == "classcaps":
            assert o["cycles"] < one["cycles"]
    assert report["cycles"] == sum(o["cycles"] for o in ops)
    assert report["batch_cycles"] == sum(o["batch_cycles"] for o in ops)


@pytest.mark.parametrize("batch", ["0", "1001", "-3"])
def test_rtl_run_refuses_a_bad_batch(batch, capsys):
    assert main(["rtl", "run", "capsnet", "--rows", "4", "--cols", "4", "--batch", batch]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (f"nascaps rtl run: error: --batch {batch}: must be in 1..1000 (the test images "
                                 "of the packaged MNIST subset)\n")


@pytest.mark.parametrize("argv, where", [
    (["capsnet", "--rows", "4", "--cols", "4", "--buffer-depth", "64"],
     "operation conv0 (conv): does not map onto the 4x4 array: 64 column blocks do not fit buffers of 64 rows"),
    (["deepcaps", "--rows", "16", "--cols", "16", "--buffer-depth", "128", "--program-depth", "16"],
     "operation convcaps3d16.route3d (route3d): does not map onto the 16x16 array: routing over 32 capsules, 32 "
     "classes of 8 atoms does not fit buffers of 128 rows and a program of 16 words"),
    (["capsnet", "--rows", "4", "--cols", "64"], "cols: 64 outside [1, 63]"),
    (["capsnet", "--rows", "4", "--cols", "4", "--offchip-bytes-per-cycle", "3"],
     "offchip_bytes_per_cycle: 3 is not a power of two in [1, 64]"),
    (["capsnet", "--rows", "4", "--cols", "4", "--offchip-latency-cycles", "0"],
     "array 'offchip_latency_cycles' must be an integer in 1..1048576, got 0"),
])
def test_rtl_run_refuses_what_it_cannot_run_before_simulating(argv, where, capsys):
    assert main(["rtl", "run", *argv, "--simulator", "amaranth", "--batch", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith("nascaps rtl run: error: ") and where in err


@pytest.mark.verilator
@pytest.mark.parametrize("batch", [1, 2])
def test_rtl_run_on_verilator_equals_amaranth(tmp_path, capsys, batch):
    verilator = run_json(tmp_path, capsys, "verilator", batch)
    amaranth = run_json(tmp_path, capsys, "amaranth", batch)
    assert verilator["bit_exact"] is True
    for a, b in zip(verilator["operations"], amaranth["operations"]):
        assert a["cycles"] == b["cycles"] and a["host_cycles"] == b["host_cycles"]


def test_check_chainable_passes_both_presets_on_16x16():
    """DeepCaps chains (its CapsCells, ConvCaps3D and routing steps all map), as CapsNet does."""
    check_chainable(Network.preset("deepcaps"), ArrayConfig(16, 16, 34, **buffer_depths(16384), program_depth=1024))
    check_chainable(Network.preset("capsnet"), ArrayConfig(16, 16, 34, **buffer_depths(16384), program_depth=1024))


def test_a_routing_no_classcaps_feeds_is_refused():
    conv = Operation("conv0", "conv", 4, 1, 1, 3, 1, 4, 2, 1)
    routing = Operation("routing1", "routing", 4, 2, 1, 1, 1, 1, 3, 2)
    with pytest.raises(InputError, match=r"operation routing1 \(routing\): not chained on the RTL"):
        check_chainable(Network((conv, routing)), ArrayConfig(4, 4, 25, **buffer_depths(64), program_depth=32))


def test_rtl_run_reports_a_golden_mismatch_after_the_finished_operations(tmp_path, capsys, monkeypatch):
    real = golden.routing_update
    monkeypatch.setattr(golden, "routing_update", lambda *args: real(*args) + 1)
    path = tmp_path / "small.json"
    path.write_text(json.dumps(GENOTYPE))
    assert main(["rtl", "run", str(path), *ARRAY, "--batch", "1", "--simulator", "amaranth", "--json"]) == 1
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["bit_exact"] is False and "routing4" in report["error"]
    assert [o["name"] for o in report["operations"]] == ["conv0", "convcaps1", "classcaps2", "routing3"]
    assert err.splitlines()[-1].startswith("nascaps rtl run: error: operation routing4: ")
    assert np.all([o["bit_exact"] for o in report["operations"]])
