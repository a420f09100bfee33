"""The `nascaps dse` and `nascaps systolic` subcommands."""

import json
from pathlib import Path

from capsacc.errors import InputError
from capsacc.files import check_preset_or_file

NETWORKS = ("alexnet", "lenet", "vgg16", "resnet18", "capsnet", "deepcaps")


def register(subparsers) -> None:
    """Add the design-space exploration subcommands."""
    parser = subparsers.add_parser(
        "dse", help="explore systolic accelerators for a network (XploreDL style)",
        description="Evaluate every design point of a grid of systolic arrays (rows, cols, dataflow, SRAM "
                    "sizes, clock period) for a network's inference or training, write designs.csv, "
                    "pareto.csv (power, area, latency), pareto.png and run.json to --out, and print the best "
                    "designs by TOPS/mm² and fJ/op. Ranges: LO:HI is the powers of two from LO to HI, "
                    "LO:HI:STEP every STEP, A,B,C a list.")
    parser.add_argument("--network", required=True, metavar="|".join(NETWORKS) + "|GENOTYPE.json|TOPOLOGY.csv",
                        help="a shipped network, a NASCaps genotype (JSON) or a SCALE-Sim topology (CSV)")
    parser.add_argument("--mode", choices=("inference", "training"), default="inference")
    parser.add_argument("--rows", default="4:128:4", help="array rows (default 4:128:4)")
    parser.add_argument("--cols", default="4:128:4", help="array columns (default 4:128:4)")
    parser.add_argument("--dataflow", default="ws,os,is", help="dataflows (default ws,os,is)")
    parser.add_argument("--sram-kB", default="32,128,512",
                        help="sizes tried for each of the ifmap, filter and ofmap SRAMs, kB (default 32,128,512)")
    for buffer in ("ifmap", "filter", "ofmap"):
        parser.add_argument(f"--{buffer}-sram-kB", default=None, help=f"sizes of the {buffer} SRAM alone, kB "
                            "(default: --sram-kB)")
    parser.add_argument("--period-ns", default="2,3,4", help="clock periods, ns (the 45 nm tables have 2, 3, 4)")
    parser.add_argument("--batch", type=int, default=1, help="samples per inference or training step (default 1)")
    parser.add_argument("--input-side", type=int, default=None,
                        help="input image side for capsnet/deepcaps/genotypes (default: the genotype's own)")
    parser.add_argument("--input-channels", type=int, default=None,
                        help="input image channels for capsnet/deepcaps/genotypes (default: the genotype's own)")
    parser.add_argument("--sram-overhead", type=float, default=2.0,
                        help="SRAM macro area over its 45 nm bit cells (default 2.0)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(handler=_dse_command)

    parser = subparsers.add_parser(
        "systolic", help="per-layer cycles and memory accesses on one systolic array (SCALE-Sim columns)",
        description="SCALE-Sim's compute cycles and SRAM/DRAM reads and writes per layer of a topology, from "
                    "closed forms (SCALE-Sim 3.0.0 conventions, CALC bandwidth mode, one-byte words).")
    parser.add_argument("--topology", required=True, metavar="FILE.csv|alexnet|lenet|vgg16|resnet18",
                        help="a SCALE-Sim topology CSV or a shipped topology")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--cols", type=int, required=True)
    parser.add_argument("--dataflow", choices=("ws", "os", "is"), default="ws")
    parser.add_argument("--sram-kB", default="64,64,64", help="ifmap,filter,ofmap SRAM sizes in kB (default 64,64,64)")
    parser.add_argument("--replay", action="store_true",
                        help="replay SCALE-Sim's buffers for the DRAM columns and the cycles incl. prefetch (exact "
                             "always; the closed forms are exact when the operands fit their SRAMs); takes time "
                             "proportional to the SRAM accesses")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_systolic_command)


MAX_VALUES = 65536
"""The most values one range flag may give (`parse_values`)."""
BATCH_RANGE = (1, 2 ** 20)
"""--batch (inclusive)."""


