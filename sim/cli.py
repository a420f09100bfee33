"""The `nascaps` subcommands of sim: `calibrate`, `validate` (`sim.validate`), `deploy` (`sim.deploy`), and
`rtl run` (added to rtl's `nascaps rtl`)."""

import json
import sys

from capsacc.array import DEFAULT_BUFFER_DEPTH, DEFAULT_PROGRAM_DEPTH
from capsacc.errors import InputError, check_seed
from rtl.cli import add_depth_arguments, depth_fields


def register(subparsers) -> None:
    """Add sim's subcommands: `calibrate`, `validate` (`sim.validate`), and `run` under `nascaps rtl`
    (registered before: entry points register in name order, and rtl's parser offers its subcommand
    group as `rtl_commands`)."""
    from sim.validate import register as register_validate

    _register_rtl_run(subparsers.choices["rtl"].get_default("rtl_commands"))
    register_validate(subparsers)
    _register_deploy(subparsers)
    parser = subparsers.add_parser(
        "calibrate", help="fit the calibrated cost model to cycle-accurate runs of the RTL",
        description="Run a sweep of operations bit-exactly on the CapsAcc RTL (the given array and two "
                    "non-square ones: R/2 x C-C/4 and R-R/4 x C/2), fit the calibrated model, and report its "
                    "errors and the published "
                    "model's on held-out operations. Writes DIR/calibration.json, DIR/errors.csv, "
                    "DIR/errors.png.")
    parser.add_argument("--rows", type=int, default=16, help="PE array rows (default 16)")
    parser.add_argument("--cols", type=int, default=16, help="PE array columns (default 16)")
    parser.add_argument("--simulator", choices=("verilator", "amaranth"), default="verilator",
                        help="back end (default verilator)")
    parser.add_argument("--quick", action="store_true", help="a smaller sweep (minutes)")
    parser.add_argument("--seed", type=int, default=2020, help="seed of the sweep and the random data")
    add_depth_arguments(parser, DEFAULT_BUFFER_DEPTH, DEFAULT_PROGRAM_DEPTH)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(handler=_calibrate_command)


def _calibrate_command(args) -> int:
    from rtl.capsacc import check_buildable
    from capsacc.files import prepare_output_dir
    from sim.calibration import OUTPUT_FILES, Settings, calibrate, summary_table, write_outputs
    from sim.verilator import VerilatorError, verilator_version

    check_seed(args.seed, limit=2 ** 64)
    if args.rows < 2 or args.cols < 4:
        raise InputError(f"--rows {args.rows} --cols {args.cols}: calibration needs at least 2 rows and 4 columns")
    settings = Settings(rows=args.rows, cols=args.cols, simulator=args.simulator, quick=args.quick, seed=args.seed,
                        depths=depth_fields(args))
    for array in settings.arrays():
        try:
            check_buildable(array)
        except ValueError as error:
            raise InputError(f"array {array.rows}x{array.cols}: {error}") from None
    out = prepare_output_dir(args.out, files=OUTPUT_FILES)
    try:
        if args.simulator == "verilator":
            verilator_version()
        calibration, _, errors = calibrate(settings)
    except ValueError as error:
        raise InputError(f"{error} (raise --buffer-depth or --program-depth)") from None
    except VerilatorError as error:
        lines = str(error).splitlines()
        raise InputError(lines[0] if len(lines) < 2 else f"{lines[0]} {lines[-1]}") from None
    write_outputs(out, calibration, errors)
    print(f"calibrated model on held-out operations (RTL {calibration.provenance['rtl_version'][:12]}, "
          f"arrays {', '.join(calibration.provenance['arrays'])}, {args.simulator}):")
    print(summary_table(errors))
    print("\nfitted coefficients (cycles):")
    from capsacc.calibrated import TARGET_FEATURES
    for name, value in zip(TARGET_FEATURES["cycles"], calibration.coefficients["cycles"]):
        print(f"  {name:<22}{value:>12.4f}")
    print(f"\narea {calibration.area_um2:.0f} um2; wrote {out / 'calibration.json'}, {out / 'errors.csv'}, "
          f"{out / 'errors.png'} ({calibration.provenance['wall_s']} s)")
    return 0


