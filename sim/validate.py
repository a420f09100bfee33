"""`nascaps validate`: both cost models against the compute bound and, with `--simulate`, against the
RTL, operation by operation.

The rows are the network's operations (`capsacc.network.expand`), which the published model prices
one by one. The calibrated model and the RTL run the steps of `capsacc.mapping.chain` instead, and
each step is charged to one operation (`Step.index`), as `capsacc.calibrated.network_costs` charges
them: a routing operation is the routing phase at its position in its run of routing operations
(`capsacc.mapping.operation_kinds`: uniform, update, softmax, update, softmax; the published model's
five routing rows of a Sabour class layer are so the three iterations' phases), and a CapsCell
network's element-wise steps (ToCapsules, the ConvCaps3D's routing, the skip sums) count with the
operation that `chain` gives them. Per operation and per image:

- `macs`: the multiply-accumulates of its steps (`sim.network_run.step_macs`: the operation's own,
  `Operation.macs`, routing phases included, and the values an element-wise step streams), as
  `nascaps rtl run` counts them; where a routing's logits are not resident (small arrays), an update
  phase runs nothing and a softmax phase also recomputes the logits (`routing_phase_macs`), so each
  row's bound counts the work its steps run;
- `compute_bound_cycles`: ceil(macs / (R·C)), the fewest cycles R·C one-MAC PEs need;
- `published_cycles`: the published NASCaps formulas on the same R x C (one image);
- `calibrated_cycles`: the calibrated model (`calibrated_accelerator`) for a batch of B images, an
  image's share (`capsacc.calibrated.per_image`: ceil(batch cycles / B));
- `rtl_cycles` (simulated): the busy cycles of its steps on the RTL for the batch
  (`sim.network_run.run_network`, the path of `nascaps rtl run`), an image's share by the same rule;
  `bit_exact`: every step of it equals the golden model; `published_error_pct` and
  `calibrated_error_pct`: (model - RTL) / RTL x 100.

The total sums each key over the operations (bit_exact: all of them; the errors are the totals').
"""

import dataclasses
import json
import sys

from capsacc.accelerator import Accelerator
from capsacc.array import ArrayConfig
from rtl.cli import add_depth_arguments, depth_fields
from capsacc.calibrated import DEFAULT_BATCH, Calibration, per_image
from capsacc.energy import EventEnergies
from capsacc.errors import InputError, check_seed
from capsacc.mapping import chain, operation_kinds
from capsacc.model import estimate
from capsacc.network import Network

MODELS = ("published", "calibrated")
"""The cost models compared, each with its `<model>_cycles` key."""

SUMMED = ("macs", "compute_bound_cycles", "published_cycles", "calibrated_cycles", "rtl_cycles")
"""The integer keys of an operation that the total sums."""


def model_config(rows: int, cols: int, batch: int, depths: dict | None = None) -> ArrayConfig:
    """The shipped calibration's array with `rows` x `cols` PEs, `batch` images per pass and the given
    memory depths (`capsacc.array.MEMORY_DEPTHS` fields; those left out: the calibration's)."""
    shipped = Calibration.shipped().config
    return dataclasses.replace(shipped, rows=rows, cols=cols, batch=batch, **(depths or {}))


def calibrated_accelerator(config: ArrayConfig) -> Accelerator:
    """The calibrated accelerator on `config`: the shipped calibration (`Accelerator.calibrated`) on its
    own array, else its coefficients on `config` when it covers that array (`Calibration.check_covers`;
    `AcceleratorConfigError` otherwise), with the event energies of the 45 nm tables for `config`
    (`EventEnergies.from_tables`) and the area of `sim.calibration.area_estimate`."""
    from sim.calibration import area_estimate

    calibration = Calibration.shipped()
    if config.hardware() != calibration.config.hardware():
        calibration.check_covers(config.rows, config.cols)
        energies = EventEnergies.from_tables(config)
        calibration = dataclasses.replace(calibration, config=config, energies=energies,
                                          area_um2=area_estimate(config)["area_um2"])
    return Accelerator.from_calibration(calibration.with_batch(config.batch))


