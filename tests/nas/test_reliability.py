"""Reliability: kill -9 and resume, a Dask worker killed mid-evaluation, bad input files."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from capsacc.cli import main
from nas.evaluate import SyntheticEvaluator
from nas.journal import read_journal
from nas.search import SearchConfig, run_search

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
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


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
