"""`nascaps estimate`: table and JSON output, and exit code 2 with one line for bad input."""

import json
import subprocess
import sys

import pytest

from capsacc.cli import main


def test_table_output_has_units_and_totals(capsys):
    assert main(["estimate", "capsnet"]) == 0
    out = capsys.readouterr().out
    assert "energy_mJ" in out and "latency_ms" in out and "memory_KiB" in out
    assert "routing7" in out and "1.823250" in out


def test_json_output_is_one_object(capsys, published_records):
    assert main(["estimate", "deepcaps", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"energy_mJ", "latency_ms", "memory_KiB", "weights", "cycles", "hw_ops",
                           "accelerator", "model"}
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
    assert json.loads(capsys.readouterr().out)["accelerator"]["rows"] == 8


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
