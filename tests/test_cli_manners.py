"""The `nascaps` command's common manners (capsacc.cli.main): one line for every error, exit codes,
a closed stdout, Ctrl-C, `--version`, output paths checked before the work, atomic result files."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capsacc.cli import main

ROOT = Path(__file__).resolve().parents[1]


def one_error_line(capsys, command: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"nascaps {command}: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("argv, command", [
    (["estimate"], "estimate"),
    (["estimate", "capsnet", "--accelerator"], "estimate"),
    (["dse", "--network", "lenet"], "dse"),
    (["systolic", "--topology", "lenet", "--rows", "x", "--cols", "4"], "systolic"),
    (["rtl", "export", "--rows", "2"], "rtl export"),
    (["calibrate", "--simulator", "spice", "--out", "d"], "calibrate"),
    (["validate", "capsnet", "--simulator", "spice"], "validate"),
    (["validate", "capsnet", "--rows", "four"], "validate"),
])
def test_usage_errors_are_one_line_with_a_help_hint(argv, command, capsys):
    assert main(argv) == 2
    line = one_error_line(capsys, command)
    assert line.endswith(f"(see `nascaps {command} --help`)")


@pytest.mark.parametrize("argv", [["--bogus"], ["--bogus", "estimate", "capsnet"], ["-x", "--version"]])
def test_an_unknown_option_before_the_command_is_named(argv, capsys):
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"nascaps: error: unrecognized arguments: {argv[0]} (see `nascaps --help`)"]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("nascaps ")


class _ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stdout_ends_quietly(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["estimate", "capsnet"]) == 1
    assert capsys.readouterr().err == ""


def test_a_closed_pipe_in_a_shell_gives_no_traceback(tmp_path):
    topology = tmp_path / "many.csv"  # about a megabyte of output: more than a pipe's buffer
    topology.write_text("name,H,W,FH,FW,C,N,S,\n" + "".join(f"l{i},8,8,3,3,4,4,1,\n" for i in range(5000)))
    result = subprocess.run(f"{sys.executable} -m capsacc systolic --topology {topology} --rows 4 --cols 4 | head -c 9",
                            shell=True, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout == "topology="
    assert result.stderr == ""


def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    import capsacc.cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(capsacc.cli, "_estimate_command", interrupted)
    assert main(["estimate", "capsnet"]) == 130
    assert capsys.readouterr().err.splitlines() == ["nascaps estimate: interrupted"]


def test_an_os_error_is_one_line(monkeypatch, capsys):
    import capsacc.cli

    def failing(args):
        raise PermissionError(13, "Permission denied", "/some/file")

    monkeypatch.setattr(capsacc.cli, "_estimate_command", failing)
    assert main(["estimate", "capsnet"]) == 2
    assert one_error_line(capsys, "estimate") == "nascaps estimate: error: /some/file: Permission denied"


def test_dse_refuses_an_output_under_a_file_before_the_work(tmp_path, capsys):
    blocker = tmp_path / "f"
    blocker.write_text("")
    assert main(["dse", "--network", "lenet", "--rows", "4", "--cols", "4", "--out", str(blocker / "sub")]) == 2
    assert "cannot create output folder" in one_error_line(capsys, "dse")
    assert main(["dse", "--network", "lenet", "--rows", "4", "--cols", "4", "--out", str(blocker)]) == 2
    assert "output folder is an existing file" in one_error_line(capsys, "dse")


def test_an_output_file_that_is_a_folder_is_refused_before_the_work(tmp_path, capsys):
    (tmp_path / "d" / "pareto.png").mkdir(parents=True)
    assert main(["dse", "--network", "lenet", "--rows", "4", "--cols", "4", "--out", str(tmp_path / "d")]) == 2
    assert "pareto.png: output file is an existing folder" in one_error_line(capsys, "dse")
    (tmp_path / "c" / "errors.csv").mkdir(parents=True)
    assert main(["calibrate", "--quick", "--rows", "2", "--cols", "4", "--out", str(tmp_path / "c")]) == 2
    assert "errors.csv: output file is an existing folder" in one_error_line(capsys, "calibrate")


def test_calibrate_refuses_an_output_under_a_file_before_the_sweep(tmp_path, capsys):
    blocker = tmp_path / "f"
    blocker.write_text("")
    assert main(["calibrate", "--quick", "--rows", "2", "--cols", "4", "--out", str(blocker / "sub")]) == 2
    assert "cannot create output folder" in one_error_line(capsys, "calibrate")


def test_calibrate_without_verilator_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["calibrate", "--quick", "--rows", "2", "--cols", "4", "--out", str(tmp_path / "c")]) == 2
    assert "verilator is not on PATH" in one_error_line(capsys, "calibrate")


def test_rtl_export_checks_its_output_first(tmp_path, capsys):
    assert main(["rtl", "export", "--rows", "2", "--cols", "3", "-o", str(tmp_path)]) == 2
    assert "output file is an existing folder" in one_error_line(capsys, "rtl export")
    (tmp_path / "f").write_text("")
    assert main(["rtl", "export", "--rows", "2", "--cols", "3", "-o", str(tmp_path / "f" / "x.v")]) == 2
    assert "f: output folder is an existing file" in one_error_line(capsys, "rtl export")
    assert main(["rtl", "export", "--rows", "2", "--cols", "3", "-o", os.devnull]) == 2
    assert "is not a regular file" in one_error_line(capsys, "rtl export")


def test_dse_writes_its_results_and_leaves_no_temporary_file(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["dse", "--network", "lenet", "--rows", "4,8", "--cols", "4", "--dataflow", "ws",
                 "--sram-kB", "64", "--period-ns", "3", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["designs.csv", "pareto.csv", "pareto.png", "run.json"]
    assert capsys.readouterr().err == ""


def test_toml_nested_too_deep_is_one_line(tmp_path, capsys):
    path = tmp_path / "deep.toml"
    path.write_text("rows = " + "[" * 100000 + "]" * 100000 + "\n")
    assert main(["estimate", "capsnet", "--accelerator", str(path)]) == 2
    assert one_error_line(capsys, "estimate").endswith("deep.toml: TOML nested too deep")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
@pytest.mark.parametrize("argv", [
    ["estimate", "capsnet", "--accelerator", "{fifo}"],
    ["systolic", "--topology", "{fifo}", "--rows", "4", "--cols", "4"],
    ["dse", "--network", "{fifo}", "--rows", "4", "--cols", "4", "--out", "{out}"],
])
def test_a_fifo_as_an_input_file_does_not_block(tmp_path, argv, capsys):
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    argv = [a.format(fifo=fifo, out=tmp_path / "out") for a in argv]
    assert main(argv) == 2
    assert "not a regular file" in one_error_line(capsys, argv[0])


@pytest.mark.parametrize("argv, command, message", [
    (["train", "capsnet", "--seed", "-1"], "train", "training setting 'seed': bad value -1"),
    (["train", "capsnet", "--seed", "4294967296"], "train", "training setting 'seed': bad value 4294967296"),
    (["train", "capsnet", "--learning-rate", "inf"], "train", "training setting 'learning_rate': bad value inf"),
    (["train", "capsnet", "--timeout", "inf"], "train", "training setting 'timeout_s': bad value inf"),
    (["search", "--seed", "-1", "--out", "{out}"], "search", "training setting 'seed': bad value -1"),
    (["search", "--max-memory-KiB", "inf", "--out", "{out}"], "search",
     "argument --max-memory-KiB: must be positive and finite, got inf"),
    (["search", "--timeout", "inf", "--out", "{out}"], "search", "argument --timeout: must be positive and finite"),
    (["pcc", "--seed", "-1", "--out", "{out}"], "pcc", "training setting 'seed': bad value -1"),
    (["pcc", "--timeout", "inf", "--out", "{out}"], "pcc", "argument --timeout: must be positive and finite"),
])
def test_training_settings_out_of_range_are_refused_before_the_run_folder(tmp_path, argv, command, message, capsys):
    """A seed NumPy cannot take (a traceback before), an infinite learning rate (a NaN training) or an
    infinite limit (a journal holding Infinity, or a traceback writing pcc.jsonl): one line, nothing written."""
    out = tmp_path / "out"
    assert main([a.format(out=out) for a in argv]) == 2
    assert message in one_error_line(capsys, command)
    assert not out.exists()


@pytest.mark.parametrize("argv, command", [
    (["dse", "--network", "lenet", "--rows", "4", "--cols", "4", "--out", ""], "dse"),
    (["search", "--out", ""], "search"),
    (["pcc", "--out", ""], "pcc"),
    (["calibrate", "--quick", "--rows", "2", "--cols", "4", "--out", ""], "calibrate"),
    (["deploy", "m.keras", "--out", ""], "deploy"),
    (["rtl", "export", "--rows", "2", "--cols", "3", "-o", ""], "rtl export"),
    (["rtl", "synth", "--rows", "2", "--cols", "3", "-o", ""], "rtl synth"),
])
def test_an_empty_output_name_is_refused_not_taken_for_the_current_folder(tmp_path, monkeypatch, argv, command,
                                                                          capsys):
    """`--out "$DIR"` with DIR unset: before, the results (or a search journal) went into the current folder,
    `rtl synth -o ''` wrote no summary file and said nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.keras").write_bytes(b"")
    assert main(argv) == 2
    assert one_error_line(capsys, command).endswith("output file: the name is empty" if command.startswith("rtl")
                                                    else "output folder: the name is empty (give '.' for the "
                                                         "current folder)")
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]


