"""`nascaps finalize RUN_DIR --deploy`: every fully trained Pareto network is saved and deployed by
`nascaps deploy` (a subprocess: nas never imports sim), and its int8 figures join the report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = [[0, 28, 1, 1, 5, 2, 14, 4, 1], [1, 14, 4, 1, 3, 2, 7, 2, 4], [1, 7, 2, 4, 7, 1, 7, 10, 4], [-1], [1]]
"""A small capsnet-like network: 4 channels, 2x4-atom capsule types, 10 classes of 4 atoms."""


def _finalize(*args):
    return subprocess.run([sys.executable, "-m", "capsacc", "finalize", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)


def _run_folder(folder: Path, dataset: str = "mnist") -> Path:
    folder.mkdir()
    entry = {"genotype": TINY, "accuracy_drop": 0.5, "energy_mJ": 0.01, "latency_ms": 0.1, "memory_KiB": 10.0}
    pareto = {"provenance": {"dataset": dataset, "batch_size": 10, "seed": 0}, "pareto": [entry]}
    (folder / "pareto.json").write_text(json.dumps(pareto))
    return folder


@pytest.mark.parametrize("args, message", [
    (["--simulate-images", "1"], "need --deploy"),
    (["--deploy", "--simulate-images", "-1"], "--simulate-images -1"),
    (["--deploy", "--rows", "0"], "--rows"),
    (["--deploy", "--simulator", "spice"], "--simulator"),
])
def test_bad_deploy_options_are_one_line_and_exit_2(tmp_path, args, message):
    result = _finalize(_run_folder(tmp_path / "run"), "--epochs", "1", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert not (tmp_path / "run" / "final.json").exists()


@pytest.mark.slow
@pytest.mark.keras
def test_finalize_deploys_the_trained_network_on_the_golden_model_and_the_rtl(tmp_path):
    run = _run_folder(tmp_path / "run")
    result = _finalize(run, "--epochs", "1", "--train-samples", "200", "--deploy", "--calibration-images", "16",
                       "--simulate-images", "1", "--simulator", "amaranth", "--rows", "4", "--cols", "4")
    assert result.returncode == 0, result.stderr
    final = json.loads((run / "final.json").read_text())
    row = final["networks"][0]
    assert row["status"] == "ok" and "deploy_error" not in row, row
    assert final["provenance"]["deploy"]["simulate_images"] == 1
    assert list((run / "models").glob("*.keras"))
    deployed = json.loads((run / "deploy" / "0" / "deploy.json").read_text())
    assert deployed["genotype"][:2] == TINY[:2] and deployed["accelerator"]["rows"] == 4
    assert deployed["simulator"] == "amaranth" and deployed["rtl_version"]  # which RTL checked it
    for name in ("float_accuracy", "int8_accuracy", "agreement", "rtl_cycles_per_image", "model_cycles_per_image"):
        assert row[name] == deployed[name]
    assert 0 <= row["int8_accuracy"] <= 1 and row["agreement"] > 0.5 and row["test_images"] == 1000
    assert row["rtl_bit_exact"] is True and row["rtl_cycles_per_image"] > 0 and row["model_cycles_per_image"] > 0
    assert (run / "deploy" / "0" / "memory" / "offchip.bin").stat().st_size > 0
    markdown = (run / "final.md").read_text()
    assert "## Deployed in int8" in markdown and f"{100 * row['int8_accuracy']:.2f}" in markdown
    assert f"| {row['rtl_cycles_per_image']} | {row['model_cycles_per_image']} |" in markdown
    assert "int8" in result.stdout and "RTL, bit-exact: True" in result.stdout
