"""Reliability: kill -9 and resume, a Dask worker killed mid-evaluation, bad input files."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from subprocesses import default_sigint

from capsacc.cli import main
from nas.evaluate import SyntheticEvaluator
from nas.journal import read_journal
from nas.search import SearchConfig, run_search

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
"""The environment of the scripts these tests start: this checkout's packages first (a script's own
folder, not the current one, leads its sys.path)."""

SCRIPT = """
import sys
from nas.evaluate import SyntheticEvaluator
from nas.genotype import Genotype
from nas.search import SearchConfig, run_search

class Logged:
    def __init__(self, log):
        self.log = log
        self.inner = SyntheticEvaluator(sleep_s=0.05)

    def __call__(self, genotype_list):
        outcome = self.inner(genotype_list)
        with open(self.log, "a") as handle:
            handle.write(Genotype.from_list(genotype_list).key() + "\\n")
        return outcome

config = SearchConfig(population=8, offspring=8, generations=6, seed=11, out=sys.argv[1])
run_search(config, evaluator=Logged(sys.argv[2]), resume=sys.argv[3] == "resume", progress=False)
"""


def _start(script: Path, out: Path, log: Path, resume: bool) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(out), str(log), "resume" if resume else "new"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)


def _calls(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _journal_keys(out: Path) -> dict[str, tuple]:
    path = out / "journal.sqlite"
    if not path.exists():
        return {}
    _, evaluations, _ = read_journal(path)
    return {e.key: e.objectives for e in evaluations}


@pytest.mark.slow
def test_kill_nine_five_times_then_resume_gives_the_uninterrupted_pareto_set(tmp_path):
    script = tmp_path / "search_script.py"
    script.write_text(SCRIPT)
    reference_out, reference_log = tmp_path / "reference", tmp_path / "reference.log"
    process = _start(script, reference_out, reference_log, resume=False)
    assert process.wait(timeout=300) == 0, process.stderr.read().decode()
    reference = json.loads((reference_out / "pareto.json").read_text())["pareto"]
    reference_journal = _journal_keys(reference_out)

    out, log = tmp_path / "killed", tmp_path / "killed.log"
    rng = np.random.default_rng(2024)
    kills, previous = 0, {}
    for attempt in range(5):
        process = _start(script, out, log, resume=attempt > 0)
        target = len(_calls(log)) + int(rng.integers(2, 8))
        deadline = time.monotonic() + 120
        while len(_calls(log)) < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(float(rng.uniform(0, 0.06)))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.wait(timeout=60)
        current = _journal_keys(out)
        assert set(previous) <= set(current), "a journaled evaluation was lost"
        assert all(current[k] == reference_journal[k] for k in current)
        previous = current
    assert kills == 5
    process = _start(script, out, log, resume=True)
    assert process.wait(timeout=300) == 0, process.stderr.read().decode()
    assert json.loads((out / "pareto.json").read_text())["pareto"] == reference
    assert _journal_keys(out) == reference_journal
    calls = _calls(log)
    assert len(calls) <= len(set(calls)) + kills, "finished evaluations were trained again"


def _kill_one_busy_worker(client, killed: list, stop: threading.Event) -> None:
    while not stop.is_set():
        busy = {address: keys for address, keys in client.processing().items() if keys}
        if busy:
            address = sorted(busy)[0]
            time.sleep(0.5)
            pid = client.run(os.getpid, workers=[address])[address]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_dask_worker_costs_one_retry(tmp_path):
    import dask
    from distributed import Client, LocalCluster
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    killed: list = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_one_busy_worker, args=(client, killed, stop))
    try:
        killer.start()
        config = SearchConfig(population=4, offspring=2, generations=1, seed=5, out=str(tmp_path / "run"),
                              scheduler=cluster.scheduler_address)
        result = run_search(config, evaluator=SyntheticEvaluator(sleep_s=1.5), progress=False)
    finally:
        stop.set()
        killer.join()
        client.close()
        cluster.close()
    assert killed
    assert all(e.status == "ok" for e in result.evaluations)
    retried = [e for e in result.evaluations if e.attempts == 2]
    assert retried and all(e.attempts <= 2 for e in result.evaluations)
    assert all(e.worker.split(":")[1] != str(killed[0]) for e in retried)


@pytest.mark.slow
def test_local_dask_cluster_runs_candidates_on_worker_processes(tmp_path):
    config = SearchConfig(population=4, offspring=4, generations=1, seed=5, out=str(tmp_path / "run"), workers=2)
    result = run_search(config, evaluator=SyntheticEvaluator(sleep_s=0.6), progress=False)
    workers = {e.worker for e in result.evaluations}
    assert len(result.evaluations) >= 6 and all(e.status == "ok" for e in result.evaluations)
    assert all(w.split(":")[1] != str(os.getpid()) for w in workers) and len(workers) == 2


def _journal_run(tmp_path) -> Path:
    out = tmp_path / "run"
    run_search(SearchConfig(population=4, offspring=2, generations=1, seed=1, out=str(out)),
               evaluator=SyntheticEvaluator(), progress=False)
    return out


@pytest.mark.parametrize("option,content,needle", [
    ("--space", "kernels = [3, 5]\nwidth = 3\n", "unknown key 'width'"),
    ("--space", "kernels = [3, \n", "not TOML"),
    ("--space", "channels = [9, 2]\n", "channels"),
    ("--accelerator", "rows = 16\ncolour = 'red'\n", "unknown key 'colour'"),
    ("--accelerator", "rows = [\n", "TOML"),
])
def test_malformed_files_are_named_exit_two_and_the_journal_is_untouched(tmp_path, capsys, option, content,
                                                                         needle):
    out = _journal_run(tmp_path)
    journal = out / "journal.sqlite"
    before = journal.read_bytes()
    bad = tmp_path / "bad.toml"
    bad.write_text(content)
    assert main(["search", "--out", str(out), "--resume", option, str(bad), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert str(bad) in error and needle in error and len(error.strip().splitlines()) == 1
    assert journal.read_bytes() == before


def test_corrupt_journal_is_named_exit_two_and_left_as_it_was(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    journal = out / "journal.sqlite"
    journal.write_bytes(b"\x00garbage\x01" * 100)
    assert main(["search", "--out", str(out), "--resume", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert str(journal) in error and "not a nascaps journal" in error
    assert journal.read_bytes() == b"\x00garbage\x01" * 100


def test_resume_with_another_seed_is_refused_and_the_journal_kept(tmp_path, capsys):
    out = _journal_run(tmp_path)
    journal = out / "journal.sqlite"
    before = read_journal(journal)[1]
    assert main(["search", "--out", str(out), "--resume", "--seed", "99", "--quiet"]) == 2
    assert "seed" in capsys.readouterr().err
    assert read_journal(journal)[1] == before


def _cli_run(out: Path, *extra: str) -> list[str]:
    """A `nascaps search` whose candidates are all over the latency budget: a real run folder (journal,
    reports) made by the command line in seconds, with no training. Returns the arguments."""
    args = ["search", "--out", str(out), "--population", "4", "--offspring", "2", "--generations", "1",
            "--max-latency-ms", "1e-9", "--quiet", *extra]
    assert main(args) == 0
    return args


def _one_line_error(capsys, command: str = "search") -> str:
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"nascaps {command}: error: ") and len(error.splitlines()) == 1, error
    return error


@pytest.mark.parametrize("column,value,needle", [
    ("genotype", "[[0, 28, 1", "column genotype: not JSON"),
    ("genotype", "[[0, 28, 1], [-1], [1]]", "column genotype: not a genotype"),
    ("key", "[]", "column key: does not match the row's genotype"),
    ("val_accuracy", "[0.5, 7]", "column val_accuracy: not a list of accuracies"),
    ("status", "fine", "column status: bad value 'fine'"),
    ("latency_ms", "fast", "column latency_ms: bad value 'fast'"),
    ("attempts", 0, "column attempts: bad value 0"),
])
def test_a_corrupt_journal_cell_is_a_located_error_on_resume(tmp_path, capsys, column, value, needle):
    out = tmp_path / "run"
    args = _cli_run(out)
    capsys.readouterr()
    with sqlite3.connect(out / "journal.sqlite") as db:
        db.execute(f"UPDATE evaluations SET {column} = ? WHERE id = 2", (value,))
    db.close()
    assert main([*args, "--resume"]) == 2
    error = _one_line_error(capsys)
    assert f"{out / 'journal.sqlite'}: table evaluations, row id 2, {needle}" in error


@pytest.mark.parametrize("column,value,needle", [
    ("rng_state", '{"bit_generator": "PCG64"}', "column rng_state: not a generator state"),
    ("rng_state", "{", "column rng_state: not JSON"),
    ("population", '["nobody"]', "column population: member 0 has no row in table evaluations"),
    ("population", "3", "column population: not a list of genotype keys"),
])
def test_a_corrupt_checkpoint_is_a_located_error_on_resume(tmp_path, capsys, column, value, needle):
    out = tmp_path / "run"
    args = _cli_run(out)
    capsys.readouterr()
    with sqlite3.connect(out / "journal.sqlite") as db:
        db.execute(f"UPDATE generations SET {column} = ? WHERE generation = 1", (value,))
    db.close()
    assert main([*args, "--resume"]) == 2
    assert f"table generations, generation 1, {needle}" in _one_line_error(capsys)


def test_a_journal_without_its_configuration_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    args = _cli_run(out)
    capsys.readouterr()
    with sqlite3.connect(out / "journal.sqlite") as db:
        db.execute("UPDATE meta SET value = '[1, 2]' WHERE name = 'config'")
    db.close()
    assert main([*args, "--resume"]) == 2
    assert "table meta, name 'config', column value: not a JSON object" in _one_line_error(capsys)


def test_out_that_is_a_file_is_a_one_line_error_and_the_file_is_kept(tmp_path, capsys):
    file = tmp_path / "f"
    file.write_text("mine")
    assert main(["search", "--out", str(file), "--quiet"]) == 2
    assert f"{file}: output folder is an existing file" in _one_line_error(capsys)
    assert main(["search", "--out", str(file / "sub"), "--quiet"]) == 2
    _one_line_error(capsys)
    assert file.read_text() == "mine"


@pytest.mark.parametrize("content,needle", [(b"", "'x_train' is empty"), (b"nan", "'y_train' label 0 is nan"),
                                            (b"cut", "not a readable .npz file")])
def test_a_bad_dataset_stops_the_search_before_anything_is_journaled(tmp_path, capsys, content, needle):
    data = tmp_path / "mnist.npz"
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), "y_train": np.arange(20) % 10,
              "x_test": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), "y_test": np.arange(5)}
    if content == b"":
        arrays["x_train"], arrays["y_train"] = arrays["x_train"][:0], arrays["y_train"][:0]
    if content == b"nan":
        arrays["y_train"] = np.where(np.arange(20) == 0, np.nan, np.arange(20) % 10)
    np.savez(data, **arrays)
    if content == b"cut":
        data.write_bytes(data.read_bytes()[:3000])
    out = tmp_path / "run"
    assert main(["search", "--data", str(data), "--out", str(out), "--quiet"]) == 2
    assert needle in _one_line_error(capsys)
    assert not (out / "journal.sqlite").exists()


def test_an_input_error_in_the_evaluator_stops_the_run_and_keeps_finished_rows(tmp_path):
    from capsacc.errors import InputError
    calls, failing = [], [True]

    def evaluator(genotype_list):
        calls.append(genotype_list)
        if len(calls) == 3 and failing[0]:
            raise InputError("data.npz: 'x_train' is gone")
        return SyntheticEvaluator()(genotype_list)

    config = SearchConfig(population=6, offspring=2, generations=1, seed=4, out=str(tmp_path / "run"))
    with pytest.raises(InputError, match="'x_train' is gone"):
        run_search(config, evaluator=evaluator, progress=False)
    _, evaluations, _ = read_journal(tmp_path / "run" / "journal.sqlite")
    assert len(evaluations) == 2 and all(e.status == "ok" for e in evaluations)
    calls.clear()
    failing[0] = False
    resumed = run_search(config, evaluator=evaluator, resume=True, progress=False)
    assert {e.key for e in evaluations} <= {e.key for e in resumed.evaluations}
    assert not {json.dumps(g, separators=(",", ":")) for g in calls} & {e.key for e in evaluations}


LOCK_SCRIPT = """
import sys
from nas.evaluate import SyntheticEvaluator
from nas.search import SearchConfig, run_search
config = SearchConfig(population=6, offspring=6, generations=50, seed=3, out=sys.argv[1])
run_search(config, evaluator=SyntheticEvaluator(sleep_s=0.2), resume=sys.argv[2] == "resume", progress=False)
"""


def test_a_second_process_on_the_same_folder_is_refused_and_a_killed_ones_lock_is_taken_over(tmp_path):
    script = tmp_path / "lock_script.py"
    script.write_text(LOCK_SCRIPT)
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(script), str(out), "new"], stderr=subprocess.PIPE, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _journal_keys(out):
            time.sleep(0.1)
        assert _journal_keys(out), "the first search journaled nothing"
        second = subprocess.run([sys.executable, "-m", "capsacc", "search", "--out", str(out), "--resume",
                                 "--quiet"], capture_output=True, text=True, timeout=120, env=ENV)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"another process is working in this folder (nascaps search, pid " \
            f"{first.pid} on host " in lines[0] and "started 20" in lines[0]
        assert first.poll() is None
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    before = _journal_keys(out)
    resumed = subprocess.Popen([sys.executable, str(script), str(out), "resume"], stderr=subprocess.PIPE, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(_journal_keys(out)) <= len(before):
            time.sleep(0.1)
        assert len(_journal_keys(out)) > len(before), resumed.stderr.read1().decode() if resumed.poll() else ""
    finally:
        os.kill(resumed.pid, signal.SIGKILL)
        resumed.wait(timeout=60)


CTRL_C_SCRIPT = """
import sys
from capsacc.cli import main
import nas.evaluate


