"""The full CapsNet (`capsnet` preset, a batch of 28x28 MNIST test images, --batch, default the
calibrated accelerator's 8) end to end on the Verilator CapsAcc RTL, every operation bit-exact
against the golden model, cycles per image (the batch's / B, rounded up) beside both cost models.
With --network deepcaps, DeepCaps's operations run one by one on random data (not chained).

Operations run one after the other (conv, PrimaryCaps, ClassCaps, the five phases of three routing
iterations: `capsacc.mapping.operation_kinds`), each
fed with the previous one's RTL outputs; weights are random int8 (seeded). Per operation: RTL busy
cycles, the published model's and the calibrated model's estimates (the shipped preset, or
--calibration FILE), host I/O cycles, simulated cycles per second. Goal: under 10 minutes.
Run: python benchmarks/bench_capsnet_rtl.py [--network capsnet|deepcaps] [--batch B] [--mnist FILE] [--calibration FILE]
"""

import argparse
import time
from pathlib import Path

from capsacc import Accelerator, Network, estimate
from capsacc.calibrated import DEFAULT_BATCH, per_image
from capsacc.mapping import operation_kinds
from sim.driver import OperationDriver
from sim.network_run import PACKAGED_MNIST, network_images, run_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=str(PACKAGED_MNIST),
                        help="a keras-layout mnist.npz; its test images 0..B-1 are the input (default: the MNIST "
                             "subset shipped in nas/data)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"images per batch (default {DEFAULT_BATCH})")
    parser.add_argument("--calibration", default=None, help="calibration.json (default: the shipped preset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--network", choices=("capsnet", "deepcaps"), default="capsnet")
    args = parser.parse_args()
    start = time.perf_counter()
    calibrated = Accelerator.calibrated(args.calibration, batch=args.batch)
    config = calibrated.calibration.config
    network = Network.preset(args.network)
    published = estimate(network, Accelerator.published())
    modelled = estimate(network, calibrated)
    driver = OperationDriver(config, "verilator")
    print(f"{args.network} on Verilator CapsAcc {config.rows}x{config.cols} (buffers {config.buffer_depth} rows, "
          f"program {config.program_depth} words), seed {args.seed}, a batch of {config.batch} images of {args.mnist}; "
          "cycles per image")
    header = (f"{'op':<13}{'kind':<16}{'rtl_cycles':>12}{'published':>12}{'calibrated':>12}{'cal_err_%':>10}"
              f"{'host_cycles':>12}{'runs':>6}{'Mcycles_per_s':>14}{'wall_s':>8}  bit-exact")
    print(header, flush=True)
    rows = []

    def report(run):
        i = len(rows)
        pub, cal = published.operations[i].cycles, modelled.operations[i].cycles
        rate = run.simulated_cycles / run.sim_s / 1e6 if run.sim_s else float("inf")
        cycles = per_image(run.cycles, config.batch)
        rows.append((run, cycles))
        print(f"{network.operations[i].name:<13}{run.kind:<16}{cycles:>12}{pub:>12}{cal:>12}"
              f"{100 * (cal - cycles) / cycles:>10.4f}{run.host_cycles:>12}{run.runs:>6}{rate:>14.3f}"
              f"{run.wall_s:>8.1f}  yes", flush=True)

    if args.network == "capsnet":
        images = network_images(network, config.batch, Path(args.mnist))[0]
        result = run_network(network, driver, images, seed=args.seed, progress=lambda step, run: report(run))
        lengths = f"; image 0's output capsule lengths^2 {[int((v.astype(int) ** 2).sum()) for v in result.output[0]]}"
    else:
        for index, (op, kind) in enumerate(zip(network.operations, operation_kinds(network.operations))):
            report(driver.run(kind, op, seed=args.seed * 1000 + index))
        lengths = ""
    cycles = sum(c for _, c in rows)
    total_pub, total_cal = published.cycles, modelled.cycles
    simulated = sum(r.simulated_cycles for r, _ in rows)
    clock_s = sum(r.sim_s for r, _ in rows)
    print(f"{'total':<29}{cycles:>12}{total_pub:>12}{total_cal:>12}"
          f"{100 * (total_cal - cycles) / cycles:>10.4f}{sum(r.host_cycles for r, _ in rows):>12}")
    print(f"published model / RTL = {total_pub / cycles:.4f}; calibrated / RTL = {total_cal / cycles:.6f}")
    print(f"simulated {simulated} cycles in {clock_s:.1f} s of clocking = {simulated / clock_s:,.0f} cycles/s; "
          f"whole benchmark {time.perf_counter() - start:.1f} s wall{lengths}")


if __name__ == "__main__":
    main()
