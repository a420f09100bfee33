"""The search: objectives, budgets, failures, journal reuse, reports, CLI (one real training run)."""

import csv
import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from capsacc import Accelerator, estimate
from capsacc.cli import load_accelerator, main
from nas.evaluate import FAILED_VIOLATION, Budgets, SyntheticEvaluator, hardware_costs, hardware_costs_many, step_memo
from nas.genotype import Genotype
from nas.journal import read_journal
from nas.nsga2 import domination_matrix
from nas.search import SearchConfig, objectives_of, pareto_set, run_search
from nas.space import QUICK_SPACE, SearchSpace

TINY = SearchSpace(kernels=(3, 5), strides=(1, 2), channels=(2, 6), capsules=(1, 4), convolutions=(1, 1),
                   sabour_layers=(2, 2), capscells=(4, 4), allow_resize=False)


@dataclass
class CountingEvaluator:
    """Counts calls per genotype key (in-process only)."""

    inner: SyntheticEvaluator = field(default_factory=SyntheticEvaluator)
    calls: dict = field(default_factory=dict)

    def __call__(self, genotype_list):
        key = Genotype.from_list(genotype_list).key()
        self.calls[key] = self.calls.get(key, 0) + 1
        return self.inner(genotype_list)


def _config(tmp_path, name="run", **changes) -> SearchConfig:
    values = dict(population=8, offspring=6, generations=4, seed=7, out=str(tmp_path / name))
    values.update(changes)
    return SearchConfig(**values)


def test_search_objectives_come_from_capsacc_and_the_evaluator(tmp_path):
    """The hardware objectives of the default accelerator, the calibrated one."""
    result = run_search(_config(tmp_path), evaluator=SyntheticEvaluator(), progress=False)
    assert len(result.evaluations) <= 8 + 4 * 6 and result.trained == len(result.evaluations)
    accelerator = Accelerator.calibrated()
    assert result.pareto and json.loads((tmp_path / "run" / "pareto.json").read_text())["provenance"][
        "model_version"] == "calibrated-rtl"
    for e in result.evaluations:
        costs = estimate(Genotype.from_list(e.genotype).to_network(), accelerator)
        assert (e.energy_mJ, e.latency_ms, e.memory_KiB) == (costs.total_energy_mJ, costs.latency_ms, costs.memory_KiB)
        assert e.energy_mJ > costs.energy_mJ  # the data movement's energy counts
        assert e.accuracy_drop == pytest.approx(1 - e.val_accuracy[-1])
        Genotype.from_list(e.genotype).validate(QUICK_SPACE)
    F, _ = objectives_of(result.pareto)
    dominates = domination_matrix(F)
    assert not dominates.any()
    everything, _ = objectives_of(result.evaluations)
    for row in F:
        assert not np.any(np.all(everything <= row, axis=1) & np.any(everything < row, axis=1))


@pytest.mark.parametrize("name", ["calibrated", "published"])
def test_generations_costed_in_one_batch_get_the_figures_of_estimate(name):
    """`hardware_costs_many` (how a search costs a generation: one `estimate_many` call, a `StepMemo` kept
    across the run's generations) gives each genotype the figures of `capsacc.estimate`, bit for bit,
    whether its steps are new to the memo or met in an earlier call."""
    from nas.operators import random_genotype
    accelerator = load_accelerator(name)
    memo = step_memo(accelerator)
    rng = np.random.default_rng(16)
    for space in (QUICK_SPACE, SearchSpace()):
        for _ in range(3):
            genotypes = [random_genotype(space, rng) for _ in range(10)]
            genotypes += genotypes[:3]
            for genotype, costs in zip(genotypes, hardware_costs_many(genotypes, accelerator, memo)):
                network = genotype.to_network()
                result = estimate(network, accelerator)
                energy = result.energy_mJ if result.total_energy_mJ is None else result.total_energy_mJ
                assert (costs.energy_mJ, costs.latency_ms, costs.memory_KiB, costs.macs) == \
                    (energy, result.latency_ms, result.memory_KiB, network.macs)
    assert (memo is None) == (accelerator.calibration is None) and (memo is None or len(memo) > 100)
    assert hardware_costs_many([], accelerator, memo) == []