def model_rows(network: Network, config: ArrayConfig) -> list[dict]:
    """Per operation of `network`: name, kind (the calibrated model's: routing by phase), macs,
    compute_bound_cycles, published_cycles and calibrated_cycles on `config` (see the module docstring)."""
    from sim.network_run import step_macs

    published = dataclasses.replace(Accelerator.published(), rows=config.rows, cols=config.cols)
    costs = {"published": estimate(network, published), "calibrated": estimate(network, calibrated_accelerator(config))}
    macs = [0] * len(network.operations)  # after the estimates, which name the operation that does not fit
    for step in chain(network.operations):
        macs[step.index] += step_macs(step, config)
    cycles = {model: costs[model].operation_cycles for model in MODELS}
    pes = config.rows * config.cols
    return [{"name": op.name, "kind": kind, "macs": macs[i], "compute_bound_cycles": -(-macs[i] // pes),
             **{f"{model}_cycles": cycles[model][i] for model in MODELS}}
            for i, (op, kind) in enumerate(zip(network.operations, operation_kinds(network.operations)))]


def simulate(network: Network, rows: list[dict], config: ArrayConfig, simulator: str, seed: int = 0,
             progress=None) -> str | None:
    """Run `network` on the RTL (`run_network` on a batch of `config.batch` MNIST images, random int8
    weights of `seed`) and add to each of `rows` (`model_rows`) its rtl_cycles, bit_exact and the
    models' errors. Returns the mismatch that stopped the run (its operation: bit_exact False; later
    ones: None), or None. `progress(name, run)` after each step."""
    from sim.driver import MismatchError, OperationDriver
    from sim.network_run import check_chainable, network_images, run_network, step_name
    from sim.verilator import VerilatorError, verilator_version

    check_chainable(network, config)
    images, _ = network_images(network, config.batch)
    steps = chain(network.operations)
    batch_cycles = [0] * len(rows)
    done = []

    def charge(step, run):
        batch_cycles[step.index] += run.cycles
        done.append(step)
        if progress:
            progress(step_name(network, step), run)

    failure = None
    try:
        if simulator == "verilator":
            verilator_version()
        run_network(network, OperationDriver(config, simulator), images, seed=seed, progress=charge)
    except VerilatorError as error:
        lines = str(error).splitlines()
        raise InputError(lines[0] if len(lines) < 2 else f"{lines[0]} {lines[-1]}") from None
    except MismatchError as error:
        failure = f"operation {step_name(network, steps[len(done)])}: {' '.join(str(error).splitlines())}"
    unfinished = {step.index for step in steps[len(done):]}
    for i, row in enumerate(rows):
        rtl = None if i in unfinished else per_image(batch_cycles[i], config.batch)
        exact = False if failure and i == steps[len(done)].index else None if i in unfinished else True
        row.update(rtl_cycles=rtl, bit_exact=exact, **errors_pct(row, rtl))
    return failure


def errors_pct(row: dict, rtl_cycles: int | None) -> dict:
    """`<model>_error_pct` of each model: (model cycles - RTL cycles) / RTL cycles x 100, None without RTL cycles."""
    return {f"{model}_error_pct": (100 * (row[f"{model}_cycles"] - rtl_cycles) / rtl_cycles if rtl_cycles else None)
            for model in MODELS}


def total_row(rows: list[dict]) -> dict:
    """The sum of each key of `SUMMED` that the rows carry (None when an operation lacks it), bit_exact
    when every operation is, and the models' errors of the totals."""
    total = {"name": "total", "kind": ""}
    for key in SUMMED:
        if key in rows[0]:
            values = [row[key] for row in rows]
            total[key] = None if None in values else sum(values)
    if "bit_exact" in rows[0]:
        total["bit_exact"] = all(row["bit_exact"] is True for row in rows)
        total.update(errors_pct(total, total["rtl_cycles"]))
    return total


def below_bound(rows: list[dict]) -> dict[str, list[str]]:
    """Per model, the operations whose cycles are below their compute bound."""
    return {model: [row["name"] for row in rows if row[f"{model}_cycles"] < row["compute_bound_cycles"]]
            for model in MODELS}


def summary_line(name: str, rows: list[dict], total: dict) -> str:
    """One line: per model, the operations below the compute bound (with how many times below); with
    RTL cycles, the operations each model prices exactly and its total error, and bit-exactness."""
    parts = []
    for model, names in below_bound(rows).items():
        ratios = {row["name"]: row["compute_bound_cycles"] / max(row[f"{model}_cycles"], 1) for row in rows}
        listed = ", ".join(f"{n} ({ratios[n]:.1f}x)" for n in names)
        parts.append(f"{model} model below the compute bound on {len(names)} of {len(rows)} operations"
                     + (f": {listed}" if names else ""))
    if "rtl_cycles" in total:
        simulated = [row for row in rows if row["rtl_cycles"] is not None]
        for model in MODELS:
            equal = sum(row[f"{model}_cycles"] == row["rtl_cycles"] for row in simulated)
            error = "" if total[f"{model}_error_pct"] is None else f", total {total[f'{model}_error_pct']:+.2f} %"
            parts.append(f"{model} equals the RTL on {equal} of {len(rows)} operations{error}")
        exact = sum(row["bit_exact"] is True for row in rows)
        parts.append(f"bit-exact on {exact} of {len(rows)} operations")
    return f"{name}: " + "; ".join(parts)


def register(subparsers) -> None:
    """Add `nascaps validate` (registered by sim: with --simulate it runs the RTL)."""
    from sim.network_run import MNIST_TEST_IMAGES

    parser = subparsers.add_parser(
        "validate", help="the cost models per operation against the compute bound and the RTL",
        description="Per operation of a network (the published expansion's, a routing by phase): MACs, the "
                    "compute bound ceil(MACs / (R*C)), the published NASCaps model's cycles (one image) and the "
                    "calibrated model's (per image of a batch of B); with --simulate also the RTL's (the run of "
                    "`nascaps rtl run`, per image), both models' relative errors and bit-exactness. Ends with a "
                    "summary line that names every operation a model prices below its compute bound.")
    parser.add_argument("network", metavar="GENOTYPE.json|capsnet|deepcaps",
                        help="a genotype file (NASCaps .chr JSON list) or a preset name")
    parser.add_argument("--rows", type=int, default=16, help="PE array rows R (default 16)")
    parser.add_argument("--cols", type=int, default=16, help="PE array columns C (default 16)")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                        help=f"images per batch of the calibrated model and the RTL (1..{MNIST_TEST_IMAGES}; "
                             f"default {DEFAULT_BATCH})")
    add_depth_arguments(parser, None, None)  # default: the shipped calibration's depths
    parser.add_argument("--simulate", action="store_true", help="also run the network on the RTL")
    parser.add_argument("--simulator", choices=("verilator", "amaranth"), default="verilator",
                        help="back end of --simulate (default verilator)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the RTL run's random weights (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_validate_command)


def _validate_command(args) -> int:
    from capsacc.cli import load_network_and_genotype
    from rtl.capsacc import check_buildable
    from rtl.widths import ACC_BITS
    from sim.network_run import MNIST_TEST_IMAGES

    if not 1 <= args.batch <= MNIST_TEST_IMAGES:
        raise InputError(f"--batch {args.batch}: must be in 1..{MNIST_TEST_IMAGES} (the test images of the packaged "
                         "MNIST subset)")
    check_seed(args.seed)
    try:
        config = model_config(args.rows, args.cols, args.batch, depth_fields(args))
        rtl_config = dataclasses.replace(config, acc_bits=ACC_BITS)  # cycles do not depend on the width
        check_buildable(rtl_config)
    except ValueError as error:
        raise InputError(f"array {args.rows}x{args.cols}: {error}") from None
    network, genotype = load_network_and_genotype(args.network)
    name = network.name or args.network
    rows = model_rows(network, config)
    failure = None
    if args.simulate:
        def progress(step, run):
            print(f"{step}: {run.kind} on the RTL, {run.cycles} batch cycles, bit-exact", file=sys.stderr, flush=True)

        failure = simulate(network, rows, rtl_config, args.simulator, args.seed, progress)
    total = total_row(rows)
    if args.json:
        print(json.dumps({"network": name, "genotype": genotype, "array": config.hardware(), "batch": config.batch,
                          "simulator": args.simulator if args.simulate else None, "operations": rows, "total": total,
                          "below_compute_bound": below_bound(rows)} | ({"error": failure} if failure else {})))
    else:
        print(f"{name} on CapsAcc {config.rows}x{config.cols} (buffers {config.buffer_depth} rows, program "
              f"{config.program_depth} words), batch of {config.batch} image(s): cycles per image (the published "
              "model prices one image)" + (f"; RTL on {args.simulator}, seed {args.seed}" if args.simulate else ""))
        print(_table(rows + [total]))
        print(summary_line(name, rows, total))
    if failure:
        print(f"nascaps validate: error: {failure}", file=sys.stderr)
        return 1
    return 0


def _table(rows: list[dict]) -> str:
    """The rows as aligned columns (the keys of the first row; None as '-')."""
    keys = [key for key in rows[0] if key != "name" and key != "kind"]
    width = max(14, *(len(row["name"]) + 2 for row in rows))

    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return f"{value:+.2f}" if isinstance(value, float) else str(value)

    cells = [[cell(row[key]) for key in keys] for row in rows]
    widths = [max(len(key), *(len(line[j]) for line in cells)) + 2 for j, key in enumerate(keys)]
    lines = [f"{'operation':<{width}}{'kind':<17}" + "".join(f"{key:>{w}}" for key, w in zip(keys, widths))]
    for row, line in zip(rows, cells):
        lines.append(f"{row['name']:<{width}}{row['kind']:<17}" + "".join(f"{c:>{w}}" for c, w in zip(line, widths)))
    return "\n".join(lines)