def parse_values(text: str, option: str, kind=float) -> tuple:
    """`LO:HI` (powers of two from LO to HI), `LO:HI:STEP` or `A,B,C`; at most `MAX_VALUES` values;
    `InputError` names `option`. Ranges of values are checked by `DesignGrid`."""
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) == 2:
                low, high = parts
                if low < 1 or high < low:
                    raise ValueError
                values, v = [], 1
                while v <= high:
                    if v >= low:
                        values.append(v)
                    v *= 2
                if not values:
                    raise ValueError
            elif len(parts) == 3:
                low, high, step = parts
                if step < 1 or high < low:
                    raise ValueError
                count = (high - low) // step + 1
                if count > MAX_VALUES:
                    raise InputError(f"{option}: {text!r} gives {count:,} values, more than the limit of {MAX_VALUES:,}")
                values = range(low, high + 1, step)
            else:
                raise ValueError
        else:
            values = text.split(",")
        if len(values) > MAX_VALUES:
            raise InputError(f"{option}: {len(values):,} values, more than the limit of {MAX_VALUES:,}")
        return tuple(kind(v) for v in values)
    except (ValueError, OverflowError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"{option}: cannot read {text!r} (LO:HI for powers of two, LO:HI:STEP, or A,B,C)") from None


def _check_range(option: str, value: int | None, bounds: tuple[int, int]) -> None:
    if value is not None and not bounds[0] <= value <= bounds[1]:
        raise InputError(f"{option}: must be in {bounds[0]}..{bounds[1]}, got {value}")


def load_workload(spec: str, mode: str, batch: int, input_side: int | None, input_channels: int | None):
    """A shipped network, a genotype JSON or a topology CSV as a `Workload`."""
    from capsacc.cli import load_network
    from capsacc.dse.topology import BUILTIN_TOPOLOGIES, builtin_topology, read_topology
    from capsacc.dse.workload import capsule_workload, preset_network, rescaled_genotype, topology_workload
    from capsacc.network import MAX_CHANNELS, MAX_SIDE, PRESETS, Network, read_genotype_json

    _check_range("--batch", batch, BATCH_RANGE)
    _check_range("--input-side", input_side, (1, MAX_SIDE))  # the genotype field bounds
    _check_range("--input-channels", input_channels, (1, MAX_CHANNELS))
    if spec in BUILTIN_TOPOLOGIES:
        return topology_workload(spec, builtin_topology(spec), mode, batch)
    if spec in PRESETS:
        return capsule_workload(preset_network(spec, input_side, input_channels), mode, batch)
    check_preset_or_file(spec, NETWORKS, "a shipped network")
    path = Path(spec)
    if path.suffix.lower() == ".csv":
        return topology_workload(path.stem, read_topology(path), mode, batch)
    network = load_network(spec)
    if input_side is None and input_channels is None:
        return capsule_workload(network, mode, batch)
    genotype = read_genotype_json(path)
    first = genotype[0]
    rescaled = rescaled_genotype(genotype, input_side or first[1], input_channels or first[2])
    return capsule_workload(Network.from_genotype(rescaled, network.name), mode, batch)


def _dse_command(args) -> int:
    import time

    from capsacc.dse.explore import OUTPUT_FILES, best_rows, write_outputs
    from capsacc.files import prepare_output_dir
    from capsacc.dse.grid import DesignGrid, evaluate

    workload = load_workload(args.network, args.mode, args.batch, args.input_side, args.input_channels)
    sram = {buffer: parse_values(getattr(args, f"{buffer}_sram_kB") or args.sram_kB,
                                 f"--{buffer}-sram-kB" if getattr(args, f"{buffer}_sram_kB") else "--sram-kB")
            for buffer in ("ifmap", "filter", "ofmap")}
    grid = DesignGrid(rows=parse_values(args.rows, "--rows", int), cols=parse_values(args.cols, "--cols", int),
                      dataflows=tuple(d.strip() for d in args.dataflow.split(",")), ifmap_sram_kB=sram["ifmap"],
                      filter_sram_kB=sram["filter"], ofmap_sram_kB=sram["ofmap"],
                      period_ns=parse_values(args.period_ns, "--period-ns"), sram_overhead=args.sram_overhead)
    out = prepare_output_dir(args.out, files=OUTPUT_FILES)  # after the inputs' checks, before the exploration
    evaluate(workload, DesignGrid(rows=grid.rows[:1], cols=grid.cols[:1]))  # loads the compiled kernels
    start = time.perf_counter()
    results = evaluate(workload, grid)
    seconds = time.perf_counter() - start
    pareto = write_outputs(results, out, command=_command_line(args))
    print(f"{workload.name} {workload.mode} (batch {workload.batch}): {len(workload.gemms)} GEMMs, "
          f"{workload.macs} MACs, {workload.vector_elements} activation-unit elements")
    print(f"{grid.size} design points in {seconds:.3f} s ({grid.size / seconds:,.0f} points/s); "
          f"{len(pareto)} on the (power, area, latency) Pareto front")
    for label, rows in best_rows(results, pareto):
        print(label)
        for line in rows:
            print(line)
    print(f"wrote {out / 'designs.csv'}, {out / 'pareto.csv'}, {out / 'pareto.png'}, {out / 'run.json'}")
    return 0


