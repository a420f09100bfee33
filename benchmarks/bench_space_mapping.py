"""Which operations of random paper-space genotypes map onto a CapsAcc array (`capsacc.mapping`).

    python benchmarks/bench_space_mapping.py                        # 500 genotypes, seed 0, 16x16
    python benchmarks/bench_space_mapping.py --genotypes 100 --rows 4 --cols 4 --json

Draws genotypes with the search's own sampler (`nas.operators.random_genotype`, `--space paper`),
expands each into hardware operations (routing by phase, `capsacc.mapping.operation_kinds`) and asks
`capsacc.mapping.plan_counts` for each on an `ArrayConfig` of the given rows and columns (default
buffers and program memory). Prints the operations and genotypes checked, and the refused operations
counted by kind and by reason (numbers in the message replaced by N), the routing phases apart.
"""

import argparse
import json
import re
from collections import Counter

import numpy as np

from capsacc.array import ArrayConfig
from capsacc.mapping import ROUTING_PHASES, MappingError, operation_kinds, plan_counts
from nas.operators import random_genotype
from nas.space import SearchSpace


def survey(genotypes: int, seed: int, config: ArrayConfig) -> dict:
    """Operations checked and refused (by kind and reason) over `genotypes` random paper-space genotypes."""
    rng = np.random.default_rng(seed)
    space = SearchSpace()
    checked, refused, genotypes_refused = Counter(), Counter(), Counter()
    for _ in range(genotypes):
        network = random_genotype(space, rng).to_network()
        groups = set()
        for op, kind in zip(network.operations, operation_kinds(network.operations)):
            group = "routing" if kind in ROUTING_PHASES else "conv kinds and classcaps"
            checked[group] += 1
            try:
                plan_counts(kind, op, config)
            except MappingError as error:
                refused[(group, kind, re.sub(r"\d+", "N", str(error)))] += 1
                groups.add(group)
        for group in groups:
            genotypes_refused[group] += 1
    return {"genotypes": genotypes, "seed": seed, "config": config.to_dict(), "operations": dict(checked),
            "genotypes_refused": dict(genotypes_refused),
            "refused": [{"group": g, "kind": k, "reason": r, "operations": n}
                        for (g, k, r), n in sorted(refused.items(), key=lambda item: -item[1])]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genotypes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--cols", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = survey(args.genotypes, args.seed, ArrayConfig(rows=args.rows, cols=args.cols))
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{args.genotypes} paper-space genotypes (seed {args.seed}) on {args.rows}x{args.cols}")
    for group, count in result["operations"].items():
        refused = sum(r["operations"] for r in result["refused"] if r["group"] == group)
        print(f"  {group}: {count} operations, {refused} refused, in "
              f"{result['genotypes_refused'].get(group, 0)} genotypes")
    for row in result["refused"]:
        print(f"  {row['operations']:6d}  {row['kind']:16s} {row['reason']}")


if __name__ == "__main__":
    main()
