"""What a network costs on the accelerator under the published NASCaps model ("nascaps2020")."""

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from capsacc import calibrated, kernels
from capsacc.accelerator import Accelerator
from capsacc.errors import AcceleratorConfigError, GenotypeFormatError, InputError
from capsacc.network import (DESCRIPTOR_FIELDS, FIELD_LIMITS, MAX_COUNT, MAX_DESCRIPTORS, MAX_MACS, OP_KINDS,
                             Network, check_counts, check_descriptors, expand)

MODEL_VERSION = "nascaps2020"
"""Name of the cost model, recorded in every result."""


@dataclass(frozen=True)
class OperationCost:
    """The cost of one hardware operation."""

    name: str
    kind: str
    weights: int
    sums_per_out: int
    data_per_weight: int
    w_loads: int
    cycles: int
    accumulators: int
    power_mW: float
    energy_mJ: float
    offchip_bytes: int | None = None
    """Calibrated model: bytes the DMA moves through the off-chip port, per image (`DataMovement`)."""
    bound: str | None = None
    """Calibrated model: "bandwidth" when moving `offchip_bytes` takes the port longer than the
    compute's cycles, else "compute" (the `bound` of `nascaps rtl run`)."""
    total_cycles: int | None = None
    """Calibrated model: cycles per image with all data movement, from the first byte in to the last
    result out, port stalls included (`capsacc.calibrated.network_schedule`, the `total_cycles` of
    `nascaps rtl run`); None for the published model."""
    program_bytes: int | None = None
    """Calibrated model: bytes of program words the operation's overlay programs load through the off-chip
    port per image (`capsacc.calibrated.network_schedule`, the `program_bytes` of `nascaps rtl run --json`,
    not part of `offchip_bytes`); None for the published model."""


