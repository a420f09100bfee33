"""Calibrate the cost model against the RTL: sweep operations, run them bit-exactly, fit, report.

`calibrate(settings)` runs a sweep of operation shapes (`sweep`) on the requested array and on two
non-square arrays (`Settings.arrays`), checks every run against the golden model, fits the coefficients
of `capsacc.calibrated.TARGET_FEATURES` by least squares on the training part (three in four
points; every fourth point of each kind and array is held out), and reports per kind, on the
held-out points, the RTL cycles next to the published model's and the calibrated model's
estimates. The held-out points also run with the off-chip memory (`OperationDriver(offchip=True)`:
every buffer row moved by the DMA), and their measured `total_cycles` and `program_bytes` (the program
words overlay programs load through the port) stand next to the calibrated model's
(`capsacc.programs.operation_cost`). `write_outputs` writes calibration.json, errors.csv and errors.png.
"""

import csv
import datetime
import json
import io
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from capsacc.accelerator import Accelerator
from capsacc.array import ArrayConfig
from capsacc.calibrated import MODEL_VERSION, TARGET_FEATURES, Calibration, events_from_counters, features
from capsacc.energy import SRAM_BIT_UM2, SRAM_OVERHEAD, EventEnergies, sram_area_um2
from capsacc.files import atomic_path, prepare_output_dir, write_atomic
from capsacc.mapping import KINDS, MAX_CAPSULE, ROUTING_PHASES
from capsacc.model import estimate
from capsacc.programs import operation_cost
from capsacc.network import Operation, Network
from capsacc.tables import pe_figures
from rtl.version import rtl_version
from rtl.widths import ACC_BITS
from sim.driver import ACTIVATIONS, OperationDriver

HOLD_OUT_EVERY = 4
"""Every fourth point of each (kind, array) is held out of the fit."""


