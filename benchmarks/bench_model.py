"""Networks estimated per second by both cost models: the published NASCaps model and the model
calibrated against the RTL (`Accelerator.calibrated()`, batches of 8 images).

Published model, in one run and on one core: (a) a plain-Python implementation of the same formulas,
written here; (b) `capsacc.estimate`, one network at a time; (c) `capsacc.estimate_many` on 100,000
random genotypes of 3 to 25 descriptors. Both models on the same genotypes of the search's own
sampler (`nas.operators.random_genotype`, half of the quick space, half of the paper space; the
calibrated model refuses none of them): (d) `estimate_many(GenotypeBatch)` and (e) `estimate`, one
network at a time, of each model, and the ratio of their batch rates; the calibrated batch rate cold
(`estimate_many` without a memo: each call costs every convolution, classcaps, tocaps, capsadd and routing step
where it occurs, and keeps a fresh memo of the other steps), cold with a fresh memo of every step each call
(`StepMemo()`: each distinct step costed once and looked up), and warm (a `StepMemo` kept across calls that
holds the genotypes' steps already: the rate of a search's later calls on steps it has costed). Goals: (c) and
(d) >= 1,000,000 networks/s, (b) and (e) <= 20 us/network. Times are the process's CPU time (`time.process_time`,
best of three), so that other jobs on a shared machine do not count.
Run: python benchmarks/bench_model.py [--networks 100000] [--search-networks 20000]
"""

import argparse
import math
import subprocess
import sys
import time

import numpy as np

from capsacc import Accelerator, GenotypeBatch, Network, estimate, estimate_many
from capsacc.calibrated import StepMemo


