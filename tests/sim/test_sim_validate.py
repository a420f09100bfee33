"""`nascaps validate`: both cost models per operation against the compute bound and, simulated, the RTL."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim.driver
from capsacc import Accelerator, estimate
from capsacc.array import buffer_depths
from capsacc.calibrated import Calibration
from capsacc.cli import main
from capsacc.errors import AcceleratorConfigError
from capsacc.network import PRESETS, Network
from genotype_strategies import small_genotypes
from sim.validate import calibrated_accelerator, model_config
from test_sim_network_run import GENOTYPE

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["name", "kind", "macs", "compute_bound_cycles", "published_cycles", "calibrated_cycles"]
SIMULATED = ["rtl_cycles", "bit_exact", "published_error_pct", "calibrated_error_pct"]
SMALL = ["--rows", "4", "--cols", "4", "--buffer-depth", "64", "--program-depth", "32"]


def validate_json(capsys, *argv) -> tuple[int, dict]:
    code = main(["validate", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_capsnet_json_gives_both_models_per_operation_and_flags_the_published_below_the_bound(capsys):
    code, report = validate_json(capsys, "capsnet")
    assert code == 0
    network = Network.preset("capsnet")
    ops, total = report["operations"], report["total"]
    assert [list(op) for op in ops] == [KEYS] * len(network.operations)
    assert [op["name"] for op in ops] == [op.name for op in network.operations]
    assert [op["kind"] for op in ops][-5:] == ["routing_uniform", "routing_first_update", "routing_softmax",
                                               "routing_update", "routing_softmax"]
    assert [op["macs"] for op in ops] == [op.macs for op in network.operations]
    assert all(op["compute_bound_cycles"] == -(-op["macs"] // 256) for op in ops)
    published = estimate(network, Accelerator.published())
    calibrated = estimate(network, Accelerator.calibrated())
    assert [op["published_cycles"] for op in ops] == [op.cycles for op in published.operations]
    assert [op["calibrated_cycles"] for op in ops] == [op.cycles for op in calibrated.operations]
    assert total["published_cycles"] == published.cycles == 607750
    assert total["calibrated_cycles"] == calibrated.cycles
    assert total["compute_bound_cycles"] == sum(op["compute_bound_cycles"] for op in ops) == 4167220
    assert report["below_compute_bound"] == {"published": ["conv0", "convcaps1"], "calibrated": []}
    assert report["array"]["rows"] == 16 and report["batch"] == 8 and report["simulator"] is None
    assert report["network"] == "capsnet" and report["genotype"] == PRESETS["capsnet"]


def test_validate_does_not_time_the_dma_programs(capsys, monkeypatch):
    """The rows need the compute's cycles only (`Estimate.operation_cycles`): before, reading them from
    `Estimate.operations` scheduled every DMA program, 82 s for CapsNet on 4x4 against 1 s now."""
    import capsacc.calibrated

    def refuse(*args, **kwargs):
        raise AssertionError("network_schedule called")

    monkeypatch.setattr(capsacc.calibrated, "network_schedule", refuse)
    code, report = validate_json(capsys, "capsnet", "--rows", "4", "--cols", "4")
    assert code == 0
    calibrated = estimate(Network.preset("capsnet"), calibrated_accelerator(model_config(4, 4, 8, {})))
    assert [op["calibrated_cycles"] for op in report["operations"]] == list(calibrated.operation_cycles)


def test_without_resident_logits_the_softmax_phases_carry_the_routing_work(capsys):
    """On 4x4 CapsNet's logits do not stay in the partial sums: its update phases run nothing and each softmax
    phase recomputes the logits of the earlier iterations (`routing_phase_macs`). Before, the update rows kept
    their own MACs against 0 cycles, and the calibrated model was flagged below the compute bound 25,920x."""
    from capsacc.mapping import routing_geometry
    code, report = validate_json(capsys, "capsnet", "--rows", "4", "--cols", "4")
    assert code == 0
    network = Network.preset("capsnet")
    op = network.operations[-1]
    geometry = routing_geometry(op.n_in ** 2 * op.ch_in, op.ch_out, op.caps_out, model_config(4, 4, 8, {}))
    assert not geometry["resident"] and geometry["recompute"] == 2
    rows = report["operations"][-5:]
    assert [row["macs"] for row in rows] == [op.macs, 0, 3 * op.macs, 0, 3 * op.macs]
    assert [row["calibrated_cycles"] == 0 for row in rows] == [False, True, False, True, False]
    assert report["below_compute_bound"]["calibrated"] == []


def test_deepcaps_charges_its_elementwise_steps_to_operations(capsys):
    """A CapsCell network: the calibrated totals equal `estimate`'s, the MACs include the element-wise
    steps' (more than the operations' own), and no calibrated operation is below its bound."""
    code, report = validate_json(capsys, "deepcaps", "--batch", "1")
    network = Network.preset("deepcaps")
    accelerator = dataclasses.replace(Accelerator.calibrated(batch=1))
    assert code == 0 and report["total"]["calibrated_cycles"] == estimate(network, accelerator).cycles
    assert report["total"]["macs"] > network.macs
    assert report["below_compute_bound"]["calibrated"] == []


def test_text_ends_with_a_summary_line(capsys):
    assert main(["validate", "capsnet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["operation"] + KEYS[1:]
    assert lines[-2].split()[0] == "total" and int(lines[-2].split()[-2]) == 607750
    assert lines[-1] == ("capsnet: published model below the compute bound on 2 of 8 operations: conv0 (30.3x), "
                         "convcaps1 (10.6x); calibrated model below the compute bound on 0 of 8 operations")


def test_simulated_small_network_equals_the_calibrated_model_on_every_operation(tmp_path, capsys):
    path = tmp_path / "small.json"
    path.write_text(json.dumps(GENOTYPE))
    code, report = validate_json(capsys, str(path), *SMALL, "--batch", "2", "--simulate", "--simulator", "amaranth")
    assert code == 0 and report["simulator"] == "amaranth"
    for op in report["operations"]:
        assert list(op) == KEYS + SIMULATED
        assert op["rtl_cycles"] == op["calibrated_cycles"] and op["bit_exact"] is True
        assert op["calibrated_error_pct"] == 0
        assert op["published_error_pct"] == pytest.approx(100 * (op["published_cycles"] / op["rtl_cycles"] - 1))
        assert op["rtl_cycles"] >= op["compute_bound_cycles"]
    total = report["total"]
    assert total["rtl_cycles"] == sum(op["rtl_cycles"] for op in report["operations"]) == total["calibrated_cycles"]
    assert total["bit_exact"] is True and total["published_error_pct"] < 0


def test_a_mismatch_marks_its_operation_and_exits_1(tmp_path, capsys, monkeypatch):
    """The RTL disagreeing with the golden model at ClassCaps: the operations before are bit-exact with
    their cycles, ClassCaps is not, the routing after it did not run; exit code 1 and one error line."""
    run = sim.driver.OperationDriver.run

    def failing(self, kind, *args, **kwargs):
        if kind == "classcaps":
            raise sim.driver.MismatchError("classcaps: u_hat differs at [0, 0, 0]")
        return run(self, kind, *args, **kwargs)

    monkeypatch.setattr(sim.driver.OperationDriver, "run", failing)
    path = tmp_path / "small.json"
    path.write_text(json.dumps(GENOTYPE))
    assert main(["validate", str(path), *SMALL, "--batch", "1", "--simulate", "--simulator", "amaranth",
                 "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [op["bit_exact"] for op in report["operations"]] == [True, True, False] + [None] * 5
    assert [op["rtl_cycles"] is None for op in report["operations"]] == [False, False] + [True] * 6
    assert report["total"]["bit_exact"] is False and report["total"]["rtl_cycles"] is None
    assert "classcaps2" in report["error"]
    assert captured.err.splitlines()[-1].startswith("nascaps validate: error: operation classcaps2: ")


@pytest.mark.parametrize("argv, message", [
    (["capsnet", "--rows", "0"], "array 0x16: "),
    (["capsnet", "--cols", "64"], "array 16x64: cols: 64 outside [1, 63]"),
    (["capsnet", "--buffer-depth", "100"], "--buffer-depth: 100 is not a power of two"),
    (["capsnet", "--data-depth", "100"], "data_depth: 100 is not a power of two"),
    (["capsnet", "--program-depth", "0"], "array 16x16: array 'program_depth' must be an integer in 3.."),
    (["capsnet", "--batch", "0"], "--batch 0: must be in 1..1000"),
    (["missing.json"], "missing.json"),
    (["capsnet", "--rows", "4", "--cols", "4", "--buffer-depth", "64", "--simulate"],
     "operation conv0 (conv) on the calibrated 4x4 array: "),
])
def test_bad_input_is_one_line_and_exit_2(argv, message):
    done = subprocess.run([sys.executable, "-m", "capsacc", "validate", *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("nascaps validate: error: ") and message in done.stderr, done.stderr


def test_a_calibration_of_one_array_covers_that_array_only():
    shipped = Calibration.shipped()
    assert len(shipped.fitted_arrays()) == 3
    shipped.check_covers(4, 4)
    single = dataclasses.replace(shipped, provenance={"arrays": ["16x16"]})
    single.check_covers(16, 16)
    with pytest.raises(AcceleratorConfigError, match="array 4x4: the calibration was fitted on 16x16 only"):
        single.check_covers(4, 4)


def test_the_calibrated_accelerator_of_another_array_keeps_the_coefficients():
    config = model_config(4, 4, 2, {**buffer_depths(64), "program_depth": 32})
    accelerator = calibrated_accelerator(config)
    assert (accelerator.rows, accelerator.cols) == (4, 4) and accelerator.calibration.config == config
    assert accelerator.calibration.coefficients == Calibration.shipped().coefficients
    assert accelerator.calibration.energies != Calibration.shipped().energies
    assert calibrated_accelerator(model_config(16, 16, 8)) == Accelerator.calibrated()


@pytest.mark.slow
@pytest.mark.verilator
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                                   HealthCheck.function_scoped_fixture])
@given(genotype=small_genotypes(), batch=st.integers(1, 2))
def test_30_random_small_genotypes_cost_on_the_calibrated_model_what_they_cost_on_the_rtl(genotype, batch, tmp_path,
                                                                                          capsys):
    """(About 2 s per network once Verilator's 4x4 model is built.) `nascaps validate --simulate` on a
    4x4 array with 512-row buffers: every operation's calibrated cycles equal the RTL's, bit-exact."""
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps(genotype))
    code, report = validate_json(capsys, str(path), "--rows", "4", "--cols", "4", "--buffer-depth", "512",
                                 "--program-depth", "64", "--batch", str(batch), "--simulate")
    assert code == 0
    for op in report["operations"]:
        assert op["calibrated_cycles"] == op["rtl_cycles"] and op["bit_exact"] is True, op
    assert report["total"]["calibrated_error_pct"] == 0


CELL_GENOTYPE = [[0, 8, 1, 1, 3, 1, 8, 2, 1], [2, 8, 2, 1, 3, 2, 4, 2, 2], [2, 4, 2, 2, 3, 1, 4, 2, 2],
                 [2, 4, 2, 2, 4, 1, 1, 3, 2], [-1], [1]]
"""A small CapsCell network: a convolution, two cells (the second with the ConvCaps3D skip), the class layer."""


@pytest.mark.verilator
def test_a_capscell_network_charges_its_elementwise_steps_and_equals_the_rtl(tmp_path, capsys):
    """ToCapsules counts with the first cell's first convolution, each cell's skip sum with its skip
    operation (convcaps4; the ConvCaps3D of the last cell, with its routing): their MACs are more than
    the operations' own there and only there, and every operation's calibrated cycles equal the RTL's."""
    path = tmp_path / "cell.json"
    path.write_text(json.dumps(CELL_GENOTYPE))
    code, report = validate_json(capsys, str(path), "--rows", "4", "--cols", "4", "--buffer-depth", "512",
                                 "--program-depth", "64", "--batch", "1", "--simulate")
    assert code == 0
    network = Network.from_genotype(CELL_GENOTYPE)
    extra = [op["name"] for op, own in zip(report["operations"], network.operations) if op["macs"] > own.macs]
    assert extra == ["convcaps1", "convcaps4", "convcaps3d8"]
    for op in report["operations"]:
        assert op["calibrated_cycles"] == op["rtl_cycles"] and op["bit_exact"] is True, op
