"""Full training of a search run's Pareto set (the style of Tables 3-4 of NASCaps).

Each genotype of `RUN_DIR/pareto.json` is trained for `epochs` epochs on the dataset the search
used, and its test accuracy is reported next to its energy, latency and memory. Every finished
training is appended to `RUN_DIR/final.jsonl` at once; a second call with the same settings
trains only what is missing. Results: `final.json` (with provenance) and `final.md`.
"""

import json
from pathlib import Path

from capsacc.errors import InputError

from nas.genotype import Genotype


def _read_pareto(run: Path) -> dict:
    path = run / "pareto.json"
    try:
        document = json.loads(path.read_text())
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror}); is {run} a search run folder?") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON ({error})") from None
    if not isinstance(document, dict) or "pareto" not in document or "provenance" not in document:
        raise InputError(f"{path}: not a nascaps pareto.json (needs 'provenance' and 'pareto')")
    return document


def _done(log: Path, settings: dict) -> dict[str, dict]:
    if not log.exists():
        return {}
    done = {}
    for line in log.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("settings") == settings:
            done[json.dumps(row["genotype"])] = row
    return done


def finalize(run_dir: str | Path, epochs: int = 100, data: str | None = None, train_samples: int | None = None,
             timeout_s: float | None = None, progress: bool = True) -> list[dict]:
    """Train the Pareto set of `run_dir`; write final.json and final.md there; return the rows."""
    from nas.datasets import load_dataset
    from nas.report import versions
    from nas.train import TrainConfig, train
    run = Path(run_dir)
    document = _read_pareto(run)
    provenance = document["provenance"]
    dataset = load_dataset(provenance.get("dataset", "mnist"), data if data is not None else provenance.get("data"))
    config = TrainConfig(epochs=epochs, batch_size=provenance.get("batch_size", 100), seed=provenance.get("seed", 0),
                         timeout_s=timeout_s, train_samples=train_samples)
    settings = {"epochs": epochs, "train_samples": train_samples, "dataset": dataset.name, "source": dataset.source}
    log = run / "final.jsonl"
    done = _done(log, settings)
    rows = []
    for index, entry in enumerate(document["pareto"]):
        try:
            genotype = Genotype.from_list(entry["genotype"])
        except (InputError, KeyError, TypeError) as error:
            raise InputError(f"{run / 'pareto.json'}: Pareto entry {index}: {error}") from None
        key = json.dumps(genotype.to_list())
        if key not in done:
            if progress:
                print(f"network {index + 1}/{len(document['pareto'])}: {genotype.key()}", flush=True)
            result = train(genotype, dataset, config, test=True, progress=progress)
            done[key] = {"settings": settings, "genotype": genotype.to_list(), "status": result.status,
                         "test_accuracy": result.test_accuracy, "val_accuracy": result.val_accuracy,
                         "seconds": result.seconds, "params": result.params, "message": result.message}
            with open(log, "a") as handle:
                handle.write(json.dumps(done[key]) + "\n")
        row = done[key]
        rows.append({"genotype": row["genotype"], "status": row["status"], "test_accuracy": row["test_accuracy"],
                     "search_val_accuracy": 1 - entry.get("accuracy_drop", 1.0), "energy_mJ": entry["energy_mJ"],
                     "latency_ms": entry["latency_ms"], "memory_KiB": entry["memory_KiB"], "params": row["params"],
                     "seconds": row["seconds"], "epochs": len(row["val_accuracy"])})
    final = {"provenance": {"search": provenance, **settings, "versions": versions()}, "networks": rows}
    (run / "final.json").write_text(json.dumps(final, indent=1) + "\n")
    (run / "final.md").write_text(_markdown(rows, settings, provenance))
    return rows


def _markdown(rows: list[dict], settings: dict, provenance: dict) -> str:
    lines = ["# Fully trained Pareto set", "",
             f"{settings['epochs']} epochs on {settings['source']} "
             f"({settings['train_samples'] or 'all'} training images); hardware figures on accelerator "
             f"`{provenance.get('accelerator', '?')}` (capsacc model {provenance.get('model_version', '?')}).", "",
             "| # | test_accuracy_% | search_val_accuracy_% | energy_mJ | latency_ms | memory_KiB | params | status |"
             " genotype |", "|---|---|---|---|---|---|---|---|---|"]
    for i, row in enumerate(rows):
        test = "" if row["test_accuracy"] is None else f"{100 * row['test_accuracy']:.2f}"
        lines.append(f"| {i} | {test} | {100 * row['search_val_accuracy']:.2f} | {row['energy_mJ']:.4f} | "
                     f"{row['latency_ms']:.4f} | {row['memory_KiB']:.1f} | {row['params']} | {row['status']} | "
                     f"`{json.dumps(row['genotype'])}` |")
    return "\n".join(lines) + "\n"