def slow_training(self, genotype_list):
    import time
    time.sleep(0.3)
    return nas.evaluate.SyntheticEvaluator()(genotype_list)

nas.evaluate.TrainingEvaluator.__call__ = slow_training
sys.exit(main(["search", "--out", sys.argv[1], "--population", "6", "--offspring", "6", "--generations", "400",
               "--quiet"]))
"""



def test_ctrl_c_keeps_every_finished_row_and_resume_continues(tmp_path):
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, str(script), str(out)], stderr=subprocess.PIPE, text=True,
                               env=ENV, preexec_fn=default_sigint)
    deadline = time.monotonic() + 600  # a loaded 2-core machine takes minutes to import and start
    while time.monotonic() < deadline and process.poll() is None and len(_journal_keys(out)) < 4:
        time.sleep(0.05)
    assert process.poll() is None and len(_journal_keys(out)) >= 4, "the search ended or stalled before 4 rows"
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=300)[1]
    kept = _journal_keys(out)
    assert process.returncode == 130 and len(kept) >= 4
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nascaps search: interrupted"), stderr
    process = subprocess.Popen([sys.executable, str(script), str(out)], stderr=subprocess.PIPE, text=True,
                               env=ENV)
    assert process.wait(timeout=300) == 2, "a new run must not overwrite the interrupted one"
    assert "pass --resume" in process.stderr.read()
    assert _journal_keys(out) == kept


def _fake_train(genotype, dataset, config, test=False, progress=True, **options):
    """A stand-in for `nas.train.train`: a fixed result, at once."""
    import nas.train
    return nas.train.TrainResult("ok", [0.5] * config.epochs, 0.625, seconds=0.25, params=321,
                                 genotype=genotype.to_list())


def test_jsonl_log_a_torn_last_line_is_reported_skipped_and_cut_before_the_next_record(tmp_path, capsys):
    from nas.jsonlog import append_record, read_records
    log = tmp_path / "log.jsonl"
    append_record(log, {"n": 1})
    append_record(log, {"n": 2})
    whole = log.read_bytes()
    log.write_bytes(whole + b'{"n": 3, "val')
    assert read_records(log) == [{"n": 1}, {"n": 2}]
    assert f"{log}: line 3 is cut short" in capsys.readouterr().err
    append_record(log, {"n": 4})
    assert log.read_bytes() == whole + b'{"n": 4}\n'
    log.write_bytes(whole + b'{"n": 5}')
    append_record(log, {"n": 6})
    assert read_records(log) == [{"n": 1}, {"n": 2}, {"n": 5}, {"n": 6}]
    log.write_bytes(b'{"n": 1}\n{oops\n{"n": 2}\n')
    from capsacc.errors import InputError
    with pytest.raises(InputError, match=f"{log}: line 2 is not JSON"):
        read_records(log)


def test_finalize_after_a_kill_mid_append_keeps_every_finished_network(tmp_path, capsys, monkeypatch):
    import nas.train
    monkeypatch.setattr(nas.train, "train", _fake_train)
    run = _journal_run(tmp_path)
    args = ["finalize", str(run), "--epochs", "1", "--train-samples", "100"]
    assert main(args) == 0
    log = run / "final.jsonl"
    lines = log.read_text().splitlines()
    assert len(lines) >= 2
    torn = "\n".join(lines[:-1]) + "\n" + lines[-1][:len(lines[-1]) // 2]
    log.write_text(torn)
    capsys.readouterr()
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"{log}: line {len(lines)} is cut short" in captured.err
    assert f"network {len(lines)}/" in captured.err and "network 1/" not in captured.err
    assert f"network {len(lines)}/" not in captured.out
    assert log.read_text().splitlines() == lines
    assert json.loads((run / "final.json").read_text())["networks"][-1]["test_accuracy"] == 0.625


def test_pcc_appends_and_never_rewrites_its_log(tmp_path, capsys, monkeypatch):
    import nas.train
    monkeypatch.setattr(nas.train, "train", _fake_train)
    out = tmp_path / "pcc"
    args = ["pcc", "--networks", "3", "--epochs", "1", "--full-epochs", "2", "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "network 1/3" in captured.err and "network 1/3" not in captured.out
    log = out / "pcc.jsonl"
    lines = log.read_text().splitlines()
    assert len(lines) == 4
    inode = log.stat().st_ino
    log.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    assert main([*args[:2], "4", *args[3:]]) == 2
    assert "written with other settings" in capsys.readouterr().err
    assert main(args) == 0
    assert f"{log}: line 4 is cut short" in capsys.readouterr().err
    assert log.read_text().splitlines() == lines and log.stat().st_ino == inode
    assert json.loads((out / "pcc.json").read_text())["networks_ok"] == 3


@dataclass(frozen=True)
class _BadInputEvaluator:
    """A picklable evaluator whose every call meets bad input (as a broken dataset would)."""

    def __call__(self, genotype_list):
        from capsacc.errors import InputError
        raise InputError("data.npz: 'y_train' label 3 is nan, not a whole number")


@pytest.mark.slow
def test_an_input_error_on_a_dask_worker_stops_the_run(tmp_path):
    from capsacc.errors import InputError
    config = SearchConfig(population=4, offspring=2, generations=1, seed=5, out=str(tmp_path / "run"), workers=2)
    with pytest.raises(InputError, match="'y_train' label 3 is nan"):
        run_search(config, evaluator=_BadInputEvaluator(), progress=False)
    _, evaluations, _ = read_journal(tmp_path / "run" / "journal.sqlite")
    assert evaluations == []


def test_train_checks_its_save_path_before_training(tmp_path, capsys):
    file = tmp_path / "f"
    file.write_text("mine")
    start = time.monotonic()
    assert main(["train", "capsnet", "--epochs", "1", "--train-samples", "100", "--save", str(file / "m.keras"),
                 "--quiet"]) == 2
    assert f"{file}: output folder is an existing file" in _one_line_error(capsys, "train")
    (tmp_path / "m.keras").mkdir()
    assert main(["train", "capsnet", "--save", str(tmp_path / "m.keras"), "--quiet"]) == 2
    assert "output file is an existing folder" in _one_line_error(capsys, "train")
    assert time.monotonic() - start < 30, "the errors must come before any training"
    assert file.read_text() == "mine"



def test_train_refuses_a_genotype_that_does_not_fit_the_data_before_training(tmp_path, capsys):
    path = tmp_path / "five.json"
    path.write_text(json.dumps([[0, 28, 1, 1, 9, 1, 28, 16, 1], [1, 28, 16, 1, 9, 2, 14, 8, 4],
                                [1, 14, 8, 4, 14, 1, 1, 5, 8], [-1], [1]]))
    start = time.monotonic()
    assert main(["train", str(path), "--epochs", "1", "--train-samples", "100", "--quiet"]) == 2
    assert (f"{path}: descriptor 2, field 'ch_out': the class layer has 5 capsules, the dataset mnist 10 classes"
            in _one_line_error(capsys, "train"))
    assert time.monotonic() - start < 30, "the error must come before any training"

DASK_CTRL_C_SCRIPT = """
import sys
from nas.evaluate import SyntheticEvaluator
from nas.search import SearchConfig, run_search

