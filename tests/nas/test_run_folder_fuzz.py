"""Fuzz: damaged run folders given to `nascaps search --resume` and `nascaps finalize`.

A pristine run folder is made once by the command line (its trainings replaced by the synthetic
evaluator and a fixed result, so nothing trains, and its figure by a placeholder); hypothesis then damages a copy of it (journal cells, rows, bytes,
meta; pareto.json values and text; final.jsonl lines; missing files; wrong file types) and runs
the command in this process. Each case must give a result (exit 0 and the result files) or one
clean error line (exit 2), never an exception. Bounded: 60 examples, under a minute on two cores.
"""

import json
import shutil
import sqlite3
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import nas.report
import nas.train
from capsacc.cli import main
from nas.evaluate import SyntheticEvaluator, TrainingEvaluator

SEARCH = ["--population", "4", "--offspring", "2", "--generations", "1", "--quiet"]
FINALIZE = ["--epochs", "1", "--train-samples", "100"]


def _synthetic_training(self, genotype_list):
    return SyntheticEvaluator()(genotype_list)


def _fake_train(genotype, dataset, config, test=False, progress=True, **options):
    """A stand-in for `nas.train.train` (finalize's full training): a fixed, plausible result."""
    return nas.train.TrainResult("ok", [0.5], 0.625, seconds=0.25, params=321, genotype=genotype.to_list())


def _placeholder_plot(path, evaluations, pareto_keys, references) -> None:
    """A stand-in for the matplotlib figure (seconds per call on two cores; it draws evaluations the
    journal has already checked)."""
    Path(path).write_bytes(b"figure of %d evaluations" % len(evaluations))


def _quietly(argv: list[str]) -> int:
    with mock.patch.object(TrainingEvaluator, "__call__", _synthetic_training), \
            mock.patch.object(nas.train, "train", _fake_train), \
            mock.patch.object(nas.report, "plot_pareto", _placeholder_plot):
        return main(argv)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("fuzz") / "run"
    assert _quietly(["search", "--out", str(run), *SEARCH]) == 0
    assert _quietly(["finalize", str(run), *FINALIZE]) == 0
    assert json.loads((run / "pareto.json").read_text())["pareto"], "the pristine run needs a Pareto set"
    assert (run / "final.jsonl").read_text().count("\n") >= 1
    return run


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
                           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3),
                           max_leaves=6)
CELL_VALUES = (st.none() | st.integers(-2 ** 63, 2 ** 63 - 1) | st.floats() | st.text(max_size=20)
               | st.binary(max_size=20) | JSON_VALUES.map(json.dumps))
EVALUATION_COLUMNS = ("key", "genotype", "generation", "status", "accuracy_drop", "energy_mJ", "latency_ms",
                      "memory_KiB", "violation", "val_accuracy", "seconds", "worker", "attempts", "message", "params")


def _set_cell(run: Path, table: str, column: str, value, row: int) -> None:
    with sqlite3.connect(run / "journal.sqlite") as db:
        rowid = db.execute(f"SELECT rowid FROM {table} ORDER BY rowid LIMIT 1 OFFSET ?", (row,)).fetchone()
        if rowid is not None:
            try:
                db.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (value, rowid[0]))
            except sqlite3.IntegrityError:  # NOT NULL (a NaN is stored as NULL): the damage is not possible
                pass
    db.close()


def _replace_in(document, path: list[int], value):
    """`document` with the value at the position chosen by `path` (indices taken modulo) replaced."""
    if not path or not isinstance(document, (dict, list)) or not document:
        return value
    keys = sorted(document) if isinstance(document, dict) else list(range(len(document)))
    key = keys[path[0] % len(keys)]
    document[key] = _replace_in(document[key], path[1:], value)
    return document


SEARCH_DAMAGES = ["evaluation cell", "generation cell", "meta cell", "delete rows", "journal bytes", "missing",
                  "folder instead"]
"""What `search --resume` reads: the journal (and the lock, and the folder)."""
FINALIZE_DAMAGES = ["pareto value", "pareto text", "final line", "final bytes", "missing", "folder instead"]
"""What `finalize` reads: pareto.json and final.jsonl (and the lock, and the folder)."""


