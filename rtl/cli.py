"""The `nascaps rtl` subcommands: `export` (Verilog), `synth` (yosys cells, flip-flops, area) and
`fpga` (ECP5 resources and fmax with yosys synth_ecp5 and nextpnr-ecp5).

Bad parameters are reported the way `nascaps` reports every input error: one line on stderr naming
the command, exit code 2. Output files are checked before the long work and written atomically
(`capsacc.files`, the one module of capsacc that rtl uses).
"""

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path

from capsacc.files import prepare_output_dir, prepare_output_file, write_atomic
from rtl.widths import ACC_BITS


def memory_depths(config) -> str:
    """The memory depths of a `capsacc.array.ArrayConfig` in one phrase, for summaries."""
    return (f"depths data {config.data_depth}, weight {config.weight_depth}, routing {config.routing_depth}, "
            f"psum {config.psum_depth}, program {config.program_depth}")


def register(subparsers) -> None:
    """Add `nascaps rtl export`, `nascaps rtl synth` and `nascaps rtl fpga`."""
    from capsacc.array import DEFAULT_BUFFER_DEPTH, DEFAULT_PROGRAM_DEPTH
    from rtl.fpga import DEVICES, LUT_MAPPERS, NEXTPNR, SPEED_GRADES, YOSYS

    rtl = subparsers.add_parser("rtl", help="CapsAcc RTL: Verilog export, synthesis, FPGA implementation",
                                description="The CapsAcc accelerator in Amaranth HDL.")
    commands = rtl.add_subparsers(dest="rtl_command", required=True, metavar="COMMAND")
    rtl.set_defaults(rtl_commands=commands)  # for the `nascaps rtl` subcommands of packages rtl may not import

    export = commands.add_parser("export", help="write the Verilog of CapsAcc",
                                 description="Export the CapsAcc top level to Verilog (amaranth.back.verilog).")
    _design_arguments(export, buffer_depth=256, program_depth=64)
    export.add_argument("-o", "--output", required=True, metavar="FILE.v", help="Verilog file to write")
    export.set_defaults(handler=_export_command)

    synth = commands.add_parser("synth", help="synthesize CapsAcc with yosys and estimate its area",
                                description="Run yosys (synth with the hierarchy kept, the data, weight, routing, "
                                            "partial-sum and program memories as blackbox SRAM macros; stat) on "
                                            "CapsAcc and one PE; print cells, flip-flops and an area estimate of "
                                            "the logic (PE array, small RAMs, rest) and of each SRAM macro (45 nm "
                                            "bit cells x a stated overhead) with its energy per access, next to "
                                            "the published 45 nm figures.")
    _design_arguments(synth, buffer_depth=DEFAULT_BUFFER_DEPTH, program_depth=DEFAULT_PROGRAM_DEPTH)
    synth.add_argument("--yosys", default="yosys", help="yosys executable (default: yosys)")
    synth.add_argument("--json", action="store_true", help="print one JSON object")
    synth.add_argument("-o", "--output", metavar="FILE", help="also write the summary (.json: JSON, else text)")
    synth.set_defaults(handler=_synth_command)

    fpga = commands.add_parser("fpga", help="place and route CapsAcc on an ECP5 FPGA: resources and fmax",
                               description="Synthesize CapsAcc with yosys synth_ecp5 and place and route it with "
                                           "nextpnr-ecp5 (YoWASP builds, the 'fpga' extra); print LUTs, "
                                           "flip-flops, 18x18 multipliers (DSPs), block RAMs and fmax_MHz. "
                                           "A 4x4 array takes minutes.")
    _design_arguments(fpga, buffer_depth=256, program_depth=64)
    fpga.add_argument("--device", default="ecp5-85k", choices=list(DEVICES),
                      help="FPGA (default ecp5-85k: LFE5U-85F)")
    fpga.add_argument("--freq-MHz", type=float, default=100.0, dest="freq_MHz",
                      help="target clock frequency in MHz (default 100)")
    fpga.add_argument("--speed-grade", type=int, default=SPEED_GRADES[0], dest="speed_grade",
                      help=f"ECP5 speed grade, one of {', '.join(map(str, SPEED_GRADES))} (default {SPEED_GRADES[0]}, "
                           "the slowest; 8 is the fastest, e.g. LFE5U-85F-8)")
    fpga.add_argument("--seed", type=int, default=1, help="nextpnr placer seed (default 1)")
    fpga.add_argument("--lut-mapper", default="abc", choices=LUT_MAPPERS,
                      help="LUT mapping: abc (abc -lut 4:7, the default) or abc9 (synth_ecp5's own timing-driven "
                           "mapping)")
    fpga.add_argument("--no-dsp", action="store_true",
                      help="multipliers in LUTs, not in MULT18X18D blocks (synth_ecp5 -nodsp): for arrays with more "
                           "PEs than the device has multipliers")
    fpga.add_argument("--no-output-registers", action="store_true",
                      help="leave the registers behind the block RAMs in the fabric instead of in the blocks' "
                           "output registers (REGMODE OUTREG)")
    fpga.add_argument("--yosys", default=YOSYS, help=f"yosys executable (default: {YOSYS})")
    fpga.add_argument("--nextpnr", default=NEXTPNR, help=f"nextpnr-ecp5 executable (default: {NEXTPNR})")
    fpga.add_argument("--json", action="store_true", help="print one JSON object")
    fpga.add_argument("--out", metavar="DIR", help="also write fpga.json, the Verilog and the tools' logs and report "
                                                   "(the logs also when a tool fails)")
    fpga.set_defaults(handler=_fpga_command)


