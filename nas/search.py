"""The hardware-aware NSGA-II search of NASCaps, crash-safe and reproducible.

Four minimized objectives per candidate: accuracy drop (1 - validation accuracy after the
few-epoch training), energy (mJ), latency (ms) and weight memory (KiB) of one inference on the
chosen CapsAcc accelerator (capsacc). Generation 0 is |P| random genotypes; each further
generation asks NSGA-II for |Q| offspring. Candidates over a hard budget are not trained;
failures are kept with the worst accuracy and a violation that every other candidate beats.

Everything is journaled (`nas.journal`) in the run folder as it happens; `resume=True`
continues a killed run from its last finished generation with the same random stream, looking
finished evaluations up instead of training them again, so the final Pareto set is the one an
uninterrupted run gives.
"""

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from capsacc import MODEL_VERSION, Accelerator
from capsacc.calibrated import MODEL_VERSION as CALIBRATED_MODEL
from capsacc.calibrated import StepMemo
from capsacc.cli import DEFAULT_ACCELERATOR, load_accelerator
from capsacc.errors import InputError
from capsacc.files import prepare_output_dir

from nas.evaluate import (Budgets, TrainingEvaluator, cached_dataset, check_training_data, evaluation_record,
                          hardware_costs_many, objective_energy, step_memo)
from nas.genotype import Genotype
from nas.journal import Checkpoint, Evaluation, Journal, RunLock
from nas.nsga2 import NSGA2, Population
from nas.operators import MUTATION_PROBABILITY, sampler, variation
from nas.report import write_reports
from nas.runners import make_runner
from nas.space import QUICK_SPACE, SearchSpace

JOURNAL_NAME = "journal.sqlite"
LOCK_NAME = "run.lock"
"""The run lock in the run folder (`nas.journal.RunLock`): one process works in a folder at a time."""


@dataclass(frozen=True)
class SearchConfig:
    """Settings of one search run.

    population |P| and offspring |Q| (genotypes), generations (after the initial population),
    epochs and train_samples (images, validation split included; None all) of each candidate's
    training, batch_size (images), learning_rate (Adam, first epoch), timeout_s (wall clock per
    candidate training), seed,
    accelerator (preset name or TOML path, for provenance; the `Accelerator` is passed
    separately), space, budgets, mutation_probability, workers (local Dask processes, 1 =
    in-process), scheduler (address of an existing Dask cluster), out (run folder).
    """

    dataset: str = "mnist"
    data: str | None = None
    population: int = 10
    offspring: int = 10
    generations: int = 3
    epochs: int = 2
    train_samples: int | None = 2000
    batch_size: int = 50
    learning_rate: float = 0.003
    timeout_s: float | None = 45.0
    seed: int = 0
    accelerator: str = DEFAULT_ACCELERATOR
    space: SearchSpace = field(default_factory=lambda: QUICK_SPACE)
    budgets: Budgets = field(default_factory=Budgets)
    mutation_probability: float = MUTATION_PROBABILITY
    workers: int = 1
    scheduler: str | None = None
    out: str = "nascaps-search"

    def identity(self, accelerator: Accelerator, evaluator_name: str) -> dict:
        """What a resumed run must share with the run it continues (JSON-ready), with provenance."""
        return {"dataset": self.dataset, "data": self.data, "population": self.population,
                "offspring": self.offspring, "generations": self.generations, "epochs": self.epochs,
                "train_samples": self.train_samples, "batch_size": self.batch_size,
                "learning_rate": self.learning_rate, "timeout_s": self.timeout_s,
                "seed": self.seed, "accelerator": self.accelerator, "accelerator_config": accelerator.to_dict(),
                "space": _jsonable(asdict(self.space)), "budgets": asdict(self.budgets),
                "mutation_probability": self.mutation_probability, "evaluator": evaluator_name,
                "model_version": CALIBRATED_MODEL if accelerator.calibration is not None else MODEL_VERSION,
                "energy_objective": objective_energy(accelerator)}


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@dataclass
class SearchResult:
    """A finished (or resumed and finished) run: its folder, every evaluation, the Pareto set
    (feasible trained evaluations no other one dominates), seconds of wall time of this process
    and seconds spent training in this process's run."""

    out: Path
    evaluations: list[Evaluation]
    pareto: list[Evaluation]
    wall_s: float
    trained: int