@dataclass(frozen=True)
class Estimate:
    """Totals of one network on one accelerator, and the per-operation breakdown.

    `costs` holds the per-operation arrays (w_loads, cycles, accumulators, power_mW, energy_mJ, each
    of length n_ops) from which `operations` builds the breakdown when it is asked for.
    `cycles`, `latency_ms` and `energy_mJ` are the compute's (the runs' busy cycles with preloaded
    buffers, their counted events); on a calibrated accelerator `movement` adds the data movement
    through its off-chip port (`capsacc.calibrated.DataMovement`: `offchip_bytes`,
    `offchip_energy_mJ`, `dma_buffer_energy_mJ`, and `total_energy_mJ` of all three), and its timed
    DMA programs (computed when first asked for, `calibrated.network_schedule`) `operation_total_cycles`
    / `total_cycles`, the cycles with the data movement, and `program_bytes` / `program_energy_mJ`, the
    program words the overlay programs load; the published model has none (None).
    """

    cycles: int
    latency_ms: float
    energy_mJ: float
    weights: int
    memory_KiB: float
    network: Network
    accelerator: Accelerator
    costs: tuple[np.ndarray, ...]
    model: str = MODEL_VERSION
    transfers: np.ndarray | None = None
    """Calibrated model: the batch's buffer rows the DMA moves per operation (`calibrated.network_costs`),
    from which `movement` is priced when first asked for; None for the published model."""
    most_scheduled_instructions: int | None = None
    """The most MATMUL and ACT instructions of a batch's DMA programs (`calibrated.network_instructions`)
    that `total_cycles` schedules (about 10 us each); None: no limit."""

    @functools.cached_property
    def movement(self) -> calibrated.DataMovement | None:
        """The data movement through the accelerator's off-chip port (`calibrated.data_movement` of
        `transfers`, priced when first asked for); None for the published model."""
        if self.transfers is None:
            return None
        accelerator = self.accelerator
        return calibrated.data_movement(self.transfers, accelerator.calibration, accelerator.offchip_bytes_per_cycle,
                                        accelerator.offchip_pJ_per_byte)

    @property
    def offchip_bytes(self) -> int | None:
        """Bytes through the off-chip port per image, the operations' sum (None: published model)."""
        return None if self.movement is None else int(self.movement.offchip_bytes.sum())

    @property
    def offchip_energy_mJ(self) -> float | None:
        """Energy of the off-chip traffic per image, mJ (`Accelerator.offchip_pJ_per_byte` per byte)."""
        return None if self.movement is None else calibrated.ordered_sum(self.movement.offchip_energy_mJ)

    @property
    def dma_buffer_energy_mJ(self) -> float | None:
        """Energy of the on-chip buffer rows the DMA writes and reads per image, mJ."""
        return None if self.movement is None else calibrated.ordered_sum(self.movement.dma_buffer_energy_mJ)

    @property
    def total_energy_mJ(self) -> float | None:
        """`energy_mJ` (compute events) + `offchip_energy_mJ` + `dma_buffer_energy_mJ`, mJ
        (`calibrated.total_energy_mJ`)."""
        if self.movement is None:
            return None
        return calibrated.total_energy_mJ(self.energy_mJ, self.offchip_energy_mJ, self.dma_buffer_energy_mJ)

    @functools.cached_property
    def _schedule(self) -> tuple[calibrated.ScheduledMovement | None, str | None]:
        """(the `calibrated.ScheduledMovement` of the network's DMA programs, None; computed when first asked
        for: the calibrated model times every program, `calibrated.network_schedule`, seconds for CapsNet on
        16x16), or (None, why not) for programs of more than `most_scheduled_instructions` instructions;
        (None, None) for the published model."""
        accelerator = self.accelerator
        if accelerator.calibration is None:
            return None, None
        try:
            return calibrated.network_schedule(self.network, accelerator.calibration,
                                               accelerator.offchip_bytes_per_cycle, accelerator.offchip_latency_cycles,
                                               accelerator.offchip_pJ_per_byte, self.most_scheduled_instructions), None
        except calibrated.ScheduleTooLarge as reason:
            return None, f"not computed: {reason}"

    @property
    def operation_total_cycles(self) -> tuple[int | None, ...]:
        """Per operation, the cycles per image with all data movement (`OperationCost.total_cycles`,
        `calibrated.network_schedule`); all None for the published model and when the programs are not timed
        (`total_cycles_note` says why)."""
        return self._scheduled("total_cycles")

    @property
    def operation_program_bytes(self) -> tuple[int | None, ...]:
        """Per operation, the bytes of program words its overlay programs load through the off-chip port per
        image (`OperationCost.program_bytes`); None as `operation_total_cycles`."""
        return self._scheduled("program_bytes")

    def _scheduled(self, name: str) -> tuple[int | None, ...]:
        schedule = self._schedule[0]
        return (None,) * len(self.network.operations) if schedule is None else tuple(getattr(schedule, name).tolist())

    @property
    def total_cycles_note(self) -> str | None:
        """Why `total_cycles` and the program figures are None on a calibrated accelerator (programs too large
        to schedule); else None."""
        return self._schedule[1]

    @property
    def total_cycles(self) -> int | None:
        """The operations' `total_cycles` summed, per image (None: published model, or not computed)."""
        totals = self.operation_total_cycles
        return None if None in totals else sum(totals)

    @property
    def program_bytes(self) -> int | None:
        """The operations' `program_bytes` summed, per image (None: published model, or not computed)."""
        loaded = self.operation_program_bytes
        return None if None in loaded else sum(loaded)

    @property
    def program_energy_mJ(self) -> float | None:
        """Off-chip energy of the program words the overlay programs load, per image, mJ (the port's pJ per
        byte; None: published model, or not computed). Not part of `total_energy_mJ`, the figure
        `estimate_many` gives too, which counts buffer rows without scheduling the programs."""
        schedule = self._schedule[0]
        return None if schedule is None else calibrated.ordered_sum(schedule.program_energy_mJ)

    @property
    def operation_cycles(self) -> tuple[int, ...]:
        """Per operation, in network order, the compute's cycles per image (`OperationCost.cycles`), without
        the breakdown's other figures (`operations` times the DMA programs on a calibrated accelerator)."""
        return tuple(self.costs[1].tolist())

    @property
    def operations(self) -> tuple[OperationCost, ...]:
        """The per-operation breakdown, in network order."""
        w_loads, cycles, accumulators, power, energy = self.costs
        movement = self.movement
        totals, loaded = self.operation_total_cycles, self.operation_program_bytes
        return tuple(
            OperationCost(op.name, op.kind, int(row[1]), int(row[2]), int(row[3]), int(w_loads[i]),
                          int(cycles[i]), int(accumulators[i]), float(power[i]), float(energy[i]),
                          None if movement is None else int(movement.offchip_bytes[i]),
                          None if movement is None else
                          ("bandwidth" if movement.bandwidth_bound[i] else "compute"), totals[i], loaded[i])
            for i, (op, row) in enumerate(zip(self.network.operations, self.network.table)))

    def to_dict(self) -> dict:
        """The JSON form printed by `nascaps estimate --json`."""
        return {
            "energy_mJ": self.energy_mJ,
            "latency_ms": self.latency_ms,
            "memory_KiB": self.memory_KiB,
            "weights": self.weights,
            "cycles": self.cycles,
            "hw_ops": [{"name": op.name, "kind": op.kind, "cycles": op.cycles,
                        "energy_mJ": op.energy_mJ, "weights": op.weights,
                        **({} if self.movement is None else {"offchip_bytes": op.offchip_bytes, "bound": op.bound,
                                                             "total_cycles": op.total_cycles,
                                                             "program_bytes": op.program_bytes})}
                       for op in self.operations],
            **({} if self.movement is None else {
                "total_cycles": self.total_cycles, "total_cycles_note": self.total_cycles_note,
                "offchip_bytes": self.offchip_bytes, "offchip_energy_mJ": self.offchip_energy_mJ,
                "dma_buffer_energy_mJ": self.dma_buffer_energy_mJ, "total_energy_mJ": self.total_energy_mJ,
                "program_bytes": self.program_bytes, "program_energy_mJ": self.program_energy_mJ}),
            "accelerator": self.accelerator.to_dict(),
            "model": self.model,
            "calibration_error_pct": self.calibration_error_pct,
        }

    @property
    def calibration_error_pct(self) -> float | None:
        """The calibration's held-out error in percent (`Calibration.held_out_error_pct`); None for the
        published model, which no calibration fits, and for a calibration that records no errors."""
        calibration = self.accelerator.calibration
        return None if calibration is None else calibration.held_out_error_pct


