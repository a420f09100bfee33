"""What the size of the calibrated model's step memo costs `estimate_many`: the memory of its look-ups.

The calibrated batch kernel (`capsacc.calibrated.genotype_costs`) with a memo of every step (`StepMemo()`, as a
search keeps; an empty one is sized to the batch at its first call: 262,144 slots, 16 MiB, for 20,000 genotypes of
the search's sampler) finds every step of a network in its 64-byte rows, so each network reads about 16 rows at
random places (`estimate_many` without a memo keeps none of the convolution, classcaps, tocaps, capsadd and
routing steps: see `bench_model.py`). Three measurements, in one run and on one core (CPU time,
`time.process_time`, best of `--repeats`):

(a) the machine: ns per random 64-byte read in a table of 0.5 to 64 MiB, each read's address taken from the one
    before (latency) or all known beforehand (as many in flight as the core allows);
(b) warm `estimate_many` on a batch of 20,000 genotypes made of k distinct genotypes repeated (k = 500 ... 20,000),
    with a `StepMemo` holding their steps: the same batch size, memo table and work a network, but k sets how many
    rows the look-ups touch;
(c) `estimate_many` on 20,000 new genotypes with a memo that already holds the steps of 0, 20,000 or 100,000 other
    genotypes of the sampler (a search's memo after many generations, rebuilt before each timing; `grew_in_call`:
    the memo doubled during the timed call, copying its rows); 0 is `bench_model.py`'s "cold, memo of all".
Run: python benchmarks/bench_memo_memory.py [--networks 20000] [--repeats 5]
"""

import argparse
import math
import time

import numpy as np
from numba import njit

from bench_model import flatten, rate, search_genotypes
from capsacc import Accelerator, estimate_many
from capsacc.calibrated import StepMemo

ROW_WORDS = 8
"""int64 words in one 64-byte row, as a memo row."""


@njit(cache=True)
def _chase(table, reads):
    """Follow `reads` links of `table` (each row's first word is the next row) from row 0; return the last row."""
    row = 0
    for _ in range(reads):
        row = table[row * ROW_WORDS]
    return row


@njit(cache=True)
def _gather(table, rows):
    """Sum the first word of the given `rows` of `table` (addresses all known beforehand)."""
    total = 0
    for row in rows:
        total += table[row * ROW_WORDS]
    return total


def read_ns(table_mib: float, reads: int, rng: np.random.Generator) -> tuple[float, float]:
    """(ns per dependent read, ns per independent read) of random 64-byte rows in a table of `table_mib` MiB."""
    rows = int(table_mib * 2 ** 20) // (8 * ROW_WORDS)
    order = rng.permutation(rows)
    table = np.zeros(rows * ROW_WORDS, np.int64)
    table[order * ROW_WORDS] = np.roll(order, -1)  # one cycle through every row, in random order
    picks = rng.integers(0, rows, reads)
    _chase(table, 1000), _gather(table, picks[:1000])
    start = time.process_time()
    _chase(table, reads)
    dependent = time.process_time() - start
    start = time.process_time()
    _gather(table, picks)
    independent = time.process_time() - start
    return dependent / reads * 1e9, independent / reads * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    accelerator = Accelerator.calibrated()
    n = args.networks

    print("(a) random 64-byte reads")
    print(f"{'table_MiB':>10} {'dependent_ns':>13} {'independent_ns':>15}")
    for mib in (0.5, 1, 2, 4, 8, 16, 32, 64):
        dependent, independent = read_ns(mib, 2_000_000, rng)
        print(f"{mib:>10} {dependent:>13.1f} {independent:>15.1f}")

    genotypes = search_genotypes(n, 0)
    print(f"\n(b) warm estimate_many on {n:,} genotypes made of k distinct ones repeated, memo holding their steps")
    print(f"{'k':>7} {'distinct_steps':>15} {'memo_MiB':>9} {'ns_per_network':>15} {'ratio_to_smallest':>18}")
    smallest = None
    for k in sorted({min(k, n) for k in (500, 2_000, 5_000, n)}):
        batch = flatten((genotypes[:k] * math.ceil(n / k))[:n])
        memo = StepMemo(accelerator.calibration)
        estimate_many(batch, accelerator, memo=memo)
        ns = 1e9 / rate(lambda: estimate_many(batch, accelerator, memo=memo), n, args.repeats)
        smallest = smallest or ns
        print(f"{k:>7,} {len(memo):>15,} {memo.slots * 64 / 2 ** 20:>9.0f} {ns:>15,.0f} {ns / smallest:>18.2f}")

    batch = flatten(genotypes)
    print(f"\n(c) estimate_many on {n:,} new genotypes, the memo holding the steps of other genotypes first")
    print(f"{'other_genotypes':>16} {'steps_held':>11} {'new_steps_per_network':>22} {'memo_MiB':>9} "
          f"{'grew_in_call':>13} {'ns_per_network':>15} {'networks_per_s':>15}")
    for others in (0, n, 5 * n):
        seen = flatten(search_genotypes(others, 1)) if others else None
        memo = None

        def prepare():
            nonlocal memo
            memo = StepMemo(accelerator.calibration)
            if seen is not None:
                estimate_many(seen, accelerator, memo=memo)

        prepare()
        held, held_slots = len(memo), memo.slots
        estimate_many(batch, accelerator, memo=memo)
        new_steps, slots = len(memo) - held, memo.slots
        grew = "yes" if others and slots > held_slots else "no"  # a fresh memo is sized to the batch at once
        ns = 1e9 / rate(lambda: estimate_many(batch, accelerator, memo=memo), n, args.repeats, prepare)
        print(f"{others:>16,} {held:>11,} {new_steps / n:>22.2f} {slots * 64 / 2 ** 20:>9.0f} {grew:>13} "
              f"{ns:>15,.0f} {1e9 / ns:>15,.0f}")


if __name__ == "__main__":
    main()
