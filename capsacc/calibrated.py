"""The calibrated cost model ("calibrated-rtl"): cycles and events of each operation as linear
functions of the instruction counts of its tiling (`capsacc.mapping`), with coefficients fitted to
cycle-accurate runs of the CapsAcc RTL (`nascaps calibrate`), and energy from the counted events
times per-event 45 nm energies (`capsacc.energy`).

A `Calibration` holds the array it describes (`ArrayConfig`), the fitted coefficients of every
target (cycles and each event of `capsacc.energy.EVENTS`) over its features, the event energies,
the area, and provenance (RTL version, sweep, date, measured errors). `Accelerator.calibrated()`
carries the shipped one (capsacc/data/calibrated.json).

A calibration's array runs a batch of `config.batch` images at once (`capsacc.mapping`):
`Calibration.predict` gives the batch's cycles and events (those of the RTL's batch run), and
`network_costs` reports per image, the rule of `per_image`: an operation's cycles per image are
ceil(batch cycles / B), its energy per image the batch's energy / B. These are throughput
figures: the batch's latency is B times an image's share. The coefficients do not depend on the
batch (the features count the batch's instructions), so one calibration serves every batch.
"""

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from capsacc.energy import EVENTS, EventEnergies
from capsacc.errors import AcceleratorConfigError, InputError
from capsacc.files import read_json
from capsacc.array import ArrayConfig
from capsacc.mapping import MappingError, ceil_div, chain, plan_counts

INT64_MAX = 2 ** 63 - 1
"""The largest count an int64 result array holds."""

DEFAULT_BATCH = 8
"""Images per batch of the shipped calibrated accelerator (`Accelerator.calibrated`) and of `nascaps
rtl run`: the smallest power of two that makes CapsNet's ClassCaps stream bound on 16x16 (B·k >= R
with k = 2 packed capsules of 8 atoms; docs/rtl.md "Batch of images")."""

MODEL_VERSION = "calibrated-rtl"
"""Name of the calibrated cost model, recorded in results."""

TARGET_FEATURES = {
    "cycles": ("runs", "matmul_phase_cycles", "acts", "acts_x_levels", "acts_column", "act_spans", "act_rows_row",
               "act_elements_column"),
    "mac": ("matmul_rows_x_pes",),
    "weight_shift": ("matmuls_x_rows_x_cols",),
    "data_read": ("matmul_rows",),
    "weight_read": ("matmuls_x_rows",),
    "psum_read": ("matmul_rows_accumulate", "act_rows"),
    "psum_write": ("matmul_rows",),
    "element_write": ("act_elements",),
    "activation": ("act_elements",),
}
"""The features each target is a linear function of. Cycles: per run (start, HALT), the runs'
MATMUL phases (`capsacc.mapping.matmul_run_cycles`: weight loads overlapped with streaming, one
drain per run), per ACT (issue, start, the activation unit's pipeline: a part per scan level
ceil(log2 C), a part per row of a capsule's span), per column-mode ACT, per row of a row-mode ACT,
per element of a column-mode ACT. Events: one feature each, except partial-sum reads (accumulating
rows + ACT rows)."""


HELD_OUT_ERROR_KEYS = ("calibrated_max_abs_rel_error", "energy_events_max_abs_rel_error")
"""The measured errors of each provenance 'errors' row (array and kind, held-out operations) that
`Calibration.held_out_error_pct` takes the largest of: cycles and event energy."""


def features(kind: str, op, config: ArrayConfig) -> dict[str, int]:
    """The instruction counts of `op` (`plan_counts`) and their products with the array sizes."""
    counts = plan_counts(kind, op, config)
    rows, cols = config.rows, config.cols
    counts["matmuls_x_rows"] = counts["matmuls"] * rows
    counts["matmul_rows_x_pes"] = counts["matmul_rows"] * rows * cols
    counts["matmuls_x_rows_x_cols"] = counts["matmuls"] * rows * cols
    counts["acts_x_levels"] = counts["acts"] * (cols - 1).bit_length()
    return counts


