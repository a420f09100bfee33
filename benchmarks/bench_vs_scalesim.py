"""nascaps' closed forms against SCALE-Sim 3.0.0, layer by layer, and the speed of the DSE grid.

    python benchmarks/bench_vs_scalesim.py [--jobs N] [--layers ...] [--arrays 16,32] [--dataflows ws,os,is]

Installs scalesim 3.0.0 (with numpy < 2.4, which it needs) into its own virtual environment under
~/.cache/nascaps/scalesim-venv (or --venv) when missing, runs it on CapsNet's two convolutions
(Sabour et al.: 28x28x1 -> 9x9x256; 20x20x256 -> 9x9 stride 2, 32x8 capsule channels) and AlexNet's
five, for ws, os and is on 16x16 and 32x32 arrays (64 kB SRAMs, CALC bandwidth mode), each run in a
child process, and prints per layer: compute cycles and SRAM access counts from both, DRAM counts and total cycles
incl. prefetch (SCALE-Sim's, the closed form's, and nascaps' replay of SCALE-Sim's buffer models,
`rp`), wall time (closed form; replay apart) and peak memory from both, and the ratios. Then times
the design-space grid.

Memory is measured two ways: the memory the run itself takes (SCALE-Sim: growth of the child's peak
resident set over its size after imports; nascaps: tracemalloc's peak over one evaluation, which
counts numpy's buffers) and the whole process's peak resident set (each in a fresh process,
interpreter and imports included).
"""

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from capsacc.dse.grid import DesignGrid, evaluate
from capsacc.dse.replay import replay_layer
from capsacc.dse.systolic import DATAFLOWS, REPORT_COLUMNS, layer_reports, sram_words
from capsacc.dse.topology import ConvLayer, builtin_topology
from capsacc.dse.workload import capsule_workload, preset_network, topology_workload

SCALESIM_VERSION = "3.0.0"
SRAM_KB = 64
LAYERS = [ConvLayer("capsnet.conv1", 28, 28, 9, 9, 1, 256, 1),
          ConvLayer("capsnet.primarycaps", 20, 20, 9, 9, 256, 256, 2)] + \
         [dataclasses.replace(layer, name=f"alexnet.{layer.name}") for layer in builtin_topology("alexnet")[:5]]

CONFIG = """[general]
run_name = bench
[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : {sram}
FilterSramSzkB : {sram}
OfmapSramSzkB : {sram}
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Dataflow : {dataflow}
Bandwidth : 10
ReadRequestBuffer : 32
WriteRequestBuffer : 32
[layout]
IfmapCustomLayout : False
IfmapSRAMBankBandwidth : 10
IfmapSRAMBankNum : 10
IfmapSRAMBankPort : 2
FilterCustomLayout : False
FilterSRAMBankBandwidth : 10
FilterSRAMBankNum : 10
FilterSRAMBankPort : 2
[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40
[run_presets]
InterfaceBandwidth : CALC
UseRamulatorTrace : False
"""

RUNNER = r"""
import contextlib, io, json, sys, tempfile, time
from pathlib import Path
from scalesim.scale_sim import scalesim
spec = json.loads(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    (tmp / "scale.cfg").write_text(spec["config"])
    (tmp / "topo.csv").write_text(spec["topology"])
    sim = scalesim(save_disk_space=True, verbose=False, config=str(tmp / "scale.cfg"),
                   topology=str(tmp / "topo.csv"), layout=str(tmp / "topo.csv"))
    def status(key):
        line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
        return int(line.split()[1])
    base_kB = status("VmRSS:")
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        sim.run_scale(top_path=str(tmp / "out"))
    wall_s = time.perf_counter() - start
    peak_kB = status("VmHWM:")
    def row(name):
        line = (tmp / "out" / "bench" / name).read_text().splitlines()[1]
        return [float(x) for x in line.split(",")[:-1]]
    compute, detail = row("COMPUTE_REPORT.csv"), row("DETAILED_ACCESS_REPORT.csv")
print(json.dumps({"wall_s": wall_s, "base_rss_kB": base_kB, "peak_rss_kB": peak_kB,
                  "total_cycles": compute[2], "total_cycles_incl_prefetch": compute[1],
                  "sram_ifmap_reads": detail[3], "sram_filter_reads": detail[6], "sram_ofmap_writes": detail[9],
                  "dram_ifmap_reads": detail[12], "dram_filter_reads": detail[15], "dram_ofmap_writes": detail[18]}))
"""

