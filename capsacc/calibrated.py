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

With the off-chip memory, the RTL's DMA moves every buffer row (docs/rtl.md, "Memory system"):
`capsacc.mapping.count_step` counts the rows each step moves, `_network_sums` sums them per
operation beside its cycles, and `data_movement` prices them on a port (bytes, bound, energies; the
cycles stay the compute's). `network_schedule` gives each operation's cycles with the data movement:
the DMA programs of its session (`capsacc.programs`), timed exactly by the control unit's schedule
(`capsacc.schedule`), from the first byte in to the last result out, port stalls included, and the
program words its overlay programs load through the port, with their energy.

The model runs as numba kernels, in three stages that `network_costs` (`estimate`, one network:
`_network_kernel`) and `genotype_costs` (`estimate_many` on a `GenotypeBatch`: `_cost_genotypes`, block
after block of genotypes) share, so both give the same totals bit for bit: a network's steps are chained
(`capsacc.mapping.chain_steps`) and their rows found in a memo of the steps already costed (`_claim_steps`);
the steps the memo does not hold are costed (`_cost_queue`: the counting rules of `capsacc.mapping`,
`count_step`, then the features, the prediction and the energy, `_step_values`); each network's steps are
summed per operation, with an image's share (`_network_sums`). A step's cost is a function of its kind and
shape alone (`capsacc.mapping.step_shape`: the matrix product of a convolution, the capsule counts of a
routing, ...): the memo (`_memo`: the key packed into two words, a slot in one 64-byte row, every step's row
prefetched before the first is read, `prefetch_row`) skips the counting for steps that networks share; a
step of the key of one of the two before it takes that step's row (`REPEAT`). The batch kernel costs the new
convolution, classcaps, tocaps, capsadd and routing steps of a block of genotypes together, kind by kind, in float64
(`_cost_vector_steps`): the same tiling rules and `_step_values` compiled for float64 (integers below 2^53,
exact there), which LLVM vectorizes, with the results of the integer rules bit for bit (tested); the other
kinds one by one.
`estimate_many` starts a fresh memo per call, which keeps no steps of `VECTOR_KINDS` (`StepMemo(vector_steps=False)`:
most of a batch's steps are new to it, and those kinds cost less in the float64 loops wherever they occur than
through a memo: `_claim_vector_steps`); a caller that costs batch after batch (a search, generation
after generation) keeps a `StepMemo` across calls, with the same totals. The helpers that the kernels call
with arrays for every network or step are inlined by numba (`inline="always"`): numba passes each array as
a struct of its pointers, shape and strides, and such a call cost more than the work in it (docs/model.md,
"Speed of the two models"). The batch kernel's loop over the genotypes (`_cost_genotypes`) and the counting
rules run without numba's reference counting (`_nrt=False`): they allocate no array, and numba otherwise
counts every array handed to a call or an inlined helper up and down by atomic instructions.
"""

import dataclasses
import functools
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import literally, njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.unsafe.ndarray import to_fixed_tuple

from capsacc.energy import EVENTS, EventEnergies
from capsacc.errors import AcceleratorConfigError, InputError
from capsacc.files import read_json
from capsacc.array import ArrayConfig
from capsacc.mapping import (ACTS, CAPSADD, CLASSCAPS, CONV, CONVCAPS, CONVCAPS3D, COUNT_FIELDS, FITS, MATMUL_ROWS,
                             MATMULS, NARROW_TRANSFERS, REFUSAL_ARGS, REFUSALS, ROUTE3D, ROUTING_FIRST_UPDATE,
                             ROUTING_SOFTMAX, ROUTING_UNIFORM, ROUTING_UPDATE, ROUTINGS, STEP_FIELDS, STEP_KINDS,
                             TOCAPS, TRANSFER_FIELDS, WIDE_TRANSFERS, MappingError, bandwidth_bound, ceil_div, chain,
                             chain_steps, count_step, plan_counts, row_bytes, rows_port_bytes, step_shape,
                             _classcaps_counts, _classcaps_plan, _config_fields, _elementwise_counts,
                             _elementwise_plan, _block_phase_counts, _is_update, _matmul_counts, _matmul_plan, _refusal,
                             _routing_geometry, _routing_step, _routing_times, _step_kinds, _update_phase_counts,
                             _whole_routing_counts)
from capsacc.network import (MAX_DESCRIPTOR_OPERATIONS, OP_FIELDS, _operation_row, descriptor_operation,
                             operation_table1)
from capsacc.programs import operation_cost

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


FEATURES = COUNT_FIELDS + ("matmuls_x_rows", "matmul_rows_x_pes", "matmuls_x_rows_x_cols", "acts_x_levels")
"""Every feature a target may use: the instruction counts and their products with the array sizes."""


TARGET_WIDTH = max(len(names) for names in TARGET_FEATURES.values())
"""The most features of a target."""

TARGET_INDEX = np.array([[FEATURES.index(name) for name in names] + [-1] * (TARGET_WIDTH - len(names))
                         for names in TARGET_FEATURES.values()], np.int64)
"""Each target's feature positions in `FEATURES`, in the order of its coefficients, -1 padded to `TARGET_WIDTH`
(targets x `TARGET_WIDTH`): a constant of the compiled prediction (`_target_value`; numba freezes a global
array, and a loop over its rows unrolls and vectorizes, where one over a tuple's items did not)."""
TARGET_INDEX.flags.writeable = False


@njit(cache=True)
def scan_levels(cols):
    """ceil(log2 C): the bits of C - 1, the activation unit's scan levels on C lanes."""
    levels, rest = 0, cols - 1
    while rest > 0:
        levels, rest = levels + 1, rest >> 1
    return levels


@njit(cache=True, inline="always")
def _feature_values(counts, rows, cols, levels):
    """The `FEATURES` of the instruction counts `counts` (a tuple in the order of `COUNT_FIELDS`) on R x C with
    `levels` = `scan_levels(C)`: the counts, then their products with the array sizes; integers, or float64
    in the vectorized loops (exact below 2^53)."""
    return counts + (counts[MATMULS] * rows, counts[MATMUL_ROWS] * rows * cols, counts[MATMULS] * rows * cols,
                     counts[ACTS] * levels)


@njit(cache=True, inline="always")
def _target_value(target, features, coefficients):
    """Target `target`'s prediction before rounding: the dot product of its coefficients (`coefficients`, flat,
    `Calibration.kernel_arrays`) with its features (`TARGET_INDEX`) of `features`, added in order."""
    value = 0.0
    for j in range(TARGET_WIDTH):
        feature = TARGET_INDEX[target, j]
        if feature >= 0:
            value += coefficients[target * TARGET_WIDTH + j] * features[feature]
    return value


TARGET_RANGE = float(2 ** 63)
"""A prediction is a count when its magnitude is below this (the int64 range)."""


@njit(cache=True, inline="always")
def _in_range(value):
    """Whether a prediction is a count (|value| < `TARGET_RANGE`; not NaN or inf)."""
    return -TARGET_RANGE < value < TARGET_RANGE


@njit(cache=True, inline="always")
def _step_values(counts, moved, rows, cols, levels, coefficients, energies):
    """(target, value, batch cycles, MATMULs, narrow rows, wide rows, energy pJ) of a step's instruction counts
    `counts` and DMA rows `moved` (tuples, `COUNT_FIELDS` and `TRANSFER_FIELDS`): the cycles, rounded half to even,
    and the energy, each event's rounded count times its energy (`energies`, pJ, an array), added in the order of
    `EVENTS`;
    the rows of R lanes (`NARROW_TRANSFERS`) and of C lanes (`WIDE_TRANSFERS`). `target` is -1, or the first
    target whose prediction leaves the int64 range (`value`). The one definition of a step's cost, run on
    integers by `_step_cost` and on float64 by the vectorized `_cost_vector_steps`."""
    features = _feature_values(counts, rows, cols, levels)
    cycles = _target_value(0, features, coefficients)
    target, out_of_range = (-1, 0.0) if _in_range(cycles) else (0, cycles)
    picojoules = 0.0
    for event in range(len(EVENTS)):
        value = _target_value(1 + event, features, coefficients)
        if target < 0 and not _in_range(value):
            target, out_of_range = 1 + event, value
        picojoules += np.rint(value) * energies[event]
    narrow, wide = 0, 0
    for field in NARROW_TRANSFERS:
        narrow += moved[field]
    for field in WIDE_TRANSFERS:
        wide += moved[field]
    return target, out_of_range, np.rint(cycles), counts[MATMULS], narrow, wide, picojoules


def features(kind: str, op, config: ArrayConfig) -> dict[str, int]:
    """The instruction counts of `op` (`plan_counts`) and their products with the array sizes (`FEATURES`)."""
    counts = tuple(plan_counts(kind, op, config).values())
    values = _feature_values(counts, config.rows, config.cols, scan_levels(config.cols))
    return dict(zip(FEATURES, (int(value) for value in values)))


@njit(cache=True)
def _predict(values, coefficients, out):
    """Write each target's prediction from the features `values` (`_target_value`, rounded half to even) into
    `out`; return (-1, 0.0), or the first target whose prediction leaves the int64 range and that prediction."""
    for target in range(TARGET_INDEX.shape[0]):
        value = _target_value(target, values, coefficients)
        if not _in_range(value):
            return target, value
        out[target] = np.int64(np.rint(value))
    return -1, 0.0


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

    @functools.cached_property
    def kernel_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the numba kernels read: the array and routing iterations (rows, cols, buffer_depth,
        program_depth, batch, `ROUTINGS`; int64), each target's coefficients in the order of its features,
        0.0 padded to `TARGET_WIDTH` (float64, targets x `TARGET_WIDTH` flattened: `_target_value`) and the
        event energies in the order of `EVENTS` (pJ, float64)."""
        coefficients = np.zeros((len(TARGET_FEATURES), TARGET_WIDTH), np.float64)
        for target, name in enumerate(TARGET_FEATURES):
            coefficients[target, :len(self.coefficients[name])] = self.coefficients[name]
        config = np.array(_config_fields(self.config) + (ROUTINGS,), np.int64)
        energies = np.array([getattr(self.energies, event) for event in EVENTS], np.float64)
        coefficients = coefficients.reshape(-1)
        for array in (config, coefficients, energies):
            array.flags.writeable = False
        return config, coefficients, energies

    def predict(self, kind: str, op) -> dict[str, int]:
        """Cycles and events of one operation for a whole batch of `config.batch` images (the RTL's
        batch run; `per_image` takes an image's share); `InputError` when a prediction leaves the
        int64 range."""
        values = np.array(list(features(kind, op, self.config).values()), np.int64)
        predicted = np.zeros(len(TARGET_FEATURES), np.int64)
        target, value = _predict(values, self.kernel_arrays[1], predicted)
        if target >= 0:
            raise InputError(_range_message(value, list(TARGET_FEATURES)[target], kind))
        return dict(zip(TARGET_FEATURES, predicted.tolist()))

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


def _range_message(value: float, target: str, kind: str) -> str:
    return (f"the calibration predicts {value:.3g} for '{target}' of this {kind} operation, outside the range of "
            "64-bit integers")


@njit(cache=True)
def per_image(batch_value, batch):
    """An image's share of a count of a whole batch of `batch` images: ceil(batch_value / batch) (integers)."""
    return ceil_div(batch_value, batch)


PREDICTION_RANGE, CYCLES_RANGE, NOT_EXPANDED = len(REFUSALS), len(REFUSALS) + 1, len(REFUSALS) + 2
"""Error codes of the kernels beyond the tiling refusals (`capsacc.mapping.REFUSALS`): a prediction out
of the int64 range, an operation's cycles out of 0..2^63-1, operations not in the order of the
published expansion."""
INTEGER_RULES = len(REFUSALS) + 3
"""The code the float64 loops (`_cost_vector_steps`) give a step they leave to the integer rules: one whose counting
could leave float64's exact range (`_float_exact`), or that does not fit as they plan it (refused, or needing column
groups, which they do not plan: `capsacc.mapping._matmul_runs`); never a result, `_cost_packed` costs it again by
the integer rules (`_step_cost`)."""


KEY_BITS = (28, 31, 32, 31)
"""Bits of the fields (a, b, c, d) of a step's shape (`capsacc.mapping.step_shape`) in a memo key
(`_memo_key`): a beside the kind code (4 bits) in the first word, b, c, d after it."""

REPEAT = -2
"""A step whose memo key is that of one of the two steps before it in its network (a routing's repeated
phases, a CapsCell's inner ConvCaps) takes that step's row, with no look-up in the memo: `_claim_steps`
marks it by REPEAT - that step's position in place of its first slot."""

NO_KEY = -1
"""The first slot of a step whose shape does not fit a memo key (`_memo_key`): it gets a row of its own."""

ROW_CODE = 7
"""The word of a memo row that holds the step's error code (0: it fits; `_step_cost`)."""

PENDING = -1
"""The code of a memo row claimed for a step not costed yet (`_claim_steps`, `_cost_queue`)."""


@njit(cache=True)
def _memo(capacity):
    """An empty memo of step costs: `capacity` (a power of two) slots of one 64-byte row (int64) each: the step's
    key (`_memo_key`, two words; -1: empty), its batch cycles, MATMULs, the narrow and wide buffer rows the DMA
    moves, its energy (pJ, the bits of a float64) and its error code (`ROW_CODE`; `_step_cost`), so that a look-up
    reads one cache line; and the count of slots in use."""
    return np.full((capacity, 8), -1, np.int64), np.zeros(1, np.int64)


@njit(cache=True, inline="always")
def _memo_key(step):
    """The memo key of a step (a `STEP_FIELDS` row): its kind and its shape (`capsacc.mapping.step_shape`,
    what its cost depends on) packed into two words >= 0, or (-1, -1) when a field of the shape does not
    fit its bits (`KEY_BITS`); such a step is costed without the memo."""
    kind = step[1]
    a, b, c, d = step_shape(kind, step[2], step[3], step[4], step[5], step[7], step[8], step[9])
    if (kind >> 4 or a < 0 or b < 0 or c < 0 or d < 0 or a >> KEY_BITS[0] or b >> KEY_BITS[1] or c >> KEY_BITS[2]
            or d >> KEY_BITS[3]):
        return -1, -1
    return kind | a << 4 | b << (4 + KEY_BITS[0]), c | d << KEY_BITS[2]


@njit(cache=True, inline="always")
def _memo_home(table, first, second):
    """The first slot of the memo `table` (`_memo`) to probe for the key (first, second): the mixing of
    splitmix64 over the key."""
    mask = np.uint64(table.shape[0] - 1)
    code = (np.uint64(first) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(second)
    code = (code ^ (code >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    code = (code ^ (code >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.int64((code ^ (code >> np.uint64(31))) & mask)


@intrinsic
def prefetch_row(typingctx, array, row):
    """Ask the processor to bring the first cache line of row `row` of the 2-D `array` into its caches (the
    x86 `prefetcht0`, LLVM's `llvm.prefetch`), without waiting for it: `_claim_steps` asks for every step's
    memo row before it reads any, so that their memory latencies overlap. Only a hint: no value changes,
    and no fault for any row."""
    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        rows = context.make_array(array_type)(context, builder, args[0])
        start = cgutils.get_item_pointer(context, builder, array_type, rows,
                                         [args[1], context.get_constant(types.intp, 0)], wraparound=False)
        byte_pointer, word = ir.IntType(8).as_pointer(), ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, word, word, word]), "llvm.prefetch.p0i8")
        builder.call(prefetch, [builder.bitcast(start, byte_pointer), word(0), word(3), word(1)])  # read, keep, data
        return context.get_dummy_value()
    return types.void(array, row), codegen


@njit(cache=True, inline="always")
def _memo_slot(table, first, second, home):
    """The slot of the memo `table` (`_memo`) that holds the key (first, second), or the empty slot
    where it goes (open addressing, linear probing from its `_memo_home` slot `home`)."""
    mask = table.shape[0] - 1
    slot = home
    while True:
        if table[slot, 0] == -1 or (table[slot, 0] == first and table[slot, 1] == second):
            return slot
        slot = (slot + 1) & mask


@njit(cache=True)
def _memo_fits(steps, slots):
    """Whether a memo of `slots` slots holds `steps` steps: at most 3/4 of its slots in use (linear probing
    then reads about 2.5 rows for a step it holds, 8.5 for one it does not, on average)."""
    return 4 * steps <= 3 * slots


@njit(cache=True)
def _memo_grown(table, capacity):
    """A memo table (`_memo`) of `capacity` slots (a power of two, more than `_memo_fits` needs for `table`'s in
    use) holding every row of `table`."""
    grown = np.full((capacity, table.shape[1]), -1, np.int64)
    for row in range(table.shape[0]):
        if table[row, 0] != -1:
            slot = _memo_slot(grown, table[row, 0], table[row, 1], _memo_home(grown, table[row, 0], table[row, 1]))
            grown[slot, :] = table[row, :]
    return grown


N_COUNTS, N_TRANSFERS, N_COEFFICIENTS = len(COUNT_FIELDS), len(TRANSFER_FIELDS), TARGET_INDEX.size
"""Lengths of `count_step`'s two arrays and of the coefficients (`Calibration.kernel_arrays`): the tuples
`_step_values` takes."""


@njit(cache=True, inline="always")
def _step_cost(step, config, coefficients, energies, counts, moved, args, error, value):
    """(error code, batch cycles, MATMULs, narrow rows, wide rows, energy pJ) of one step (a `STEP_FIELDS` row)
    counted by `capsacc.mapping.count_step` and priced by `_step_values`: the rows are those the DMA moves, data
    and routing buffer rows (R lanes), weight buffer rows (C lanes). `counts`, `moved`: scratch arrays; `args` the
    refusal's numbers, error[2] and value[0] a prediction's target and value out of range."""
    rows, cols = config[0], config[1]
    refusal = count_step(step[1], step[2], step[3], step[4], step[5], step[7], step[8], step[9], rows, cols,
                         config[2], config[3], config[4], config[5], counts, moved, args)
    if refusal:
        return refusal, 0, 0, 0, 0, 0.0
    target, out_of_range, cycles, matmuls, narrow, wide, picojoules = _step_values(
        to_fixed_tuple(counts, N_COUNTS), to_fixed_tuple(moved, N_TRANSFERS), rows, cols, scan_levels(cols),
        coefficients, energies)
    if target >= 0:
        error[2], value[0] = target, out_of_range
        return PREDICTION_RANGE, 0, 0, 0, 0, 0.0
    return FITS, np.int64(cycles), matmuls, narrow, wide, picojoules


VECTOR_FIELD_BITS = 9
"""Bits of each field of a step of `VECTOR_KINDS` packed for `_cost_vector_steps` (n_in, ch_in, caps_in, kernel,
n_out, ch_out, caps_out)."""

VECTOR_KINDS = (CONV, CONVCAPS, CONVCAPS3D, CLASSCAPS, ROUTING_UNIFORM, ROUTING_SOFTMAX, ROUTING_UPDATE,
                ROUTING_FIRST_UPDATE, TOCAPS, CAPSADD, ROUTE3D)
"""The step kinds `_cost_vector_steps` costs in float64."""

VECTOR_BOUND = float(2 ** 50)
"""A step of `VECTOR_KINDS` is costed in float64 (`_cost_vector_steps`) when a bound of every count, feature and
intermediate of its counting is below this (`_float_exact`): float64 holds every integer below 2^53 exactly."""


@njit(cache=True, inline="always")
def _vector_slot(kind):
    """The position of step kind code `kind` in `VECTOR_KINDS`, or -1."""
    for slot, vector_kind in enumerate(VECTOR_KINDS):
        if kind == vector_kind:
            return slot
    return -1


@njit(cache=True, inline="always")
def _packed_step(step):
    """The fields of a step of `VECTOR_KINDS` (n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out) packed into
    one int64, `VECTOR_FIELD_BITS` each, or -1 when one does not fit: then the scalar `_step_cost` costs it."""
    most = (1 << VECTOR_FIELD_BITS) - 1
    word = 0
    for position, field in enumerate((2, 3, 4, 5, 7, 8, 9)):
        if not 0 <= step[field] <= most:
            return -1
        word |= step[field] << position * VECTOR_FIELD_BITS
    return word


@njit(cache=True, inline="always")
def _float_exact(kind, n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out, rows, cols, batch, routings):
    """Whether every count, feature and intermediate of the counting of a step of `VECTOR_KINDS` (its kind code
    and fields; float64 in the loops of `_cost_vector_steps`, which compute this beside the counts) stays below
    `VECTOR_BOUND`, so that float64 holds it exactly; a step that does not is costed again by `_step_cost`
    (`_cost_packed`). The bound, times the MAC slots and stream ends of R x C (R·C + 2R + 2C + 64): for a
    convolution or classcaps, B·(N + 2R)·K·M with N x K by K x M its matrix product for one image
    (`capsacc.mapping.step_shape`: a classcaps' I capsules, caps_in, J·D); for a tocaps or capsadd,
    B·(N + 2R)·operands·(C + R)·(M + C) over its N positions of M values (operands·ceil(C / R)·R identity tile rows
    in place of K); for a routing, times·(I + 2R)·(J + C)²·(D + C)·(routings + 1)
    (`capsacc.mapping._routing_step`)."""
    if kind <= CLASSCAPS:
        n, k, m, _ = step_shape(kind, n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out)
        bound = batch * (n + 2 * rows) * k * m
    elif kind == TOCAPS or kind == CAPSADD:
        n, m, _, operands = step_shape(kind, n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out)
        bound = batch * (n + 2 * rows) * operands * (cols + rows) * (m + cols)
    else:
        _, n_caps, times = _routing_step(kind, n_in, ch_in, n_out, batch)
        bound = times * (n_caps + 2 * rows) * (ch_out + cols) ** 2 * (caps_out + cols) * (routings + 1)
    return bound * (rows * cols + 2 * rows + 2 * cols + 64) < VECTOR_BOUND


@njit(cache=True, inline="always")
def _unpacked_step(word):
    """The fields (n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out) of a `_packed_step`, as float64."""
    bits, mask = VECTOR_FIELD_BITS, (1 << VECTOR_FIELD_BITS) - 1
    return (float(word & mask), float((word >> bits) & mask), float((word >> 2 * bits) & mask),
            float((word >> 3 * bits) & mask), float((word >> 4 * bits) & mask), float((word >> 5 * bits) & mask),
            float((word >> 6 * bits) & mask))


@njit(cache=True, inline="always")
def _vector_results(s, exact, refusal, counts, moved, rows, cols, levels, coefficients, energies, cycles, matmuls,
                    narrow, wide, picojoules):
    """Write step s's cost from its counts (`_step_values`) into the five arrays of `_cost_vector_steps`; the code
    `INTEGER_RULES` when its counting is not `exact` in float64 (`_float_exact`) or its plan's `refusal` is not
    `FITS`."""
    target, _, step_cycles, step_matmuls, step_narrow, step_wide, step_picojoules = _step_values(
        counts, moved, rows, cols, levels, coefficients, energies)
    code = INTEGER_RULES if not exact or refusal != FITS else PREDICTION_RANGE if target >= 0 else FITS
    cycles[s] = step_cycles
    matmuls[s] = step_matmuls if code == FITS else -code
    narrow[s] = step_narrow
    wide[s] = step_wide
    picojoules[s] = step_picojoules


@njit(cache=True, inline="always")
def _vector_config(config):
    """The array fields of `config` (rows, cols, depth, words, batch, routings) as float64, and the scan levels."""
    return (float(config[0]), float(config[1]), float(config[2]), float(config[3]), float(config[4]), float(config[5]),
            float(scan_levels(config[1])))


@njit(cache=True, _nrt=False)
def _cost_matmul_steps(kind, packed, config, coefficients, energies, cycles, matmuls, narrow, wide, picojoules):
    """Cost the convolution steps of kind code `kind` (conv, convcaps, convcaps3d) whose fields `packed` holds
    (`_packed_step`) in float64: the tiling rules of `capsacc.mapping` (`_matmul_plan`, `_matmul_counts`, run on
    float64 and inlined here, `capsacc.mapping.VECTOR_LOOPS`) and `_step_values`, in a loop that LLVM vectorizes
    (no call, no exit, one array read, five written); write each step's batch cycles, MATMULs (or -code: a prediction
    out of range, `PREDICTION_RANGE`, or `INTEGER_RULES` for a step left to the integer rules: refused, needing
    column groups, which the loop does not plan, or beyond float64's exact range), narrow and wide rows and energy
    (pJ) into the five arrays. Every value is an integer below 2^53 (`VECTOR_BOUND`), so each equals `_step_cost`'s
    bit for bit (tested). Compiled once per kind (`numba.literally`: `_cost_vector_steps` gives the kind as a
    constant), so that each loop runs only its kind's rules: 1.2x faster a conv or convcaps3d step than one loop for
    the three kinds (docs/model.md, "Session 32"). `_cost_classcaps_steps`, `_cost_elementwise_steps`,
    `_cost_routing_steps`, `_cost_update_steps` and `_cost_route3d_steps` do the same for their kinds."""
    literally(kind)
    rows, cols, depth, words, batch, routings, levels = _vector_config(config)
    matmul_kind = float(kind)
    for s in range(packed.shape[0]):
        n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out = _unpacked_step(packed[s])
        plan = _matmul_plan(matmul_kind, n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out, rows, cols, depth,
                            words, batch, False)
        counts, moved = _matmul_counts(plan, rows, cols, words, False)
        exact = _float_exact(matmul_kind, n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out, rows, cols, batch,
                             routings)
        _vector_results(s, exact, plan[0], counts, moved, rows, cols, levels, coefficients, energies, cycles, matmuls,
                        narrow, wide, picojoules)


@njit(cache=True, _nrt=False)
def _cost_classcaps_steps(packed, config, coefficients, energies, cycles, matmuls, narrow, wide, picojoules):
    """`_cost_matmul_steps` for classcaps steps (`_classcaps_plan`, `_classcaps_counts`)."""
    rows, cols, depth, words, batch, routings, levels = _vector_config(config)
    classcaps_kind = float(CLASSCAPS)
    for s in range(packed.shape[0]):
        n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out = _unpacked_step(packed[s])
        plan = _classcaps_plan(n_in, ch_in, caps_in, ch_out, caps_out, rows, cols, depth, words, batch)
        counts, moved = _classcaps_counts(plan, rows, cols, batch)
        exact = _float_exact(classcaps_kind, n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out, rows, cols, batch,
                             routings)
        _vector_results(s, exact, plan[0], counts, moved, rows, cols, levels, coefficients, energies, cycles, matmuls,
                        narrow, wide, picojoules)


@njit(cache=True, _nrt=False)
def _cost_elementwise_steps(kind, packed, config, coefficients, energies, cycles, matmuls, narrow, wide, picojoules):
    """`_cost_matmul_steps` for the tocaps or capsadd steps of kind code `kind` (`_elementwise_plan`,
    `_elementwise_counts`), compiled once per kind as it is."""
    literally(kind)
    rows, cols, depth, words, batch, routings, levels = _vector_config(config)
    elementwise_kind = float(kind)
    for s in range(packed.shape[0]):
        n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out = _unpacked_step(packed[s])
        plan = _elementwise_plan(elementwise_kind, n_in, ch_in, caps_in, n_out, ch_out, caps_out, rows, cols, depth,
                                 words, batch, False)
        counts, moved = _elementwise_counts(plan, rows, cols, words, False)
        exact = _float_exact(elementwise_kind, n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out, rows, cols,
                             batch, routings)
        _vector_results(s, exact, plan[0], counts, moved, rows, cols, levels, coefficients, energies, cycles, matmuls,
                        narrow, wide, picojoules)


@njit(cache=True, inline="always")
def _routing_inputs(kind, word, vector):
    """(fields, the kind its counts are of, I, times, geometry) of a routing phase or route3d step of kind code `kind`
    (float64) whose fields `word` packs (`_unpacked_step`, `_routing_step`, `_routing_geometry`; `vector`:
    `_vector_config`), for the routing loops (`_cost_routing_steps`)."""
    rows, cols, depth, words, batch, routings, _ = vector
    fields = _unpacked_step(word)
    whole, n_caps, times = _routing_step(kind, fields[0], fields[1], fields[4], batch)
    return fields, whole, n_caps, times, _routing_geometry(n_caps, fields[5], fields[6], rows, cols, depth, words,
                                                           routings)


@njit(cache=True, inline="always")
def _routing_results(s, kind, inputs, counts, vector, coefficients, energies, cycles, matmuls, narrow, wide,
                     picojoules):
    """Write routing step s's cost (`_vector_results`) from its `_routing_inputs` `inputs` and the instruction counts
    `counts` of one run (`_routing_times`), for the routing loops (`_cost_routing_steps`)."""
    rows, cols, depth, words, batch, routings, levels = vector
    (n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out), whole, n_caps, times, geometry = inputs
    counts, moved = _routing_times(whole, counts, n_caps, ch_out, rows, routings, times, geometry)
    exact = _float_exact(kind, n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out, rows, cols, batch, routings)
    _vector_results(s, exact, geometry[0], counts, moved, rows, cols, levels, coefficients, energies, cycles, matmuls,
                    narrow, wide, picojoules)


@njit(cache=True, _nrt=False)
def _cost_routing_steps(kind, packed, config, coefficients, energies, cycles, matmuls, narrow, wide, picojoules):
    """`_cost_matmul_steps` for the uniform or softmax phase steps of kind code `kind` (`_routing_inputs`,
    `_block_phase_counts`, `_routing_results`); the update phases have a loop of their own (`_cost_update_steps`),
    and so do the whole routings of route3d steps (`_cost_route3d_steps`), so that each loop runs only its kinds'
    rules (in one loop with the other phases' and the whole routing's rules, a uniform or softmax step took 1.4x as
    long, an update 2.3x). Not compiled per kind: a routing loop takes numba about 70 s to compile."""
    vector = _vector_config(config)
    routing_kind = float(kind)
    for s in range(packed.shape[0]):
        inputs = _routing_inputs(routing_kind, packed[s], vector)
        (_, _, _, _, _, ch_out, caps_out), _, n_caps, _, geometry = inputs
        counts = _block_phase_counts(routing_kind, n_caps, ch_out, caps_out, vector[0], vector[1], geometry)
        _routing_results(s, routing_kind, inputs, counts, vector, coefficients, energies, cycles, matmuls, narrow,
                         wide, picojoules)


@njit(cache=True, _nrt=False)
def _cost_update_steps(kind, packed, config, coefficients, energies, cycles, matmuls, narrow, wide, picojoules):
    """`_cost_routing_steps` for the update phase steps of kind code `kind` (`UPDATE_PHASES`,
    `_update_phase_counts`)."""
    vector = _vector_config(config)
    routing_kind = float(kind)
    for s in range(packed.shape[0]):
        inputs = _routing_inputs(routing_kind, packed[s], vector)
        _, _, n_caps, _, geometry = inputs
        counts = _update_phase_counts(routing_kind, n_caps, vector[0], vector[1], geometry)
        _routing_results(s, routing_kind, inputs, counts, vector, coefficients, energies, cycles, matmuls, narrow,
                         wide, picojoules)


@njit(cache=True, _nrt=False)
def _cost_route3d_steps(packed, config, coefficients, energies, cycles, matmuls, narrow, wide, picojoules):
    """`_cost_routing_steps` for route3d steps: a whole routing each (`_whole_routing_counts`)."""
    vector = _vector_config(config)
    route3d_kind = float(ROUTE3D)
    for s in range(packed.shape[0]):
        inputs = _routing_inputs(route3d_kind, packed[s], vector)
        (_, _, _, _, _, ch_out, caps_out), _, n_caps, _, geometry = inputs
        counts = _whole_routing_counts(n_caps, ch_out, caps_out, vector[0], vector[1], vector[5], geometry)
        _routing_results(s, route3d_kind, inputs, counts, vector, coefficients, energies, cycles, matmuls, narrow,
                         wide, picojoules)


@njit(cache=True, inline="always")
def _cost_vector_steps(kind, packed, config, coefficients, energies, cycles, matmuls, narrow, wide, picojoules):
    """Cost the steps of kind code `kind` (`VECTOR_KINDS`) whose fields `packed` holds (`_packed_step`) in float64,
    by the loop of their kind (`_cost_matmul_steps`, `_cost_classcaps_steps`, `_cost_elementwise_steps`,
    `_cost_routing_steps`, `_cost_update_steps`, `_cost_route3d_steps`); a kind code as a constant to the loops
    compiled once per kind."""
    if kind == CONV:
        _cost_matmul_steps(CONV, packed, config, coefficients, energies, cycles, matmuls, narrow, wide, picojoules)
    elif kind == CONVCAPS:
        _cost_matmul_steps(CONVCAPS, packed, config, coefficients, energies, cycles, matmuls, narrow, wide, picojoules)
    elif kind == CONVCAPS3D:
        _cost_matmul_steps(CONVCAPS3D, packed, config, coefficients, energies, cycles, matmuls,
                           narrow, wide, picojoules)
    elif kind == CLASSCAPS:
        _cost_classcaps_steps(packed, config, coefficients, energies, cycles, matmuls, narrow, wide, picojoules)
    elif kind == TOCAPS:
        _cost_elementwise_steps(TOCAPS, packed, config, coefficients, energies, cycles, matmuls,
                                narrow, wide, picojoules)
    elif kind == CAPSADD:
        _cost_elementwise_steps(CAPSADD, packed, config, coefficients, energies, cycles, matmuls,
                                narrow, wide, picojoules)
    elif kind == ROUTE3D:
        _cost_route3d_steps(packed, config, coefficients, energies, cycles, matmuls, narrow, wide, picojoules)
    elif _is_update(kind):
        _cost_update_steps(kind, packed, config, coefficients, energies, cycles, matmuls, narrow, wide, picojoules)
    else:
        _cost_routing_steps(kind, packed, config, coefficients, energies, cycles, matmuls, narrow, wide, picojoules)


@njit(cache=True)
def _batch_shift(batch):
    """k when `batch` = 2^k, else -1: an image's share (`per_image`) of a count is then a shift, and of an
    energy a product by 2^-k (`image_energy`)."""
    shift = 0
    while (1 << shift) < batch:
        shift += 1
    return shift if (1 << shift) == batch else -1


@njit(cache=True)
def energy_share(batch):
    """2^-k when `batch` = 2^k (`_batch_shift`; `image_energy` then multiplies by it), else 0.0."""
    return 1.0 / batch if _batch_shift(batch) >= 0 else 0.0


@njit(cache=True)
def image_energy(batch_energy, batch, share):
    """An image's share of an energy of a whole batch of `batch` images: batch_energy / batch, computed as the
    product by `share` = `energy_share(batch)` when that is not 0 (batch = 2^k: equal to the division bit for
    bit, and no division)."""
    return batch_energy * share if share > 0.0 else batch_energy / batch


@njit(cache=True, inline="always")
def _repeat_of(keys, first, s, key_first, key_second):
    """The position of the step among the two before step s (not before `first`, its network's first) whose key in
    `keys` is (key_first, key_second), the nearer one first, or -1 (`REPEAT`)."""
    if s - 1 >= first and keys[s - 1, 0] == key_first and keys[s - 1, 1] == key_second:
        return s - 1
    if s - 2 >= first and keys[s - 2, 0] == key_first and keys[s - 2, 1] == key_second:
        return s - 2
    return -1


@njit(cache=True, inline="always")
def _vector_word(step):
    """(position of its kind in `VECTOR_KINDS`, `_packed_step` word) of a step: the word is -1 when the kind is not
    one of them or the step does not pack."""
    slot = _vector_slot(step[1])
    return slot, _packed_step(step) if slot >= 0 else -1


@njit(cache=True, inline="always")
def _pack(packing, slot, word, s):
    """Add step s, packed as `word`, to the steps of kind position `slot` waiting for `_cost_packed` (`packing`: the
    waiting counts, packed words and step positions of `_scratch`)."""
    waiting, packed, where = packing
    packed[slot, waiting[slot]], where[slot, waiting[slot]] = word, s
    waiting[slot] += 1


@njit(cache=True, inline="always")
def _claim_row(table, used, key_first, key_second, home, queue, queued, s):
    """The slot of the memo `table` that holds the key (key_first, key_second), probed from its `_memo_home` slot
    `home` (`_memo_slot`); a key the memo does not hold claims its empty slot (its key written, its code `PENDING`,
    `used` counted) and step s is queued for costing (`queue`, `queued` so far). Returns (slot, queued)."""
    slot = _memo_slot(table, key_first, key_second, home)
    if table[slot, 0] == -1:
        table[slot, 0], table[slot, 1], table[slot, ROW_CODE] = key_first, key_second, PENDING
        used[0] += 1
        queue[queued] = s
        queued += 1
    return slot, queued


@njit(cache=True, inline="always")
def _claim_steps(steps, first, count, table, used, keys, slots, queue, queued, own_rows, sums):
    """Find the memo row of each of the `count` steps of `steps` from `first` on (one network's, `chain_steps`)
    and write it into `slots`: a slot of `table`; when the memo does not hold the step's key, the slot is claimed
    (its key written, its code `PENDING`, `used` counted) and the step queued for costing (`queue`, `queued` so
    far; `_cost_queue`). A step of the key of one of the two before it (`REPEAT`) takes that step's slot with no
    look-up; a step with no key (`NO_KEY`) is queued with a row of its own, -1 - its position among `own_rows` so
    far. Every key's row is asked for (`prefetch_row`) before the first is read; `keys` (steps x 2) holds the
    keys. While every row read so far holds a cost, it is added to its operation's sums `sums` (w_loads, cycles,
    energy, transfers: `_add_step`, zeroed first), while the row is in the cache. Returns (queued, own_rows,
    whether the sums are incomplete: a step's row is not costed yet, or holds an error, and `_network_sums` sums
    the network again once its rows are costed)."""
    w_loads, cycles, energy, transfers = sums
    _zero_sums(cycles.shape[0], w_loads, cycles, energy, transfers)
    last = first + count
    for s in range(first, last):
        key_first, key_second = _memo_key(steps[s])
        keys[s, 0], keys[s, 1], slots[s] = key_first, key_second, NO_KEY
        if key_first >= 0:
            earlier = _repeat_of(keys, first, s, key_first, key_second)
            if earlier >= 0:
                slots[s] = REPEAT - earlier
            else:
                slots[s] = _memo_home(table, key_first, key_second)
                prefetch_row(table, slots[s])
    pending = False
    for s in range(first, last):
        slot = slots[s]
        if slot <= REPEAT:
            slot = slots[REPEAT - slot]
        elif slot == NO_KEY:
            slot, pending = -1 - own_rows, True
            own_rows += 1
            queue[queued] = s
            queued += 1
        else:
            slot, queued = _claim_row(table, used, keys[s, 0], keys[s, 1], slot, queue, queued, s)
        slots[s] = slot
        if not pending and (slot < 0 or _add_step(table, slot, steps[s, 0], w_loads, cycles, energy, transfers)):
            pending = True
    return queued, own_rows, pending


@njit(cache=True, inline="always")
def _claim_vector_steps(steps, first, count, table, used, keys, slots, queue, queued, packing):
    """`_claim_steps` for a memo that keeps no steps of `VECTOR_KINDS` (`StepMemo(vector_steps=False)`): each such
    step that packs (`_packed_step`) is packed for its kind's float64 loop (`packing`: the waiting counts, packed
    words and step positions of `_scratch`, for `_cost_packed`) and gets a row of its own, -1 - its position in
    `steps`, or the row of one of the two steps before it of the same kind and fields; every other step is found or
    claimed in the memo (`_claim_row`; a step with no key, `NO_KEY`, queued with a row of its own). No sums are
    added: the network is summed (`_network_sums`) once its rows are costed. Returns queued."""
    for s in range(first, first + count):
        vector, word = _vector_word(steps[s])
        keys[s, 0], keys[s, 1] = word, steps[s, 1]
        if word >= 0:
            earlier = _repeat_of(keys, first, s, word, steps[s, 1])
            if earlier >= 0:
                slots[s] = slots[earlier]
            else:
                _pack(packing, vector, word, s)
                slots[s] = -1 - s
            continue
        key_first, key_second = _memo_key(steps[s])
        if key_first < 0:
            slots[s] = -1 - s
            queue[queued] = s
            queued += 1
        else:
            slots[s], queued = _claim_row(table, used, key_first, key_second,
                                          _memo_home(table, key_first, key_second), queue, queued, s)
    return queued


@njit(cache=True, inline="always")
def _write_row(table, own, slot, code, cycles, matmuls, narrow, wide, picojoules):
    """Write a step's cost into its row: `table`'s row `slot` (>= 0) or `own`'s row -1 - slot (`_claim_steps`)."""
    rows, row = (table, slot) if slot >= 0 else (own, -1 - slot)
    rows[row, 2], rows[row, 3], rows[row, 4], rows[row, 5], rows[row, ROW_CODE] = cycles, matmuls, narrow, wide, code
    rows.view(np.float64)[row, 6] = picojoules


@njit(cache=True, inline="always")
def _cost_row(steps, s, slots, table, own, config, coefficients, energies, scratch):
    """Cost step s of `steps` by the integer rules (`_step_cost`, with the scratch arrays of `_scratch`) into its row
    (`_write_row` of its slot in `slots`)."""
    counts, moved, args, error, value = scratch[:5]
    code, cycles, matmuls, narrow, wide, picojoules = _step_cost(steps[s], config, coefficients, energies, counts,
                                                                 moved, args, error, value)
    _write_row(table, own, slots[s], code, cycles, matmuls, narrow, wide, picojoules)


@njit(cache=True, inline="always")
def _cost_queue(steps, queue, queued, slots, table, own, config, coefficients, energies, scratch, vector):
    """Cost the `queued` steps of `queue` (`_claim_steps`) into their rows (`_write_row`) one by one (`_step_cost`),
    but, when `vector`, the steps of `VECTOR_KINDS` that pack (`_packed_step`): those are packed per kind into
    `scratch` (the arrays of `_scratch`; its waiting counts zeroed by the caller), for `_cost_packed`."""
    for q in range(queued):
        s = queue[q]
        slot, word = _vector_word(steps[s]) if vector else (-1, -1)
        if word >= 0:
            _pack(scratch[5:8], slot, word, s)
        else:
            _cost_row(steps, s, slots, table, own, config, coefficients, energies, scratch)


@njit(cache=True, inline="always")
def _cost_packed(steps, slots, table, own, config, coefficients, energies, scratch):
    """Cost the steps `_cost_queue` packed, kind by kind in float64 (`_cost_vector_steps`), into their rows; a step
    they leave to the integer rules (`INTEGER_RULES`) one by one (`_step_cost`)."""
    _, _, _, _, _, waiting, packed, where, step_cycles, step_matmuls, step_narrow, step_wide, step_picojoules = scratch
    for slot, kind in enumerate(VECTOR_KINDS):
        n = waiting[slot]
        if n == 0:
            continue
        _cost_vector_steps(kind, packed[slot, :n], config, coefficients, energies, step_cycles[:n], step_matmuls[:n],
                           step_narrow[:n], step_wide[:n], step_picojoules[:n])
        for i in range(n):
            matmuls = step_matmuls[i]
            code = np.int64(-matmuls) if matmuls < 0 else FITS
            s = where[slot, i]
            if code == INTEGER_RULES:
                _cost_row(steps, s, slots, table, own, config, coefficients, energies, scratch)
            else:
                _write_row(table, own, slots[s], code, np.int64(step_cycles[i]),
                           np.int64(matmuls) if code == FITS else 0, np.int64(step_narrow[i]),
                           np.int64(step_wide[i]), step_picojoules[i])


@njit(cache=True, inline="always")
def _zero_sums(n, w_loads, cycles, energy, transfers):
    """Zero the sums of n operations (`_add_step`)."""
    for i in range(n):
        w_loads[i], cycles[i], energy[i] = 0, 0, 0.0
        transfers[i, 0], transfers[i, 1] = 0, 0


@njit(cache=True, inline="always")
def _add_step(rows, row, i, w_loads, cycles, energy, transfers):
    """Add the cost of a step, row `row` of `rows` (a memo row, `_memo`), to operation i's batch sums: its MATMULs,
    cycles, energy (mJ) and the narrow and wide buffer rows the DMA moves; return 0, or the step's error code (its
    row's, or `CYCLES_RANGE` when the sums would leave the int64 range), and add nothing then."""
    code, step_cycles, matmuls = rows[row, ROW_CODE], rows[row, 2], rows[row, 3]
    if code:
        return code
    if step_cycles < 0 or step_cycles > INT64_MAX - cycles[i] or matmuls > INT64_MAX - w_loads[i]:
        return CYCLES_RANGE
    cycles[i] += step_cycles
    w_loads[i] += matmuls
    energy[i] += rows.view(np.float64)[row, 6] * 1e-9
    transfers[i, 0] += rows[row, 4]
    transfers[i, 1] += rows[row, 5]
    return FITS


@njit(cache=True, inline="always")
def _network_totals(config, period_ns, w_loads, cycles, power, energy, transfers, full):
    """An image's share of each operation's batch sums (`_add_step`; n = len(cycles) operations): its per-image
    cycles and energy (mJ) into the arrays and, when `full`, its per-image w_loads (else the batch's), power (mW) and
    the batch's cycles (`transfers[:, 2]`); return (total cycles, total energy_mJ), both summed in operation order
    (the same with `full` or not)."""
    batch = config[4]
    shift = _batch_shift(batch)
    low, share = batch - 1, energy_share(batch)
    total_cycles, total_energy = 0, 0.0
    for i in range(cycles.shape[0]):  # the batch's power, then an image's share (`per_image`)
        if full:
            transfers[i, 2] = cycles[i]
            seconds = cycles[i] * period_ns * 1e-9
            power[i] = energy[i] / seconds if seconds > 0 else 0.0
            w_loads[i] = per_image(w_loads[i], batch)
        energy[i] = image_energy(energy[i], batch, share)
        if shift >= 0:
            cycles[i] = (cycles[i] >> shift) + ((cycles[i] & low) != 0)
        else:
            cycles[i] = per_image(cycles[i], batch)
        total_cycles += cycles[i]
        total_energy += energy[i]
    return total_cycles, total_energy


@njit(cache=True, inline="always")
def _network_sums(steps, first, count, slots, table, own, config, period_ns, w_loads, cycles, power, energy,
                  transfers, error, value, full):
    """Sum the costs of the `count` steps of `steps` from `first` on (one network's, their rows in `slots`,
    `_claim_steps`, written by `_cost_queue`) per operation (n = len(cycles) operations, `_add_step`), then take an
    image's share (`_network_totals`, with `full`): return (total cycles, total energy_mJ). On an error, error[0]
    is its code (the first step's in order), error[1] the step (counted from `first`) and value[0] the cycles out
    of range."""
    _zero_sums(cycles.shape[0], w_loads, cycles, energy, transfers)
    for s in range(first, first + count):
        slot = slots[s]
        i = steps[s, 0]
        before = float(cycles[i])
        code = (_add_step(table, slot, i, w_loads, cycles, energy, transfers) if slot >= 0
                else _add_step(own, -1 - slot, i, w_loads, cycles, energy, transfers))
        if code:
            rows, row = (table, slot) if slot >= 0 else (own, -1 - slot)
            error[0], error[1], value[0] = code, s - first, before + float(rows[row, 2])
            return 0, 0.0
    return _network_totals(config, period_ns, w_loads, cycles, power, energy, transfers, full)


@njit(cache=True)
def _scratch(steps, n_kinds):
    """The scratch arrays of `_cost_queue` for up to `steps` queued steps: `count_step`'s counts and rows moved,
    the refusal's numbers, the error and value of `_step_cost`, and for the `n_kinds` kinds of `VECTOR_KINDS` the
    steps packed per kind, their positions and the five results of `_cost_vector_steps`."""
    return (np.empty(len(COUNT_FIELDS), np.int64), np.empty(len(TRANSFER_FIELDS), np.int64),
            np.zeros(REFUSAL_ARGS, np.int64), np.zeros(3, np.int64), np.zeros(1, np.float64),
            np.zeros(n_kinds, np.int64), np.empty((n_kinds, steps), np.int64), np.empty((n_kinds, steps), np.int64),
            np.empty(steps, np.float64), np.empty(steps, np.float64), np.empty(steps, np.float64),
            np.empty(steps, np.float64), np.empty(steps, np.float64))


@njit(cache=True, inline="always")
def _memo_size(steps):
    """The fewest slots (a power of two, at least 16) of a memo that holds `steps` steps (`_memo_fits`)."""
    slots = 16
    while not _memo_fits(steps, slots):
        slots *= 2
    return slots


BATCH_MEMO = 1 << 12
"""Slots a fresh `StepMemo` starts with; it doubles as it fills (`genotype_costs`)."""
MOST_MEMO = 1 << 21
"""Slots a `StepMemo` grows to at most (64-byte rows: 128 MiB); full (`_memo_fits`), it starts again."""
BLOCK_STEPS = 1 << 10
"""Chained steps of the networks `_cost_genotypes` costs together: their new steps are counted kind by kind
(`_cost_queue`), then their costs summed network by network."""


@njit(cache=True)
def _network_kernel(ops, config, coefficients, energies, period_ns, counts, figures, transfers, error, value):
    """Cost one network's operation rows `ops` (`capsacc.network.OP_FIELDS`) into the caller's arrays (numba boxes
    no array it returns: about 1.5 us each): `counts` (3, n_ops) int64, w_loads, cycles and the accumulators (the
    C columns); `figures` (2, n_ops) float64, power and energy; `transfers` (`_network_sums`), `error`, `value`.
    Its steps are chained (`capsacc.mapping.chain_steps`), claimed in a memo of their own (`_claim_steps`), costed
    one by one (`_step_cost`; `genotype_costs` costs a batch's steps of `VECTOR_KINDS` in float64 instead, with the
    same results) and summed (`_network_sums`). Returns (total cycles, total energy); on an error, error[0] is its
    code, error[1] the step, error[2] and value[0] a prediction's target and value out of range, error[3:] a
    refusal's numbers (`_step_cost` of that step again)."""
    n = ops.shape[0]
    counts[2, :] = config[1]
    figures[0, :] = 0.0
    kinds, steps = np.empty(n, np.int64), np.empty((2 * n + 1, len(STEP_FIELDS)), np.int64)
    _step_kinds(ops, kinds)
    count = chain_steps(ops, kinds, steps)
    if count < 0:
        error[0] = NOT_EXPANDED
        return 0, 0.0
    table, used = _memo(_memo_size(count))
    keys, slots, queue = np.empty((count, 2), np.int64), np.empty(count, np.int64), np.empty(count, np.int64)
    own = np.full((count, 8), -1, np.int64)
    queued, _, _ = _claim_steps(steps, 0, count, table, used, keys, slots, queue, 0, 0,
                                (counts[0], counts[1], figures[1], transfers))
    scratch = _scratch(1, len(VECTOR_KINDS))
    _cost_queue(steps, queue, queued, slots, table, own, config, coefficients, energies, scratch, False)
    total_cycles, total_energy = _network_sums(steps, 0, count, slots, table, own, config, period_ns, counts[0],
                                               counts[1], figures[0], figures[1], transfers, error, value, True)
    if error[0] and error[0] != CYCLES_RANGE:  # the refusal's numbers, or the target out of range
        step_counts, moved, args = scratch[0], scratch[1], error[3:]
        _step_cost(steps[error[1]], config, coefficients, energies, step_counts, moved, args, error, value)
    return total_cycles, total_energy


@njit(cache=True, inline="always")
def _genotype_totals(record, steps, slots, table, own, config, period_ns, offchip_pJ_per_byte, energies, w_loads,
                     cycles, power, energy, transfers, error, value, results, narrow_row_bytes, wide_row_bytes, share,
                     summed):
    """Write the results (`_cost_genotypes`) of the genotype of `record` (genotype, operations, first step, steps
    or -1 when not expanded, weights): its costs (`_network_totals` of the sums `_claim_steps` added when `summed`,
    else `_network_sums`), its error code, weights, and its energy with the data movement (`_movement_energies`,
    `total_energy_mJ`)."""
    totals_cycles, totals_energy, weights, totals_with_movement, errors = results
    g, count, first, chained = record[0], record[1], record[2], record[3]
    error[0] = 0
    if chained < 0:
        transfers[:count, :] = 0
        error[0] = NOT_EXPANDED
        totals_cycles[g], totals_energy[g] = 0, 0.0
    elif summed:
        totals_cycles[g], totals_energy[g] = _network_totals(config, period_ns, w_loads[:count], cycles[:count],
                                                             power[:count], energy[:count], transfers[:count], False)
    else:
        totals_cycles[g], totals_energy[g] = _network_sums(
            steps, first, chained, slots, table, own, config, period_ns, w_loads[:count], cycles[:count],
            power[:count], energy[:count], transfers[:count], error, value, False)
    errors[g] = error[0]
    weights[g] = record[4]
    offchip_mJ, buffer_mJ = 0.0, 0.0
    for i in range(count):
        _, offchip, buffer = _movement_energies(transfers[i, 0], transfers[i, 1], narrow_row_bytes, wide_row_bytes,
                                                config[4], share, offchip_pJ_per_byte, energies[DATA_READ_EVENT],
                                                energies[WEIGHT_READ_EVENT])
        offchip_mJ += offchip
        buffer_mJ += buffer
    totals_with_movement[g] = total_energy_mJ(totals_energy[g], offchip_mJ, buffer_mJ)


@njit(cache=True, _nrt=False)
def _cost_genotypes(start, descriptors, offsets, config, coefficients, energies, period_ns, offchip_pJ_per_byte, memo,
                    most_slots, vector_steps, buffers, results, narrow_row_bytes, wide_row_bytes, share):
    """The loop of `genotype_costs` from genotype `start` on, into its arrays: `memo` (table, used), `buffers`
    (`genotype_costs`) and `results` (cycles, energy_mJ, weights, total_energy_mJ, errors). Genotypes are costed in
    blocks of about `BLOCK_STEPS` chained steps, in three passes: each genotype expanded (`descriptor_operation`),
    its steps chained and their memo rows claimed (`_claim_steps`; when not `vector_steps`, `_claim_vector_steps`:
    the steps of `VECTOR_KINDS` packed for costing wherever they occur, the memo only for the others); the block's
    new steps costed (`_cost_queue`, those of `VECTOR_KINDS` in float64, vectorized, `_cost_packed`); each
    genotype's costs summed (`_network_sums`) with its data movement's energy. Returns (the genotype at which the
    memo must grow before it is costed, the most steps it brings: 2 x its operations + 1) when they could fill the
    table beyond `_memo_fits` and it has room to double within `most_slots`, else (the count of genotypes, 0) when
    all are costed; a memo that cannot grow starts again after a block. Compiled without numba's reference
    counting (`_nrt=False`): it allocates nothing."""
    table, used = memo
    ops, kinds, steps, keys, slots, queue, own, networks, scratch, w_loads, cycles, power, energy, transfers, error, \
        value = buffers
    waiting = scratch[5]
    n = offsets.shape[0] - 1
    j = start
    while j < n:
        first, op_count, step_count, queued, own_rows, need, restart, deferred = j, 0, 0, 0, 0, 0, False, 0
        waiting[:] = 0  # steps packed, per kind of `VECTOR_KINDS`
        while j < n and op_count < BLOCK_STEPS and step_count < BLOCK_STEPS:
            count, total_weights = 0, 0
            last = offsets[j + 1] - offsets[j] - 1
            for i in range(offsets[j], offsets[j + 1]):
                descriptor = descriptors[i]
                for row in range(MAX_DESCRIPTOR_OPERATIONS):
                    kind, inner = descriptor_operation(descriptor[0], i - offsets[j], last, row)
                    if kind < 0:
                        break
                    _operation_row(ops, op_count + count, kind, descriptor, inner)
                    total_weights += operation_table1(descriptor, kind, inner)[0]
                    count += 1
            if not _memo_fits(used[0] + 2 * count + 1, table.shape[0]):
                if 2 * table.shape[0] <= most_slots:
                    need = 2 * count + 1
                    break
                if j > first:  # the block's rows are claimed: cost it, then start again
                    restart = True
                    break
                table[:, 0] = -1
                used[0] = 0
            network_ops = ops[op_count:op_count + count]
            _step_kinds(network_ops, kinds)
            chained = chain_steps(network_ops, kinds, steps[step_count:])
            record = networks[deferred]
            record[0], record[1], record[2], record[3], record[4] = j, count, step_count, chained, total_weights
            pending = False
            if chained >= 0 and not vector_steps:
                queued = _claim_vector_steps(steps, step_count, chained, table, used, keys, slots, queue, queued,
                                             scratch[5:8])
                pending = True
            elif chained >= 0:
                queued, own_rows, pending = _claim_steps(steps, step_count, chained, table, used, keys, slots, queue,
                                                         queued, own_rows, (w_loads[:count], cycles[:count],
                                                                            energy[:count], transfers[:count]))
            if pending:  # summed after the block's new steps are costed
                deferred += 1
                op_count += count
                step_count += chained
            else:  # every cost known and summed: its rows reused
                _genotype_totals(record, steps, slots, table, own, config, period_ns, offchip_pJ_per_byte,
                                 energies, w_loads, cycles, power, energy, transfers, error, value, results,
                                 narrow_row_bytes, wide_row_bytes, share, True)
            j += 1
        _cost_queue(steps, queue, queued, slots, table, own, config, coefficients, energies, scratch, vector_steps)
        _cost_packed(steps, slots, table, own, config, coefficients, energies, scratch)
        for network in range(deferred):
            _genotype_totals(networks[network], steps, slots, table, own, config, period_ns, offchip_pJ_per_byte,
                             energies, w_loads, cycles, power, energy, transfers, error, value, results,
                             narrow_row_bytes, wide_row_bytes, share, False)
        if need:
            return j, need
        if restart:
            table[:, 0] = -1
            used[0] = 0
    return n, 0


@njit(cache=True)
def genotype_costs(descriptors, offsets, config, coefficients, energies, period_ns, bytes_per_cycle,
                   offchip_pJ_per_byte, table, used, most_slots, vector_steps):
    """Totals of flattened genotypes (`capsacc.model.GenotypeBatch`: genotype j owns rows
    offsets[j]:offsets[j+1] of `descriptors`) under the calibrated model, each expanded
    (`capsacc.network.descriptor_operation`) and costed by the steps of `network_costs` (`_cost_genotypes`: its new
    steps of `VECTOR_KINDS` in float64, vectorized, with the same results): cycles (int64), energy_mJ (float64),
    weights (int64), the energy with the data movement through a port of W = `bytes_per_cycle` bytes a cycle and
    `offchip_pJ_per_byte` (`total_energy_mJ`, float64: that of `data_movement`, as `capsacc.Estimate.total_energy_mJ`
    adds it), the error code of each genotype (0 when it costs), and the memo table. The memo (`table`, `used`: a
    `_memo`, a `StepMemo`'s) keeps the costs of the steps costed; before a network whose steps could fill more than
    the memo beyond `_memo_fits`, it is doubled (`_memo_grown`), up to `most_slots` slots; an empty memo
    that keeps the steps of `VECTOR_KINDS` (`vector_steps`) first grows to fit as many steps as the batch has
    descriptors (about as many distinct steps as a search's batch brings, `step_shape`), in one growth. The arrays
    are allocated here, and the genotypes costed by `_cost_genotypes`, which stops where the memo must grow."""
    n = offsets.shape[0] - 1
    longest = 1
    for j in range(n):
        longest = max(longest, offsets[j + 1] - offsets[j])
    most = longest * MAX_DESCRIPTOR_OPERATIONS
    block_ops, block_steps = BLOCK_STEPS + most, BLOCK_STEPS + 2 * most + 1
    buffers = (np.empty((block_ops, len(OP_FIELDS)), np.int64), np.empty(most, np.int64),
               np.empty((block_steps, len(STEP_FIELDS)), np.int64), np.empty((block_steps, 2), np.int64),
               np.empty(block_steps, np.int64), np.empty(block_steps, np.int64),
               np.full((block_steps, 8), -1, np.int64), np.empty((BLOCK_STEPS + 1, 5), np.int64),
               _scratch(block_steps, len(VECTOR_KINDS)), np.empty(most, np.int64),
               np.empty(most, np.int64), np.empty(most, np.float64), np.empty(most, np.float64),
               np.empty((most, 3), np.int64), np.zeros(3 + REFUSAL_ARGS, np.int64), np.zeros(1, np.float64))
    results = (np.zeros(n, np.int64), np.zeros(n, np.float64), np.zeros(n, np.int64), np.zeros(n),
               np.zeros(n, np.int64))
    narrow_row_bytes, wide_row_bytes = row_bytes(config[0], bytes_per_cycle), row_bytes(config[1], bytes_per_cycle)
    share = energy_share(config[4])
    capacity = table.shape[0]
    while (vector_steps and used[0] == 0 and not _memo_fits(descriptors.shape[0], capacity)
           and 2 * capacity <= most_slots):
        capacity *= 2
    if capacity > table.shape[0]:
        table = _memo_grown(table, capacity)
    j = np.int64(0)  # not the literal 0, for which numba would compile `_cost_genotypes` once more
    while j < n:
        j, steps = _cost_genotypes(j, descriptors, offsets, config, coefficients, energies, period_ns,
                                   offchip_pJ_per_byte, (table, used), most_slots, vector_steps, buffers, results,
                                   narrow_row_bytes, wide_row_bytes, share)
        capacity = table.shape[0]
        while j < n and not _memo_fits(used[0] + steps, capacity) and 2 * capacity <= most_slots:
            capacity *= 2
        if capacity > table.shape[0]:
            table = _memo_grown(table, capacity)
    totals_cycles, totals_energy, weights, totals_with_movement, errors = results
    return totals_cycles, totals_energy, weights, totals_with_movement, errors, table


class StepMemo:
    """The step costs of one calibration, kept by a caller across `estimate_many` calls (a search costs
    every generation's genotypes, and their steps repeat): give it as `estimate_many(batch, accelerator,
    memo=memo)`. A step's cost is a function of its kind and shape (`_memo_key`), so the totals are those
    of a fresh memo, bit for bit; only the time differs. It holds `len(memo)` steps in a table that
    doubles as it fills (`genotype_costs`), up to `most_slots` slots of 64 bytes (full, `_memo_fits`,
    it starts again). It serves the calibration it was made for only (`AcceleratorConfigError` for
    another).

    `vector_steps`: whether it keeps the costs of the steps of `VECTOR_KINDS` too (each costed once,
    then looked up: the fastest where most steps have been costed before, as in a search's later
    generations), or costs those steps in the float64 loops wherever they occur and keeps only the
    other kinds' (the fastest where most steps are new: `estimate_many` without a memo uses such a
    one; docs/model.md, "Session 30"). The totals are the same bit for bit."""

    def __init__(self, calibration: Calibration, most_slots: int = MOST_MEMO, vector_steps: bool = True):
        if most_slots < BATCH_MEMO or most_slots & (most_slots - 1):
            raise InputError(f"most_slots: {most_slots!r} must be a power of two >= {BATCH_MEMO}")
        self.calibration = calibration
        self.most_slots = most_slots
        self.vector_steps = bool(vector_steps)
        self._table, self._used = _memo(BATCH_MEMO)

    def __len__(self) -> int:
        return int(self._used[0])

    @property
    def slots(self) -> int:
        """Slots of the table now."""
        return self._table.shape[0]

    def genotype_costs(self, descriptors: np.ndarray, offsets: np.ndarray, bytes_per_cycle: int,
                       offchip_pJ_per_byte: float):
        """`genotype_costs` of flattened genotypes with this memo, through an off-chip port of `bytes_per_cycle`
        bytes a cycle and `offchip_pJ_per_byte`: (cycles, energy_mJ, weights, total_energy_mJ, errors)."""
        calibration = self.calibration
        cycles, energy, weights, total_energy, errors, self._table = genotype_costs(
            descriptors, offsets, *calibration.kernel_arrays, calibration.period_ns, bytes_per_cycle,
            float(offchip_pJ_per_byte), self._table, self._used, self.most_slots, self.vector_steps)
        return cycles, energy, weights, total_energy, errors


def network_costs(network, calibration: Calibration):
    """Per-operation arrays (w_loads, cycles, accumulators, power_mW, energy_mJ) and totals
    (cycles, energy_mJ, weights) of `network` under `calibration`, per image of a batch of
    B = `calibration.config.batch` (`per_image`: cycles and weight loads ceil(batch's / B), energy the
    batch's / B; the total cycles are the sum of the operations'), in the layout of
    `capsacc.kernels.network_costs`; by the numba kernel `_network_kernel`, whose stages
    `genotype_costs` runs too. w_loads: MATMUL instructions (weight tiles loaded);
    accumulators: the C partial-sum lanes; power: the batch's energy over the batch's time. Each
    operation costs the steps of the chained run charged to it (`capsacc.mapping.chain`; their batch
    cycles summed before the per-image share is taken): routing operations are the phases of
    `capsacc.mapping.ROUTINGS` iterations (`operation_kinds`), and a CapsCell network's operations
    also carry its added steps (`CHAIN_KINDS`: ToCapsules, the ConvCaps3D's routing, the
    cells' skip sums). A step that does not fit the array is a `MappingError` naming its operation.
    Last, the batch's data movement of each operation (n_ops x 3, int64: the narrow and wide buffer
    rows the DMA moves and the batch's cycles; `data_movement` prices them)."""
    config, coefficients, energies = calibration.kernel_arrays
    ops = network.rows
    n = ops.shape[0]
    counts, figures, transfers = np.empty((3, n), np.int64), np.empty((2, n), np.float64), np.empty((n, 3), np.int64)
    error, value = np.zeros(3 + REFUSAL_ARGS, np.int64), np.zeros(1, np.float64)
    total_cycles, total_energy = _network_kernel(ops, config, coefficients, energies,
                                                 calibration.period_ns, counts, figures, transfers, error, value)
    if error[0]:
        raise _network_error(network, calibration, error, value)
    return (counts[0], counts[1], counts[2], figures[0], figures[1], total_cycles, total_energy, network.weights,
            transfers)


@dataclass(frozen=True)
class DataMovement:
    """What the DMA moves for each operation of a network through an off-chip port (arrays of length
    n_ops, per image of the batch of B images, as `network_costs`' figures; the RTL's DMA programs,
    `sim.host.DmaSession`, with their rows counted by `capsacc.mapping.count_step`).

    `offchip_bytes`: ceil(the batch's bytes / B) (int64); `bandwidth_bound`: whether moving the
    batch's bytes at W bytes a cycle takes more cycles than the batch's compute (the `bound` of
    `nascaps rtl run`: ceil(bytes / W) > cycles); `offchip_energy_mJ`: the bytes times the port's
    energy per byte, mJ; `dma_buffer_energy_mJ`: the on-chip buffer row each moved row writes (a load)
    or reads (a store), priced as the `data_read` and `weight_read` events of the calibration (a
    routing buffer row as a data one), mJ. The energies are the batch's / B."""

    offchip_bytes: np.ndarray
    bandwidth_bound: np.ndarray
    offchip_energy_mJ: np.ndarray
    dma_buffer_energy_mJ: np.ndarray


DATA_READ_EVENT, WEIGHT_READ_EVENT = EVENTS.index("data_read"), EVENTS.index("weight_read")
"""Positions of the events that price a moved buffer row (`DataMovement`) in the energies of
`Calibration.kernel_arrays`."""


@njit(cache=True)
def _movement_energies(narrow, wide, narrow_row_bytes, wide_row_bytes, batch, share, offchip_pJ_per_byte,
                       data_read_pJ, weight_read_pJ):
    """(the batch's bytes through the port, `rows_port_bytes`; an image's off-chip energy, mJ; an image's DMA
    buffer energy, mJ) of an operation whose batch of `batch` images moves `narrow` rows of R lanes and `wide`
    rows of C lanes, of `narrow_row_bytes` and `wide_row_bytes` bytes through the port (`row_bytes`)
    (`DataMovement`): the one definition of both energies, for `data_movement` and `genotype_costs`. An image's
    share is that of `image_energy` (`share`: `energy_share(batch)`)."""
    moved = rows_port_bytes(narrow, wide, narrow_row_bytes, wide_row_bytes)
    return (moved, offchip_energy_mJ(moved, batch, share, offchip_pJ_per_byte),
            image_energy((narrow * data_read_pJ + wide * weight_read_pJ) * 1e-9, batch, share))


@njit(cache=True)
def offchip_energy_mJ(port_bytes, batch, share, offchip_pJ_per_byte):
    """An image's share (`image_energy`, `share` = `energy_share(batch)`) of the off-chip energy of the batch's
    `port_bytes` bytes through the port at `offchip_pJ_per_byte` pJ a byte, mJ (a count or an array of
    counts): the one definition of the port's energy, for the buffer rows (`_movement_energies`) and the
    program words (`network_schedule`)."""
    return image_energy(port_bytes * offchip_pJ_per_byte * 1e-9, batch, share)


@njit(cache=True)
def ordered_sum(values):
    """The sum of float64 `values` added one after the other from the first, as `genotype_costs` adds an
    operation's data movement energies (numpy's `sum` adds pairwise, which can differ in the last bit)."""
    total = 0.0
    for value in values:
        total += value
    return total


@njit(cache=True)
def total_energy_mJ(energy_mJ, offchip_energy_mJ, dma_buffer_energy_mJ):
    """A network's energy with its data movement, mJ: the compute's events, then the off-chip traffic, then
    the DMA's buffer rows, added in that order (`capsacc.Estimate.total_energy_mJ`, `genotype_costs`)."""
    return energy_mJ + offchip_energy_mJ + dma_buffer_energy_mJ


@njit(cache=True)
def _movement(transfers, rows, cols, batch, bytes_per_cycle, offchip_pJ_per_byte, data_read_pJ, weight_read_pJ,
              offchip, bound, energies):
    """Per operation of `transfers` (`network_costs`), into the caller's arrays (one pass, for
    `data_movement`): an image's share (`per_image`) of the batch's bytes through the port (`port_bytes`)
    into `offchip`, whether they are bandwidth bound (`bandwidth_bound`) into `bound`, the off-chip and
    DMA buffer energies of an image, mJ, into `energies` (2, n_ops) (`_movement_energies`)."""
    narrow_row_bytes, wide_row_bytes = row_bytes(rows, bytes_per_cycle), row_bytes(cols, bytes_per_cycle)
    share = energy_share(batch)
    for i in range(transfers.shape[0]):
        moved, energies[0, i], energies[1, i] = _movement_energies(
            transfers[i, 0], transfers[i, 1], narrow_row_bytes, wide_row_bytes, batch, share, offchip_pJ_per_byte,
            data_read_pJ, weight_read_pJ)
        offchip[i] = per_image(moved, batch)
        bound[i] = bandwidth_bound(moved, bytes_per_cycle, transfers[i, 2])


def data_movement(transfers: np.ndarray, calibration: Calibration, bytes_per_cycle: int,
                  offchip_pJ_per_byte: float) -> DataMovement:
    """The `DataMovement` of the `transfers` of `network_costs` through a port of W = `bytes_per_cycle`
    bytes a cycle and `offchip_pJ_per_byte` pJ per byte."""
    config, energies = calibration.config, calibration.energies
    n = transfers.shape[0]
    offchip, bound, moved_mJ = np.empty(n, np.int64), np.empty(n, np.bool_), np.empty((2, n), np.float64)
    _movement(transfers, config.rows, config.cols, config.batch, bytes_per_cycle, float(offchip_pJ_per_byte),
              energies.data_read, energies.weight_read, offchip, bound, moved_mJ)
    return DataMovement(offchip_bytes=offchip, bandwidth_bound=bound, offchip_energy_mJ=moved_mJ[0],
                        dma_buffer_energy_mJ=moved_mJ[1])


class ScheduleTooLarge(Exception):
    """`network_schedule` was given a limit on the instructions to schedule, and the network's
    DMA programs hold more (the message says how many)."""


def network_instructions(network, calibration: Calibration) -> int:
    """MATMUL and ACT instructions of the DMA programs of one batch of `network` (`plan_counts` of its
    chained steps, closed form): the size of the schedule `network_schedule` builds, about 10 us
    of Python each (less for sessions of repeated segments). `MappingError` as `network_schedule`."""
    config = calibration.config
    total = 0
    for step in chain(network.operations):
        try:
            counts = plan_counts(step.kind, step.op, config)
        except MappingError as error:
            raise _step_error(network, step, config, error) from None
        total += counts["matmuls"] + counts["acts"]
    return total


@dataclass(frozen=True)
class ScheduledMovement:
    """What the DMA programs of a network cost beside the compute (`network_schedule`; arrays of length
    n_ops, per image of the batch of B images, as `DataMovement`): `total_cycles`, ceil(the batch's busy
    cycles of its programs / B), from the first byte in to the last result out, port stalls included
    (`capsacc.programs.ScheduledCost`, the `total_cycles` of `nascaps rtl run`); `program_bytes`, ceil(the
    batch's bytes of the program words its overlay programs load through the port / B) (`program_bytes`
    of `nascaps rtl run --json`); `program_energy_mJ`, an image's share of those bytes' off-chip energy
    at the port's pJ per byte, mJ. Neither the program words nor their energy are part of
    `DataMovement` or `genotype_costs`, which count buffer rows without scheduling the programs."""

    total_cycles: np.ndarray
    program_bytes: np.ndarray
    program_energy_mJ: np.ndarray


def network_schedule(network, calibration: Calibration, bytes_per_cycle: int, latency_cycles: int,
                     offchip_pJ_per_byte: float, most_instructions: int | None = None) -> ScheduledMovement:
    """The `ScheduledMovement` of `network` for the batch of B = `calibration.config.batch` images
    through a port of W = `bytes_per_cycle` bytes a cycle, L = `latency_cycles` and `offchip_pJ_per_byte`
    pJ per byte: the steps charged to each operation (`capsacc.mapping.chain`, as `network_costs`), each
    the `capsacc.programs.operation_cost` of its DMA programs, summed over the batch, then an image's share
    (`per_image`, `image_energy`). A step that does not fit the array is a `MappingError` naming its
    operation; programs of more than `most_instructions` instructions (`network_instructions`; None: no
    limit) are `ScheduleTooLarge`, before any is scheduled."""
    if most_instructions is not None:
        instructions = network_instructions(network, calibration)
        if instructions > most_instructions:
            raise ScheduleTooLarge(f"the DMA programs of a batch hold {instructions:,} instructions, more than the "
                                   f"{most_instructions:,} allowed")
    config = dataclasses.replace(calibration.config, offchip_bytes_per_cycle=bytes_per_cycle,
                                 offchip_latency_cycles=latency_cycles)
    cycles, program_bytes = (np.zeros(len(network.operations), np.int64) for _ in range(2))
    for step in chain(network.operations):
        try:
            cost = operation_cost(step.kind, step.op, config)
        except MappingError as error:
            raise _step_error(network, step, config, error) from None
        cycles[step.index] += cost.total_cycles
        program_bytes[step.index] += cost.program_bytes
    batch = config.batch
    energy = offchip_energy_mJ(program_bytes, batch, energy_share(batch), float(offchip_pJ_per_byte))
    return ScheduledMovement(ceil_div(cycles, batch), ceil_div(program_bytes, batch), energy)


def _step_error(network, step, config: ArrayConfig, error: MappingError) -> MappingError:
    """`error` of a chained step, naming its operation and the array."""
    op = network.operations[step.index]
    return MappingError(f"operation {op.name} ({step.kind}) on the calibrated {config.rows}x{config.cols} "
                        f"array: {error}")


def _network_error(network, calibration: Calibration, error: np.ndarray, value: np.ndarray) -> InputError:
    """The located error of a failed `_network_kernel` run."""
    code, step = int(error[0]), int(error[1])
    if code == NOT_EXPANDED:
        return MappingError("the operations are not in the order of the published expansion")
    ops = network.rows
    kinds = np.empty(len(ops), np.int64)
    steps = np.empty((2 * len(ops) + 1, len(STEP_FIELDS)), np.int64)
    _step_kinds(ops, kinds)
    chain_steps(ops, kinds, steps)
    op, kind = network.operations[steps[step, 0]], STEP_KINDS[steps[step, 1]]
    if code == PREDICTION_RANGE:
        return InputError(_range_message(float(value[0]), list(TARGET_FEATURES)[int(error[2])], kind))
    if code == CYCLES_RANGE:
        return InputError(f"operation {op.name} ({op.kind}): the calibrated model predicts {float(value[0]):.3g} "
                          "cycles, outside 0..2^63-1")
    config = calibration.config
    return MappingError(f"operation {op.name} ({kind}) on the calibrated {config.rows}x{config.cols} array: "
                        f"{_refusal(code, error[3:])}")
