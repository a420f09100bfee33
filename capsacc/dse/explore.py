"""Result files of an exploration: designs.csv, pareto.csv, pareto.png and run.json.

Each CSV starts with `#` lines naming what produced it (network, mode, batch, grid, model and
figure sources, the command), then the header line; read them with pandas' `comment="#"`, or skip
the lines that start with `#` before `csv.DictReader` (numpy's `genfromtxt(names=True)` would take
the first `#` line for the header).
"""

import json
from pathlib import Path

import numpy as np

from capsacc.dse.grid import COLUMNS, DesignResults
from capsacc.dse.pareto import non_dominated
from capsacc.dse.systolic import DATAFLOWS
from capsacc.files import atomic_path, prepare_output_dir, write_atomic

MODEL_VERSION = "dse-scalesim3-45nm-1"
"""Name of this exploration model (closed forms of SCALE-Sim 3.0.0, 45 nm figures), recorded in results."""
PARETO_OBJECTIVES = ("power_mW", "area_mm2", "latency_ms")
OUTPUT_FILES = ("designs.csv", "pareto.csv", "pareto.png", "run.json")
"""The files `write_outputs` writes in its folder."""
FIGURE_SOURCES = ("PE and register: NASCaps 45 nm syntheses (pe.json.gz, mem.json.gz); SRAM energy: Horowitz "
                  "ISSCC 2014, 10 pJ per 64 bits at 8 KB scaled by sqrt(capacity); DRAM: Horowitz 2014, 1.95 nJ "
                  "per 64 bits; SRAM area: 0.346 um2 6T bit cell times sram_overhead; activation unit: Horowitz "
                  "2014 32-bit multiply and add")
_FORMATS = ("{:.0f}", "{:.0f}", "{}", "{:g}", "{:g}", "{:g}", "{:g}", "{:.0f}", "{:.6g}", "{:.6g}", "{:.6g}",
            "{:.6g}", "{:.6g}", "{:.6g}", "{:.6g}", "{:.0f}", "{:.0f}")


def pareto_front(results: DesignResults) -> np.ndarray:
    """Indices of the designs no other design beats in power, area and latency at once."""
    return non_dominated(results.table[:, [COLUMNS.index(c) for c in PARETO_OBJECTIVES]])


def provenance(results: DesignResults, command: str) -> dict:
    """What produced a result: workload, grid, model, figure sources and the command."""
    w = results.workload
    return {"network": w.name, "mode": w.mode, "batch": w.batch, "gemms": len(w.gemms), "macs": w.macs,
            "activation_unit_elements": w.vector_elements, "grid": results.grid.to_dict(),
            "design_points": results.grid.size, "model": MODEL_VERSION, "figures": FIGURE_SOURCES,
            "command": command}


def _write_csv(path: Path, table: np.ndarray, header: dict) -> None:
    line = ",".join(_FORMATS) + "\n"
    with atomic_path(path) as temporary, temporary.open("w") as out:
        for key, value in header.items():
            out.write(f"# {key}: {json.dumps(value)}\n")
        out.write(",".join(COLUMNS) + "\n")
        for row in table.tolist():
            row[2] = DATAFLOWS[int(row[2])]
            out.write(line.format(*row))


def write_outputs(results: DesignResults, out: Path, command: str) -> np.ndarray:
    """Write designs.csv, pareto.csv, pareto.png and run.json to `out` (each atomically, run.json last);
    return the Pareto indices."""
    prepare_output_dir(out, files=OUTPUT_FILES)
    front = pareto_front(results)
    header = provenance(results, command)
    _write_csv(out / "designs.csv", results.table, header)
    _write_csv(out / "pareto.csv", results.table[front], {**header, "pareto_objectives": PARETO_OBJECTIVES})
    plot_pareto(results, front, out / "pareto.png", header)
    write_atomic(out / "run.json", json.dumps({**header, "pareto_points": int(len(front))}, indent=2) + "\n")
    return front


def plot_pareto(results: DesignResults, front: np.ndarray, path: Path, header: dict) -> None:
    """Power against latency of all designs (grey) and of the Pareto set, coloured by area; the PNG's
    Description text chunk holds `header` (the provenance) as JSON."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latency, power, area = (results.column(c) for c in ("latency_ms", "power_mW", "area_mm2"))
    step = max(1, len(latency) // 200_000)
    figure, axes = plt.subplots(figsize=(7, 5))
    axes.scatter(latency[::step], power[::step], s=1, c="0.8", label="designs", rasterized=True)
    points = axes.scatter(latency[front], power[front], s=8, c=area[front], cmap="viridis", label="Pareto set")
    figure.colorbar(points, label="area (mm²)")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("average power (mW)")
    w = results.workload
    axes.set_title(f"{w.name} {w.mode}, batch {w.batch}: {results.grid.size} designs, {len(front)} Pareto-optimal",
                   fontsize=9)
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120,
                       metadata={"Description": json.dumps(header), "Software": MODEL_VERSION})
    plt.close(figure)


def describe(results: DesignResults, index: int) -> str:
    """One design on one line."""
    row = results.table[index]
    c = {name: row[i] for i, name in enumerate(COLUMNS)}
    return (f"  {int(c['rows'])}x{int(c['cols'])} {DATAFLOWS[int(c['dataflow'])]} SRAM "
            f"{c['ifmap_sram_kB']:g}/{c['filter_sram_kB']:g}/{c['ofmap_sram_kB']:g} kB {c['period_ns']:g} ns: "
            f"TOPS/mm2 {c['TOPS_per_mm2']:.4f}, fJ/op {c['fJ_per_op']:.1f}, latency_ms {c['latency_ms']:.4f}, "
            f"energy_mJ {c['energy_mJ']:.4f}, power_mW {c['power_mW']:.1f}, area_mm2 {c['area_mm2']:.3f}")


def best_rows(results: DesignResults, front: np.ndarray) -> list[tuple[str, list[str]]]:
    """The best designs by TOPS/mm² and by fJ/op, over all designs and over the Pareto set."""
    tops, fj = results.column("TOPS_per_mm2"), results.column("fJ_per_op")
    sections = []
    for label, indices in (("all designs", np.arange(len(tops))), ("Pareto set", front)):
        best_tops = indices[np.argsort(-tops[indices], kind="stable")[:3]]
        best_fj = indices[np.argsort(fj[indices], kind="stable")[:3]]
        sections.append((f"best TOPS/mm2 ({label}):", [describe(results, i) for i in best_tops]))
        sections.append((f"best fJ/op ({label}):", [describe(results, i) for i in best_fj]))
    return sections
