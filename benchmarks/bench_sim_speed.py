"""Simulated cycles per second of the CapsAcc RTL on Verilator and on Amaranth's simulator.

One convolution (im2col 64 x 145 against 145 x 64 weights, ReLU) runs bit-exactly on a 16x16
CapsAcc on both back ends in the same run; with --capsnet, CapsNet's conv0 and classcaps2 also run
on Verilator, on the shipped calibration's array (batch 1). The table gives, per workload and back
end, simulated cycles (RTL busy cycles plus host I/O cycles), the simulator's CPU and wall seconds,
cycles per CPU second, and their ratio to Amaranth's on the same workload.
Goal (issues 4, 14): Verilator >= 100,000 simulated cycles per CPU second on 16x16.
Run: python benchmarks/bench_sim_speed.py [--rows 16 --cols 16] [--skip-amaranth] [--capsnet]
"""

import argparse
import dataclasses
import time

from capsacc.array import ArrayConfig
from capsacc.calibrated import Calibration
from capsacc.network import Network, Operation
from sim.driver import OperationDriver

CAPSNET_WORKLOADS = ("conv0", "classcaps2")
"""The CapsNet operations --capsnet runs: the largest convolution and the largest ClassCaps."""


def warm_up_s(driver: OperationDriver, op: Operation) -> float:
    """Seconds of `driver`'s run of `op` at seed 0: on Verilator, it builds (or loads) the simulator."""
    start = time.perf_counter()
    driver.run(op.kind, op, seed=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--cols", type=int, default=16)
    parser.add_argument("--skip-amaranth", action="store_true")
    parser.add_argument("--capsnet", action="store_true",
                        help=f"also run CapsNet's {' and '.join(CAPSNET_WORKLOADS)} on Verilator "
                             "(shipped calibration's array, batch 1; about a minute of CPU)")
    args = parser.parse_args()
    config = ArrayConfig(args.rows, args.cols)
    conv = Operation("conv", "conv", 8, 16, 1, 3, 1, 8, 64, 1)
    workloads = [("conv n8 k3 ch16->64", config, conv, ["verilator"] + ([] if args.skip_amaranth else ["amaranth"]))]
    if args.capsnet:
        shipped = dataclasses.replace(Calibration.shipped().config, batch=1)
        ops = {op.name: op for op in Network.preset("capsnet").operations}
        workloads += [(f"capsnet {name}", shipped, ops[name], ["verilator"]) for name in CAPSNET_WORKLOADS]
    rows = []
    for label, array, op, backends in workloads:
        for backend in backends:
            driver = OperationDriver(array, backend)
            build_s = warm_up_s(driver, conv) if backend == "verilator" else 0.0
            run = driver.run(op.kind, op, seed=1)
            rows.append((label, backend, run, build_s, run.simulated_cycles / run.cpu_s if run.cpu_s else float("inf")))
    amaranth_rates = {label: rate for label, backend, _, _, rate in rows if backend == "amaranth"}
    print(f"CapsAcc {config.rows}x{config.cols} (conv), the shipped calibration's array (capsnet); "
          "bit-exact on each back end")
    print(f"{'workload':<22}{'backend':<11}{'rtl_cycles':>11}{'sim_cycles':>11}{'clock_s':>9}{'cpu_s':>8}"
          f"{'wall_s':>8}{'build_s':>9}{'cycles_per_clock_s':>20}{'cycles_per_cpu_s':>18}{'ratio':>8}")
    for label, backend, run, build_s, rate in rows:
        clock_rate = run.simulated_cycles / run.sim_s if run.sim_s else float("inf")
        ratio = f"{rate / amaranth_rates[label]:.1f}" if label in amaranth_rates else "-"
        print(f"{label:<22}{backend:<11}{run.cycles:>11}{run.simulated_cycles:>11}{run.sim_s:>9.3f}"
              f"{run.cpu_s:>8.3f}{run.wall_s:>8.2f}{build_s:>9.1f}{clock_rate:>20.0f}{rate:>18.0f}{ratio:>8}")
    print("clock_s: wall time the simulator spent clocking the design (Verilator: the C++ bench's stepping "
          "loops; Amaranth: the testbench); cpu_s: CPU time of the simulator (Verilator: the whole bench "
          "process, stimulus parsing included); wall_s: the whole run incl. script generation, decoding "
          "and the golden model; build_s: a first run of the short convolution on the same array, incl. "
          "export and compilation (short when cached); "
          "ratio: cycles per CPU second over Amaranth's on the same workload (- where Amaranth did not run).")


if __name__ == "__main__":
    main()
