"""The `nascaps` command: a thin layer over the Python API.

Subcommands are contributed by each package through the `nascaps.commands` entry-point group
(see pyproject.toml): an entry point names a `register(subparsers)` function that adds its
parsers and sets `handler(args) -> int` on each. capsacc owns the command but imports none of the
packages built on it. Bad input (`InputError`) prints one line on stderr and exits with code 2.
"""

import argparse
import dataclasses
import json
import os
import sys
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path

from capsacc.accelerator import Accelerator
from capsacc.array import ARRAY_LIMITS
from capsacc.errors import InputError
from capsacc.files import check_preset_or_file
from capsacc.model import estimate
from capsacc.network import PRESETS, Network, read_genotype_json


class _UsageError(Exception):
    """A command line that argparse refuses; `main` prints it on one line."""

    def __init__(self, prog: str, message: str):
        super().__init__(f"{prog}: error: {message} (see `{prog} --help`)")


class _Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose usage errors are one line (with a `--help` hint) instead of the usage
    text; subparsers are of this class too (argparse makes them of the parent's class)."""

    def error(self, message: str):
        raise _UsageError(self.prog, " ".join(message.split()))


def _version() -> str:
    try:
        return version("nascaps")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nascaps", description="Hardware-aware NAS of capsule networks on the CapsAcc accelerator.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry in sorted(entry_points(group="nascaps.commands"), key=lambda e: e.name):
        entry.load()(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one `nascaps` command; returns the exit code.

    Results go to stdout, progress and errors to stderr. Every failure the user can cause is one line
    on stderr: bad input (`InputError`) and usage errors `nascaps CMD: error: ...` with exit code 2, an
    operating-system error on a file (`OSError`) likewise, Ctrl-C `nascaps CMD: interrupted` with
    exit code 130. A closed stdout (`nascaps estimate g.json | head -1`) ends the command quietly.
    """
    parser = build_parser()
    command = "nascaps"
    try:
        _refuse_leading_options(sys.argv[1:] if argv is None else argv)
        args, extras = parser.parse_known_args(argv)
        command = f"nascaps {args.command}"
        if extras:
            raise _UsageError(command, f"unrecognized arguments: {' '.join(extras)}")
        code = args.handler(args)
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at interpreter exit
        return code
    except _UsageError as error:
        print(error, file=sys.stderr)
        return 2
    except InputError as error:
        print(f"{command}: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"{command}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


TOP_LEVEL_OPTIONS = ("-h", "--help", "--version")
"""The options `nascaps` takes before its COMMAND."""


def _refuse_leading_options(argv: list[str]) -> None:
    """A usage error naming the options before the COMMAND that `nascaps` does not take (`parse_known_args`,
    which leaves unknown options for the subcommand, would report a missing COMMAND instead)."""
    leading = argv[:next((i for i, word in enumerate(argv) if not word.startswith("-") or word == "--"), len(argv))]
    unknown = [word for word in leading if word not in TOP_LEVEL_OPTIONS]
    if unknown:
        raise _UsageError("nascaps", f"unrecognized arguments: {' '.join(unknown)}")


def _silence_stdout() -> None:
    """After a closed pipe on stdout: point stdout at /dev/null so that the interpreter's final flush
    does not fail again (the recipe of the Python documentation, signal module, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured)
        pass


def register(subparsers) -> None:
    """Add capsacc's subcommands (`estimate`)."""
    parser = subparsers.add_parser(
        "estimate", help="energy, latency and memory of a network on CapsAcc",
        description="Cost of a NASCaps genotype on the CapsAcc accelerator: by default the model calibrated against "
                    "this project's RTL (--accelerator calibrated), or the published NASCaps model (--accelerator "
                    "published).")
    parser.add_argument("network", metavar="GENOTYPE.json|" + "|".join(PRESETS),
                        help="a genotype file (NASCaps .chr JSON list) or a preset name")
    parser.add_argument("--accelerator", default=DEFAULT_ACCELERATOR, metavar="calibrated|published|FILE.toml",
                        help=f"accelerator preset or TOML file (default: {DEFAULT_ACCELERATOR})")
    parser.add_argument("--batch", type=int, default=None, metavar="B",
                        help="images per batch of a calibrated accelerator (1..4096; default: the accelerator's, "
                             "8 for the calibrated preset); its figures are per image")
    parser.add_argument("--most-scheduled-instructions", type=int, default=MOST_SCHEDULED_INSTRUCTIONS, metavar="N",
                        help="a calibrated accelerator's total_cycles (with the data movement) schedule every DMA "
                             "program in Python, about 10 us an instruction: left out, and said so, when a batch's "
                             f"programs hold more than N instructions (default {MOST_SCHEDULED_INSTRUCTIONS:,}: about "
                             "20 s; CapsNet holds 217,427; 0: no limit)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=_estimate_command)


MOST_SCHEDULED_INSTRUCTIONS = 2_000_000
"""`nascaps estimate`'s default limit on the DMA instructions its total cycles schedule."""


ACCELERATOR_PRESETS = ("published", "calibrated")
"""Accelerator presets the CLI accepts by name (each an `Accelerator.<name>()` constructor)."""

DEFAULT_ACCELERATOR = "calibrated"
"""The preset of `nascaps estimate` and `nascaps search` when `--accelerator` is not given: the model
calibrated against the RTL (the published model prices CapsNet below its compute bound; README)."""


def load_accelerator(spec: str, batch: int | None = None) -> Accelerator:
    """An accelerator preset name (`ACCELERATOR_PRESETS`) or a TOML file; `batch` (when given) sets
    the images per batch of a calibrated one (`InputError` for another accelerator or outside 1..4096)."""
    check_preset_or_file(spec, ACCELERATOR_PRESETS, "an accelerator preset")
    accelerator = getattr(Accelerator, spec)() if spec in ACCELERATOR_PRESETS else Accelerator.from_toml(spec)
    if batch is None:
        return accelerator
    if accelerator.calibration is None:
        raise InputError(f"--batch {batch}: only a calibrated accelerator runs batches (the published model "
                         "costs one image)")
    low, high = ARRAY_LIMITS["batch"]
    if not low <= batch <= high:
        raise InputError(f"--batch {batch}: must be in {low}..{high}")
    return dataclasses.replace(accelerator, calibration=accelerator.calibration.with_batch(batch))


def load_network(spec: str) -> Network:
    """A preset name or a genotype JSON file; errors name the file."""
    return load_network_and_genotype(spec)[0]


def load_network_and_genotype(spec: str) -> tuple[Network, list]:
    """The network of a preset name or a genotype JSON file, and its genotype list (what a result
    records as its provenance); errors name the file."""
    if spec in PRESETS:
        return Network.preset(spec), PRESETS[spec]
    check_preset_or_file(spec, PRESETS, "a network preset")
    path = Path(spec)
    genotype = read_genotype_json(path)
    try:
        return Network.from_genotype(genotype, name=path.stem), genotype
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


def _estimate_command(args) -> int:
    network, genotype = load_network_and_genotype(args.network)
    if args.most_scheduled_instructions < 0:
        raise InputError(f"--most-scheduled-instructions {args.most_scheduled_instructions}: must be 0 (no limit) "
                         "or more")
    result = estimate(network, load_accelerator(args.accelerator, args.batch), args.most_scheduled_instructions or None)
    if args.json:
        print(json.dumps({"network": network.name, "genotype": genotype, **result.to_dict()}))
        return 0
    calibrated = result.movement is not None
    header = f"{'operation':<14}{'kind':<11}{'weights':>10}{'sums_per_out':>13}{'data_per_weight':>16}" \
             f"{'w_loads':>9}{'cycles':>10}{'accumulators':>13}{'power_mW':>10}{'energy_mJ':>12}" \
             + (f"{'total_cycles':>14}" if calibrated else "")
    print(header)
    for op in result.operations:
        total = f"{'-' if op.total_cycles is None else op.total_cycles:>14}" if calibrated else ""
        print(f"{op.name:<14}{op.kind:<11}{op.weights:>10}{op.sums_per_out:>13}{op.data_per_weight:>16}"
              f"{op.w_loads:>9}{op.cycles:>10}{op.accumulators:>13}{op.power_mW:>10.2f}{op.energy_mJ:>12.6f}{total}")
    acc = result.accelerator
    batch = (f", batch of {acc.calibration.config.batch} image(s): cycles and energy per image (throughput; a "
             "batch takes B times longer)" if acc.calibration is not None else "")
    print(f"\naccelerator {acc.name}: {acc.rows}x{acc.cols} PEs, {acc.period_ns} ns, model {result.model}{batch}")
    print(f"{'cycles':>12}{'latency_ms':>12}{'energy_mJ':>12}{'weights':>12}{'memory_KiB':>12}")
    print(f"{result.cycles:>12}{result.latency_ms:>12.6f}{result.energy_mJ:>12.6f}{result.weights:>12}"
          f"{result.memory_KiB:>12.2f}")
    if result.movement is not None:
        bound = ", ".join(op.name for op in result.operations if op.bound == "bandwidth") or "none"
        print(f"data movement ({acc.offchip_bytes_per_cycle} B/cycle port, {acc.offchip_pJ_per_byte} pJ/B): "
              f"offchip_bytes {result.offchip_bytes}, offchip_energy_mJ {result.offchip_energy_mJ:.6f}, "
              f"dma_buffer_energy_mJ {result.dma_buffer_energy_mJ:.6f}, total_energy_mJ {result.total_energy_mJ:.6f}; "
              f"bandwidth-bound operations: {bound}; total_cycles "
              + (f"{result.total_cycles} with the data movement, program_bytes {result.program_bytes} "
                 f"(program_energy_mJ {result.program_energy_mJ:.6f}, not in total_energy_mJ)"
                 if result.total_cycles_note is None else
                 f"and program_bytes {result.total_cycles_note} (--most-scheduled-instructions)")
              + " (cycles and latency are the compute's)")
    print(calibration_error_line(result))
    return 0


def calibration_error_line(result) -> str:
    """The line under the table that says how far the estimate's model is from the RTL it describes."""
    calibration = result.accelerator.calibration
    if calibration is None:
        return ("calibration error: none (the published NASCaps model is not fitted to an RTL; `nascaps validate "
                "--simulate` compares it with this project's)")
    if result.calibration_error_pct is None:
        return "calibration error: not recorded (the calibration's provenance holds no held-out errors)"
    rows = calibration.provenance["errors"]
    arrays = ", ".join(dict.fromkeys(row.get("array", "?") for row in rows))
    held_out = sum(row["held_out_ops"] for row in rows if isinstance(row.get("held_out_ops"), int))
    return (f"calibration error: {result.calibration_error_pct:.4f} % (the largest |relative error| of cycles and "
            f"event energy on the calibration's {held_out} held-out RTL operations, arrays {arrays})")