def objectives_of(evaluations: list[Evaluation]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) objectives and (n,) violations of evaluations."""
    return (np.array([e.objectives for e in evaluations], dtype=float).reshape(-1, 4),
            np.array([e.violation for e in evaluations], dtype=float))


def pareto_set(evaluations: list[Evaluation]) -> list[Evaluation]:
    """The trained, feasible evaluations that no other one dominates, by ascending accuracy drop then key."""
    from nas.nsga2 import non_dominated_fronts
    candidates = [e for e in evaluations if e.status == "ok" and e.feasible]
    if not candidates:
        return []
    F, _ = objectives_of(candidates)
    front = non_dominated_fronts(F)[0]
    return sorted((candidates[i] for i in front), key=lambda e: (e.accuracy_drop, e.key))


def _progress(total: int, generation: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=f"generation {generation}", unit="candidate", disable=not enabled,
                file=sys.stderr, leave=True)


def _evaluate(genotypes: list[Genotype], generation: int, journal: Journal, runner, accelerator: Accelerator,
              memo: StepMemo | None, budgets: Budgets, progress: bool) -> tuple[list[Evaluation], int]:
    """Evaluations of `genotypes` in order (journaled ones looked up; the others costed together by
    `hardware_costs_many` with the run's `memo`, then trained and committed one by one as they finish,
    handed to the runner by descending multiply-accumulates so that the longest trainings start first)
    and the number trained."""
    results: dict[str, Evaluation] = {}
    pending: dict[str, Genotype] = {}
    new: dict[str, Genotype] = {}
    for genotype in genotypes:
        key = genotype.key()
        if key in results or key in new:
            continue
        known = journal.lookup(key)
        if known is not None:
            results[key] = known
            continue
        new[key] = genotype
    costs = dict(zip(new, hardware_costs_many(list(new.values()), accelerator, memo)))
    for key, genotype in new.items():
        violation = budgets.violation(costs[key].energy_mJ, costs[key].latency_ms, costs[key].memory_KiB)
        if violation > 0:
            results[key] = evaluation_record(genotype, generation, costs[key], violation, None)
            journal.record(results[key])
        else:
            pending[key] = genotype
    bar = _progress(len(set(g.key() for g in genotypes)), generation, progress)
    bar.update(len(results))
    order = sorted(pending, key=lambda key: -costs[key].macs)
    for index, outcome, attempts in runner.run([pending[key].to_list() for key in order]):
        key = order[index]
        record = evaluation_record(pending[key], generation, costs[key], 0.0, outcome, attempts)
        journal.record(record)
        results[key] = journal.lookup(key)
        bar.update(1)
    bar.close()
    return [results[g.key()] for g in genotypes], len(pending)


def run_search(config: SearchConfig, accelerator: Accelerator | None = None, evaluator=None,
               resume: bool = False, progress: bool = True) -> SearchResult:
    """Run (or with `resume` continue) a search; write the journal and the reports into `config.out`.

    `evaluator`: an `nas.evaluate` evaluator (default: `TrainingEvaluator` with the config's
    training settings, after checking that the dataset loads and fits the search space; one
    intra-op thread per Dask worker). The run folder is checked and locked (`LOCK_NAME`) before
    anything else; every finished evaluation is in the journal when the run stops, whatever stops
    it (Ctrl-C, a kill, an `InputError`).
    """
    start = time.monotonic()
    accelerator = accelerator or load_accelerator(config.accelerator)
    distributed = config.workers > 1 or config.scheduler is not None
    if resume and not (Path(config.out) / JOURNAL_NAME).exists():
        raise InputError(f"{Path(config.out) / JOURNAL_NAME}: no journal to resume")
    if evaluator is None:
        from nas.train import TrainConfig
        train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
                                   learning_rate=config.learning_rate,
                                   timeout_s=config.timeout_s, train_samples=config.train_samples,
                                   threads=1 if distributed else None)
    out = prepare_output_dir(config.out)
    if evaluator is None:
        check_training_data(cached_dataset(config.dataset, config.data), train_config, config.space.n_classes)
        evaluator = TrainingEvaluator(config.dataset, config.data, train_config)
    identity = config.identity(accelerator, type(evaluator).__name__)
    with RunLock(out / LOCK_NAME, "nascaps search"):
        with Journal.open(out / JOURNAL_NAME, identity, resume) as journal:
            runner = make_runner(evaluator, config.workers, config.scheduler)
            try:
                trained = _generations(config, journal, runner, accelerator, progress)
                evaluations = journal.evaluations()
            finally:
                runner.close()
        result = SearchResult(out, evaluations, pareto_set(evaluations), time.monotonic() - start, trained)
        write_reports(out, identity, result, accelerator)
    return result


def _generations(config: SearchConfig, journal: Journal, runner, accelerator: Accelerator, progress: bool) -> int:
    """Evaluate the generations the journal does not hold yet; the number of candidates trained."""
    rng = np.random.default_rng(config.seed)
    algorithm = NSGA2(sampler(config.space), variation(config.space, config.mutation_probability),
                      config.population, config.offspring, rng, key=Genotype.key)
    first = 0
    checkpoint = journal.last_checkpoint()
    if checkpoint is not None:
        rng.bit_generator.state = checkpoint.rng_state
        members = [journal.lookup(key) for key in checkpoint.population]
        F, V = objectives_of(members)
        algorithm.restore(Population([Genotype.from_list(e.genotype) for e in members], F, V),
                          checkpoint.generation)
        first = checkpoint.generation + 1
    trained = 0
    memo = step_memo(accelerator)  # the steps this run has costed, kept across its generations
    for generation in range(first, config.generations + 1):
        asked = algorithm.ask()
        evaluations, count = _evaluate(asked, generation, journal, runner, accelerator, memo, config.budgets,
                                       progress)
        trained += count
        F, V = objectives_of(evaluations)
        algorithm.tell(asked, F, V)
        journal.checkpoint(Checkpoint(generation, [g.key() for g in algorithm.population.genotypes],
                                      rng.bit_generator.state))
    return trained
