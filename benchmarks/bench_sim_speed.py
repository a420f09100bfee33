"""Simulated cycles per second of the CapsAcc RTL on Verilator and on Amaranth's simulator.

One convolution (im2col 64 x 145 against 145 x 64 weights, ReLU) runs bit-exactly on a 16x16
CapsAcc on both back ends in the same run; the table gives simulated cycles (RTL busy cycles plus
host I/O cycles), the simulator's CPU and wall seconds, cycles per CPU second, and the ratio.
Goal (issue 4): Verilator >= 100,000 simulated cycles per second on 16x16.
Run: python benchmarks/bench_sim_speed.py [--rows 16 --cols 16] [--skip-amaranth]
"""

import argparse
import time

from capsacc.array import ArrayConfig
from capsacc.network import Operation
from sim.driver import OperationDriver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--cols", type=int, default=16)
    parser.add_argument("--skip-amaranth", action="store_true")
    args = parser.parse_args()
    config = ArrayConfig(args.rows, args.cols)
    op = Operation("conv", "conv", 8, 16, 1, 3, 1, 8, 64, 1)
    backends = ["verilator"] + ([] if args.skip_amaranth else ["amaranth"])
    rows = []
    for backend in backends:
        driver = OperationDriver(config, backend)
        if backend == "verilator":
            start = time.perf_counter()
            driver.run("conv", op, seed=0)  # builds (or loads) the simulator
            build_s = time.perf_counter() - start
        else:
            build_s = 0.0
        run = driver.run("conv", op, seed=1)
        simulated = run.simulated_cycles
        rows.append((backend, run.cycles, simulated, run.sim_s, run.cpu_s, run.wall_s, build_s,
                     simulated / run.sim_s if run.sim_s else float("inf"),
                     simulated / run.cpu_s if run.cpu_s else float("inf")))
    print(f"CapsAcc {config.rows}x{config.cols}, conv n8 k3 ch16->64 (bit-exact on each back end)")
    print(f"{'backend':<11}{'rtl_cycles':>11}{'sim_cycles':>11}{'clock_s':>9}{'cpu_s':>8}{'wall_s':>8}"
          f"{'build_s':>9}{'cycles_per_clock_s':>20}{'cycles_per_cpu_s':>18}{'ratio':>8}")
    for backend, cycles, simulated, sim_s, cpu_s, wall_s, build_s, rate, cpu_rate in rows:
        print(f"{backend:<11}{cycles:>11}{simulated:>11}{sim_s:>9.3f}{cpu_s:>8.3f}{wall_s:>8.2f}{build_s:>9.1f}"
              f"{rate:>20.0f}{cpu_rate:>18.0f}{cpu_rate / rows[-1][8]:>8.1f}")
    print("clock_s: wall time the simulator spent clocking the design (Verilator: the C++ bench's stepping "
          "loops; Amaranth: the testbench); cpu_s: CPU time of the simulator (Verilator: the whole bench "
          "process, stimulus parsing included); wall_s: the whole run incl. script generation, decoding "
          "and the golden model; build_s: first run incl. export and compilation (0 when cached); "
          "ratio: cycles per CPU second over the last back end's.")


if __name__ == "__main__":
    main()