def _design_arguments(parser: argparse.ArgumentParser, buffer_depth: int, program_depth: int) -> None:
    parser.add_argument("--rows", type=int, required=True, help="PE array rows R (1..64)")
    parser.add_argument("--cols", type=int, required=True, help="PE array columns C (1..63)")
    parser.add_argument("--acc-bits", type=int, default=ACC_BITS,
                        help=f"accumulator bits (default {ACC_BITS}: no sum of the search space wraps)")
    add_depth_arguments(parser, buffer_depth, program_depth)


MEMORY_OPTIONS = {"data_depth": "data buffer", "weight_depth": "weight buffer", "routing_depth": "routing buffer",
                  "psum_depth": "partial-sum memory"}
"""The per-buffer depth options (`--data-depth` ...) by `capsacc.array.BUFFER_DEPTHS` field: what each sizes."""


def add_depth_arguments(parser: argparse.ArgumentParser, buffer_depth: int | None, program_depth: int | None) -> None:
    """`--buffer-depth` (rows of all four buffers), `--data-depth`, `--weight-depth`, `--routing-depth`,
    `--psum-depth` (one buffer's rows, default --buffer-depth) and `--program-depth` (words); read
    them back with `depth_fields`. A default of None leaves the depth to the caller's configuration."""
    default = lambda value: "the configuration's" if value is None else value  # noqa: E731
    parser.add_argument("--buffer-depth", type=int, default=buffer_depth,
                        help="rows of each buffer and of the partial-sum memory, a power of two "
                             f"(default {default(buffer_depth)})")
    for field, memory in MEMORY_OPTIONS.items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, default=None, dest=field,
                            help=f"rows of the {memory} alone, a power of two (default: --buffer-depth)")
    parser.add_argument("--program-depth", type=int, default=program_depth,
                        help=f"instruction words of the program memory, a power of two (default {default(program_depth)})")


def depth_fields(args) -> dict:
    """The `capsacc.array.MEMORY_DEPTHS` fields of parsed `add_depth_arguments` options, those given
    or with a default (every one where the defaults are numbers); a `--buffer-depth` the RTL cannot build
    is refused under its own name (`rtl.capsacc.check_depth`), not as the first memory it sets."""
    if args.buffer_depth is not None:
        from rtl.capsacc import check_depth
        check_depth("--buffer-depth", args.buffer_depth)
    fields = {field: args.buffer_depth if getattr(args, field) is None else getattr(args, field)
              for field in MEMORY_OPTIONS}
    fields["program_depth"] = args.program_depth
    return {field: value for field, value in fields.items() if value is not None}


def _fail(command: str, message: str) -> int:
    print(f"nascaps rtl {command}: error: {' '.join(message.splitlines())}", file=sys.stderr)
    return 2


def _config(args):
    from capsacc.array import ArrayConfig
    from rtl.capsacc import check_buildable

    config = ArrayConfig(args.rows, args.cols, args.acc_bits, **depth_fields(args))
    check_buildable(config)
    return config


def _export_command(args) -> int:
    from rtl.export import export_verilog

    path = Path(args.output)
    try:
        prepare_output_file(args.output)
        config = _config(args)
        text = export_verilog(config)
        write_atomic(path, text)
    except ValueError as error:  # InputError included
        return _fail("export", str(error))
    except OSError as error:
        return _fail("export", f"{path}: cannot write ({error.strerror})")
    print(f"wrote {path}: CapsAcc {args.rows}x{args.cols}, acc_bits {args.acc_bits}, {memory_depths(config)}, "
          f"{len(text.splitlines())} lines")
    return 0


def _synth_command(args) -> int:
    from rtl.synth import SynthError, synthesize

    path = Path(args.output) if args.output is not None else None
    try:
        if path is not None:
            prepare_output_file(args.output)
        result = synthesize(_config(args), args.yosys)
    except (ValueError, SynthError) as error:  # InputError included
        return _fail("synth", str(error))
    if path is not None:
        body = json.dumps(result.to_dict(), indent=1) if path.suffix == ".json" else result.summary()
        try:
            write_atomic(path, body + "\n")
        except OSError as error:
            return _fail("synth", f"{path}: cannot write ({error.strerror})")
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.summary())
    return 0


def _fpga_command(args) -> int:
    from rtl.fpga import (OUTPUT_FILES, REPORT_FILE, FpgaError, Terminated, check_flow_arguments, find_tool,
                          run_flow, terminate_raises)

    try:
        config = _config(args)
        check_flow_arguments(args.device, args.freq_MHz, args.seed, args.speed_grade)
        find_tool(args.yosys)
        find_tool(args.nextpnr)
        out = prepare_output_dir(args.out, files=OUTPUT_FILES + (REPORT_FILE,)) if args.out is not None else None
        with tempfile.TemporaryDirectory(prefix="nascaps-fpga-") as tmp, terminate_raises():
            try:
                result = run_flow(config, args.device, args.freq_MHz, args.seed, Path(tmp), args.yosys,
                                  args.nextpnr, dsp=not args.no_dsp, lut_mapper=args.lut_mapper,
                                  speed_grade=args.speed_grade, output_registers=not args.no_output_registers)
            finally:  # the logs of a failed run too
                for name in (OUTPUT_FILES + (REPORT_FILE,)) if out is not None else ():
                    if (Path(tmp) / name).exists():
                        write_atomic(out / name, (Path(tmp) / name).read_bytes())
    except (ValueError, FpgaError) as error:  # InputError included
        return _fail("fpga", str(error))
    except (Terminated, KeyboardInterrupt) as stop:  # the tools' process groups have been ended
        print(f"nascaps rtl fpga: {'terminated' if isinstance(stop, Terminated) else 'interrupted'}",
              file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.summary())
    return 0

