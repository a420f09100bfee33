"""Full training of a search run's Pareto set (the style of Tables 3-4 of NASCaps).

Each genotype of `RUN_DIR/pareto.json` is trained for `epochs` epochs on the dataset the search
used, and its test accuracy is reported next to its energy, latency and memory. Every finished
training is appended to `RUN_DIR/final.jsonl` at once (`nas.jsonlog`: a line torn by a kill is
reported and skipped); a second call with the same settings trains only what is missing. Each
trained model is saved as `RUN_DIR/models/<hash of settings and genotype>.keras`. Results:
`final.json` (with provenance) and `final.md`, written atomically. The run folder is locked
(`nas.search.LOCK_NAME`) while finalize works in it.

With `deploy` (`nascaps finalize --deploy`), every fully trained network (status "ok") is then
deployed by `nascaps deploy` run as a subprocess (`python -m capsacc deploy`: nas never imports sim)
into `RUN_DIR/deploy/<index>/`, and its int8 accuracy, agreement and cycles (RTL and cost model) join
its row. A model saved by no earlier call (a final.jsonl from before models were saved) is trained
again first.
"""

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from capsacc.errors import SEED_LIMIT, InputError
from capsacc.files import read_json, write_atomic

from nas.datasets import DATASETS, load_dataset
from nas.evaluate import check_training_data
from nas.genotype import Genotype
from nas.journal import RunLock
from nas.jsonlog import append_record, finite_number, read_records

LOG_NAME = "final.jsonl"
MODELS_FOLDER = "models"
DEPLOY_FOLDER = "deploy"
_OBJECTIVES = ("accuracy_drop", "energy_mJ", "latency_ms", "memory_KiB")
DEPLOY_FIELDS = ("float_accuracy", "int8_accuracy", "agreement", "test_images", "rtl_images", "rtl_bit_exact",
                 "rtl_cycles_per_image", "rtl_total_cycles_per_image", "rtl_energy_mJ_per_image",
                 "model_cycles_per_image", "model_energy_mJ_per_image", "cost_model")
"""The fields of each network's deploy.json that finalize reports (docs/deploy.md)."""


@dataclass(frozen=True)
class DeployOptions:
    """The `nascaps deploy` options finalize passes: the PE array, calibration images, RTL images and back end."""

    rows: int = 16
    cols: int = 16
    calibration_images: int = 256
    simulate_images: int = 0
    simulator: str = "verilator"

    def arguments(self) -> list[str]:
        return ["--rows", str(self.rows), "--cols", str(self.cols), "--calibration-images",
                str(self.calibration_images), "--simulate-images", str(self.simulate_images),
                "--simulator", self.simulator]


def model_path(run: Path, settings: dict, genotype: Genotype) -> Path:
    """Where finalize saves the model of `genotype` trained with `settings`."""
    digest = hashlib.sha256(json.dumps([settings, genotype.to_list()], sort_keys=True).encode()).hexdigest()
    return run / MODELS_FOLDER / f"{digest[:16]}.keras"


def deploy_model(model: Path, out: Path, options: DeployOptions, data: str | None = None) -> dict:
    """Run `nascaps deploy MODEL --out OUT` as a subprocess; returns `DEPLOY_FIELDS` of its deploy.json
    and `deploy` (the folder), or `deploy_error` (its last line on stderr) when it wrote none."""
    command = [sys.executable, "-m", "capsacc", "deploy", str(model), "--out", str(out), *options.arguments()]
    if data is not None:
        command += ["--data", data]
    root = str(Path(__file__).resolve().parents[1])  # the folder holding nas and sim
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    result = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    report = out / "deploy.json"
    if result.returncode not in (0, 1) or not report.exists():  # 1: written, the RTL not bit-exact
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return {"deploy": str(out), "deploy_error": lines[-1] if lines else f"exit code {result.returncode}"}
    record = json.loads(report.read_text())
    return {"deploy": str(out), **{name: record.get(name) for name in DEPLOY_FIELDS}}


