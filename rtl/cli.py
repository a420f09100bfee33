"""The `nascaps rtl` subcommands: `export` (Verilog) and `synth` (yosys cells, flip-flops, area).

rtl imports nothing of the other nascaps packages, so bad parameters are reported here the way
`nascaps` reports every input error: one line on stderr, exit code 2.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def register(subparsers) -> None:
    """Add `nascaps rtl export` and `nascaps rtl synth`."""
    rtl = subparsers.add_parser("rtl", help="CapsAcc RTL: Verilog export and synthesis",
                                description="The CapsAcc accelerator in Amaranth HDL.")
    commands = rtl.add_subparsers(dest="rtl_command", required=True, metavar="COMMAND")

    export = commands.add_parser("export", help="write the Verilog of CapsAcc",
                                 description="Export the CapsAcc top level to Verilog (amaranth.back.verilog).")
    _design_arguments(export, buffer_depth=256, program_depth=64)
    export.add_argument("-o", "--output", required=True, metavar="FILE.v", help="Verilog file to write")
    export.set_defaults(handler=_export_command)

    synth = commands.add_parser("synth", help="synthesize CapsAcc with yosys and estimate its area",
                                description="Run yosys (synth -flatten; stat) on CapsAcc and one PE; print "
                                            "cells, flip-flops and an area estimate next to the published "
                                            "45 nm figures.")
    _design_arguments(synth, buffer_depth=16, program_depth=16)
    synth.add_argument("--yosys", default="yosys", help="yosys executable (default: yosys)")
    synth.add_argument("--json", action="store_true", help="print one JSON object")
    synth.add_argument("-o", "--output", metavar="FILE", help="also write the summary (.json: JSON, else text)")
    synth.set_defaults(handler=_synth_command)


def _design_arguments(parser: argparse.ArgumentParser, buffer_depth: int, program_depth: int) -> None:
    parser.add_argument("--rows", type=int, required=True, help="PE array rows R (1..64)")
    parser.add_argument("--cols", type=int, required=True, help="PE array columns C (1..63)")
    parser.add_argument("--acc-bits", type=int, default=25, help="accumulator bits (default 25)")
    parser.add_argument("--buffer-depth", type=int, default=buffer_depth,
                        help=f"rows of each buffer and of the partial-sum memory, a power of two "
                             f"(default {buffer_depth})")
    parser.add_argument("--program-depth", type=int, default=program_depth,
                        help=f"instruction words of the program memory, a power of two (default {program_depth})")


def _fail(command: str, message: str) -> int:
    print(f"nascaps rtl {command}: error: {' '.join(message.splitlines())}", file=sys.stderr)
    return 2


class _OutputError(Exception):
    """An output file that cannot be written; the message names it."""


def _check_output(path: Path) -> None:
    """Refuse, before any long work, an output file that could not be written: a folder, or a file in a
    folder that does not exist or is not writable (rtl imports nothing of capsacc, whose
    `capsacc.files.prepare_output_file` the other commands use)."""
    if path.is_dir():
        raise _OutputError(f"{path}: output file is an existing folder")
    if path.exists() and not path.is_file():
        raise _OutputError(f"{path}: exists and is not a regular file (it would be replaced)")
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise _OutputError(f"{path}: {folder} is a file, not a folder")
    if not folder.is_dir():
        raise _OutputError(f"{path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _OutputError(f"{path}: the folder {folder} is not writable")


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file beside it and `os.replace`, so that a kill
    leaves the old file or the new one, never half of one."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(temporary, 0o666 & ~mask)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _config(args):
    from capsacc.array import ArrayConfig
    from rtl.capsacc import check_buildable

    config = ArrayConfig(args.rows, args.cols, args.acc_bits, args.buffer_depth, args.program_depth)
    check_buildable(config)
    return config


def _export_command(args) -> int:
    from rtl.export import export_verilog

    path = Path(args.output)
    try:
        _check_output(path)
        text = export_verilog(_config(args))
        _write_atomic(path, text)
    except ValueError as error:
        return _fail("export", str(error))
    except _OutputError as error:
        return _fail("export", str(error))
    except OSError as error:
        return _fail("export", f"{path}: cannot write ({error.strerror})")
    print(f"wrote {path}: CapsAcc {args.rows}x{args.cols}, acc_bits {args.acc_bits}, "
          f"buffer_depth {args.buffer_depth}, program_depth {args.program_depth}, {len(text.splitlines())} lines")
    return 0


def _synth_command(args) -> int:
    from rtl.synth import SynthError, synthesize

    path = Path(args.output) if args.output else None
    try:
        if path is not None:
            _check_output(path)
        _config(args)
        result = synthesize(args.rows, args.cols, args.acc_bits, args.buffer_depth, args.program_depth,
                            args.yosys)
    except (ValueError, SynthError, _OutputError) as error:
        return _fail("synth", str(error))
    if path is not None:
        body = json.dumps(result.to_dict(), indent=1) if path.suffix == ".json" else result.summary()
        try:
            _write_atomic(path, body + "\n")
        except OSError as error:
            return _fail("synth", f"{path}: cannot write ({error.strerror})")
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.summary())
    return 0
