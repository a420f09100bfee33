"""Routing cycles against their bounds, for J classes and D atoms within and beyond the C columns.

    python benchmarks/bench_routing.py            # 16x16 calibrated model, and RTL runs on 3x4 / 4x4
    python benchmarks/bench_routing.py --no-rtl   # the 16x16 rows only

A routing of `capsacc.mapping.ROUTINGS` = 3 iterations over I inputs: 3 weighted sums and 2 updates
of I·J·D multiply-accumulates each (5·I·J·D MACs). Bounds: compute, MACs / (R·C); port,
max(R·MATMULs, data rows) + column-mode ACT elements (one weight row and one data row per cycle,
one element per cycle out of the activation unit in column mode), from the closed-form counts
(`capsacc.mapping.plan_counts`). Cycles: on 16x16 the shipped calibrated model (exact on its
features), on the small arrays Amaranth simulations bit-exact against `sim.golden` (`sim.driver`).
"""

import argparse

from capsacc.array import ArrayConfig, buffer_depths
from capsacc.calibrated import Calibration
from capsacc.mapping import ROUTINGS, plan_counts, routing_geometry, routing_phases
from capsacc.network import Operation

SHAPES_16 = [(6272, 10, 16), (1152, 32, 16), (1152, 10, 40), (1152, 40, 40), (47824, 10, 20)]
"""(I, J, D) on 16x16: the class layer of the capsnet preset (I = 14²·32), J > C, D > C, both, and a
paper-space class layer whose logits do not fit the partial sums (recomputed)."""
SHAPES_SMALL = [(ArrayConfig(3, 4, 25, **buffer_depths(64), program_depth=32), (7, 9, 3)), (ArrayConfig(3, 4, 25, **buffer_depths(64), program_depth=32), (5, 3, 9)),
                (ArrayConfig(4, 4, 25, **buffer_depths(128), program_depth=32), (6, 6, 7)), (ArrayConfig(3, 4, 25, **buffer_depths(128), program_depth=16), (70, 5, 5))]


def operation(n_in: int, n_out: int, dim: int) -> Operation:
    return Operation("routing", "routing", 1, n_in, 8, 1, 1, 1, n_out, dim)


def bounds(op, config: ArrayConfig) -> tuple[int, int, int]:
    """(MACs, compute bound, port bound) of a routing of ROUTINGS iterations."""
    n_in, n_out, dim = op.ch_in, op.ch_out, op.caps_out
    counts = plan_counts("routing", op, config)
    macs = (2 * ROUTINGS - 1) * n_in * n_out * dim
    port = max(config.rows * counts["matmuls"], counts["matmul_rows"]) + counts["act_elements_column"]
    return macs, -(-macs // (config.rows * config.cols)), port


def row(config: ArrayConfig, shape, cycles: int, source: str) -> str:
    op = operation(*shape)
    macs, compute, port = bounds(op, config)
    resident = routing_geometry(*shape, config)["resident"]
    return (f"| {config.rows}x{config.cols} | {shape[0]} | {shape[1]} | {shape[2]} | {'yes' if resident else 'no'} | "
            f"{macs:,} | {compute:,} | {port:,} | {cycles:,} | {cycles / port:.2f} | {source} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-rtl", action="store_true", help="skip the Amaranth runs on small arrays")
    args = parser.parse_args()
    print("| array | I | J | D | logits resident | MACs | compute bound | port bound | cycles | cycles / port "
          "| source |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    calibration = Calibration.shipped()
    for shape in SHAPES_16:
        op = operation(*shape)
        cycles = sum(calibration.predict(kind, op)["cycles"] for kind in routing_phases(ROUTINGS))
        print(row(calibration.config, shape, cycles, "calibrated model"))
    if args.no_rtl:
        return
    from sim.driver import OperationDriver
    for config, shape in SHAPES_SMALL:
        run = OperationDriver(config, "amaranth").run("routing", operation(*shape), seed=1)
        print(row(config, shape, run.cycles, "RTL (Amaranth), bit-exact"))


if __name__ == "__main__":
    main()
