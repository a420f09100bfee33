"""Training step time of a nascaps-built genotype on each installed Keras backend, to choose the default.

    python benchmarks/bench_backends.py                       # capsnet-like small net and a CapsCell net, batch 100
    python benchmarks/bench_backends.py --backends tensorflow torch --rounds 2 --steps 3

Each (backend, genotype) runs in its own process (a Keras backend is fixed per process), rounds
alternate the backends so that load changes on a shared machine hit them alike. Prints the first
step (tracing/compilation included) and the median of the following steps, in seconds, and each
backend's median relative to the first backend's.
"""

import argparse
import json
import os
import subprocess
import sys
import time

GENOTYPES = {
    "capsnet-small": [[0, 28, 1, 1, 9, 1, 28, 64, 1], [1, 28, 64, 1, 9, 2, 14, 8, 8], [1, 14, 8, 8, 9, 2, 7, 10, 16],
                      [-1], [1]],
    "capscell": [[0, 28, 1, 1, 3, 1, 28, 32, 1], [2, 28, 32, 1, 3, 2, 14, 8, 4], [2, 14, 8, 4, 3, 2, 7, 8, 8],
                 [2, 7, 8, 8, 3, 2, 4, 8, 8], [2, 4, 8, 8, 4, 1, 1, 10, 16], [3], [1]],
}


def worker(genotype: list, batch: int, steps: int, threads: int | None) -> dict:
    """Time `steps` + 1 training steps in this process (its KERAS_BACKEND)."""
    import numpy as np

    from nas.backend import set_threads
    set_threads(threads)
    import keras

    from nas.builder import build_models
    from nas.genotype import Genotype
    from nas.layers import margin_loss, reconstruction_loss
    keras.utils.set_random_seed(0)
    models = build_models(Genotype.from_list(genotype))
    models.train.compile(optimizer=keras.optimizers.Adam(0.001), loss=[margin_loss, reconstruction_loss],
                         loss_weights=[1.0, 0.0005])
    rng = np.random.default_rng(0)
    images = rng.random((batch, 28, 28, 1), dtype=np.float32)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)]
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        models.train.train_on_batch([images, labels], [labels, images])
        times.append(time.perf_counter() - start)
    return {"backend": keras.backend.backend(), "first_step_s": times[0],
            "median_step_s": float(np.median(times[1:]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "torch"])
    parser.add_argument("--genotypes", nargs="+", default=list(GENOTYPES), choices=list(GENOTYPES))
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first (median reported)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per backend (best median kept)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(GENOTYPES[args.worker], args.batch, args.steps, args.threads)))
        return
    print(f"batch {args.batch}, {args.steps} timed steps after the first, best of {args.rounds} alternating rounds, "
          f"threads {args.threads or 'default'}")
    print(f"{'genotype':<16}{'backend':<12}{'first_step_s':>14}{'median_step_s':>15}{'relative':>10}")
    for name in args.genotypes:
        best = {}
        for _ in range(args.rounds):
            for backend in args.backends:
                command = [sys.executable, __file__, "--worker", name, "--batch", str(args.batch),
                           "--steps", str(args.steps)] + (["--threads", str(args.threads)] if args.threads else [])
                env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{name:<16}{backend:<12} failed: {done.stderr.strip().splitlines()[-1:]}")
                    break
                record = json.loads(done.stdout.strip().splitlines()[-1])
                if backend not in best or record["median_step_s"] < best[backend]["median_step_s"]:
                    best[backend] = record
        reference = best.get(args.backends[0])
        for backend, record in best.items():
            relative = record["median_step_s"] / reference["median_step_s"] if reference else float("nan")
            print(f"{name:<16}{backend:<12}{record['first_step_s']:>14.3f}{record['median_step_s']:>15.3f}"
                  f"{relative:>10.2f}")


if __name__ == "__main__":
    main()