def test_each_generation_is_trained_longest_first(tmp_path):
    evaluator = CountingEvaluator()
    result = run_search(_config(tmp_path), evaluator=evaluator, progress=False)
    generation_of = {e.key: e.generation for e in result.evaluations}
    for generation in range(5):
        called = [key for key in evaluator.calls if generation_of[key] == generation]
        macs = [Genotype.from_list(json.loads(key)).to_network().macs for key in called]
        assert len(called) > 1 and macs == sorted(macs, reverse=True)


def test_same_seed_same_pareto_set_and_different_seed_differs(tmp_path):
    first = run_search(_config(tmp_path, "a"), evaluator=SyntheticEvaluator(), progress=False)
    second = run_search(_config(tmp_path, "b"), evaluator=SyntheticEvaluator(), progress=False)
    third = run_search(_config(tmp_path, "c", seed=8), evaluator=SyntheticEvaluator(), progress=False)
    assert [e.key for e in first.pareto] == [e.key for e in second.pareto]
    assert [e.key for e in first.evaluations] == [e.key for e in second.evaluations]
    assert [e.key for e in first.evaluations] != [e.key for e in third.evaluations]


def test_over_budget_candidates_are_not_trained_and_are_dominated(tmp_path):
    """The budget is the median energy of the seeded first population (the same with or without a
    budget), so that it holds candidates on both sides whatever the model prices."""
    first = run_search(_config(tmp_path, "unbounded"), evaluator=SyntheticEvaluator(), progress=False)
    budget = float(np.median([e.energy_mJ for e in first.evaluations[:8]]))
    evaluator = CountingEvaluator()
    result = run_search(_config(tmp_path, budgets=Budgets(max_energy_mJ=budget)), evaluator=evaluator,
                        progress=False)
    over = [e for e in result.evaluations if e.status == "over_budget"]
    feasible = [e for e in result.evaluations if e.status == "ok"]
    assert over and feasible
    for e in over:
        assert e.energy_mJ > budget and e.key not in evaluator.calls and e.violation > 0
        assert e.violation == pytest.approx(e.energy_mJ / budget - 1)
    assert all(e.energy_mJ <= budget for e in feasible)
    assert all(e.energy_mJ <= budget for e in result.pareto)
    F, V = objectives_of(feasible[:1] + over)
    assert domination_matrix(F, V)[0, 1:].all()


def test_failed_candidates_get_the_worst_objectives_and_the_search_goes_on(tmp_path):
    result = run_search(_config(tmp_path), evaluator=SyntheticEvaluator(fail_share=0.3), progress=False)
    failed = [e for e in result.evaluations if e.status == "nan"]
    assert failed and len(result.pareto) > 0
    for e in failed:
        assert e.accuracy_drop == 1.0 and e.violation == FAILED_VIOLATION
        assert e.key not in {p.key for p in result.pareto}


def test_an_exception_in_the_evaluator_is_recorded_as_invalid(tmp_path):
    def broken(genotype_list):
        if len(genotype_list) % 2:
            raise RuntimeError("boom")
        return SyntheticEvaluator()(genotype_list)

    result = run_search(_config(tmp_path, generations=1), evaluator=broken, progress=False)
    invalid = [e for e in result.evaluations if e.status == "invalid"]
    assert invalid and all("RuntimeError: boom" in e.message for e in invalid)