def read_pareto(run: Path) -> tuple[dict, list[tuple[Genotype, dict]]]:
    """The provenance and the (genotype, entry) pairs of `run/pareto.json`, every field checked;
    `InputError` naming the file, the entry and the field otherwise."""
    path = run / "pareto.json"
    if not path.exists():
        raise InputError(f"{path}: no such file; is {run} a search run folder?")
    document = read_json(path)
    if not isinstance(document, dict) or not isinstance(document.get("pareto"), list) \
            or not isinstance(document.get("provenance"), dict):
        raise InputError(f"{path}: not a nascaps pareto.json (needs a 'provenance' object and a 'pareto' list)")
    provenance = document["provenance"]
    expected = {"dataset": lambda v: v in DATASETS, "data": lambda v: v is None or isinstance(v, str),
                "batch_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                "seed": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < SEED_LIMIT}
    for key, good in expected.items():
        if key in provenance and not good(provenance[key]):
            raise InputError(f"{path}: provenance, key '{key}': bad value {provenance[key]!r}")
    entries = []
    for index, entry in enumerate(document["pareto"]):
        where = f"{path}: Pareto entry {index}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: not an object")
        try:
            genotype = Genotype.from_list(entry.get("genotype"))
        except InputError as error:
            raise InputError(f"{where}, key 'genotype': {error}") from None
        for key in _OBJECTIVES:
            low, high = 0.0, (1.0 if key == "accuracy_drop" else float("inf"))
            if not finite_number(entry.get(key), low, high):
                raise InputError(f"{where}, key '{key}': bad value {entry.get(key)!r}")
        entries.append((genotype, entry))
    return provenance, entries


def _check_row(row: dict, log: Path, number: int) -> None:
    """A row of final.jsonl is what `finalize` wrote; `InputError` naming the row otherwise."""
    checks = {"settings": isinstance(row.get("settings"), dict),
              "genotype": isinstance(row.get("genotype"), list),
              "status": isinstance(row.get("status"), str),
              "test_accuracy": row.get("test_accuracy") is None or finite_number(row.get("test_accuracy"), 0, 1),
              "val_accuracy": isinstance(row.get("val_accuracy"), list)
              and all(finite_number(v, 0, 1) for v in row["val_accuracy"]),
              "seconds": finite_number(row.get("seconds"), 0),
              "params": isinstance(row.get("params"), int) and not isinstance(row.get("params"), bool)
              and row["params"] >= 0}
    for key, good in checks.items():
        if not good:
            raise InputError(f"{log}: record {number}, key '{key}': bad value {row.get(key)!r}")


def _done(log: Path, settings: dict) -> dict[str, dict]:
    """Finished trainings in the log with these settings, by genotype key."""
    done = {}
    for number, row in enumerate(read_records(log), start=1):
        _check_row(row, log, number)
        if row["settings"] == settings:
            done[json.dumps(row["genotype"])] = row
    return done