def events_from_counters(counters: dict[str, int], rows: int, cols: int) -> dict[str, int]:
    """The events of `capsacc.energy.EVENTS` from the RTL's counters (`rtl.capsacc.COUNTERS` names)."""
    return {
        "mac": counters["pe_active_cycles"],
        "weight_shift": counters["weight_load_cycles"] * cols,
        "data_read": counters["data_reads"] + counters["routing_reads"],
        "weight_read": counters["weight_reads"],
        "psum_read": counters["psum_reads"],
        "psum_write": counters["psum_writes"],
        "element_write": counters["data_writes"] + counters["weight_writes"] + counters["routing_writes"],
        "activation": counters["act_ops"],
    }


def _finite(value) -> bool:
    """A finite int or float (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class Calibration:
    """A cost model fitted to the RTL.

    `coefficients[target]` lists one float per name of `TARGET_FEATURES[target]`; a target's
    value is their dot product with the features, rounded to an integer count.
    """

    config: ArrayConfig
    coefficients: dict[str, tuple[float, ...]]
    energies: EventEnergies
    area_um2: float
    period_ns: float = 3.0
    provenance: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        for target, names in TARGET_FEATURES.items():
            values = self.coefficients.get(target)
            if values is None or len(values) != len(names):
                raise AcceleratorConfigError(f"calibration: '{target}' needs {len(names)} coefficients "
                                             f"({', '.join(names)}), got {values!r}")

    def __hash__(self):
        return hash((self.config, tuple(sorted(self.coefficients.items())), self.energies, self.area_um2,
                     self.period_ns))

    def predict(self, kind: str, op) -> dict[str, int]:
        """Cycles and events of one operation for a whole batch of `config.batch` images (the RTL's
        batch run; `per_image` takes an image's share); `InputError` when a prediction leaves the
        int64 range."""
        f = features(kind, op, self.config)
        predicted = {}
        for target, names in TARGET_FEATURES.items():
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused below, not warned about
                value = float(np.dot(self.coefficients[target], [float(f[n]) for n in names]))
            if not -INT64_MAX <= value <= INT64_MAX:  # also refuses NaN and inf
                raise InputError(f"the calibration predicts {value:.3g} for '{target}' of this {kind} operation, "
                                 "outside the range of 64-bit integers")
            predicted[target] = int(round(value))
        return predicted

    def fitted_arrays(self) -> list[tuple[int, int]]:
        """The (rows, cols) of the arrays the coefficients were fitted on (provenance 'arrays', "RxC"
        each), or this calibration's own array when the provenance lists none."""
        return [tuple(int(n) for n in name.split("x")) for name in self.provenance.get("arrays", [])] or \
            [(self.config.rows, self.config.cols)]

    def check_covers(self, rows: int, cols: int) -> None:
        """Raise `AcceleratorConfigError` unless this calibration predicts a `rows` x `cols` array. Its
        coefficients are per instruction, and the features carry R and C (`features`): fitted on arrays
        of at least two row counts and two column counts (`nascaps calibrate` fits three), the per-row
        and per-column terms are told apart and it covers every array; fitted on fewer, its own arrays only."""
        arrays = self.fitted_arrays()
        spread = len({r for r, _ in arrays}) > 1 and len({c for _, c in arrays}) > 1
        if not spread and (rows, cols) not in arrays:
            fitted = ", ".join(f"{r}x{c}" for r, c in arrays)
            raise AcceleratorConfigError(f"array {rows}x{cols}: the calibration was fitted on {fitted} only, "
                                         "too few row and column counts to predict another array")

    @property
    def held_out_error_pct(self) -> float | None:
        """The calibration's held-out error, percent: the largest |relative error| of the calibrated
        model's cycles or event energy against the RTL over the held-out operations of every array and
        kind (provenance 'errors': `calibrated_max_abs_rel_error`, `energy_events_max_abs_rel_error`),
        x 100; None when the provenance records no errors."""
        errors = [row[key] for row in self.provenance.get("errors", []) for key in HELD_OUT_ERROR_KEYS]
        return 100 * max(errors) if errors else None

    def with_batch(self, batch: int) -> "Calibration":
        """This calibration for batches of `batch` images (`AcceleratorConfigError` outside 1..4096)."""
        return dataclasses.replace(self, config=dataclasses.replace(self.config, batch=batch))

    def energy_mJ(self, events: dict[str, int]) -> float:
        """Energy of counted events, mJ (pJ x 1e-9)."""
        return sum(events[e] * getattr(self.energies, e) for e in EVENTS) * 1e-9

    def to_dict(self) -> dict:
        return {"model": MODEL_VERSION, "config": self.config.to_dict(),
                "features": {t: list(n) for t, n in TARGET_FEATURES.items()},
                "coefficients": {t: list(v) for t, v in self.coefficients.items()},
                "energies_pJ": self.energies.to_dict(), "area_um2": self.area_um2,
                "period_ns": self.period_ns, "provenance": self.provenance}

    @classmethod
    def from_dict(cls, values: dict, source: str = "calibration") -> "Calibration":
        """From the form of `to_dict`; `AcceleratorConfigError` names `source` and the key when a key is
        missing, of the wrong type, or a number is not finite (or not positive where it must be)."""
        if not isinstance(values, dict):
            raise AcceleratorConfigError(f"{source}: not a calibration (a table/object expected)")
        for key in ("features", "config", "coefficients", "energies_pJ", "area_um2", "period_ns"):
            if key not in values:
                raise AcceleratorConfigError(f"{source}: not a calibration (no '{key}')")
        for key in ("features", "config", "coefficients", "energies_pJ"):
            if not isinstance(values[key], dict):
                raise AcceleratorConfigError(f"{source}: '{key}' must be a table/object, got {values[key]!r:.60}")
        names = values["features"]
        for target, expected in TARGET_FEATURES.items():
            if not isinstance(names.get(target), list) or tuple(names[target]) != expected:
                raise AcceleratorConfigError(f"{source}: features of '{target}' are {names.get(target)!r:.200}, "
                                             f"this version expects {list(expected)}")
        coefficients = {}
        for target, numbers in values["coefficients"].items():
            if not isinstance(numbers, list) or not all(_finite(x) for x in numbers):
                raise AcceleratorConfigError(f"{source}: coefficients of '{target}' must be a list of finite "
                                             f"numbers, got {numbers!r:.200}")
            coefficients[target] = tuple(float(x) for x in numbers)
        energies = values["energies_pJ"]
        for event in EVENTS:
            if not _finite(energies.get(event)) or energies[event] < 0:
                raise AcceleratorConfigError(f"{source}: energies_pJ '{event}' must be a finite number >= 0, "
                                             f"got {energies.get(event)!r:.60}")
        for key in ("area_um2", "period_ns"):
            if not _finite(values[key]) or not values[key] > 0:
                raise AcceleratorConfigError(f"{source}: '{key}' must be a finite positive number, "
                                             f"got {values[key]!r:.60}")
        provenance = values.get("provenance", {})
        if not isinstance(provenance, dict):
            raise AcceleratorConfigError(f"{source}: 'provenance' must be a table/object")
        _check_provenance(provenance, source)
        try:
            config = ArrayConfig(**values["config"])
            energy_values = {event: float(energies[event]) for event in EVENTS}
            unknown = set(energies) - set(EVENTS)
            if unknown:
                raise AcceleratorConfigError(f"unknown event '{sorted(unknown)[0]}' in energies_pJ")
            return cls(config=config, coefficients=coefficients, energies=EventEnergies(**energy_values),
                       area_um2=float(values["area_um2"]), period_ns=float(values["period_ns"]),
                       provenance=dict(provenance))
        except AcceleratorConfigError as error:
            raise AcceleratorConfigError(f"{source}: {error}") from None
        except TypeError as error:
            raise AcceleratorConfigError(f"{source}: not a calibration ({error})") from None

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        return cls.from_dict(read_json(path, AcceleratorConfigError), str(path))

    @classmethod
    def shipped(cls) -> "Calibration":
        """The calibration shipped with the package (capsacc/data/calibrated.json)."""
        try:
            text = resources.files("capsacc").joinpath("data/calibrated.json").read_text()
        except OSError as error:
            raise AcceleratorConfigError(f"capsacc/data/calibrated.json: cannot read ({error.strerror}); "
                                         "run `nascaps calibrate` and install its calibration.json there") from None
        return cls.from_dict(json.loads(text), "capsacc/data/calibrated.json")


def _check_provenance(provenance: dict, source: str) -> None:
    """`AcceleratorConfigError` naming `source` and the key when the provenance's 'arrays' are not
    "RxC" names or its 'errors' rows lack a finite error >= 0 of `HELD_OUT_ERROR_KEYS`."""
    arrays = provenance.get("arrays", [])
    name = re.compile(r"[1-9][0-9]{0,3}x[1-9][0-9]{0,3}")
    if not isinstance(arrays, list) or not all(isinstance(a, str) and name.fullmatch(a) for a in arrays):
        raise AcceleratorConfigError(f"{source}: provenance 'arrays' must be a list of \"RxC\" names, "
                                     f"got {arrays!r:.100}")
    errors = provenance.get("errors", [])
    if not isinstance(errors, list):
        raise AcceleratorConfigError(f"{source}: provenance 'errors' must be a list, got {errors!r:.60}")
    for index, row in enumerate(errors):
        for key in HELD_OUT_ERROR_KEYS:
            value = row.get(key) if isinstance(row, dict) else None
            if not _finite(value) or value < 0:
                raise AcceleratorConfigError(f"{source}: provenance 'errors' row {index}: '{key}' must be a finite "
                                             f"number >= 0, got {value!r:.60}")


def per_image(batch_value, batch: int):
    """An image's share of a count (an int or an int64 array) of a whole batch of `batch` images:
    ceil(batch_value / batch)."""
    return ceil_div(batch_value, batch)


def network_costs(network, calibration: Calibration):
    """Per-operation arrays (w_loads, cycles, accumulators, power_mW, energy_mJ) and totals
    (cycles, energy_mJ, weights) of `network` under `calibration`, per image of a batch of
    B = `calibration.config.batch` (`per_image`: cycles and weight loads ceil(batch's / B), energy the
    batch's / B; the total cycles are the sum of the operations'), in the layout of
    `capsacc.kernels.network_costs`. w_loads: MATMUL instructions (weight tiles loaded);
    accumulators: the C partial-sum lanes; power: the batch's energy over the batch's time. Each
    operation costs the steps of the chained run charged to it (`capsacc.mapping.chain`; their batch
    cycles summed before the per-image share is taken): routing operations are the phases of
    `capsacc.mapping.ROUTINGS` iterations (`operation_kinds`), and a CapsCell network's operations
    also carry its element-wise steps (`CHAIN_KINDS`: ToCapsules, the ConvCaps3D's routing, the
    cells' skip sums)."""
    n = len(network.operations)
    w_loads = np.zeros(n, np.int64)  # the batch's, until the per-image share at the end
    cycles = np.zeros(n, np.int64)
    accumulators = np.full(n, calibration.config.cols, np.int64)
    power = np.zeros(n, np.float64)
    energy = np.zeros(n, np.float64)
    for step in chain(network.operations):
        i, op = step.index, network.operations[step.index]
        try:
            predicted = calibration.predict(step.kind, step.op)
            matmuls = plan_counts(step.kind, step.op, calibration.config)["matmuls"]
        except MappingError as error:
            config = calibration.config
            raise MappingError(f"operation {op.name} ({step.kind}) on the calibrated {config.rows}x{config.cols} "
                               f"array: {error}") from None
        total = int(cycles[i]) + predicted["cycles"]
        if not 0 <= predicted["cycles"] <= INT64_MAX or not total <= INT64_MAX or w_loads[i] + matmuls > INT64_MAX:
            raise InputError(f"operation {op.name} ({op.kind}): the calibrated model predicts {total:.3g} "
                             "cycles, outside 0..2^63-1")
        cycles[i] = total
        w_loads[i] += matmuls
        energy[i] += calibration.energy_mJ(predicted)
    seconds = cycles * calibration.period_ns * 1e-9  # the batch's
    np.divide(energy, seconds, out=power, where=seconds > 0)
    batch = calibration.config.batch
    cycles, w_loads, energy = per_image(cycles, batch), per_image(w_loads, batch), energy / batch
    total_cycles = int(cycles.sum())
    total_energy = float(energy.sum())
    return w_loads, cycles, accumulators, power, energy, total_cycles, total_energy, network.weights