def test_no_genotype_is_trained_twice_and_resume_of_a_finished_run_trains_nothing(tmp_path):
    evaluator = CountingEvaluator()
    config = _config(tmp_path, generations=6, population=6, offspring=6)
    result = run_search(config, evaluator=evaluator, progress=False)
    assert max(evaluator.calls.values()) == 1
    assert len(evaluator.calls) == len(result.evaluations)
    again = CountingEvaluator()
    resumed = run_search(config, evaluator=again, resume=True, progress=False)
    assert again.calls == {} and resumed.trained == 0
    assert [e.key for e in resumed.pareto] == [e.key for e in result.pareto]


def test_resume_with_more_generations_continues_the_same_stream(tmp_path):
    whole = run_search(_config(tmp_path, "whole", generations=5), evaluator=SyntheticEvaluator(), progress=False)
    run_search(_config(tmp_path, "part", generations=2), evaluator=SyntheticEvaluator(), progress=False)
    longer = run_search(_config(tmp_path, "part", generations=5), evaluator=SyntheticEvaluator(), resume=True,
                        progress=False)
    assert [e.key for e in longer.evaluations] == [e.key for e in whole.evaluations]
    assert [e.key for e in longer.pareto] == [e.key for e in whole.pareto]


def test_reports_have_units_and_provenance(tmp_path):
    config = _config(tmp_path, generations=2)
    result = run_search(config, evaluator=SyntheticEvaluator(fail_share=0.2), progress=False)
    out = tmp_path / "run"
    with open(out / "evaluations.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(result.evaluations)
    assert {"accuracy_drop", "energy_mJ", "latency_ms", "memory_KiB", "seconds", "worker", "attempts"} <= set(rows[0])
    assert sum(int(r["pareto"]) for r in rows) == len(result.pareto)
    document = json.loads((out / "pareto.json").read_text())
    provenance = document["provenance"]
    for key in ("seed", "space", "accelerator", "accelerator_config", "dataset", "epochs", "versions",
                "model_version"):
        assert key in provenance
    assert provenance["seed"] == 7 and provenance["space"]["kernels"] == list(QUICK_SPACE.kernels)
    assert [p["genotype"] for p in document["pareto"]] == [e.genotype for e in result.pareto]
    assert (out / "pareto.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "Pareto set" in report and "capsnet" in report and "deepcaps" in report
    config_journal, evaluations, checkpoints = read_journal(out / "journal.sqlite")
    assert [c.generation for c in checkpoints] == [0, 1, 2] and len(evaluations) == len(result.evaluations)


def test_pareto_set_keeps_only_trained_feasible_candidates(tmp_path):
    result = run_search(_config(tmp_path, budgets=Budgets(max_latency_ms=0.05)),
                        evaluator=SyntheticEvaluator(fail_share=0.2), progress=False)
    assert pareto_set(result.evaluations) == result.pareto
    assert all(e.status == "ok" and e.violation == 0 for e in result.pareto)


def test_cli_rejects_bad_options(tmp_path, capsys):
    assert main(["search", "--mutation-probability", "2", "--out", str(tmp_path / "x")]) == 2
    assert "mutation-probability" in capsys.readouterr().err
    assert main(["search", "--population", "0"]) == 2
    assert "--population: must be at least 1, got 0" in capsys.readouterr().err
    assert main(["search", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.keras
def test_cli_end_to_end_with_real_training(tmp_path, capsys):
    """Two parents, two offspring, one generation, one epoch on 200 embedded MNIST images."""
    space = tmp_path / "space.toml"
    space.write_text("kernels = [3, 5]\nchannels = [2, 4]\ncapsules = [1, 4]\nconvolutions = [1, 1]\n"
                     "sabour_layers = [2, 2]\ncapscells = [4, 4]\nallow_resize = false\n")
    out = tmp_path / "run"
    code = main(["search", "--population", "2", "--offspring", "2", "--generations", "1", "--epochs", "1",
                 "--train-samples", "200", "--batch-size", "50", "--space", str(space), "--out", str(out),
                 "--quiet", "--seed", "3"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Pareto set of" in printed and "wrote" in printed
    _, evaluations, _ = read_journal(out / "journal.sqlite")
    assert 2 <= len(evaluations) <= 4
    trained = [e for e in evaluations if e.status == "ok"]
    assert trained and all(len(e.val_accuracy) == 1 and 0 <= e.val_accuracy[0] <= 1 for e in trained)
    assert all(e.seconds > 0 and e.params > 0 for e in trained)
    provenance = json.loads((out / "pareto.json").read_text())["provenance"]
    assert provenance["evaluator"] == "TrainingEvaluator" and provenance["train_samples"] == 200


def test_pearson_and_the_correlation_table():
    from nas.pcc import correlation_table, pearson
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    records = [{"status": "ok", "val_accuracy": [0.1 * i, 0.2 * i], "test_accuracy": 0.3 * i, "seconds": 10.0 * i}
               for i in range(1, 4)] + [{"status": "timeout", "val_accuracy": [0.5], "test_accuracy": None,
                                          "seconds": 5.0}]
    table = correlation_table(records, (1, 2), 2)
    assert [row["networks"] for row in table] == [3, 3]
    assert table[0]["pearson_r"] == pytest.approx(1.0)
    assert table[0]["median_cumulative_s"] == pytest.approx(10.0) and table[1]["median_cumulative_s"] == 20.0


@pytest.mark.keras
def test_pcc_and_finalize_on_tiny_budgets(tmp_path, capsys):
    from nas.finalize import finalize
    space = tmp_path / "space.toml"
    space.write_text("kernels = [3]\nchannels = [2, 3]\ncapsules = [1, 2]\nconvolutions = [1, 1]\n"
                     "sabour_layers = [2, 2]\ncapscells = [4, 4]\nallow_resize = false\n")
    out = tmp_path / "pcc"
    assert main(["pcc", "--networks", "3", "--epochs", "1", "--full-epochs", "2", "--train-samples", "100",
                 "--batch-size", "50", "--space", str(space), "--out", str(out)]) == 0
    assert "pearson_r" in capsys.readouterr().out
    document = json.loads((out / "pcc.json").read_text())
    assert len(document["networks"]) == 3 and document["table"][0]["epochs"] == 1
    assert all(len(n["val_accuracy"]) in (0, 2) for n in document["networks"])
    run = tmp_path / "run"
    run_search(SearchConfig(population=2, offspring=1, generations=1, seed=2, out=str(run), space=TINY),
               evaluator=SyntheticEvaluator(), progress=False)
    rows = finalize(run, epochs=1, train_samples=100, progress=False)
    pareto = json.loads((run / "pareto.json").read_text())["pareto"]
    assert [r["genotype"] for r in rows] == [p["genotype"] for p in pareto]
    assert all(r["status"] != "ok" or 0 <= r["test_accuracy"] <= 1 for r in rows)
    assert (run / "final.md").read_text().count("\n| ") == len(rows) + 1
    lines = (run / "final.jsonl").read_text().splitlines()
    assert finalize(run, epochs=1, train_samples=100, progress=False) == rows
    assert (run / "final.jsonl").read_text().splitlines() == lines


def test_the_calibrated_accelerator_gives_its_own_objectives(tmp_path):
    from capsacc.cli import load_accelerator
    calibrated = load_accelerator("calibrated")
    config = _config(tmp_path, generations=1, accelerator="calibrated")
    result = run_search(config, calibrated, evaluator=SyntheticEvaluator(), progress=False)
    published = Accelerator.published()
    for e in result.evaluations[:3]:
        genotype = Genotype.from_list(e.genotype)
        assert e.energy_mJ == hardware_costs(genotype, calibrated).energy_mJ
        assert e.energy_mJ != hardware_costs(genotype, published).energy_mJ
    provenance = json.loads((tmp_path / "run" / "pareto.json").read_text())["provenance"]
    assert provenance["accelerator"] == "calibrated" and provenance["accelerator_config"] == calibrated.to_dict()
    assert provenance["energy_objective"] == "compute+offchip+dma_buffer"
