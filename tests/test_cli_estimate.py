"""`nascaps estimate`: table and JSON output, and exit code 2 with one line for bad input."""

import json
import subprocess
import sys

import pytest

from capsacc import Accelerator, Network
from capsacc.calibrated import Calibration, network_instructions
from capsacc.cli import main
from capsacc.mapping import chain, plan_counts
from capsacc.network import PRESETS


def test_table_output_has_units_and_totals_and_the_calibration_error(capsys):
    """The calibrated model by default, its held-out error under the table; the published model on request."""
    assert main(["estimate", "capsnet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "energy_mJ" in lines[0] and lines[0].split()[-1] == "total_cycles" and lines[1].split()[-1] == "102432"
    assert "latency_ms" in lines[-4] and "memory_KiB" in lines[-4] and lines[8].split()[-1] == "159038"
    assert "routing7" in lines[8] and "model calibrated-rtl" in lines[-5] and lines[-3].split()[:2] == ["4764311",
                                                                                                        "14.292933"]
    # the batch's 115,827,200 bytes of the Verilator run (docs/rtl.md, "Memory system") / 8 images
    assert lines[-2].startswith("data movement (16 B/cycle port, 162.5 pJ/B): offchip_bytes 14478400, ")
    assert "bandwidth-bound operations: classcaps2, routing3, routing4, routing6; total_cycles 4987839 " in lines[-2]
    # the batch's 3,658,752 bytes of program words of the Verilator run (docs/rtl.md) / 8 images, at 162.5 pJ/B
    assert "program_bytes 457344 (program_energy_mJ 0.074318, not in total_energy_mJ)" in lines[-2]
    assert lines[-1].startswith("calibration error: 0.0000 % (") and "96 held-out RTL operations" in lines[-1]
    assert main(["estimate", "capsnet", "--accelerator", "published"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "model nascaps2020" in lines[-4] and lines[-2].split()[:2] == ["607750", "1.823250"]
    assert lines[-1].startswith("calibration error: none (the published NASCaps model is not fitted")


def test_json_carries_the_calibration_error(capsys):
    assert main(["estimate", "capsnet", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "calibrated-rtl" and result["cycles"] == 4764311
    # with the data movement (docs/rtl.md, "Memory system"; the stores a cycle longer since session 38,
    # an ACT since session 39)
    assert [op["total_cycles"] for op in result["hw_ops"]] == [102432, 4122568, 219412, 89781, 67785, 159038,
                                                               67785, 159038]
    assert result["total_cycles"] == 4987839 and result["program_bytes"] == 457344
    assert sum(op["program_bytes"] for op in result["hw_ops"]) == 457344
    assert result["calibration_error_pct"] == Calibration.shipped().held_out_error_pct == 0.0


def test_total_cycles_beyond_the_instruction_limit_are_left_out_and_said_so(capsys):
    """CapsNet's batch programs hold 217,427 instructions (`network_instructions`, the sum of
    `plan_counts` over its chained steps): scheduled at that limit, left out (null, with the reason,
    exit 0, every other figure the same) one below it; a negative limit is bad input."""
    config = Accelerator.calibrated().calibration.config
    counts = [plan_counts(step.kind, step.op, config) for step in chain(Network.preset("capsnet").operations)]
    held = sum(count["matmuls"] + count["acts"] for count in counts)
    assert network_instructions(Network.preset("capsnet"), Accelerator.calibrated().calibration) == held == 217427
    results = []
    for limit in (held, held - 1):
        assert main(["estimate", "capsnet", "--json", "--most-scheduled-instructions", str(limit)]) == 0
        results.append(json.loads(capsys.readouterr().out))
    computed, left_out = results
    assert computed["total_cycles"] == 4987839 and computed["total_cycles_note"] is None
    assert left_out["total_cycles"] is None and {op["total_cycles"] for op in left_out["hw_ops"]} == {None}
    assert left_out["program_bytes"] is None is left_out["program_energy_mJ"] and computed["program_bytes"] == 457344
    assert left_out["total_cycles_note"] == ("not computed: the DMA programs of a batch hold 217,427 instructions, "
                                             "more than the 217,426 allowed")
    for key in ("cycles", "energy_mJ", "offchip_bytes", "total_energy_mJ"):
        assert left_out[key] == computed[key]
    assert main(["estimate", "capsnet", "--most-scheduled-instructions", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[-1] == "-" and "total_cycles and program_bytes not computed: the DMA programs of a batch " \
        "hold 217,427 instructions, more than the 1 allowed (--most-scheduled-instructions)" in lines[-2]
    assert main(["estimate", "capsnet", "--most-scheduled-instructions", "-1"]) == 2
    error = capsys.readouterr().err.splitlines()
    assert error == ["nascaps estimate: error: --most-scheduled-instructions -1: must be 0 (no limit) or more"]


def test_json_output_is_one_object(capsys, published_records):
    assert main(["estimate", "deepcaps", "--accelerator", "published", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"network", "genotype", "energy_mJ", "latency_ms", "memory_KiB", "weights", "cycles",
                           "hw_ops", "accelerator", "model", "calibration_error_pct"}
    assert result["calibration_error_pct"] is None
    assert result["network"] == "deepcaps" and result["genotype"] == PRESETS["deepcaps"]
    deepcaps = next(r for r in published_records if r["name"] == "DeepCaps")["exact"]
    assert result["energy_mJ"] == pytest.approx(deepcaps["energy_mJ"], rel=1e-9)
    assert len(result["hw_ops"]) == 24 and result["model"] == "nascaps2020"
    assert set(result["hw_ops"][0]) == {"name", "kind", "cycles", "energy_mJ", "weights"}
    assert result["accelerator"]["rows"] == 16


def test_genotype_file_and_accelerator_file(tmp_path, capsys):
    genotype = tmp_path / "net.json"
    genotype.write_text(json.dumps([[0, 28, 1, 1, 5, 1, 28, 16, 1], [1, 28, 16, 1, 5, 2, 14, 8, 4],
                                    [1, 14, 8, 4, 5, 2, 7, 10, 8], [-1], [1]]))
    accelerator = tmp_path / "acc.toml"
    accelerator.write_text("rows = 8\ncols = 8\n")
    assert main(["estimate", str(genotype), "--accelerator", str(accelerator), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accelerator"]["rows"] == 8
    assert result["network"] == "net" and result["genotype"] == json.loads(genotype.read_text())


@pytest.mark.parametrize("content, words", [
    ("[[0, 28", ["not JSON", "line 1"]),
    ('[[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 9, 2, 14, 32, "8"], [-1], [1]]',
     ["descriptor 1", "caps_out"]),
])
def test_bad_genotype_file_exits_2_with_one_line(tmp_path, capsys, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["estimate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err
    for word in words:
        assert word in err


def test_bad_accelerator_file_exits_2(tmp_path, capsys):
    path = tmp_path / "acc.toml"
    path.write_text("rowz = 4\n")
    assert main(["estimate", "capsnet", "--accelerator", str(path)]) == 2
    assert "rowz" in capsys.readouterr().err


def test_console_script_runs():
    done = subprocess.run([sys.executable, "-m", "capsacc", "estimate", "capsnet", "--json"],
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["weights"] == 8778304