def estimate(network: Network, accelerator: Accelerator, most_scheduled_instructions: int | None = None) -> Estimate:
    """Cycles, latency (ms), energy (mJ) and memory (KiB, one byte per weight) of `network`.

    An accelerator that carries a calibration (`Accelerator.calibrated()`) is costed by the
    calibrated model (`capsacc.calibrated`, model "calibrated-rtl"), any other by the published one.
    The cycles, latency and energy are the compute's; the calibrated model adds the data movement
    through the accelerator's off-chip port (`Estimate.movement`), and the cycles with it
    (`Estimate.total_cycles`) when its DMA programs hold at most `most_scheduled_instructions`
    instructions (None: no limit).
    """
    transfers = None
    if accelerator.calibration is not None:
        *costs, cycles, energy, weights, transfers = calibrated.network_costs(network, accelerator.calibration)
        model = calibrated.MODEL_VERSION
    else:
        *costs, cycles, energy, weights = kernels.network_costs(network.table, accelerator.kernel_params)
        model = MODEL_VERSION
    return Estimate(cycles=cycles, latency_ms=cycles * (accelerator.period_ns * 1e-6), energy_mJ=energy,
                    weights=weights, memory_KiB=weights / 1024, network=network, accelerator=accelerator,
                    costs=tuple(costs), model=model, transfers=transfers,
                    most_scheduled_instructions=most_scheduled_instructions)


@dataclass(frozen=True)
class OperationBatch:
    """Many networks flattened into one operation table.

    `table`: int64 (n_ops, 4) of kind code, weights, sums_per_out, data_per_weight;
    network j owns rows `offsets[j]:offsets[j+1]`.
    """

    table: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_networks(cls, networks: Sequence[Network]) -> "OperationBatch":
        tables = [network.table for network in networks]
        offsets = np.zeros(len(tables) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in tables], out=offsets[1:])
        table = np.concatenate(tables) if tables else np.empty((0, 4), np.int64)
        return cls(table, offsets)



@dataclass(frozen=True)
class GenotypeBatch:
    """Many genotypes flattened into one descriptor array, checked like `Network.from_genotype`
    (`capsacc.network.check_descriptors` and `check_counts`, so that no int64 of the kernels wraps
    around); an error names the genotype and the row of `descriptors`.

    `descriptors`: int64 (n_desc, 9) layer descriptors; genotype j owns rows `offsets[j]:offsets[j+1]`.
    Skip and resize entries are left out: they do not change the hardware cost.
    """

    descriptors: np.ndarray
    offsets: np.ndarray

    def __post_init__(self):
        try:
            raw = [np.asarray(self.descriptors), np.asarray(self.offsets)]
            if any(array.size and array.dtype.kind not in "iu" for array in raw):
                raise TypeError(f"got {raw[0].dtype} and {raw[1].dtype}")
            descriptors, offsets = (np.ascontiguousarray(array, dtype=np.int64) for array in raw)
        except (OverflowError, TypeError, ValueError) as error:
            raise GenotypeFormatError(f"descriptors and offsets must be 64-bit integers ({error})") from None
        object.__setattr__(self, "descriptors", descriptors)
        object.__setattr__(self, "offsets", offsets)
        if descriptors.ndim != 2 or descriptors.shape[1] != len(DESCRIPTOR_FIELDS):
            raise GenotypeFormatError(f"descriptors must have shape (n, 9), got {descriptors.shape}")
        if offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != len(descriptors) or np.any(np.diff(offsets) < 1):
            raise GenotypeFormatError("offsets must start at 0, end at len(descriptors) and increase")
        for j in np.flatnonzero(_suspects(descriptors, offsets)).tolist():
            start, end = int(offsets[j]), int(offsets[j + 1])
            rows = descriptors[start:end].tolist()
            try:
                check_descriptors(rows)
                check_counts(rows)
            except GenotypeFormatError as error:
                raise GenotypeFormatError(f"genotype {j}: {error.reason}",
                                          None if error.index is None else start + error.index, error.field) from None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def expand(self) -> OperationBatch:
        """The operation table of every genotype, by the published expansion."""
        return OperationBatch(*kernels.expand_batch(self.descriptors, self.offsets))


