"""Table 2 of NASCaps: does few-epoch accuracy predict full-training accuracy?

Random genotypes of a search space are each trained once for `full_epochs` epochs (the learning
rate decays per epoch, so the validation accuracy after e epochs of that training is the one an
e-epoch training gives). For each few-epoch budget e, the Pearson correlation coefficient between
the validation accuracy after e epochs and the test accuracy after full training is reported, with
the median over networks of the cumulative training time up to epoch e (the measured wall time of
the whole training, building included, times e / full_epochs).

Finished networks are appended to `pcc.jsonl` in the output folder as they finish (`nas.jsonlog`:
the file is only ever appended to; a line torn by a kill is reported and skipped); running again
with the same settings continues from there. `pcc.json` is written atomically; progress goes to
stderr. The output folder is locked (`nas.search.LOCK_NAME`) while pcc works in it.
"""

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from capsacc.errors import InputError
from capsacc.files import prepare_output_dir, write_atomic

from nas.evaluate import check_training_data
from nas.journal import RunLock
from nas.jsonlog import append_record, finite_number, read_records
from nas.operators import random_genotype
from nas.space import SearchSpace


@dataclass(frozen=True)
class PccConfig:
    """networks (random genotypes), epochs (few-epoch budgets), full_epochs, train_samples
    (images, validation split included; None all), batch_size (images), learning_rate (Adam, first
    epoch), timeout_s (per network), seed, space, out."""

    dataset: str = "mnist"
    data: str | None = None
    networks: int = 20
    epochs: tuple[int, ...] = (1, 3, 5, 10)
    full_epochs: int = 20
    train_samples: int | None = None
    batch_size: int = 100
    learning_rate: float = 0.001
    timeout_s: float | None = None
    seed: int = 0
    space: SearchSpace = field(default_factory=SearchSpace)
    out: str = "nascaps-pcc"


def pearson(x, y) -> float | None:
    """Pearson correlation coefficient of two equal-length sequences; None when undefined."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def correlation_table(records: list[dict], epochs, full_epochs: int) -> list[dict]:
    """Rows (epochs, pearson_r, median_cumulative_s, networks) over the networks whose training finished."""
    done = [r for r in records if r["status"] == "ok" and len(r["val_accuracy"]) == full_epochs
            and r["test_accuracy"] is not None]
    full = [r["test_accuracy"] for r in done]
    rows = []
    for e in epochs:
        few = [r["val_accuracy"][e - 1] for r in done]
        times = [r["seconds"] * e / full_epochs for r in done]
        rows.append({"epochs": e, "pearson_r": pearson(few, full),
                     "median_cumulative_s": float(np.median(times)) if times else 0.0, "networks": len(done)})
    return rows


def run_pcc(config: PccConfig, progress: bool = True) -> dict:
    """Train the networks (continuing `out/pcc.jsonl`), write `out/pcc.json` and return its content."""
    from nas.datasets import load_dataset
    from nas.report import versions
    from nas.search import LOCK_NAME
    from nas.train import TrainConfig, train
    train_config = TrainConfig(epochs=config.full_epochs, seed=config.seed, timeout_s=config.timeout_s,
                               train_samples=config.train_samples, batch_size=config.batch_size,
                               learning_rate=config.learning_rate)
    out = prepare_output_dir(config.out)
    settings = {**asdict(config), "space": asdict(config.space)}
    settings = json.loads(json.dumps(settings))
    log = out / "pcc.jsonl"
    with RunLock(out / LOCK_NAME, "nascaps pcc"):
        records = _read_log(log, settings)
        fresh = records is None
        records = records or []
        dataset = load_dataset(config.dataset, config.data)
        check_training_data(dataset, train_config, config.space.n_classes)
        rng = np.random.default_rng(config.seed)
        genotypes = [random_genotype(config.space, rng) for _ in range(config.networks)]
        if fresh:
            append_record(log, {"settings": settings})
        for index, genotype in enumerate(genotypes[len(records):], start=len(records)):
            if progress:
                print(f"network {index + 1}/{config.networks}: {genotype.key()}", file=sys.stderr, flush=True)
            result = train(genotype, dataset, train_config, test=True, progress=progress)
            record = {"index": index, "genotype": genotype.to_list(), "status": result.status,
                      "val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy,
                      "seconds": result.seconds, "params": result.params, "message": result.message}
            append_record(log, record)
            records.append(record)
        document = {"provenance": {**settings, "dataset_source": dataset.source, "versions": versions()},
                    "table": correlation_table(records, config.epochs, config.full_epochs),
                    "networks_ok": sum(1 for r in records if r["status"] == "ok"), "networks": records}
        write_atomic(out / "pcc.json", json.dumps(document, indent=1) + "\n")
    return document


def _read_log(log: Path, settings: dict) -> list[dict] | None:
    """Networks already trained with the same settings (the log's first record holds them), each
    checked; `InputError` naming the log and the record otherwise. None when the log has no header."""
    lines = read_records(log)
    if not lines:
        return None
    if lines[0].get("settings") != settings:
        raise InputError(f"{log}: written with other settings; choose another --out")
    records = lines[1:]
    for number, record in enumerate(records, start=2):
        checks = {"index": record.get("index") == number - 2,
                  "genotype": isinstance(record.get("genotype"), list),
                  "status": isinstance(record.get("status"), str),
                  "val_accuracy": isinstance(record.get("val_accuracy"), list)
                  and all(finite_number(v, 0, 1) for v in record["val_accuracy"]),
                  "test_accuracy": record.get("test_accuracy") is None
                  or finite_number(record.get("test_accuracy"), 0, 1),
                  "seconds": finite_number(record.get("seconds"), 0)}
        for key, good in checks.items():
            if not good:
                raise InputError(f"{log}: record {number}, key '{key}': bad value {record.get(key)!r}")
    return records