def _register_rtl_run(commands) -> None:
    from capsacc.array import ArrayConfig
    from capsacc.calibrated import DEFAULT_BATCH
    from rtl.widths import ACC_BITS
    from sim.network_run import MNIST_TEST_IMAGES

    parser = commands.add_parser(
        "run", help="run a whole network on the CapsAcc RTL, bit-exact, with its cycles and utilisation",
        description="Run every operation of a network on the simulated CapsAcc RTL, chained (each step fed "
                    "with the RTL outputs it reads, CapsCells with their skip sums; the input is an image of "
                    "the MNIST subset shipped in nas/data, weights random int8) and checked bit-exactly against "
                    "the golden model, on a batch of B images at once (MNIST test images 0..B-1). Prints per "
                    "step and in total, per image: macs, compute_bound_cycles (MACs / (R*C)), cycles (the "
                    "batch's busy cycles / B, rounded up per step), utilisation (compute_bound / cycles); the "
                    "batch's busy cycles (batch_cycles); bit_exact. The host writes only the programs and the "
                    "off-chip image: the DMA engine moves every buffer row over an off-chip port of "
                    "--offchip-bytes-per-cycle bytes and --offchip-latency-cycles; cycles are the compute's "
                    "(the programs with preloaded buffers), --json adds total_cycles (busy cycles of the DMA "
                    "programs, first byte in to last result out), offchip_bytes (buffer rows), program_bytes (the "
                    "words overlay programs load) and per operation bound (bandwidth when offchip_bytes / B "
                    "exceeds the compute's cycles).")
    parser.add_argument("network", metavar="GENOTYPE.json|capsnet|deepcaps",
                        help="a genotype file (NASCaps .chr JSON list) or a preset name")
    parser.add_argument("--rows", type=int, required=True, help="PE array rows R (1..64)")
    parser.add_argument("--cols", type=int, required=True, help="PE array columns C (1..63)")
    parser.add_argument("--simulator", choices=("verilator", "amaranth"), default="verilator",
                        help="back end (default verilator)")
    parser.add_argument("--acc-bits", type=int, default=ACC_BITS,
                        help=f"accumulator bits (default {ACC_BITS}: no sum of the search space wraps)")
    add_depth_arguments(parser, DEFAULT_BUFFER_DEPTH, DEFAULT_PROGRAM_DEPTH)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                        help=f"images processed together (1..{MNIST_TEST_IMAGES}; default {DEFAULT_BATCH}, the "
                             "calibrated accelerator's)")
    parser.add_argument("--offchip-bytes-per-cycle", type=int, default=ArrayConfig.offchip_bytes_per_cycle,
                        metavar="B", help="off-chip port width in bytes per cycle (power of two 1..64, default "
                                          f"{ArrayConfig.offchip_bytes_per_cycle})")
    parser.add_argument("--offchip-latency-cycles", type=int, default=ArrayConfig.offchip_latency_cycles,
                        metavar="L", help="cycles from an off-chip read request to its data (default "
                                          f"{ArrayConfig.offchip_latency_cycles})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_rtl_run_command)


def _utilisation_fields(macs: int, batch_cycles: int, cycles: int, rows: int, cols: int) -> dict:
    """Per image: `macs`, the compute bound, `cycles` (the per-image share of `batch_cycles`, the
    batch's busy cycles) and the utilisation they give."""
    return {"macs": macs, "compute_bound_cycles": -(-macs // (rows * cols)), "cycles": cycles,
            "utilisation": macs / (rows * cols * cycles) if cycles else 0.0, "batch_cycles": batch_cycles}


def _rtl_run_command(args) -> int:
    """`nascaps rtl run`; errors named like rtl's other subcommands' (`nascaps rtl run: error: ...`)."""
    try:
        return _rtl_run(args)
    except InputError as error:
        print(f"nascaps rtl run: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 2


def _rtl_run(args) -> int:
    from capsacc.array import ArrayConfig
    from capsacc.cli import load_network_and_genotype
    from rtl.capsacc import check_buildable
    from rtl.version import rtl_version
    from sim.driver import MismatchError, OperationDriver
    from capsacc.mapping import chain
    from sim.network_run import (MNIST_TEST_IMAGES, check_chainable, network_images, run_network, step_macs,
                                 step_name)
    from sim.verilator import VerilatorError, verilator_version
    from capsacc.calibrated import per_image

    check_seed(args.seed)
    if not 1 <= args.batch <= MNIST_TEST_IMAGES:
        raise InputError(f"--batch {args.batch}: must be in 1..{MNIST_TEST_IMAGES} (the test images of the packaged "
                         "MNIST subset)")
    try:
        config = ArrayConfig(args.rows, args.cols, args.acc_bits, **depth_fields(args), batch=args.batch,
                             offchip_bytes_per_cycle=args.offchip_bytes_per_cycle,
                             offchip_latency_cycles=args.offchip_latency_cycles)
        check_buildable(config)
    except ValueError as error:
        raise InputError(f"array {args.rows}x{args.cols}: {error}") from None
    network, genotype = load_network_and_genotype(args.network)
    check_chainable(network, config)
    images, image_source = network_images(network, config.batch)
    report = {"network": network.name or args.network, "genotype": genotype, "array": config.hardware(),
              "batch": config.batch, "simulator": args.simulator, "rtl_version": rtl_version(), "seed": args.seed,
              "image": image_source}
    rows, cols = config.rows, config.cols
    operations = []
    width = max(14, *(len(step_name(network, step)) + 2 for step in chain(network.operations)))
    header = (f"{'operation':<{width}}{'kind':<17}{'macs':>12}{'compute_bound_cycles':>22}{'cycles':>12}"
              f"{'utilisation':>13}{'batch_cycles':>14}  bit_exact")

    def line(name, kind, fields, exact):
        return (f"{name:<{width}}{kind:<17}{fields['macs']:>12}{fields['compute_bound_cycles']:>22}{fields['cycles']:>12}"
                f"{fields['utilisation']:>13.4f}{fields['batch_cycles']:>14}  {'yes' if exact else 'no'}")

    def progress(step, run):
        name = step_name(network, step)
        fields = _utilisation_fields(step_macs(step, config), run.cycles, per_image(run.cycles, config.batch),
                                     rows, cols)
        operations.append({"name": name, "kind": run.kind, **fields, "bit_exact": True, "runs": run.runs,
                           "host_cycles": run.host_cycles, "total_cycles": per_image(run.total_cycles, config.batch),
                           "batch_total_cycles": run.total_cycles, "offchip_bytes": run.offchip_bytes,
                           "program_bytes": run.program_bytes, "bound": run.bound})
        text = line(name, run.kind, fields, True)
        print(text, file=sys.stderr if args.json else sys.stdout, flush=True)

    if not args.json:
        print(f"{report['network']} on {args.simulator} CapsAcc {rows}x{cols} (acc_bits {config.acc_bits}, buffers "
              f"{config.buffer_depth} rows, program {config.program_depth} words, off-chip port "
              f"{config.offchip_bytes_per_cycle} B/cycle, latency {config.offchip_latency_cycles} cycles), "
              f"RTL {report['rtl_version'][:12]}, "
              f"seed {args.seed}, batch of {config.batch} image(s) {image_source}; figures per image but "
              "batch_cycles")
        print(header, flush=True)
    failure = None
    try:
        if args.simulator == "verilator":
            verilator_version()
        run_network(network, OperationDriver(config, args.simulator, offchip=True), images, seed=args.seed,
                    progress=progress)
    except VerilatorError as error:
        lines = str(error).splitlines()
        raise InputError(lines[0] if len(lines) < 2 else f"{lines[0]} {lines[-1]}") from None
    except MismatchError as error:
        failure = (f"operation {step_name(network, chain(network.operations)[len(operations)])}: "
                   f"{' '.join(str(error).splitlines())}")
    total = _utilisation_fields(sum(o["macs"] for o in operations), sum(o["batch_cycles"] for o in operations),
                                sum(o["cycles"] for o in operations), rows, cols)
    report.update(total, bit_exact=failure is None, operations=operations,
                  total_cycles=sum(o["total_cycles"] for o in operations),
                  batch_total_cycles=sum(o["batch_total_cycles"] for o in operations),
                  offchip_bytes=sum(o["offchip_bytes"] for o in operations))
    if args.json:
        print(json.dumps(report | ({"error": failure} if failure else {})))
    else:
        print(line("total", "", total, failure is None))
    if failure:
        print(f"nascaps rtl run: error: {failure}", file=sys.stderr)
        return 1
    return 0


def _register_deploy(subparsers) -> None:
    parser = subparsers.add_parser(
        "deploy", help="quantise a trained network to int8 and measure its accuracy on the golden model",
        description="Export MODEL.keras (written by nascaps train --save) as a float bundle (python -m nas.export), "
                    "quantise it to int8 with power-of-two scales, choose each layer's requantization shift on N "
                    "training images, run the whole test set through the bit-exact golden model, and write "
                    "DIR/deploy.json (docs/deploy.md).")
    parser.add_argument("model", metavar="MODEL.keras")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--data", metavar="PATH", help="mnist.npz (default: the packaged MNIST subset)")
    parser.add_argument("--rows", type=int, default=16, help="PE array rows (default 16)")
    parser.add_argument("--cols", type=int, default=16, help="PE array columns (default 16)")
    parser.add_argument("--calibration-images", type=int, default=256, metavar="N",
                        help="training images the shifts are chosen on (default 256)")
    parser.add_argument("--simulate-images", type=int, default=0, metavar="K",
                        help="also run the first K test images through the RTL and check them bit for bit against "
                             "the golden model (default 0)")
    parser.add_argument("--simulator", choices=("verilator", "amaranth"), default="verilator",
                        help="RTL back end of --simulate-images (default verilator)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration images' draw (default 0)")
    parser.set_defaults(handler=_deploy_command)


def _deploy_command(args) -> int:
    import contextlib
    import os
    import subprocess
    from pathlib import Path

    from capsacc.accelerator import Accelerator
    from capsacc.calibrated import DEFAULT_BATCH
    from capsacc.files import prepare_output_dir, write_atomic
    from capsacc.model import estimate
    from sim.deploy import deploy_bundle

    if args.calibration_images < 1:
        raise InputError(f"--calibration-images {args.calibration_images}: must be at least 1")
    check_seed(args.seed)
    if not Path(args.model).is_file():
        raise InputError(f"{args.model}: no such model file")
    if args.simulate_images < 0:
        raise InputError(f"--simulate-images {args.simulate_images}: must be 0 or more")
    if args.simulate_images:
        from capsacc.array import ArrayConfig
        from rtl.capsacc import check_buildable
        from sim import golden

        try:
            check_buildable(ArrayConfig(rows=args.rows, cols=args.cols, acc_bits=golden.ACC_BITS,
                                        batch=args.simulate_images))
        except ValueError as error:
            raise InputError(f"array {args.rows}x{args.cols}, batch {args.simulate_images}: {error}") from None
    # The model prices the batch the RTL runs, so its figures compare with the counters' one for one.
    accelerator = Accelerator.calibrated(batch=args.simulate_images or DEFAULT_BATCH)
    if (accelerator.rows, accelerator.cols) != (args.rows, args.cols):
        try:
            accelerator = Accelerator.from_tables(rows=args.rows, cols=args.cols)
        except ValueError as error:
            raise InputError(f"--rows {args.rows} --cols {args.cols}: {error}") from None
    created = [folder for folder in (Path(args.out), *Path(args.out).parents) if not folder.exists()]  # deepest first
    out = prepare_output_dir(args.out, files=("deploy.json",))
    command = [sys.executable, "-m", "nas.export", args.model, "--out", str(out / "bundle"),
               "--calibration-images", str(args.calibration_images), "--seed", str(args.seed)]
    if args.data is not None:
        command += ["--data", args.data]
    root = str(Path(__file__).resolve().parents[1])  # the folder holding sim and nas
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    export = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if export.returncode != 0:  # nas.export refuses bad input before it writes: leave no folder of ours
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        lines = [line for line in export.stderr.splitlines() if line.strip()]
        raise InputError(lines[-1].split("error: ", 1)[-1] if lines else f"nas.export exited {export.returncode}")
    deployment, figures = deploy_bundle(out / "bundle")
    bundle = json.loads((out / "bundle" / "bundle.json").read_text())
    cost = estimate(deployment.network, accelerator)
    rtl = {"rtl_images": 0, "rtl_bit_exact": None}
    if args.simulate_images:
        rtl = _deploy_simulate(args, deployment, out, accelerator.offchip_pJ_per_byte)
    cycles = rtl.get("rtl_cycles_per_image", cost.cycles)
    model_energy = cost.energy_mJ if cost.total_energy_mJ is None else cost.total_energy_mJ
    energy = rtl.get("rtl_energy_mJ_per_image", model_energy)
    record = {**{name: figures[name] for name in ("float_accuracy", "int8_accuracy", "agreement", "test_images")},
              **rtl, "cycles_per_image": cycles, "latency_ms_per_image": cycles * accelerator.period_ns * 1e-6,
              "energy_mJ_per_image": energy, "cost_model": cost.model, "model_cycles_per_image": cost.cycles,
              "model_latency_ms_per_image": cost.latency_ms, "model_energy_mJ_per_image": model_energy,
              "model_offchip_bytes_per_image": cost.offchip_bytes,
              "model_offchip_energy_mJ_per_image": cost.offchip_energy_mJ,
              "calibration_images": figures["calibration_images"], "shifts": figures["shifts"],
              "layers": figures["layers"], "model": bundle["model"], "genotype": bundle["genotype"],
              "accelerator": accelerator.to_dict(), "dataset": bundle["dataset"], "seed": args.seed}
    write_atomic(out / "deploy.json", json.dumps(record, indent=1) + "\n")
    rtl_line = "" if not args.simulate_images else (
        f"; RTL ({args.simulator}) on {record['rtl_images']} images: "
        f"{'bit-exact' if record['rtl_bit_exact'] else 'NOT bit-exact'}")
    print(f"float {record['float_accuracy']:.4f}  int8 {record['int8_accuracy']:.4f}  agreement "
          f"{record['agreement']:.4f} on {record['test_images']} test images{rtl_line}; per image "
          f"{cycles} cycles, {record['latency_ms_per_image']:.4g} ms, {energy:.4g} mJ "
          f"({'RTL counters' if 'rtl_cycles_per_image' in rtl else cost.model}); {cost.model}: {cost.cycles} cycles, "
          f"{model_energy:.4g} mJ; {out / 'deploy.json'}")
    return 0 if record["rtl_bit_exact"] is not False else 1


def _deploy_simulate(args, deployment, out, offchip_pJ_per_byte: float) -> dict:
    """deploy.json's RTL fields of `nascaps deploy --simulate-images K` (`sim.deploy.rtl_figures` when
    it ran bit-exact); writes the memory image files into out/memory (`sim.memory_files`)."""
    import numpy as np

    from sim.deploy import rtl_figures, simulate
    from sim.driver import MismatchError
    from sim.memory_files import write_memory_files
    from rtl.version import rtl_version
    from sim.verilator import VerilatorError, verilator_version

    with np.load(out / "bundle" / "bundle.npz") as data:
        pixels = data["test_images"][:args.simulate_images]
    checked = {"rtl_images": len(pixels), "rtl_version": rtl_version(), "simulator": args.simulator}
    try:
        if args.simulator == "verilator":
            verilator_version()
        run, exact = simulate(deployment, pixels, args.rows, args.cols, args.simulator)
    except VerilatorError as error:
        raise InputError(str(error).splitlines()[0]) from None
    except MismatchError as error:
        print(f"nascaps deploy: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return {**checked, "rtl_bit_exact": False}
    return {**checked, "rtl_bit_exact": exact, **rtl_figures(run, len(pixels), offchip_pJ_per_byte),
            "memory_files": write_memory_files(deployment.network, run, out / "memory")}