if __name__ == "__main__":
    try:
        run_search(SearchConfig(population=6, offspring=6, generations=400, seed=1, out=sys.argv[1], workers=2),
                   evaluator=SyntheticEvaluator(sleep_s=0.5), progress=False)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
"""


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_a_dask_search_with_one_line(tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C: the local workers ignore it, the
    search closes them and ends; no worker prints a traceback, every finished row is kept."""
    script = tmp_path / "dask_ctrl_c.py"
    script.write_text(DASK_CTRL_C_SCRIPT)
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, str(script), str(out)], stderr=subprocess.PIPE, text=True, env=ENV,
                               start_new_session=True, preexec_fn=default_sigint)
    deadline = time.monotonic() + 600  # a loaded 2-core machine takes minutes to start the workers
    while time.monotonic() < deadline and process.poll() is None and len(_journal_keys(out)) < 4:
        time.sleep(0.2)
    assert process.poll() is None and len(_journal_keys(out)) >= 4, "the search ended or stalled before 4 rows"
    os.killpg(process.pid, signal.SIGINT)
    stderr = process.communicate(timeout=300)[1]
    assert process.returncode == 130
    assert stderr.strip() == "interrupted", stderr
    assert len(_journal_keys(out)) >= 4


def test_a_space_file_that_is_not_text_or_not_a_file_is_one_line(tmp_path, capsys):
    binary = tmp_path / "space.toml"
    binary.write_bytes(b"\xff\xfe")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    for path, needle in ((binary, "not UTF-8 text (byte 0: 0xff)"), (fifo, "not a regular file")):
        assert main(["search", "--space", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
        assert f"{path}: {needle}" in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_resume_of_a_missing_run_creates_nothing(tmp_path, capsys):
    out = tmp_path / "nowhere"
    assert main(["search", "--resume", "--out", str(out), "--quiet"]) == 2
    assert f"{out / 'journal.sqlite'}: no journal to resume" in _one_line_error(capsys)
    assert not out.exists()
