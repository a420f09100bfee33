"""The `nascaps` subcommands of sim: `calibrate`."""

from capsacc.errors import InputError


def register(subparsers) -> None:
    """Add sim's subcommands."""
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
    parser.add_argument("--buffer-depth", type=int, default=16384, help="rows of each buffer (power of two)")
    parser.add_argument("--program-depth", type=int, default=1024, help="program words (power of two)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(handler=_calibrate_command)


def _calibrate_command(args) -> int:
    from rtl.capsacc import check_buildable
    from capsacc.files import prepare_output_dir
    from sim.calibration import OUTPUT_FILES, Settings, calibrate, summary_table, write_outputs
    from sim.verilator import VerilatorError, verilator_version

    if not 0 <= args.seed < 2 ** 64:
        raise InputError(f"--seed {args.seed}: must be in 0..2^64-1")
    if args.rows < 2 or args.cols < 4:
        raise InputError(f"--rows {args.rows} --cols {args.cols}: calibration needs at least 2 rows and 4 columns")
    settings = Settings(rows=args.rows, cols=args.cols, simulator=args.simulator, quick=args.quick, seed=args.seed,
                        buffer_depth=args.buffer_depth, program_depth=args.program_depth)
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
