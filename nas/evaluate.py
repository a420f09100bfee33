"""Evaluating candidates: hardware costs from capsacc, hard budgets, training in this process or
on Dask workers.

An evaluator is a picklable callable `evaluator(genotype_list) -> Outcome` (the genotype in the
NASCaps list form). An exception it raises is the candidate's failure (`invalid`), except
`InputError`, which says that the input (dataset, search space, settings) is bad for every
candidate: the runners raise it on and the search stops. `TrainingEvaluator` trains with `nas.train.train`; `SyntheticEvaluator`
stands in for it in tests and benchmarks of the search machinery (a deterministic accuracy from
the genotype's hardware costs, after an optional sleep), so they need no Keras.
"""

import functools
import hashlib
import math
import os
import socket
import time
from dataclasses import dataclass, field

import numpy as np

from capsacc import Accelerator, GenotypeBatch, estimate_many
from capsacc.calibrated import StepMemo
from capsacc.errors import InputError

from nas.genotype import Genotype
from nas.journal import Evaluation

FAILED_VIOLATION = 1.0e6
"""Constraint violation of a candidate whose training failed (nan, timeout, oom, invalid) or whose
worker died twice: larger than any budget excess, so every trained or over-budget candidate
dominates it."""


@dataclass(frozen=True)
class Budgets:
    """Optional hard budgets (None: none). A candidate over a budget is not trained."""

    max_latency_ms: float | None = None
    max_energy_mJ: float | None = None
    max_memory_KiB: float | None = None

    def violation(self, energy_mJ: float, latency_ms: float, memory_KiB: float) -> float:
        """Summed relative excess over the budgets (0 when all are met)."""
        total = 0.0
        for value, budget in ((latency_ms, self.max_latency_ms), (energy_mJ, self.max_energy_mJ),
                              (memory_KiB, self.max_memory_KiB)):
            if budget is not None and value > budget:
                total += value / budget - 1.0
        return total


@dataclass(frozen=True)
class Costs:
    """Hardware figures of one genotype on one accelerator, and its multiply-accumulates per
    inference (`capsacc.Network.macs`: how long its training is expected to take, relatively).
    `energy_mJ` is the search's energy objective (`objective_energy`)."""

    energy_mJ: float
    latency_ms: float
    memory_KiB: float
    macs: int


def objective_energy(accelerator: Accelerator) -> str:
    """What the search's `energy_mJ` holds on `accelerator` (recorded in a run's identity): on a calibrated one
    the energy with the data movement (`capsacc.Estimate.total_energy_mJ`: the compute's events, the off-chip
    traffic and the DMA's buffer rows), on the published model the compute's (it has no data movement)."""
    return "compute+offchip+dma_buffer" if accelerator.calibration is not None else "compute"


def hardware_costs(genotype: Genotype, accelerator: Accelerator) -> Costs:
    """Energy (mJ), latency (ms), weight memory (KiB) and multiply-accumulates of one inference, from capsacc
    (`hardware_costs_many` of this genotype alone)."""
    return hardware_costs_many([genotype], accelerator)[0]


def step_memo(accelerator: Accelerator) -> StepMemo | None:
    """A fresh `capsacc.calibrated.StepMemo` for `hardware_costs_many` on a calibrated `accelerator` (None for
    the published model, which has no steps to remember); a search run keeps one for all its generations."""
    return None if accelerator.calibration is None else StepMemo(accelerator.calibration)


def hardware_costs_many(genotypes: list[Genotype], accelerator: Accelerator,
                        memo: StepMemo | None = None) -> list[Costs]:
    """`Costs` of each of `genotypes`, in order, from one `capsacc.estimate_many` call on their `GenotypeBatch`
    (the totals of `capsacc.estimate`, bit for bit; the energy `objective_energy`). `memo`: the caller's
    `step_memo(accelerator)`, kept across calls so that a step costed once is not costed again (None: a fresh
    one for this call)."""
    if not genotypes:
        return []
    layers = [genotype.layers for genotype in genotypes]
    offsets = np.cumsum([0] + [len(descriptors) for descriptors in layers])
    batch = GenotypeBatch(np.array([list(d) for descriptors in layers for d in descriptors], np.int64), offsets)
    result = estimate_many(batch, accelerator, memo=memo)
    energies = result.energy_mJ if result.total_energy_mJ is None else result.total_energy_mJ
    return [Costs(energy, latency, memory, genotype.to_network().macs)
            for genotype, energy, latency, memory in zip(genotypes, energies.tolist(), result.latency_ms.tolist(),
                                                         result.memory_KiB.tolist())]