def random_genotypes(count: int, rng: np.random.Generator) -> list[list]:
    """Genotypes of 3-25 descriptors: 1..n-2 convolutions, then capsule layers or CapsCells, with
    consistent sizes ('same' padding), channels and capsules 1..64, kernels {3,5,9} (those that fit
    the input side; the side itself when none does), strides {1,2}."""
    genotypes = []
    for _ in range(count):
        n_layers = int(rng.integers(3, 26))
        n_conv = int(rng.integers(1, n_layers - 1))
        caps_type = int(rng.integers(1, 3))
        side, channels, atoms = int(rng.choice((28, 32, 64))), int(rng.choice((1, 3))), 1
        layers = []
        for index in range(n_layers):
            layer_type = 0 if index < n_conv else caps_type
            kernel = int(rng.choice([k for k in (3, 5, 9) if k <= side] or [side]))
            stride = int(rng.integers(1, 3))
            n_out = -(-side // stride)
            ch_out = int(rng.integers(1, 65))
            caps_out = 1 if layer_type == 0 else int(rng.integers(1, 65))
            layers.append([layer_type, side, channels, atoms, kernel, stride, n_out, ch_out, caps_out])
            side, channels, atoms = n_out, ch_out, caps_out
        genotypes.append(layers + [[-1], [1]])
    return genotypes


def plain_python_estimate(genotype: list, acc: Accelerator) -> tuple[float, float, int]:
    """(energy_mJ, latency_ms, weights) by the formulas of docs/model.md in plain Python."""
    descriptors = genotype[:-2]
    last = len(descriptors) - 1
    ops = []
    for i, (kind, n_in, ch_in, caps_in, k, stride, n_out, ch_out, caps_out) in enumerate(descriptors):
        fields = (n_in, ch_in, caps_in, k, n_out, ch_out, caps_out)
        if kind == 0:
            ops.append(("conv",) + fields)
        elif kind == 1 and i < last:
            ops.append(("convcaps",) + fields)
        elif kind == 1:
            ops += [("classcaps",) + fields] + [("routing",) + fields] * 5
        elif i < last - 1:
            ops += [("convcaps",) + fields] + [("convcaps", n_out, ch_out, caps_out, k, n_out, ch_out, caps_out)] * 3
        elif i == last - 1:
            inner = ("convcaps", n_out, ch_out, caps_out, k, n_out, ch_out, caps_out)
            ops += [("convcaps",) + fields] + [inner] * 2 + [("convcaps3d",) + fields]
        else:
            ops += [("routing",) + fields] * 6 + [("classcaps",) + fields]
    energy, cycles_total, weights_total = 0.0, 0, 0
    rows, cols, terms = acc.rows, acc.cols, acc.rows * acc.inputs_per_pe
    for kind, n_in, ch_in, caps_in, k, n_out, ch_out, caps_out in ops:
        volume = k ** 3 if kind == "convcaps3d" else k ** 2
        if kind == "routing":
            weights, sums = ch_in * k * k * ch_out, caps_in
        else:
            weights, sums = (ch_in * volume + 1) * ch_out * caps_out * caps_in, (volume + 1) * ch_in * caps_in
        data = 1 if kind in ("classcaps", "routing") else n_out * n_out * ch_in * caps_in
        w_loads = math.ceil(weights / cols / min(terms, sums))
        cycles = (rows + acc.pe_stages - 1) * w_loads + data
        accumulators = cols if data == 1 else cols * max(sums - terms + 1, 1)
        power = acc.pe_power_mW * rows * cols + accumulators * acc.reg_power_mW
        energy += power * cycles * (acc.period_ns * 1e-9)
        cycles_total += cycles
        weights_total += weights
    return energy, cycles_total * acc.period_ns * 1e-6, weights_total


def rate(function, count: int, repeats: int = 3, prepare=lambda: None) -> float:
    """Best networks per second (CPU time) of `function()` which estimates `count` networks, `prepare()` run
    untimed before each call."""
    best = math.inf
    for _ in range(repeats):
        prepare()
        start = time.process_time()
        function()
        best = min(best, time.process_time() - start)
    return count / best


def search_genotypes(count: int, seed: int) -> list[list]:
    """`count` genotypes of the search's sampler, half of the quick space and half of the paper space."""
    from nas.cli import load_space
    from nas.operators import random_genotype
    rng = np.random.default_rng(seed)
    return [random_genotype(load_space("quick" if i % 2 else "paper"), rng).to_list() for i in range(count)]


def flatten(genotypes: list[list]) -> GenotypeBatch:
    """The genotypes' layer descriptors as a `GenotypeBatch`."""
    descriptors = np.array([d for g in genotypes for d in g[:-2]], dtype=np.int64)
    offsets = np.cumsum([0] + [len(g) - 2 for g in genotypes]).astype(np.int64)
    return GenotypeBatch(descriptors, offsets)


def both_models(genotypes: list[list]) -> tuple[list[tuple[str, float, float]], int]:
    """(model, estimate_many networks/s, estimate us/network) of the published and the calibrated model
    on `genotypes`, after checking that the batch totals equal `estimate`'s; the calibrated model three times:
    "calibrated, cold", `estimate_many` without `memo` (a fresh memo of the steps not of `VECTOR_KINDS`,
    the others costed where they occur); "cold, memo of all", each call with a fresh `StepMemo()` of every
    step; "calibrated, warm", with a `StepMemo` kept across calls that holds every step of these genotypes
    already (as after an earlier call on them); the totals of all three checked equal; and the number of
    distinct steps of the batch (those a fresh memo of every step counts, `len` of the warm memo)."""
    batch = flatten(genotypes)
    networks = [Network.from_genotype(g) for g in genotypes]
    sample = networks[:2000]
    figures = []
    for name, accelerator in (("published", Accelerator.published()), ("calibrated", Accelerator.calibrated())):
        many = estimate_many(batch, accelerator)
        assert many.cycles[:len(sample)].tolist() == [estimate(n, accelerator).cycles for n in sample]
        assert many.energy_mJ[:len(sample)].tolist() == [estimate(n, accelerator).energy_mJ for n in sample]
        single = 1e6 / rate(lambda: [estimate(n, accelerator) for n in sample], len(sample))
        if accelerator.calibration is None:
            figures.append((name, rate(lambda: estimate_many(batch, accelerator), len(networks)), single))
            continue
        figures.append(("calibrated, cold", rate(lambda: estimate_many(batch, accelerator), len(networks)), single))
        memo = StepMemo(accelerator.calibration)
        kept = estimate_many(batch, accelerator, memo=memo)
        distinct = len(memo)
        assert kept.cycles.tolist() == many.cycles.tolist() and kept.energy_mJ.tolist() == many.energy_mJ.tolist()
        figures.append(("cold, memo of all", rate(lambda: estimate_many(batch, accelerator,
                                                                        memo=StepMemo(accelerator.calibration)),
                                                  len(networks)), single))
        figures.append(("calibrated, warm", rate(lambda: estimate_many(batch, accelerator, memo=memo), len(networks)),
                        single))
    return figures, distinct


COLD_START = """
import time
start = time.perf_counter()
from capsacc import PRESETS, Accelerator, GenotypeBatch, Network, estimate, estimate_many
accelerator = Accelerator.published()
estimate(Network.preset("deepcaps"), accelerator)
layers = PRESETS["deepcaps"][:-2]
estimate_many(GenotypeBatch(layers, [0, len(layers)]), accelerator)
print(time.perf_counter() - start)
"""


def cold_start_s() -> float:
    """Seconds for a new process to import capsacc and estimate once (numba's on-disk cache warm)."""
    subprocess.run([sys.executable, "-c", COLD_START], check=True, capture_output=True)
    done = subprocess.run([sys.executable, "-c", COLD_START], check=True, capture_output=True, text=True)
    return float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=100_000)
    parser.add_argument("--search-networks", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    acc = Accelerator.published()
    genotypes = random_genotypes(args.networks, np.random.default_rng(args.seed))
    descriptors = np.array([d for g in genotypes for d in g[:-2]], dtype=np.int64)
    offsets = np.cumsum([0] + [len(g) - 2 for g in genotypes]).astype(np.int64)

    sample = genotypes[:5000]
    networks = [Network.from_genotype(g) for g in sample]
    batch = GenotypeBatch(descriptors, offsets)
    estimate(networks[0], acc)
    table = batch.expand()
    estimate_many(batch, acc)
    estimate_many(table, acc)

    many = estimate_many(batch, acc)
    reference = [plain_python_estimate(g, acc) for g in sample]
    assert np.allclose(many.energy_mJ[:len(sample)], [r[0] for r in reference], rtol=1e-12)
    assert many.weights[:len(sample)].tolist() == [r[2] for r in reference]

    figures = [
        ("(a) plain Python, one at a time", rate(lambda: [plain_python_estimate(g, acc) for g in sample],
                                                   len(sample))),
        ("(b) estimate(network), one at a time", rate(lambda: [estimate(n, acc) for n in networks], len(sample))),
        ("(b') estimate(Network.from_genotype(g))",
         rate(lambda: [estimate(Network.from_genotype(g), acc) for g in sample], len(sample))),
        ("(c) estimate_many(GenotypeBatch)", rate(lambda: estimate_many(batch, acc), len(genotypes))),
        ("(c') estimate_many(expanded OperationBatch)", rate(lambda: estimate_many(table, acc), len(genotypes))),
    ]
    base = figures[0][1]
    mean_ops = table.table.shape[0] / len(genotypes)
    print(f"{len(genotypes)} random genotypes, {len(descriptors) / len(genotypes):.1f} descriptors and "
          f"{mean_ops:.1f} operations each on average; plain-Python and single rows on {len(sample)} of them")
    print(f"{'implementation':<42}{'networks_per_s':>16}{'us_per_network':>16}{'ratio_to_a':>12}")
    for name, value in figures:
        print(f"{name:<42}{value:>16,.0f}{1e6 / value:>16.3f}{value / base:>12.1f}")
    print(f"new process, import + first estimate (numba cache=True, no recompilation): {cold_start_s():.2f} s")
    goal_c, goal_b = figures[3][1] >= 1_000_000, 1e6 / figures[1][1] <= 20
    print(f"goal (c) >= 1,000,000 networks/s: {'met' if goal_c else 'missed'}; "
          f"goal (b) <= 20 us/network: {'met' if goal_b else 'missed'}")
    searched = search_genotypes(args.search_networks, args.seed)
    models, distinct = both_models(searched)
    print(f"both models on {len(searched)} genotypes of the search's sampler (quick and paper spaces), "
          f"{sum(len(g) - 2 for g in searched) / len(searched):.1f} descriptors each on average; "
          "calibrated: batches of 8 images, batch totals equal to estimate's; cold: estimate_many without a memo "
          "(convolution, classcaps, tocaps, capsadd and routing steps costed where they occur), cold, memo of all: "
          "a fresh StepMemo of every step each call, warm: a StepMemo kept across calls, holding these genotypes' "
          "steps")
    print(f"{'model':<18}{'(d) estimate_many networks_per_s':>34}{'(e) estimate us_per_network':>30}")
    for name, per_second, micros in models:
        print(f"{name:<18}{per_second:>34,.0f}{micros:>30.2f}")
    published, cold, memo_cold, warm = models
    print(f"published / calibrated batch rate: {published[1] / cold[1]:.1f} cold, {published[1] / warm[1]:.1f} warm; "
          f"calibrated cold / cold with a memo of all: {cold[1] / memo_cold[1]:.2f}")
    memo_ns, warm_ns, new_steps = 1e9 / memo_cold[1], 1e9 / warm[1], distinct / len(searched)
    print(f"cold with a memo of all = warm + new steps: {memo_ns:,.0f} ns a network = {warm_ns:,.0f} ns + "
          f"{new_steps:.2f} steps not met before ({distinct:,} distinct steps in the batch) x "
          f"{(memo_ns - warm_ns) / new_steps:,.0f} ns each (counting, prediction, the memo's insertion); calibrated "
          f"cold {1e9 / cold[1]:,.0f} ns a network; 1,000,000 networks/s cold needs 1,000 ns a network")
    for name, per_second, micros in (published, cold, warm):
        print(f"goal {name} (d) >= 1,000,000 networks/s: {'met' if per_second >= 1_000_000 else 'missed'}; "
              f"(e) <= 20 us/network: {'met' if micros <= 20 else 'missed'}")

if __name__ == "__main__":
    main()