NASCAPS_PROCESS = r"""
import json, sys
from pathlib import Path
import numpy as np
from capsacc.dse.systolic import layer_reports
def status(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1])
table = np.array(json.loads(sys.argv[1]), dtype=np.int64)
for rows, dataflow in json.loads(sys.argv[2]):
    layer_reports(table, rows, rows, dataflow, 65536, 65536, 65536)
print(status("VmHWM:"))
"""


def scalesim_python(venv: Path) -> Path:
    """The venv's python, creating the venv with scalesim 3.0.0 and numpy < 2.4 if missing."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import scalesim.scale_sim"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"installing scalesim {SCALESIM_VERSION} into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"scalesim=={SCALESIM_VERSION}", "numpy<2.4"],
                   check=True)
    subprocess.run(check, check=True)
    return python


def topology_csv(layer: ConvLayer) -> str:
    return ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n"
            f"{layer.name}, {layer.ifmap_h}, {layer.ifmap_w}, {layer.filter_h}, {layer.filter_w}, "
            f"{layer.channels}, {layer.num_filter}, {layer.stride},\n")


def run_scalesim(python: Path, layer: ConvLayer, array: int, dataflow: str) -> dict:
    spec = {"config": CONFIG.format(rows=array, cols=array, sram=SRAM_KB, dataflow=dataflow),
            "topology": topology_csv(layer)}
    done = subprocess.run(["nice", "-n", "10", str(python), "-c", RUNNER, json.dumps(spec)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"scalesim failed on {layer.name} {dataflow} {array}x{array}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_nascaps(table: np.ndarray, array: int, dataflow: int) -> tuple[np.ndarray, float, int]:
    """Reports, median wall seconds of one evaluation, and tracemalloc's peak bytes of one evaluation."""
    words = sram_words(SRAM_KB)
    reports = layer_reports(table, array, array, dataflow, words, words, words)
    repeats = 2000
    samples = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(repeats):
            layer_reports(table, array, array, dataflow, words, words, words)
        samples.append((time.perf_counter() - start) / repeats)
    tracemalloc.start()
    layer_reports(table, array, array, dataflow, words, words, words)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return reports, statistics.median(samples), peak