@dataclass
class Outcome:
    """What an evaluator returns: a training status, validation accuracy per epoch (fraction),
    wall seconds of the evaluation, classifier parameters, a message, and the worker it ran on."""

    status: str
    val_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0
    params: int = 0
    message: str = ""
    worker: str = ""


def worker_name() -> str:
    """host:pid of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


@functools.lru_cache(maxsize=2)
def cached_dataset(name: str, path: str | None):
    """`nas.datasets.load_dataset(name, path)`, loaded once per process."""
    from nas.datasets import load_dataset
    return load_dataset(name, path)


def check_training_data(dataset, config, n_classes: int | None = None) -> None:
    """Check, before any training, that `config` (a `TrainConfig`) leaves images in both the training
    and the validation part of `dataset`, and that the dataset has `n_classes` classes (the search
    space's class layer); raises `InputError` otherwise, since every candidate would fail the same way."""
    from nas.train import split
    train_part, validation_part = split(dataset, config)
    if len(train_part) == 0 or len(validation_part) == 0:
        used = len(train_part) + len(validation_part)
        raise InputError(f"dataset {dataset.source}: {used} training images (--train-samples {config.train_samples}) "
                         f"leave {len(train_part)} for training and {len(validation_part)} for the validation "
                         f"split of {config.validation_split:g}; use more images")
    if n_classes is not None and dataset.n_classes != n_classes:
        raise InputError(f"dataset {dataset.source}: {dataset.n_classes} classes, the search space expects "
                         f"{n_classes} (n_classes)")


@dataclass(frozen=True)
class TrainingEvaluator:
    """Few-epoch training of a candidate (`nas.train.train` with `config`, a `TrainConfig`) on a
    dataset loaded once per process."""

    dataset: str
    data_path: str | None
    config: object

    def __call__(self, genotype_list: list) -> Outcome:
        from nas.train import train
        result = train(Genotype.from_list(genotype_list), cached_dataset(self.dataset, self.data_path), self.config,
                       progress=False)
        return Outcome(result.status, list(result.val_accuracy), result.seconds, result.params, result.message,
                       worker_name())


@dataclass(frozen=True)
class SyntheticEvaluator:
    """A stand-in for training (tests, benchmarks): sleeps `sleep_s`, then reports one epoch of
    validation accuracy that grows with the network's weight memory and falls with its latency,
    with a genotype-dependent jitter; genotypes whose key hash falls under `fail_share` report
    `nan`. Deterministic for a genotype."""

    sleep_s: float = 0.0
    fail_share: float = 0.0
    accelerator: Accelerator = field(default_factory=Accelerator.published)

    def __call__(self, genotype_list: list) -> Outcome:
        start = time.monotonic()
        if self.sleep_s:
            time.sleep(self.sleep_s)
        genotype = Genotype.from_list(genotype_list)
        digest = int(hashlib.sha256(genotype.key().encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        if digest < self.fail_share:
            return Outcome("nan", [], time.monotonic() - start, 0, "synthetic failure", worker_name())
        costs = hardware_costs(genotype, self.accelerator)
        accuracy = 0.5 + 0.4 * costs.memory_KiB / (costs.memory_KiB + 50.0) - 0.05 * digest \
            + 0.04 * costs.latency_ms / (costs.latency_ms + 1.0)
        return Outcome("ok", [round(accuracy, 6)], time.monotonic() - start, int(costs.memory_KiB * 1024), "",
                       worker_name())


def evaluation_record(genotype: Genotype, generation: int, costs: Costs, violation: float,
                      outcome: Outcome | None, attempts: int = 1) -> Evaluation:
    """The journal record of a candidate: `outcome` None means not trained (over budget)."""
    if outcome is None:
        return Evaluation(genotype.key(), genotype.to_list(), generation, "over_budget", 1.0, costs.energy_mJ,
                          costs.latency_ms, costs.memory_KiB, violation, message="over a hard budget, not trained")
    status, message = outcome.status, outcome.message
    if status == "ok" and not all(math.isfinite(a) and 0 <= a <= 1 for a in outcome.val_accuracy):
        status, message = "invalid", f"validation accuracies {outcome.val_accuracy} are not fractions"
    if status == "ok" and not outcome.val_accuracy:
        status = "invalid"
    ok = status == "ok"
    accuracies = tuple(outcome.val_accuracy) if ok else tuple(a for a in outcome.val_accuracy if 0 <= a <= 1)
    return Evaluation(genotype.key(), genotype.to_list(), generation, status,
                      1.0 - outcome.val_accuracy[-1] if ok else 1.0, costs.energy_mJ, costs.latency_ms,
                      costs.memory_KiB, violation if ok else FAILED_VIOLATION, accuracies,
                      outcome.seconds, outcome.worker, attempts, message, outcome.params)