def _suspects(descriptors: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per genotype, whether it may break a rule of `check_descriptors` or `check_counts` (a
    vectorized screen: every genotype that breaks one is flagged; flagged ones are checked exactly).

    The counts are bounded from above in float64 per descriptor (at most seven operations, each
    with the larger of its input and output channels and atoms, and a cubic kernel in CapsCells)
    and flagged from half of their bounds (`MAX_COUNT`, `MAX_MACS`), far beyond float64's rounding.
    The screen runs on the fields as contiguous columns (one copy): a column of the (n_desc, 9) rows is a
    view with a stride of nine words, which every operation on it reads whole cache lines of (on a search's
    batch of 20,000 genotypes the screen took 1.4 to 2.4 times as long without this copy, docs/model.md)."""
    columns = np.ascontiguousarray(descriptors.T)
    types, n_in, ch_in, caps_in, kernel, stride, n_out, ch_out, caps_out = columns
    fields = columns[1:]
    limits = np.array([FIELD_LIMITS[name] for name in DESCRIPTOR_FIELDS[1:]])[:, None]
    row_bad = (types < 0) | (types > 2) | np.any(fields < 1, axis=0) | np.any(fields > limits, axis=0)
    row_bad |= kernel > n_in
    first = offsets[:-1]
    last = offsets[1:] - 1
    is_last = np.zeros(len(descriptors), bool)
    is_last[last] = True
    same_padding = n_out == -(-n_in // np.maximum(stride, 1))
    row_bad |= ~is_last & ~same_padding
    follows = np.ones(len(descriptors), bool)
    follows[first] = False
    p_type, p_n_out, p_ch_out, p_caps_out = np.roll(columns[[0, 6, 7, 8]], 1, axis=1)
    both_caps = (p_type != 0) & (types != 0)
    link_bad = (n_in != p_n_out) | ((p_type != 0) & (types == 0)) | (both_caps & (p_type != types))
    link_bad |= np.where(both_caps, (ch_in != p_ch_out) | (caps_in != p_caps_out),
                         ch_in * caps_in != p_ch_out * p_caps_out)
    row_bad |= follows & link_bad
    row_bad[first] |= types[first] != 0
    row_bad[last] |= (types[last] == 0) | ((types[last] == 2) & (p_type[last] != 2))
    m = np.maximum(ch_in, ch_out).astype(float)
    a = np.maximum(caps_in, caps_out).astype(float)
    n = np.maximum(n_in, n_out).astype(float)
    k = kernel.astype(float)
    cube = np.where((types == 2) & ~is_last, k ** 3, k ** 2) + 1
    weights = 7 * (m * cube + 1) * m * a * a
    counts = np.stack([weights, 7 * n * n * m * a, 7 * (n * n * cube * m * m * a * a + weights * a)], axis=1)
    totals = np.add.reduceat(counts, first, axis=0)
    sums = np.maximum.reduceat(cube * m * a, first)
    count_bad = (np.any(totals[:, :2] >= MAX_COUNT / 2, axis=1) | (totals[:, 2] >= MAX_MACS / 2)
                 | (sums >= MAX_COUNT / 2))
    too_long = np.diff(offsets) > MAX_DESCRIPTORS
    return (np.add.reduceat(row_bad.astype(int), first) > 0) | count_bad | too_long


@dataclass(frozen=True)
class BatchEstimate:
    """Totals of many networks, as arrays of length n_networks: those of `Estimate`, and on a calibrated
    accelerator `total_energy_mJ`, the energy with the data movement (`Estimate.total_energy_mJ`; None for
    the published model, which has no data movement)."""

    cycles: np.ndarray
    latency_ms: np.ndarray
    energy_mJ: np.ndarray
    weights: np.ndarray
    memory_KiB: np.ndarray
    model: str = MODEL_VERSION
    total_energy_mJ: np.ndarray | None = None


def estimate_many(networks: GenotypeBatch | OperationBatch | Sequence[Network],
                  accelerator: Accelerator, memo: calibrated.StepMemo | None = None) -> BatchEstimate:
    """The totals of `estimate` for many networks at once, bit-identical to it: cycles, latency,
    energy (the compute's), weights and, on a calibrated accelerator, the energy with the data movement
    (`Estimate.total_energy_mJ`); not the rest of the data movement (`Estimate.movement`, `total_cycles`),
    which only `estimate` reports.

    A `GenotypeBatch` is expanded and costed in one pass, without building an operation table, by
    either model. A calibrated accelerator needs the operations' shapes: give networks or a
    `GenotypeBatch`, not an `OperationBatch`.

    `memo`: a `capsacc.calibrated.StepMemo` of the accelerator's calibration that the caller keeps
    across calls, for a `GenotypeBatch` on a calibrated accelerator (the same totals, sooner when
    steps repeat); without one, each call starts a fresh memo that keeps no convolution, classcaps,
    tocaps, capsadd or routing steps (`StepMemo(vector_steps=False)`: a batch meets most of them for the
    first time, and costing them where they occur is faster than a memo of them).
    """
    if memo is not None and (accelerator.calibration is None or not isinstance(networks, GenotypeBatch)
                             or memo.calibration != accelerator.calibration):
        raise AcceleratorConfigError("a StepMemo serves estimate_many on a GenotypeBatch, on an accelerator with "
                                     "the calibration it was made for")
    if accelerator.calibration is not None:
        return _calibrated_many(networks, accelerator, memo)
    params = accelerator.kernel_params
    if isinstance(networks, GenotypeBatch):
        cycles, energy, weights = kernels.genotype_totals(networks.descriptors, networks.offsets, params)
    else:
        batch = networks if isinstance(networks, OperationBatch) else OperationBatch.from_networks(networks)
        cycles, energy, weights = kernels.batch_totals(batch.table, batch.offsets, params)
    return BatchEstimate(cycles=cycles, latency_ms=cycles * (accelerator.period_ns * 1e-6), energy_mJ=energy,
                         weights=weights, memory_KiB=weights / 1024)


def _calibrated_many(networks, accelerator: Accelerator, memo: calibrated.StepMemo | None) -> BatchEstimate:
    """`estimate_many` on a calibrated accelerator: a `GenotypeBatch` by the numba kernel
    `capsacc.calibrated.genotype_costs` (one pass, no operation objects), networks one by one. A
    genotype that does not cost (an operation that does not fit the array) raises the error of
    `estimate`, naming the genotype."""
    if isinstance(networks, OperationBatch):
        raise AcceleratorConfigError("the calibrated model needs operation shapes: pass networks or a "
                                     "GenotypeBatch, not an OperationBatch")
    if isinstance(networks, GenotypeBatch):
        memo = calibrated.StepMemo(accelerator.calibration, vector_steps=False) if memo is None else memo
        cycles, energy, weights, total_energy, errors = memo.genotype_costs(
            networks.descriptors, networks.offsets, accelerator.offchip_bytes_per_cycle,
            accelerator.offchip_pJ_per_byte)
        for j in np.flatnonzero(errors).tolist():
            start, end = networks.offsets[j], networks.offsets[j + 1]
            try:
                estimate(Network(tuple(expand(networks.descriptors[start:end].tolist()))), accelerator)
            except InputError as error:
                raise type(error)(f"genotype {j}: {error}") from None
    else:
        results = [estimate(network, accelerator) for network in networks]
        cycles = np.array([r.cycles for r in results], dtype=np.int64)
        energy = np.array([r.energy_mJ for r in results], dtype=np.float64)
        total_energy = np.array([r.total_energy_mJ for r in results], dtype=np.float64)
        weights = np.array([r.weights for r in results], dtype=np.int64)
    return BatchEstimate(cycles=cycles, latency_ms=cycles * (accelerator.period_ns * 1e-6), energy_mJ=energy,
                         weights=weights, memory_KiB=weights / 1024, model=calibrated.MODEL_VERSION,
                         total_energy_mJ=total_energy)


__all__ = ["MODEL_VERSION", "OP_KINDS", "Estimate", "OperationCost", "OperationBatch", "GenotypeBatch", "BatchEstimate",
           "estimate", "estimate_many"]
