"""The SQLite search journal: commit per evaluation, checkpoints, resume checks, corrupt files."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from capsacc.errors import InputError
from nas.genotype import Genotype
from nas.journal import Checkpoint, Evaluation, Journal, read_journal

CONFIG = {"seed": 1, "population": 4, "generations": 3, "dataset": "mnist"}


def _evaluation(name: str, status: str = "ok", drop: float = 0.25) -> Evaluation:
    """An evaluation of a genotype whose channel count is the position of `name` in KEYS (its key is
    the genotype's; `key(name)` gives it)."""
    genotype = [[0, 28, 1, 1, 3, 1, 28, 1 + KEYS.index(name), 1], [-1], [1]]
    return Evaluation(key=Genotype.from_list(genotype).key(), genotype=genotype, generation=0, status=status,
                      accuracy_drop=drop, energy_mJ=0.5, latency_ms=1.5, memory_KiB=12.0, violation=0.0,
                      val_accuracy=(0.5, 0.75), seconds=3.0, worker="w1", attempts=1, message="", params=99)


KEYS = ["a", "b", "c"] + [f"k{i}" for i in range(50)]


def key(name: str) -> str:
    return _evaluation(name).key


def test_evaluations_and_checkpoints_round_trip(tmp_path):
    path = tmp_path / "journal.sqlite"
    rng = np.random.default_rng(5)
    rng.random(3)
    with Journal.open(path, CONFIG, resume=False) as journal:
        journal.record(_evaluation("a"))
        journal.record(_evaluation("b", "nan", 1.0))
        journal.record(_evaluation("a", "ok", 0.9))
        journal.checkpoint(Checkpoint(0, [key("a"), key("b")], rng.bit_generator.state))
    config, evaluations, checkpoints = read_journal(path)
    assert config == CONFIG
    assert [e.key for e in evaluations] == [key("a"), key("b")]
    assert evaluations[0] == _evaluation("a")
    assert evaluations[1].status == "nan"
    restored = np.random.default_rng()
    restored.bit_generator.state = checkpoints[0].rng_state
    assert restored.random() == rng.random()
    with Journal.open(path, {**CONFIG, "generations": 10}, resume=True) as journal:
        assert journal.lookup(key("b")).accuracy_drop == 1.0
        assert journal.lookup(key("c")) is None
        assert journal.last_checkpoint().population == [key("a"), key("b")]


def test_new_run_refuses_existing_journal_and_resume_needs_same_config(tmp_path):
    path = tmp_path / "journal.sqlite"
    Journal.open(path, CONFIG, resume=False).close()
    with pytest.raises(InputError, match="already exists"):
        Journal.open(path, CONFIG, resume=False)
    with pytest.raises(InputError, match="seed: journal 1, now 2"):
        Journal.open(path, {**CONFIG, "seed": 2}, resume=True)
    with pytest.raises(InputError, match="no journal to resume"):
        Journal.open(tmp_path / "other.sqlite", CONFIG, resume=True)


@pytest.mark.parametrize("content", [b"garbage that is not sqlite" * 10, b""])
def test_corrupt_journal_is_named_and_left_untouched(tmp_path, content):
    path = tmp_path / "journal.sqlite"
    path.write_bytes(content)
    with pytest.raises(InputError, match=str(path)):
        Journal.open(path, CONFIG, resume=True)
    with pytest.raises(InputError, match=str(path)):
        read_journal(path)
    assert path.read_bytes() == content


def test_damaged_pages_are_reported_without_losing_the_file(tmp_path):
    path = tmp_path / "journal.sqlite"
    with Journal.open(path, CONFIG, resume=False) as journal:
        for i in range(50):
            journal.record(_evaluation(f"k{i}"))
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=str(path)):
        Journal.open(path, CONFIG, resume=True)
    assert path.read_bytes() == bytes(data)


WRITER = """
import sys
from pathlib import Path
from nas.journal import Journal
for i in range(60):
    Journal.open(Path(sys.argv[1]) / f"j{i}.sqlite", {"seed": i}, resume=False).close()
"""


def test_a_reader_never_sees_a_journal_without_its_configuration(tmp_path):
    """Journals created by another process are read the moment they appear: each is complete (the
    schema and configuration land in one piece; created in place, a reader met thousands of errors)."""
    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    writer = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env)
    errors, read = [], 0
    deadline = time.monotonic() + 120
    while read < 60 and time.monotonic() < deadline:
        path = tmp_path / f"j{read}.sqlite"
        if path.exists():
            try:
                config, _, _ = read_journal(path)
                assert config == {"seed": read}
                read += 1
            except InputError as error:
                errors.append(str(error))
    assert writer.wait(timeout=60) == 0
    assert read == 60 and errors == []