@pytest.mark.parametrize("argv, command, message", [
    (["estimate", "capsnett"], "estimate", "capsnett: neither a network preset (capsnet, deepcaps) nor an existing "
                                           "file"),
    (["estimate", "capsnet", "--accelerator", "calibratd"], "estimate",
     "calibratd: neither an accelerator preset (published, calibrated) nor an existing file"),
    (["systolic", "--topology", "lenett", "--rows", "4", "--cols", "4"], "systolic",
     "lenett: neither a shipped topology (alexnet, lenet, vgg16, resnet18) nor an existing file"),
    (["validate", "deepcap"], "validate", "deepcap: neither a network preset (capsnet, deepcaps) nor an existing file"),
    (["rtl", "run", "capsnett", "--rows", "4", "--cols", "4"], "rtl run",
     "capsnett: neither a network preset (capsnet, deepcaps) nor an existing file"),
    (["train", "capsnett"], "train", "capsnett: neither a network preset (capsnet, deepcaps) nor an existing file"),
    (["search", "--space", "quik", "--out", "{out}"], "search",
     "quik: neither a search space preset (quick, paper) nor an existing file"),
])
def test_a_mistyped_preset_name_lists_the_presets(tmp_path, argv, command, message, capsys):
    """One definition (`capsacc.files.check_preset_or_file`): before, `capsnett` was `cannot read (No such file
    or directory)`, which names no preset."""
    assert main([a.format(out=tmp_path / "out") for a in argv]) == 2
    assert one_error_line(capsys, command).endswith(message)


