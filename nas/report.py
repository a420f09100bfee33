"""Outputs of a search run: evaluations.csv, pareto.json, pareto.png and report.md.

Each file records what produced it (the run's configuration: seed, space, accelerator, dataset,
epochs, and the package versions).
"""

import csv
import io
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from capsacc import Accelerator
from capsacc.files import atomic_path, write_atomic
from capsacc.network import PRESETS

from nas.evaluate import hardware_costs
from nas.genotype import Genotype
from nas.journal import OBJECTIVES, Evaluation

CSV_COLUMNS = ("index", "generation", "status", "accuracy_drop", "val_accuracy_last", "energy_mJ", "latency_ms",
               "memory_KiB", "violation", "pareto", "seconds", "attempts", "worker", "params", "epochs", "message",
               "genotype")
"""Columns of evaluations.csv (units in the names; accuracies are fractions 0-1)."""


def versions() -> dict:
    """Versions of Python and of the packages a result depends on."""
    found = {"python": platform.python_version()}
    for package in ("nascaps", "numpy", "keras", "tensorflow-cpu", "dask", "distributed"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def provenance(identity: dict) -> dict:
    """The run configuration with the software versions."""
    return {**identity, "versions": versions()}


def write_csv(path: Path, evaluations: list[Evaluation], pareto_keys: set[str]) -> None:
    """evaluations.csv (`CSV_COLUMNS`), one row per evaluation, written atomically."""
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow(CSV_COLUMNS)
    for index, e in enumerate(evaluations):
        writer.writerow([index, e.generation, e.status, f"{e.accuracy_drop:.6f}",
                         f"{e.val_accuracy[-1]:.6f}" if e.val_accuracy else "", f"{e.energy_mJ:.9g}",
                         f"{e.latency_ms:.9g}", f"{e.memory_KiB:.9g}", f"{e.violation:.6g}",
                         int(e.key in pareto_keys), f"{e.seconds:.3f}", e.attempts, e.worker, e.params,
                         len(e.val_accuracy), e.message, json.dumps(e.genotype)])
    write_atomic(path, handle.getvalue())


def _entry(e: Evaluation) -> dict:
    return {"genotype": e.genotype, "accuracy_drop": e.accuracy_drop, "val_accuracy": list(e.val_accuracy),
            "energy_mJ": e.energy_mJ, "latency_ms": e.latency_ms, "memory_KiB": e.memory_KiB,
            "params": e.params, "generation": e.generation}


def pareto_document(identity: dict, pareto: list[Evaluation]) -> dict:
    """The content of pareto.json: provenance, objective names and the Pareto set."""
    return {"provenance": provenance(identity), "objectives": list(OBJECTIVES),
            "pareto": [_entry(e) for e in pareto]}


def reference_costs(accelerator: Accelerator) -> dict[str, dict]:
    """Hardware figures of the CapsNet and DeepCaps presets on `accelerator`."""
    out = {}
    for name in PRESETS:
        costs = hardware_costs(Genotype.preset(name), accelerator)
        out[name] = {"energy_mJ": costs.energy_mJ, "latency_ms": costs.latency_ms, "memory_KiB": costs.memory_KiB}
    return out


def plot_pareto(path: Path, evaluations: list[Evaluation], pareto_keys: set[str], references: dict) -> None:
    """The four objectives pairwise (six panels), trained candidates coloured by generation, the
    Pareto set circled, CapsNet and DeepCaps marked (their hardware figures; on the accuracy axis
    as lines, since the search does not train them)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    trained = [e for e in evaluations if e.status == "ok"]
    labels = {"accuracy_drop": "accuracy drop", "energy_mJ": "energy (mJ)", "latency_ms": "latency (ms)",
              "memory_KiB": "memory (KiB)"}
    pairs = [(a, b) for i, a in enumerate(OBJECTIVES) for b in OBJECTIVES[i + 1:]]
    figure, axes = plt.subplots(2, 3, figsize=(15, 9))
    generations = [e.generation for e in trained]
    vmax = max(generations, default=1) or 1
    markers = {"capsnet": ("*", "tab:red"), "deepcaps": ("P", "tab:purple")}
    for axis, (x_name, y_name) in zip(axes.flat, pairs):
        if trained:
            x = np.array([getattr(e, x_name) for e in trained])
            y = np.array([getattr(e, y_name) for e in trained])
            points = axis.scatter(x, y, c=generations, cmap="viridis", vmin=0, vmax=vmax, s=22)
            on_front = np.array([e.key in pareto_keys for e in trained])
            axis.scatter(x[on_front], y[on_front], facecolors="none", edgecolors="black", s=70, linewidths=1.2,
                         label="Pareto set")
        for name, figures in references.items():
            marker, colour = markers.get(name, ("X", "tab:gray"))
            if x_name == "accuracy_drop":
                axis.axhline(figures[y_name], color=colour, linestyle="--", linewidth=1, label=name)
            else:
                axis.scatter([figures[x_name]], [figures[y_name]], marker=marker, color=colour, s=160, label=name)
        for name, scale in (("x", x_name), ("y", y_name)):
            if scale != "accuracy_drop":
                getattr(axis, f"set_{name}scale")("log")
        axis.set_xlabel(labels[x_name])
        axis.set_ylabel(labels[y_name])
        axis.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=8, loc="best")
    if trained:
        from matplotlib.ticker import MaxNLocator
        figure.colorbar(points, ax=axes, label="generation", shrink=0.6, ticks=MaxNLocator(integer=True))
    figure.suptitle("NASCaps search: objectives pairwise (trained candidates)")
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110)
    plt.close(figure)


def _markdown_table(rows: list[list], header: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return lines


def report_markdown(identity: dict, result, references: dict) -> str:
    """report.md: configuration, counts by status, time spent training, the Pareto set, references."""
    evaluations, pareto = result.evaluations, result.pareto
    statuses: dict[str, int] = {}
    for e in evaluations:
        statuses[e.status] = statuses.get(e.status, 0) + 1
    training_s = sum(e.seconds for e in evaluations)
    retried = sum(1 for e in evaluations if e.attempts > 1)
    lines = ["# NASCaps search report", "",
             f"Dataset {identity['dataset']} ({identity.get('data') or 'default source'}), "
             f"{identity['epochs']} epoch(s) per candidate on {identity['train_samples'] or 'all'} training images, "
             f"seed {identity['seed']}, accelerator `{identity['accelerator']}` (capsacc model "
             f"{identity['model_version']}; energy_mJ: {identity['energy_objective']}), "
             f"|P| = {identity['population']}, "
             f"|Q| = {identity['offspring']}, "
             f"{identity['generations']} generation(s) after the initial population, evaluator "
             f"`{identity['evaluator']}`.", "",
             f"{len(evaluations)} distinct candidates evaluated: "
             + ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
             + f"; {retried} retried after a worker died. Evaluation time (sum over candidates): "
             f"{training_s:.1f} s; wall time of the last invocation: {result.wall_s:.1f} s.", "",
             f"## Pareto set ({len(pareto)} of {len(evaluations)})", ""]
    rows = [[i, f"{100 * (1 - e.accuracy_drop):.2f}", f"{e.energy_mJ:.4f}", f"{e.latency_ms:.4f}",
             f"{e.memory_KiB:.1f}", e.generation, f"`{json.dumps(e.genotype)}`"] for i, e in enumerate(pareto)]
    lines += _markdown_table(rows, ["#", "val_accuracy_%", "energy_mJ", "latency_ms", "memory_KiB", "generation",
                                    "genotype"])
    lines += ["", "## Reference networks on the same accelerator (not trained by the search)", ""]
    lines += _markdown_table([[name, f"{f['energy_mJ']:.4f}", f"{f['latency_ms']:.4f}", f"{f['memory_KiB']:.1f}"]
                              for name, f in references.items()],
                             ["network", "energy_mJ", "latency_ms", "memory_KiB"])
    lines += ["", "Files: `evaluations.csv` (every candidate), `pareto.json` (the Pareto set with provenance), "
              "`pareto.png` (objectives pairwise), `journal.sqlite` (the resumable journal).", ""]
    return "\n".join(lines)


def write_reports(out: Path, identity: dict, result, accelerator: Accelerator) -> None:
    """Write evaluations.csv, pareto.json, pareto.png and report.md into `out`, each atomically."""
    pareto_keys = {e.key for e in result.pareto}
    references = reference_costs(accelerator)
    write_csv(out / "evaluations.csv", result.evaluations, pareto_keys)
    write_atomic(out / "pareto.json", json.dumps(pareto_document(identity, result.pareto), indent=1) + "\n")
    plot_pareto(out / "pareto.png", result.evaluations, pareto_keys, references)
    write_atomic(out / "report.md", report_markdown(identity, result, references))