def finalize(run_dir: str | Path, epochs: int = 100, data: str | None = None, train_samples: int | None = None,
             timeout_s: float | None = None, progress: bool = True, deploy: DeployOptions | None = None) -> list[dict]:
    """Train the Pareto set of `run_dir` (with `deploy`: then deploy each fully trained network, module
    docstring); write final.json and final.md there; return the rows. Progress goes to stderr."""
    from nas.report import versions
    from nas.search import LOCK_NAME
    from nas.train import TrainConfig, train
    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"{run}: not a search run folder ({'not a folder' if run.exists() else 'no such folder'})")
    with RunLock(run / LOCK_NAME, "nascaps finalize"):
        provenance, entries = read_pareto(run)
        dataset = load_dataset(provenance.get("dataset", "mnist"),
                               data if data is not None else provenance.get("data"))
        config = TrainConfig(epochs=epochs, batch_size=provenance.get("batch_size", 100),
                             seed=provenance.get("seed", 0), timeout_s=timeout_s, train_samples=train_samples)
        check_training_data(dataset, config)
        if deploy is not None and dataset.name != "mnist":
            raise InputError(f"--deploy: nascaps deploy handles MNIST models; the run's dataset is {dataset.name}")
        settings = {"epochs": epochs, "train_samples": train_samples, "dataset": dataset.name,
                    "source": dataset.source}
        log = run / LOG_NAME
        done = _done(log, settings)
        rows = []
        for index, (genotype, entry) in enumerate(entries):
            key = json.dumps(genotype.to_list())
            model = model_path(run, settings, genotype)
            if key not in done or (deploy is not None and done[key]["status"] == "ok" and not model.exists()):
                if progress:
                    print(f"network {index + 1}/{len(entries)}: {genotype.key()}", file=sys.stderr, flush=True)
                result = train(genotype, dataset, config, test=True, progress=progress, save_path=model)
                done[key] = {"settings": settings, "genotype": genotype.to_list(), "status": result.status,
                             "test_accuracy": result.test_accuracy, "val_accuracy": result.val_accuracy,
                             "seconds": result.seconds, "params": result.params, "message": result.message}
                append_record(log, done[key])
            row = done[key]
            rows.append({"genotype": row["genotype"], "status": row["status"], "test_accuracy": row["test_accuracy"],
                         "search_val_accuracy": 1 - entry["accuracy_drop"], "energy_mJ": entry["energy_mJ"],
                         "latency_ms": entry["latency_ms"], "memory_KiB": entry["memory_KiB"],
                         "params": row["params"], "seconds": row["seconds"], "epochs": len(row["val_accuracy"])})
            if deploy is not None and row["status"] == "ok":
                if progress:
                    print(f"deploying network {index + 1}/{len(entries)}", file=sys.stderr, flush=True)
                rows[-1].update(deploy_model(model, run / DEPLOY_FOLDER / str(index), deploy,
                                             data if data is not None else provenance.get("data")))
        deployed = {"deploy": vars(deploy)} if deploy is not None else {}
        final = {"provenance": {"search": provenance, **settings, **deployed, "versions": versions()}, "networks": rows}
        write_atomic(run / "final.json", json.dumps(final, indent=1) + "\n")
        write_atomic(run / "final.md", _markdown(rows, settings, provenance, deploy))
    return rows


def _percent(value) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def _markdown(rows: list[dict], settings: dict, provenance: dict, deploy: DeployOptions | None = None) -> str:
    lines = ["# Fully trained Pareto set", "",
             f"{settings['epochs']} epochs on {settings['source']} "
             f"({settings['train_samples'] or 'all'} training images); hardware figures on accelerator "
             f"`{provenance.get('accelerator', '?')}` (capsacc model {provenance.get('model_version', '?')}).", "",
             "| # | test_accuracy_% | search_val_accuracy_% | energy_mJ | latency_ms | memory_KiB | params | status |"
             " genotype |", "|---|---|---|---|---|---|---|---|---|"]
    for i, row in enumerate(rows):
        lines.append(f"| {i} | {_percent(row['test_accuracy'])} | {100 * row['search_val_accuracy']:.2f} | "
                     f"{row['energy_mJ']:.4f} | {row['latency_ms']:.4f} | {row['memory_KiB']:.1f} | {row['params']} | "
                     f"{row['status']} | `{json.dumps(row['genotype'])}` |")
    if deploy is not None:
        lines += ["", "## Deployed in int8 (`nascaps deploy`)", "",
                  f"On the {deploy.rows}x{deploy.cols} array, shifts chosen on {deploy.calibration_images} training "
                  f"images; the first {deploy.simulate_images} test images on the RTL ({deploy.simulator}). "
                  "Accuracies on the deploy's test set (the dataset's test images); cycles per image.", "",
                  "| # | float_accuracy_% | int8_accuracy_% | agreement_% | rtl_bit_exact | rtl_cycles | model_cycles |"
                  " cost_model | deploy |", "|---|---|---|---|---|---|---|---|---|"]
        for i, row in enumerate(rows):
            if "deploy" not in row:
                continue
            if "deploy_error" in row:
                lines.append(f"| {i} | | | | | | | | {row['deploy_error']} |")
                continue
            exact = "" if row["rtl_bit_exact"] is None else str(row["rtl_bit_exact"]).lower()
            lines.append(f"| {i} | {_percent(row['float_accuracy'])} | {_percent(row['int8_accuracy'])} | "
                         f"{_percent(row['agreement'])} | {exact} | {row['rtl_cycles_per_image'] or ''} | "
                         f"{row['model_cycles_per_image']} | {row['cost_model']} | `{row['deploy']}` |")
    return "\n".join(lines) + "\n"
