"""Throughput of the search: candidates evaluated per hour and the share of time spent outside training.

    python benchmarks/bench_search.py                 # the default search, 1 and 2 workers
    python benchmarks/bench_search.py --generations 1 # shorter

For each worker count it runs the default `nascaps search` configuration (real training on the
embedded MNIST subset) in a fresh folder and prints: candidates trained, wall seconds, candidates
per hour, the summed training seconds, and the share of worker time not spent training
(1 - training_s / (wall_s x workers); goal under 5 %) and the worker time per candidate not spent
training (wall_s x workers - training_s, divided by the candidates). A last row runs the same search with the
`SyntheticEvaluator` (no training) to show the machinery's own cost per candidate. The machine's
load average is printed, since other processes slow training down.
"""

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from nas.evaluate import SyntheticEvaluator
from nas.search import SearchConfig, run_search


def measure(config: SearchConfig, evaluator=None) -> dict:
    start = time.monotonic()
    result = run_search(config, evaluator=evaluator, progress=False)
    wall_s = time.monotonic() - start
    training_s = sum(e.seconds for e in result.evaluations if e.status != "over_budget")
    workers = config.workers
    return {"trained": result.trained, "wall_s": wall_s, "per_hour": 3600 * result.trained / wall_s,
            "training_s": training_s, "outside_share": 1 - training_s / (wall_s * workers),
            "workers": workers, "statuses": sorted({e.status for e in result.evaluations})}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=SearchConfig().generations)
    parser.add_argument("--workers", default="1,2", help="worker counts to measure (default 1,2)")
    args = parser.parse_args(argv)
    base = SearchConfig(generations=args.generations)
    print(f"default search: |P|={base.population} |Q|={base.offspring} generations={base.generations} "
          f"epochs={base.epochs} train_samples={base.train_samples} batch_size={base.batch_size} "
          f"timeout_s={base.timeout_s}; cpus={os.cpu_count()}; load average before "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for workers in (int(w) for w in args.workers.split(",")):
            config = replace(base, workers=workers, out=str(Path(folder) / f"workers{workers}"))
            rows.append((f"training, {workers} worker(s)", measure(config)))
            print(f"  done {rows[-1][0]} (load average {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
        synthetic = replace(base, workers=1, out=str(Path(folder) / "synthetic"))
        rows.append(("SyntheticEvaluator (no training)", measure(synthetic, SyntheticEvaluator())))
    print(f"{'run':<34}{'trained':>8}{'wall_s':>9}{'candidates_per_h':>18}{'training_s':>12}"
          f"{'outside_training_%':>20}{'overhead_ms_per_candidate':>27}")
    for name, row in rows:
        overhead_ms = 1000 * (row["wall_s"] * row["workers"] - row["training_s"]) / max(row["trained"], 1)
        print(f"{name:<34}{row['trained']:>8}{row['wall_s']:>9.1f}{row['per_hour']:>18.1f}{row['training_s']:>12.1f}"
              f"{100 * row['outside_share']:>20.2f}{overhead_ms:>27.1f}")
    if len(rows) > 2:
        ratio = rows[1][1]["per_hour"] / rows[0][1]["per_hour"]
        print(f"speed-up of {rows[1][1]['workers']} workers over {rows[0][1]['workers']} "
              f"(candidates per hour): {ratio:.2f}")
    print(f"load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
