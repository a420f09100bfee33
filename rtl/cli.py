"""The `nascaps rtl` subcommands: `export` (Verilog) and `synth` (yosys cells, flip-flops, area).

rtl imports nothing of the other nascaps packages, so bad parameters are reported here the way
`nascaps` reports every input error: one line on stderr, exit code 2.
"""

import argparse
import json
import sys
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
    print(f"nascaps rtl {command}: error: {message}", file=sys.stderr)
    return 2


def _config(args):
    from rtl.capsacc import CapsAccConfig

    config = CapsAccConfig(args.rows, args.cols, args.acc_bits, args.buffer_depth, args.program_depth)
    config.validate()
    return config


def _export_command(args) -> int:
    from rtl.export import export_verilog

    try:
        text = export_verilog(_config(args))
    except ValueError as error:
        return _fail("export", str(error))
    path = Path(args.output)
    try:
        path.write_text(text)
    except OSError as error:
        return _fail("export", f"{path}: cannot write ({error.strerror})")
    print(f"wrote {path}: CapsAcc {args.rows}x{args.cols}, acc_bits {args.acc_bits}, "
          f"buffer_depth {args.buffer_depth}, program_depth {args.program_depth}, {len(text.splitlines())} lines")
    return 0


def _synth_command(args) -> int:
    from rtl.synth import SynthError, synthesize

    try:
        _config(args)
        result = synthesize(args.rows, args.cols, args.acc_bits, args.buffer_depth, args.program_depth,
                            args.yosys)
    except ValueError as error:
        return _fail("synth", str(error))
    except SynthError as error:
        return _fail("synth", str(error))
    if args.output:
        path = Path(args.output)
        body = json.dumps(result.to_dict(), indent=1) if path.suffix == ".json" else result.summary()
        try:
            path.write_text(body + "\n")
        except OSError as error:
            return _fail("synth", f"{path}: cannot write ({error.strerror})")
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.summary())
    return 0