@dataclass(frozen=True)
class Settings:
    """What to calibrate: the main array, the simulator, the sweep size, the seed."""

    rows: int = 16
    cols: int = 16
    simulator: str = "verilator"
    quick: bool = False
    seed: int = 2020
    depths: dict = field(default_factory=dict)
    """Memory depths of the arrays (`capsacc.array.MEMORY_DEPTHS` fields; those left out: ArrayConfig's defaults)."""
    cache_dir: str | None = None

    def arrays(self) -> list[ArrayConfig]:
        """The main array and two non-square ones (R/2 x C - C/4 and R - R/4 x C/2): three
        geometries, so the per-instruction, per-row and per-column coefficients can be told apart. Their
        partial sums are `rtl.widths.ACC_BITS` wide, the RTL's own width (`nascaps rtl run`, `nascaps
        deploy`): the width does not change a cycle or an event count, but it prices the events and the
        partial-sum memory."""
        main = ArrayConfig(self.rows, self.cols, ACC_BITS, **self.depths)
        return [main, replace(main, rows=max(2, self.rows // 2), cols=max(2, self.cols - self.cols // 4)),
                replace(main, rows=max(2, self.rows - self.rows // 4), cols=max(2, self.cols // 2))]


@dataclass
class Point:
    """One operation run on one array."""

    kind: str
    op: Operation
    config: ArrayConfig
    held_out: bool
    cycles: int
    events: dict[str, int]
    features: dict[str, int]
    host_cycles: int
    sim_s: float
    published_cycles: int = 0
    published_energy_mJ: float = 0.0
    predicted: dict[str, int] = field(default_factory=dict)
    total_cycles: int = 0
    """Held-out points: the RTL's busy cycles with the off-chip memory (data movement included); else 0."""
    predicted_total_cycles: int = 0
    """Held-out points: the calibrated model's `total_cycles`; else 0."""
    program_bytes: int = 0
    """Held-out points: the RTL's bytes of program words loaded through the off-chip port; else 0."""
    predicted_program_bytes: int = 0
    """Held-out points: the calibrated model's `program_bytes`; else 0."""


def _choice(rng, values):
    return values[int(rng.integers(len(values)))]


def sweep(kind: str, count: int, max_width: int, quick: bool, rng) -> list[Operation]:
    """`count` random shapes of `kind` (sizes drawn from the NASCaps search space, scaled down so
    a run takes seconds); capsule sizes, classes and routing atoms kept within `max_width` lanes.
    ClassCaps and routing take the kernel equal to the input side, as NASCaps defines them; a routing
    phase's operation is a NASCaps `routing` operation (named by the phase)."""
    caps = [c for c in (4, 8, 16) if c <= max_width] or [max_width]
    ops = []
    while len(ops) < count:
        if kind == "conv":
            n_out, stride = _choice(rng, (4, 6, 8) if quick else (6, 8, 10, 14, 28)), _choice(rng, (1, 2))
            k = _choice(rng, (3, 5) if quick else (3, 5, 7, 9))
            op = Operation(kind, kind, n_out * stride, _choice(rng, (1, 3, 8)), 1, k, stride, n_out,
                           _choice(rng, (8, 16, 32) if quick else (16, 32, 64, 128, 256)), 1)
        elif kind == "convcaps":
            n_out, stride = _choice(rng, (2, 3, 4) if quick else (3, 4, 5, 6, 7)), _choice(rng, (1, 2))
            op = Operation(kind, kind, n_out * stride, _choice(rng, (2, 4, 8)), _choice(rng, (1, 4, 8)),
                           _choice(rng, (3,) if quick else (3, 5)), stride, n_out,
                           _choice(rng, (2, 4) if quick else (2, 4, 8)), _choice(rng, caps))
        elif kind == "convcaps3d":
            n_out = _choice(rng, (2, 3) if quick else (2, 3, 4))
            op = Operation(kind, kind, n_out, _choice(rng, (2, 4) if quick else (2, 4, 8)), _choice(rng, (4, 8)),
                           3, 1, n_out, _choice(rng, (2, 4)), _choice(rng, [c for c in caps if c <= 8] or caps))
        elif kind in ("classcaps", *ROUTING_PHASES):
            classes = [j for j in (4, 6, 10) if j <= max_width] or [max_width]
            side = _choice(rng, (2, 3) if quick else (2, 3, 4, 6))
            op = Operation(kind, "classcaps" if kind == "classcaps" else "routing", side,
                           _choice(rng, (4, 8) if quick else (4, 8, 16, 32)), _choice(rng, (4, 8, 16)), side, 1, 1,
                           _choice(rng, classes), _choice(rng, caps))
        else:
            raise ValueError(f"unknown kind {kind!r}")
        ops.append(op)
    return ops


def area_estimate(config: ArrayConfig) -> dict:
    """Area of the calibrated array, um²: logic from the RTL's yosys synthesis summary
    (rtl/synth/capsacc_RxC.json, `logic_area_um2`: the memories were SRAM macros there) plus the SRAM
    macros of `config`'s memories, priced as `rtl.synth` prices them (`capsacc.energy.sram_area_um2`).
    Falls back on the published PE figure for the logic when no synthesis summary exists for the array."""
    from rtl.synth import memory_shapes

    root = Path(__file__).resolve().parent.parent
    summary = root / "rtl" / "synth" / f"capsacc_{config.rows}x{config.cols}.json"
    if summary.exists():
        logic = float(json.loads(summary.read_text())["logic_area_um2"])
        source = f"yosys synthesis {summary.relative_to(root)}"
    else:
        logic = config.rows * config.cols * pe_figures(3.0, Accelerator.acc_bits, 1, 1)[1]
        source = (f"published 45 nm PE figure ({Accelerator.acc_bits}-bit sums, the table's one width; no synthesis "
                  "summary for this array)")
    shapes = memory_shapes(config)
    sram = sum(sram_area_um2(width, depth) for depth, width in shapes.values())
    return {"area_um2": logic + sram, "logic_um2": logic, "logic_source": source, "sram_um2": sram,
            "sram_bits": sum(depth * width for depth, width in shapes.values()), "sram_bit_um2": SRAM_BIT_UM2,
            "sram_overhead": SRAM_OVERHEAD}


def _to_stderr(line: str) -> None:
    """The default progress report: one line on stderr (results go to stdout)."""
    print(line, file=sys.stderr, flush=True)


def run_sweep(settings: Settings, progress=_to_stderr) -> list[Point]:
    """Run every operation of the sweep on both arrays; every run is checked bit-exactly. Lone
    activations (one ACT of random rows and lengths) join the training points only."""
    rng = np.random.default_rng(settings.seed)
    arrays = settings.arrays()
    max_width = min(min(a.cols for a in arrays), 16)
    per_kind = 4 if settings.quick else 16
    shapes = {kind: sweep(kind, per_kind, max_width, settings.quick, rng) for kind in KINDS}
    for func in ACTIVATIONS:
        shapes[func] = [Operation(func, func, int(rng.integers(1, 40)), 1, int(rng.integers(1, MAX_CAPSULE + 1)),
                                  1, 1, 1, 1, 1) for _ in range(2 if settings.quick else 4)]
    points = []
    for config in arrays:
        driver = OperationDriver(config, settings.simulator, cache_dir=settings.cache_dir)
        dma_driver = OperationDriver(config, settings.simulator, cache_dir=settings.cache_dir, offchip=True)
        published = Accelerator.from_tables(rows=config.rows, cols=config.cols, name="published")
        for kind, ops in shapes.items():
            for index, op in enumerate(ops):
                result = driver.run(kind, op, seed=settings.seed + index)
                held_out = kind in KINDS and index % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1
                point = Point(kind, op, config, held_out, result.cycles,
                              events_from_counters(result.counters, config.rows, config.cols),
                              features(kind, op, config), result.host_cycles, result.sim_s,
                              *_published_costs(kind, op, published))
                total = ""
                if held_out:  # the same operation with every buffer row moved by the DMA
                    moved = dma_driver.run(kind, op, seed=settings.seed + index)
                    point.total_cycles, point.program_bytes = moved.total_cycles, moved.program_bytes
                    total = f"  total {point.total_cycles:>9}"
                points.append(point)
                progress(f"{config.rows}x{config.cols} {kind:<11} {_shape(op):<34} rtl {result.cycles:>9} cycles"
                         f"  published {point.published_cycles:>9}{total}  bit-exact  ({result.wall_s:.1f} s)")
    return points


def _published_costs(kind: str, op: Operation, published: Accelerator) -> tuple[int, float]:
    """(cycles, energy_mJ) of the published model for an operation kind it covers, else (0, 0.0)."""
    if kind not in KINDS:
        return 0, 0.0
    result = estimate(Network((op,)), published)
    return result.cycles, result.energy_mJ


def _shape(op: Operation) -> str:
    return (f"n{op.n_in}->{op.n_out} ch{op.ch_in}x{op.caps_in}->{op.ch_out}x{op.caps_out} "
            f"k{op.kernel} s{op.stride}")


def fit(points: list[Point]) -> dict[str, tuple[float, ...]]:
    """Least-squares coefficients of every target on the training points."""
    train = [p for p in points if not p.held_out]
    coefficients = {}
    for target, names in TARGET_FEATURES.items():
        x = np.array([[p.features[n] for n in names] for p in train], dtype=np.float64)
        y = np.array([p.cycles if target == "cycles" else p.events[target] for p in train], dtype=np.float64)
        solution, *_ = np.linalg.lstsq(x, y, rcond=None)
        coefficients[target] = tuple(round(float(v), 6) for v in solution)
    return coefficients


def error_rows(points: list[Point], calibration: Calibration | None = None) -> list[dict]:
    """Per (array, kind), over the held-out points: summed RTL, published and calibrated cycles and
    relative errors (of the sums, and the largest per operation); with a `calibration`, also the
    energy of the RTL's counted events and of the calibrated model's predicted events (mJ). When the
    points carry their measured `total_cycles` (data movement included): the summed RTL and calibrated
    total cycles and the largest relative error per operation, and the summed RTL and calibrated program
    bytes with the largest absolute difference per operation (most operations load none)."""
    rows = []
    keys = sorted({(p.config.rows, p.config.cols, p.kind) for p in points if p.kind in KINDS},
                  key=lambda k: (-k[0] * k[1], k[0], KINDS.index(k[2])))
    for r, c, kind in keys:
        held = [p for p in points if p.held_out and (p.config.rows, p.config.cols, p.kind) == (r, c, kind)]
        if not held:
            continue
        rtl = sum(p.cycles for p in held)
        pub = sum(p.published_cycles for p in held)
        cal = sum(p.predicted["cycles"] for p in held)
        rows.append({
            "array": f"{r}x{c}", "kind": kind, "held_out_ops": len(held), "rtl_cycles": rtl,
            "published_cycles": pub, "calibrated_cycles": cal,
            "published_rel_error": (pub - rtl) / rtl, "calibrated_rel_error": (cal - rtl) / rtl,
            "calibrated_max_abs_rel_error": max(abs(p.predicted["cycles"] - p.cycles) / p.cycles for p in held),
            "published_max_abs_rel_error": max(abs(p.published_cycles - p.cycles) / p.cycles for p in held),
            "energy_events_max_abs_rel_error": max(
                abs(p.predicted[e] - p.events[e]) / max(p.events[e], 1) for p in held for e in p.events),
        })
        if all(p.total_cycles > 0 for p in held):
            rows[-1]["rtl_total_cycles"] = sum(p.total_cycles for p in held)
            rows[-1]["calibrated_total_cycles"] = sum(p.predicted_total_cycles for p in held)
            rows[-1]["total_max_abs_rel_error"] = max(
                abs(p.predicted_total_cycles - p.total_cycles) / p.total_cycles for p in held)
            rows[-1]["rtl_program_bytes"] = sum(p.program_bytes for p in held)
            rows[-1]["calibrated_program_bytes"] = sum(p.predicted_program_bytes for p in held)
            rows[-1]["program_bytes_max_abs_error"] = max(
                abs(p.predicted_program_bytes - p.program_bytes) for p in held)
        rows[-1]["published_energy_mJ"] = sum(p.published_energy_mJ for p in held)
        if calibration is not None:
            rows[-1]["rtl_events_energy_mJ"] = sum(calibration.energy_mJ(p.events) for p in held)
            rows[-1]["calibrated_energy_mJ"] = sum(calibration.energy_mJ(p.predicted) for p in held)
    return rows


def calibrate(settings: Settings, progress=_to_stderr) -> tuple[Calibration, list[Point], list[dict]]:
    """Run the sweep, fit, evaluate on the held-out points; the calibration describes the main array."""
    start = time.perf_counter()
    source_version = rtl_version()  # before simulating: the sources may change during a long run
    points = run_sweep(settings, progress)
    coefficients = fit(points)
    main = settings.arrays()[0]
    area = area_estimate(main)
    calibration = Calibration(config=main, coefficients=coefficients,
                              energies=EventEnergies.from_tables(main),
                              area_um2=round(area["area_um2"], 3))
    for point in points:
        point.predicted = replace(calibration, config=point.config).predict(point.kind, point.op)
        if point.held_out:
            cost = operation_cost(point.kind, point.op, point.config)
            point.predicted_total_cycles, point.predicted_program_bytes = cost.total_cycles, cost.program_bytes
    errors = error_rows(points, calibration)
    provenance = {
        "model": MODEL_VERSION, "rtl_version": source_version,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "arrays": [f"{a.rows}x{a.cols}" for a in settings.arrays()], "simulator": settings.simulator,
        "quick": settings.quick, "seed": settings.seed,
        "held_out": f"every {HOLD_OUT_EVERY}th point per kind and array",
        "sweep": [{"array": f"{p.config.rows}x{p.config.cols}", "kind": p.kind, "shape": _shape(p.op),
                   "held_out": p.held_out, "rtl_cycles": p.cycles} for p in points],
        "errors": errors, "area": area,
        "energy_source": "Horowitz ISSCC 2014 (45 nm) and Aladdin ISCA 2014 register figures, capsacc/energy.py",
        "command": (f"nascaps calibrate --rows {settings.rows} --cols {settings.cols} --simulator {settings.simulator}"
                    + (" --quick" if settings.quick else "")),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    return replace(calibration, provenance=provenance), points, errors


def summary_table(errors: list[dict]) -> str:
    """The per-kind error table, as printed by `nascaps calibrate`: compute cycles, then (where
    measured) the total cycles with the data movement, RTL and calibrated model, and the largest
    relative error per operation, then the program bytes, RTL and calibrated model, and the largest
    difference per operation; the kind column as wide as its longest name and two spaces."""
    kind_width = max([len("kind"), *(len(row["kind"]) for row in errors)]) + 2
    header = (f"{'array':<7}{'kind':<{kind_width}}{'ops':>4}{'rtl_cycles':>12}{'published':>12}{'calibrated':>12}"
              f"{'pub_err_%':>11}{'cal_err_%':>11}{'cal_max_%':>11}{'rtl_total':>12}{'cal_total':>12}{'tot_max_%':>11}"
              f"{'rtl_prog_B':>12}{'cal_prog_B':>12}{'prog_max_B':>12}")
    lines = [header]
    for row in errors:
        totals = ""
        if "rtl_total_cycles" in row:
            totals = (f"{row['rtl_total_cycles']:>12}{row['calibrated_total_cycles']:>12}"
                      f"{100 * row['total_max_abs_rel_error']:>11.4f}{row['rtl_program_bytes']:>12}"
                      f"{row['calibrated_program_bytes']:>12}{row['program_bytes_max_abs_error']:>12}")
        lines.append(f"{row['array']:<7}{row['kind']:<{kind_width}}{row['held_out_ops']:>4}{row['rtl_cycles']:>12}"
                     f"{row['published_cycles']:>12}{row['calibrated_cycles']:>12}"
                     f"{100 * row['published_rel_error']:>11.2f}{100 * row['calibrated_rel_error']:>11.4f}"
                     f"{100 * row['calibrated_max_abs_rel_error']:>11.4f}{totals}")
    return "\n".join(lines)


OUTPUT_FILES = ("calibration.json", "errors.csv", "errors.png")
"""The files `write_outputs` writes in its folder."""


def write_outputs(out: Path, calibration: Calibration, errors: list[dict]) -> None:
    """DIR/calibration.json, DIR/errors.csv and DIR/errors.png, each written atomically (check the
    folder with `prepare_output_dir(out, files=OUTPUT_FILES)` before the sweep)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prepare_output_dir(out, files=OUTPUT_FILES)
    write_atomic(out / "calibration.json", json.dumps(calibration.to_dict(), indent=1) + "\n")
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=list(dict.fromkeys(key for row in errors for key in row)))
    writer.writeheader()
    writer.writerows(errors)
    write_atomic(out / "errors.csv", table.getvalue())
    labels = [f"{row['kind']}\n{row['array']}" for row in errors]
    x = np.arange(len(errors))
    floor = 1e-6
    fig, ax = plt.subplots(figsize=(max(6, len(errors) * 0.8), 4))
    ax.bar(x - 0.2, [max(abs(r["published_rel_error"]), floor) * 100 for r in errors], 0.4, label="published model")
    ax.bar(x + 0.2, [max(r["calibrated_max_abs_rel_error"], floor) * 100 for r in errors], 0.4,
           label="calibrated model (max over ops)")
    ax.set_yscale("log")
    ax.set_ylabel(f"|relative cycle error| vs RTL, %\n(held-out ops; 0 drawn at {floor * 100:g} %)", fontsize=8)
    ax.set_xticks(x, labels, fontsize=7)
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=0.8)
    ax.legend(fontsize=8, loc="center right", framealpha=0.9)
    ax.set_title(f"{MODEL_VERSION}: errors against the RTL ({calibration.provenance.get('rtl_version', '')[:10]})",
                 fontsize=9)
    fig.tight_layout()
    with atomic_path(out / "errors.png") as temporary:
        fig.savefig(temporary, format="png", dpi=120)
    plt.close(fig)