@st.composite
def damages(draw, kinds: list[str]):
    """One damage to a run folder, as (description, function of the folder)."""
    kind = draw(st.sampled_from(kinds))
    if kind == "evaluation cell":
        column, value, row = draw(st.sampled_from(EVALUATION_COLUMNS)), draw(CELL_VALUES), draw(st.integers(0, 6))
        return kind, lambda run: _set_cell(run, "evaluations", column, value, row)
    if kind == "generation cell":
        column = draw(st.sampled_from(["generation", "population", "rng_state"]))
        value, row = draw(CELL_VALUES), draw(st.integers(0, 1))
        return kind, lambda run: _set_cell(run, "generations", column, value, row)
    if kind == "meta cell":
        name, value = draw(st.sampled_from(["config", "schema_version"])), draw(CELL_VALUES)
        return kind, lambda run: _set_cell(run, "meta", "value", value, ["schema_version", "config"].index(name))
    if kind == "delete rows":
        table, row = draw(st.sampled_from(["evaluations", "generations", "meta"])), draw(st.integers(0, 5))

        def delete(run):
            with sqlite3.connect(run / "journal.sqlite") as db:
                db.execute(f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} LIMIT 1 OFFSET ?)", (row,))
            db.close()
        return kind, delete
    if kind in ("journal bytes", "final bytes", "pareto text"):
        name = {"journal bytes": "journal.sqlite", "final bytes": "final.jsonl", "pareto text": "pareto.json"}[kind]
        cut, noise = draw(st.floats(0, 1)), draw(st.binary(max_size=64))

        def mangle(run):
            data = (run / name).read_bytes()
            at = int(cut * len(data))
            (run / name).write_bytes(data[:at] + noise + (data[at + len(noise):] if kind == "journal bytes" else b""))
        return kind, mangle
    if kind == "pareto value":
        path, value = draw(st.lists(st.integers(0, 50), max_size=5)), draw(JSON_VALUES)

        def edit(run):
            document = json.loads((run / "pareto.json").read_text())
            (run / "pareto.json").write_text(json.dumps(_replace_in(document, path, value)))
        return kind, edit
    if kind == "final line":
        path, value, line = draw(st.lists(st.integers(0, 50), max_size=4)), draw(JSON_VALUES), draw(st.integers(0, 3))

        def edit_line(run):
            lines = (run / "final.jsonl").read_text().splitlines()
            index = line % len(lines)
            lines[index] = json.dumps(_replace_in(json.loads(lines[index]), path, value))
            (run / "final.jsonl").write_text("\n".join(lines) + "\n")
        return kind, edit_line
    name = draw(st.sampled_from(["journal.sqlite", "pareto.json", "final.jsonl", "run.lock"]))
    if kind == "missing":
        return kind, lambda run: (run / name).unlink()

    def folder(run):
        (run / name).unlink()
        (run / name).mkdir()
    return kind, folder


def _check(argv: list[str], command: str, capsys, results: list[str], run: Path) -> None:
    capsys.readouterr()
    code = _quietly(argv)
    error = capsys.readouterr().err.strip()
    assert code in (0, 2), (code, error)
    event(f"{command}: exit {code}")
    if code == 2:
        assert error.startswith(f"nascaps {command}: error: ") and "\n" not in error, error
        assert "Traceback" not in error
    else:
        assert all((run / name).stat().st_size > 0 for name in results)


def _damaged_copy(pristine: Path, folder: str, damage) -> Path:
    kind, apply = damage
    event(kind)
    run = Path(folder) / "run"
    shutil.copytree(pristine, run)
    apply(run)
    return run


FUZZ = settings(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
"""80 examples per command: about 20 s each on two cores (the run folder is small and nothing trains)."""


@FUZZ
@given(damage=damages(SEARCH_DAMAGES))
def test_resume_of_a_damaged_run_folder_gives_a_result_or_one_clean_error(pristine, capsys, damage):
    with tempfile.TemporaryDirectory() as folder:
        run = _damaged_copy(pristine, folder, damage)
        _check(["search", "--out", str(run), "--resume", *SEARCH], "search", capsys,
               ["pareto.json", "evaluations.csv", "report.md"], run)


@FUZZ
@given(damage=damages(FINALIZE_DAMAGES))
def test_finalize_of_a_damaged_run_folder_gives_a_result_or_one_clean_error(pristine, capsys, damage):
    with tempfile.TemporaryDirectory() as folder:
        run = _damaged_copy(pristine, folder, damage)
        _check(["finalize", str(run), *FINALIZE], "finalize", capsys, ["final.json", "final.md"], run)