def _command_line(args) -> str:
    parts = ["nascaps dse", f"--network {args.network}", f"--mode {args.mode}", f"--rows {args.rows}",
             f"--cols {args.cols}", f"--dataflow {args.dataflow}", f"--sram-kB {args.sram_kB}",
             *(f"--{b}-sram-kB {getattr(args, f'{b}_sram_kB')}" for b in ("ifmap", "filter", "ofmap")
               if getattr(args, f"{b}_sram_kB")),
             f"--period-ns {args.period_ns}", f"--batch {args.batch}", f"--sram-overhead {args.sram_overhead}"]
    if args.input_side is not None:
        parts.append(f"--input-side {args.input_side}")
    if args.input_channels is not None:
        parts.append(f"--input-channels {args.input_channels}")
    return " ".join(parts + [f"--out {args.out}"])


def _systolic_command(args) -> int:
    from capsacc.dse.grid import DesignGrid
    from capsacc.dse.systolic import DATAFLOWS, REPORT_COLUMNS, layer_reports, sram_words
    from capsacc.dse.topology import BUILTIN_TOPOLOGIES, builtin_topology, read_topology
    from capsacc.dse.workload import topology_workload

    sram = parse_values(args.sram_kB, "--sram-kB")
    if len(sram) != 3:
        raise InputError(f"--sram-kB: give three positive sizes ifmap,filter,ofmap, got {args.sram_kB!r}")
    DesignGrid(rows=(args.rows,), cols=(args.cols,), dataflows=(args.dataflow,), ifmap_sram_kB=sram[:1],
               filter_sram_kB=sram[1:2], ofmap_sram_kB=sram[2:])  # checks the ranges
    check_preset_or_file(args.topology, BUILTIN_TOPOLOGIES, "a shipped topology")
    layers = builtin_topology(args.topology) if args.topology in BUILTIN_TOPOLOGIES else read_topology(args.topology)
    workload = topology_workload(Path(args.topology).stem, layers, "inference")
    workload.check_int64((args.rows, args.rows), (args.cols, args.cols))
    words = [sram_words(s) for s in sram]
    flow = DATAFLOWS.index(args.dataflow)
    reports = layer_reports(workload.gemm_table(), args.rows, args.cols, flow, *words)
    if args.replay:
        from capsacc.dse.replay import check_replay, replay_layer

        check_replay(layers, args.rows, args.cols, flow, words[2])
        for row, layer in zip(reports, layers):
            replayed = replay_layer(layer, args.rows, args.cols, flow, *words)
            row[4:] = (replayed.dram_ifmap_reads, replayed.dram_filter_reads, replayed.dram_ofmap_writes,
                       replayed.total_cycles_incl_prefetch)
    config = {"topology": args.topology, "rows": args.rows, "cols": args.cols, "dataflow": args.dataflow,
              "ifmap_sram_kB": sram[0], "filter_sram_kB": sram[1], "ofmap_sram_kB": sram[2],
              "word_bytes": 1, "model": "scalesim-3.0.0-replay" if args.replay else "scalesim-3.0.0-closed-form"}
    if args.json:
        layers_out = [{"layer": layer.name, **dict(zip(REPORT_COLUMNS, map(int, row)))}
                      for layer, row in zip(layers, reports)]
        print(json.dumps({"config": config, "layers": layers_out}))
        return 0
    print(", ".join(f"{k}={v}" for k, v in config.items()))
    print(f"{'LayerID':>7} {'layer':<20}" + "".join(f"{c:>19}" for c in REPORT_COLUMNS[:-1])
          + f"{REPORT_COLUMNS[-1]:>28}")
    for index, (layer, row) in enumerate(zip(layers, reports)):
        print(f"{index:>7} {layer.name:<20}" + "".join(f"{int(v):>19}" for v in row[:-1]) + f"{int(row[-1]):>28}")
    totals = reports.sum(axis=0)
    print(f"{'':>7} {'total':<20}" + "".join(f"{int(v):>19}" for v in totals[:-1]) + f"{int(totals[-1]):>28}")
    return 0