def nascaps_process_peak_kB(layers, arrays, dataflows) -> int:
    table = topology_workload("bench", layers, "inference").gemm_table().tolist()
    configs = [(a, DATAFLOWS.index(d)) for a in arrays for d in dataflows]
    done = subprocess.run([sys.executable, "-c", NASCAPS_PROCESS, json.dumps(table), json.dumps(configs)],
                          capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def dse_rate() -> list[tuple[str, int, float, float]]:
    """(workload, design points, median wall seconds, median CPU seconds) of three evaluations of a
    full grid each, after one untimed evaluation; numba runs single-threaded (one core)."""
    grid = DesignGrid(rows=tuple(range(4, 129)), cols=tuple(range(4, 129)))
    workloads = [topology_workload("alexnet", builtin_topology("alexnet"), "inference"),
                 capsule_workload(preset_network("deepcaps", 28, 1), "training")]
    out = []
    for workload in workloads:
        evaluate(workload, grid)
        walls, cpus = [], []
        for _ in range(3):
            wall, cpu = time.perf_counter(), time.process_time()
            evaluate(workload, grid)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        out.append((f"{workload.name} {workload.mode} ({len(workload.gemms)} GEMMs)", grid.size,
                    statistics.median(walls), statistics.median(cpus)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "nascaps" / "scalesim-venv")
    parser.add_argument("--layers", default=",".join(layer.name for layer in LAYERS))
    parser.add_argument("--arrays", default="16,32")
    parser.add_argument("--dataflows", default="ws,os,is")
    parser.add_argument("--jobs", type=int, default=1, help="SCALE-Sim runs at once (default 1)")
    parser.add_argument("--max-sim-cycles", type=int, default=None,
                        help="skip SCALE-Sim runs of layers longer than this many compute cycles (SCALE-Sim "
                             "simulates a few thousand cycles a second; the full set is about 25 million)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args()
    names = args.layers.split(",")
    layers = [layer for layer in LAYERS if layer.name in names]
    arrays = [int(a) for a in args.arrays.split(",")]
    dataflows = args.dataflows.split(",")
    python = scalesim_python(args.venv)
    runs = [(layer, array, dataflow) for array in arrays for dataflow in dataflows for layer in layers]
    def cycles(run):
        table = topology_workload("", [run[0]], "inference").gemm_table()
        return int(layer_reports(table, run[1], run[1], DATAFLOWS.index(run[2]), 1, 1, 1)[0, 0])

    runs.sort(key=cycles)  # shortest simulations first
    if args.max_sim_cycles is not None:
        skipped = [r for r in runs if cycles(r) > args.max_sim_cycles]
        runs = [r for r in runs if cycles(r) <= args.max_sim_cycles]
        for layer, array, dataflow in skipped:
            print(f"skipped (over --max-sim-cycles): {layer.name} {dataflow} {array}x{array}")
    print(f"SCALE-Sim {SCALESIM_VERSION} ({python}) vs nascaps closed forms: {len(runs)} layer runs, "
          f"{SRAM_KB} kB SRAMs, CALC mode, {args.jobs} at a time", flush=True)
    pool = ThreadPoolExecutor(args.jobs)
    scalesim = pool.map(lambda r: run_scalesim(python, *r), runs)
    records = []
    header = (f"{'layer':<20}{'df':>3}{'array':>6} {'cycles SS':>10}{'cycles nc':>10} {'SRAM rd+wr SS':>14}"
              f"{'SRAM nc':>11} {'DRAM SS':>10}{'DRAM nc':>10}{'diff %':>8}{'DRAM rp':>10} {'incl.pf SS':>11}"
              f"{'incl.pf nc':>11}{'diff %':>8}{'incl.pf rp':>11} {'wall_s SS':>10}{'wall_s nc':>11}{'speed-up':>10}{'wall_s rp':>10} "
              f"{'mem_kB SS':>10}{'mem_kB nc':>10}{'mem ratio':>10}")
    print(header)
    for (layer, array, dataflow), ss in zip(runs, scalesim):
        table = topology_workload(layer.name, [layer], "inference").gemm_table()
        reports, seconds, peak_bytes = time_nascaps(table, array, DATAFLOWS.index(dataflow))
        ours = dict(zip(REPORT_COLUMNS, (int(v) for v in reports[0])))
        replay_start = time.perf_counter()
        replayed = replay_layer(layer, array, array, DATAFLOWS.index(dataflow), *[sram_words(SRAM_KB)] * 3)
        replay_seconds = time.perf_counter() - replay_start
        dram_rp = [replayed.dram_ifmap_reads, replayed.dram_filter_reads, replayed.dram_ofmap_writes]
        sram_ss = [int(ss[c]) for c in REPORT_COLUMNS[1:4]]
        sram_nc = [ours[c] for c in REPORT_COLUMNS[1:4]]
        dram_ss = [int(ss[c]) for c in REPORT_COLUMNS[4:7]]
        dram_nc = [ours[c] for c in REPORT_COLUMNS[4:7]]
        growth_kB = ss["peak_rss_kB"] - ss["base_rss_kB"]
        record = {"layer": layer.name, "dataflow": dataflow, "array": array, "scalesim": ss, "nascaps": ours,
                  "nascaps_wall_s": seconds, "nascaps_peak_bytes": peak_bytes,
                  "cycles_equal": ours["total_cycles"] == int(ss["total_cycles"]),
                  "sram_equal": sram_ss == sram_nc, "dram_equal": dram_ss == dram_nc,
                  "dram_replayed": dram_rp, "dram_replay_equal": dram_ss == dram_rp, "replay_wall_s": replay_seconds,
                  "incl_prefetch_replayed": replayed.total_cycles_incl_prefetch,
                  "incl_prefetch_replay_equal":
                      replayed.total_cycles_incl_prefetch == int(ss["total_cycles_incl_prefetch"]),
                  "incl_prefetch_equal": ours["total_cycles_incl_prefetch"] == int(ss["total_cycles_incl_prefetch"]),
                  "speedup": ss["wall_s"] / seconds, "memory_ratio": max(growth_kB, 0) * 1024 / peak_bytes}
        records.append(record)
        print(f"{layer.name:<20}{dataflow:>3}{array:>6} {int(ss['total_cycles']):>10}{ours['total_cycles']:>10} "
              f"{sum(sram_ss):>14}{sum(sram_nc):>11} {sum(dram_ss):>10}{sum(dram_nc):>10}"
              f"{100 * (sum(dram_nc) / sum(dram_ss) - 1):>8.2f}{sum(dram_rp):>10} "
              f"{int(ss['total_cycles_incl_prefetch']):>11}{ours['total_cycles_incl_prefetch']:>11}"
              f"{100 * (ours['total_cycles_incl_prefetch'] / ss['total_cycles_incl_prefetch'] - 1):>8.2f}"
              f"{replayed.total_cycles_incl_prefetch:>11} "
              f"{ss['wall_s']:>10.2f}{seconds:>11.2e}{record['speedup']:>10.2e}{replay_seconds:>10.3f} "
              f"{growth_kB:>10}{peak_bytes / 1024:>10.2f}{record['memory_ratio']:>10.2e}", flush=True)
    pool.shutdown()
    if not records:
        print("no SCALE-Sim runs left to compare")
        return
    nascaps_rss = nascaps_process_peak_kB(layers, arrays, dataflows)
    scalesim_rss = max(r["scalesim"]["peak_rss_kB"] for r in records)
    print()
    print(f"compute cycles identical: {sum(r['cycles_equal'] for r in records)}/{len(records)}; "
          f"SRAM counts identical: {sum(r['sram_equal'] for r in records)}/{len(records)} "
          f"(os ofmap writes include SCALE-Sim's (R+C)-per-fold defect on both sides); "
          f"DRAM counts identical: closed form {sum(r['dram_equal'] for r in records)}/{len(records)}, "
          f"replayed (rp) {sum(r['dram_replay_equal'] for r in records)}/{len(records)}; "
          f"total cycles incl. prefetch identical: closed form {sum(r['incl_prefetch_equal'] for r in records)}/"
          f"{len(records)}, replayed {sum(r['incl_prefetch_replay_equal'] for r in records)}/{len(records)}")
    speedups = [r["speedup"] for r in records]
    ratios = [r["memory_ratio"] for r in records]
    print(f"speed-up per layer: min {min(speedups):.3g}, geometric mean "
          f"{math.exp(statistics.fmean(math.log(s) for s in speedups)):.3g}, max {max(speedups):.3g} "
          f"(goal >= 1e5; XploreDL 600)")
    print(f"run memory ratio (SCALE-Sim RSS growth during the run / nascaps tracemalloc peak): min {min(ratios):.3g}, "
          f"max {max(ratios):.3g} (goal >= 100; XploreDL 50)")
    print(f"whole-process peak RSS: SCALE-Sim {scalesim_rss} kB (largest run), nascaps {nascaps_rss} kB "
          f"(all runs in one process), ratio {scalesim_rss / nascaps_rss:.3g}")
    print()
    print(f"{'DSE grid (numba, one core), median of 3':<44}{'points':>10}{'wall_s':>9}{'cpu_s':>9}"
          f"{'points/s wall':>15}{'points/s cpu':>15}")
    rates = dse_rate()
    for name, points, wall, cpu in rates:
        print(f"{name:<44}{points:>10}{wall:>9.3f}{cpu:>9.3f}{points / wall:>15,.0f}{points / cpu:>15,.0f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": records, "nascaps_process_peak_kB": nascaps_rss,
                                         "scalesim_process_peak_kB": scalesim_rss,
                                         "dse": [{"workload": n, "points": p, "wall_s": w, "cpu_s": c} for n, p, w, c in rates]},
                                        indent=1))


if __name__ == "__main__":
    main()