def test_finalize_refuses_a_search_seed_numpy_cannot_take(tmp_path, capsys):
    """The seed limit of `TrainConfig` (`capsacc.errors.SEED_LIMIT`) applies to pareto.json's provenance too: before,
    its trainings each ended 'invalid'."""
    (tmp_path / "pareto.json").write_text('{"provenance": {"seed": 4294967296}, "pareto": []}')
    assert main(["finalize", str(tmp_path)]) == 2
    assert one_error_line(capsys, "finalize").endswith("pareto.json: provenance, key 'seed': bad value 4294967296")


@pytest.mark.parametrize("argv, command, message", [
    (["rtl", "run", "capsnet", "--rows", "4", "--cols", "4", "--seed", "-1"], "rtl run",
     "--seed -1: must be in 0..2^32-1"),
    (["validate", "capsnet", "--seed", "4294967296"], "validate", "--seed 4294967296: must be in 0..2^32-1"),
    (["deploy", "m.keras", "--seed", "-2", "--out", "{out}"], "deploy", "--seed -2: must be in 0..2^32-1"),
    (["calibrate", "--quick", "--rows", "2", "--cols", "4", "--seed", str(2 ** 64), "--out", "{out}"], "calibrate",
     f"--seed {2 ** 64}: must be in 0..2^64-1"),
])
def test_the_simulation_commands_refuse_a_seed_out_of_range(tmp_path, monkeypatch, argv, command, message, capsys):
    """One check (`capsacc.errors.check_seed`) for rtl run, validate, deploy (2^32, NumPy's legacy seeds) and
    calibrate (2^64), before anything is simulated or written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.keras").write_bytes(b"")
    out = tmp_path / "out"
    assert main([a.format(out=out) for a in argv]) == 2
    assert one_error_line(capsys, command).endswith(message)
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["dse", "--network", "lenett", "--rows", "4", "--cols", "4"], "lenett: neither"),
    (["dse", "--network", "lenet", "--rows", "0", "--cols", "4"], "--rows"),
])
def test_dse_checks_its_inputs_before_it_creates_the_output_folder(tmp_path, argv, message, capsys):
    """Before, a bad network or grid left an empty output folder behind."""
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    assert message in one_error_line(capsys, "dse")
    assert not out.exists()
