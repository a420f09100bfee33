"""A network's data movement through the DMA, without simulating: the DMA programs the driver
builds (`sim.host.DmaSession`) timed by `rtl.isa.timing`, the RTL's exact cycle model (the tests
assert it against the RTL for every operation kind, on Amaranth and Verilator).

    python benchmarks/bench_dma_schedule.py capsnet --rows 16 --cols 16 --batch 8

Per operation (the whole batch): the compute's busy cycles (host-loaded runs), total_cycles (DMA
programs, first byte in to last result out), their ratio, the off-chip bytes and the bound
(bandwidth when bytes / W exceed the compute's cycles; the program words of overlay programs aside),
and the host starts (one per program); then per image against the compute bound.
Beside each step, the calibrated model's total cycles (`capsacc.programs.operation_total_cycles`: the
same programs from the operation's session alone, no data) and whether they equal the driver's; last,
the seconds of both paths (the driver's includes drawing the data and the golden inputs) and their ratio.
"""

import argparse
import time

from capsacc.array import ArrayConfig
from capsacc.calibrated import per_image
from capsacc.cli import load_network
from capsacc.mapping import bandwidth_bound, chain
from capsacc.programs import operation_total_cycles
from rtl.isa import Dma, beats_per_row, buffer_lanes, program_cycles
from sim.driver import OperationDriver
from sim.network_run import step_macs, step_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("network")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--cols", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--offchip-bytes-per-cycle", type=int, default=ArrayConfig.offchip_bytes_per_cycle)
    parser.add_argument("--offchip-latency-cycles", type=int, default=ArrayConfig.offchip_latency_cycles)
    args = parser.parse_args()
    width, latency = args.offchip_bytes_per_cycle, args.offchip_latency_cycles
    config = ArrayConfig(args.rows, args.cols, batch=args.batch, offchip_bytes_per_cycle=width,
                         offchip_latency_cycles=latency)
    network = load_network(args.network)
    driver = OperationDriver(config, "amaranth", offchip=True)
    print(f"{'operation':<16}{'kind':<17}{'compute':>12}{'total':>12}{'ratio':>8}{'offchip_bytes':>15}  bound"
          f"      {'model_total':>12}  {'starts':>7}")
    bound = compute = total = 0
    driver_s = model_s = 0.0
    for step in chain(network.operations):
        start = time.perf_counter()
        session = driver.prepare(step.kind, step.op, 0)[0]
        session.flush()
        cycles = sum(program_cycles(p, config.rows, config.cols, width, latency) for p in session.programs)
        driver_s += time.perf_counter() - start
        start = time.perf_counter()
        model = operation_total_cycles(step.kind, step.op, config)
        model_s += time.perf_counter() - start
        moved = sum(i.n * beats_per_row(buffer_lanes(i.buffer, config.rows, config.cols), width) * width
                    for p in session.programs for i in p if isinstance(i, Dma) and i.buffer != "program")
        kind = "bandwidth" if bandwidth_bound(moved, width, session.compute_cycles) else "compute"
        print(f"{step_name(network, step):<16}{step.kind:<17}{session.compute_cycles:>12}{cycles:>12}"
              f"{cycles / session.compute_cycles:>8.3f}{moved:>15}  {kind:<9}  {model:>12} "
              f"{'equal' if model == cycles else 'DIFFERENT'}  {len(session.programs):>7}", flush=True)
        bound += -(-step_macs(step, config) // (config.rows * config.cols))
        compute += per_image(session.compute_cycles, config.batch)
        total += per_image(cycles, config.batch)
    print(f"per image: compute bound {bound}, compute {compute} ({compute / bound:.3f}x), total {total} "
          f"({total / bound:.3f}x)")
    print(f"seconds: driver sessions and timing {driver_s:.1f}, model {model_s:.1f} "
          f"(ratio {driver_s / max(model_s, 1e-9):.1f})")


if __name__ == "__main__":
    main()
