"""The `nascaps` subcommands of nas."""

import json
import math

from capsacc.errors import GenotypeFormatError, InputError
from capsacc.files import check_preset_or_file, prepare_output_file
from capsacc.network import PRESETS
from nas.backend import configure_environment


def register(subparsers) -> None:
    """Add nas's subcommands, and prepare the environment for Keras before any command imports it
    (`nas.backend.configure_environment`: TensorFlow's C++ log quietened, the default backend when
    neither `KERAS_BACKEND` nor `keras.json` names one)."""
    configure_environment()
    register_train(subparsers)
    register_search(subparsers)
    register_pcc(subparsers)
    register_finalize(subparsers)


def register_train(subparsers) -> None:
    """Add `nascaps train`."""
    parser = subparsers.add_parser(
        "train", help="train a genotype for a few epochs",
        description="Train a NASCaps genotype with Keras 3 and report validation and test accuracy. "
                    "The validation split comes from the training images; test accuracy is measured at the end.")
    parser.add_argument("genotype", metavar="GENOTYPE.json|" + "|".join(PRESETS),
                        help="a genotype file (NASCaps .chr JSON list) or a preset name")
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion_mnist", "svhn", "cifar10"),
                        help="dataset (default mnist)")
    parser.add_argument("--data", metavar="PATH",
                        help="dataset file or folder, or 'keras' to download through keras.datasets "
                             "(default: the embedded MNIST subset for mnist, keras.datasets otherwise)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (default 3)")
    parser.add_argument("--train-samples", type=int, metavar="N",
                        help="use N training images, validation split included (default all)")
    parser.add_argument("--batch-size", type=int, default=100, help="batch size in images (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--learning-rate", type=float, default=0.001, help="Adam learning rate (default 0.001)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="wall-clock limit of the training")
    parser.add_argument("--threads", type=int, help="intra-op threads of the backend (default: all cores)")
    parser.add_argument("--test-every-epoch", action="store_true", help="also measure test accuracy after each epoch")
    parser.add_argument("--save", metavar="MODEL.keras", help="save the evaluation model (Keras format)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines on stderr")
    parser.set_defaults(handler=_train_command)


def _train_command(args) -> int:
    from nas.datasets import load_dataset
    from nas.evaluate import check_training_data
    from nas.genotype import Genotype
    from nas.train import TrainConfig, fit_to_data, train

    check_preset_or_file(args.genotype, PRESETS, "a network preset")
    genotype = Genotype.preset(args.genotype) if args.genotype in PRESETS else Genotype.load(args.genotype)
    genotype.validate()
    if args.save is not None:
        if not args.save.endswith(".keras"):
            raise InputError(f"--save {args.save}: the file name must end in .keras")
        prepare_output_file(args.save)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                         learning_rate=args.learning_rate, timeout_s=args.timeout,
                         train_samples=args.train_samples, threads=args.threads)
    dataset = load_dataset(args.dataset, args.data)
    check_training_data(dataset, config)
    try:
        fit_to_data(genotype, dataset)
    except GenotypeFormatError as error:
        raise InputError(f"{args.genotype}: {error}") from None
    result = train(genotype, dataset, config, test=True, progress=not args.quiet,
                   save_path=args.save, test_every_epoch=args.test_every_epoch)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"genotype {json.dumps(result.genotype)}")
        print(f"dataset {dataset.name} ({dataset.source}), backend {result.backend}, "
              f"{result.params} parameters (+{result.decoder_params} in the decoder)")
        for epoch, value in enumerate(result.val_accuracy, 1):
            test = (f", test accuracy {100 * result.test_accuracy_per_epoch[epoch - 1]:.2f}%"
                    if epoch <= len(result.test_accuracy_per_epoch) else "")
            print(f"epoch {epoch}: validation accuracy {100 * value:.2f}%{test}")
        if result.test_accuracy is not None:
            print(f"test accuracy {100 * result.test_accuracy:.2f}%")
        print(f"status {result.status}{': ' + result.message if result.message else ''}, {result.seconds:.1f} s")
        if args.save is not None and result.status == "ok":
            print(f"saved {args.save}")
    return 0 if result.status == "ok" else 1


def _positive_int(text: str) -> int:
    import argparse
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    import argparse
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be positive and finite, got {value}")
    return value


def _add_data_options(parser) -> None:
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion_mnist", "svhn", "cifar10"),
                        help="dataset (default mnist)")
    parser.add_argument("--data", metavar="PATH",
                        help="dataset file or folder, or 'keras' (default: the embedded MNIST subset for mnist)")


def _add_space_option(parser) -> None:
    parser.add_argument("--space", default="quick", metavar="quick|paper|FILE.toml",
                        help="search space: 'quick' (default; narrow layers that train in seconds), 'paper' "
                             "(the NASCaps space) or a TOML file of SearchSpace fields")


def load_space(spec: str):
    """`quick`, `paper` or a TOML file."""
    from nas.space import QUICK_SPACE, SearchSpace
    if spec == "quick":
        return QUICK_SPACE
    if spec == "paper":
        return SearchSpace()
    check_preset_or_file(spec, ("quick", "paper"), "a search space preset")
    return SearchSpace.from_toml(spec)


def register_search(subparsers) -> None:
    """Add `nascaps search`."""
    from nas.search import SearchConfig
    defaults = SearchConfig()
    parser = subparsers.add_parser(
        "search", help="hardware-aware NSGA-II search of capsule networks",
        description="NASCaps search: NSGA-II over genotypes, minimizing accuracy drop after a few-epoch training, "
                    "and energy, latency and memory on the CapsAcc accelerator. Every evaluation is journaled in "
                    "OUT/journal.sqlite; --resume continues a killed run. Writes evaluations.csv, pareto.json, "
                    "pareto.png and report.md into OUT.")
    _add_data_options(parser)
    parser.add_argument("--population", type=_positive_int, default=defaults.population,
                        help=f"parents |P| (default {defaults.population})")
    parser.add_argument("--offspring", type=_positive_int, default=defaults.offspring,
                        help=f"offspring |Q| per generation (default {defaults.offspring})")
    parser.add_argument("--generations", type=_positive_int, default=defaults.generations,
                        help=f"generations after the initial population (default {defaults.generations})")
    parser.add_argument("--epochs", type=_positive_int, default=defaults.epochs,
                        help=f"training epochs per candidate (default {defaults.epochs})")
    parser.add_argument("--train-samples", type=_positive_int, default=defaults.train_samples, metavar="N",
                        help=f"training images per candidate, validation split included "
                             f"(default {defaults.train_samples})")
    parser.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size,
                        help=f"batch size in images (default {defaults.batch_size})")
    parser.add_argument("--learning-rate", type=_positive_float, default=defaults.learning_rate,
                        help=f"Adam learning rate of the first epoch (default {defaults.learning_rate})")
    parser.add_argument("--timeout", type=_positive_float, default=defaults.timeout_s, metavar="SECONDS",
                        help=f"wall-clock limit of one candidate's training (default {defaults.timeout_s:g})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"random seed (default {defaults.seed})")
    parser.add_argument("--accelerator", default=defaults.accelerator, metavar="calibrated|published|FILE.toml",
                        help=f"accelerator preset or TOML file (default: {defaults.accelerator})")
    _add_space_option(parser)
    parser.add_argument("--mutation-probability", type=float, default=defaults.mutation_probability,
                        metavar="P_M", help=f"mutation probability p_m (default {defaults.mutation_probability})")
    parser.add_argument("--max-latency-ms", type=_positive_float, help="hard latency budget (ms)")
    parser.add_argument("--max-energy-mJ", type=_positive_float, help="hard energy budget (mJ)")
    parser.add_argument("--max-memory-KiB", type=_positive_float, help="hard weight-memory budget (KiB)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, default=1,
                       help="local Dask worker processes (default 1: train in this process)")
    where.add_argument("--scheduler", metavar="ADDRESS", help="use the Dask cluster at ADDRESS")
    parser.add_argument("--out", default=defaults.out, metavar="DIR", help=f"run folder (default {defaults.out})")
    parser.add_argument("--resume", action="store_true", help="continue the run journaled in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_search_command)


def _search_command(args) -> int:
    from capsacc.cli import load_accelerator
    from nas.evaluate import Budgets
    from nas.search import SearchConfig, run_search
    if not 0 <= args.mutation_probability <= 1:
        raise InputError(f"--mutation-probability {args.mutation_probability}: must be between 0 and 1")
    accelerator = load_accelerator(args.accelerator)
    config = SearchConfig(
        dataset=args.dataset, data=args.data, population=args.population, offspring=args.offspring,
        generations=args.generations, epochs=args.epochs, train_samples=args.train_samples,
        batch_size=args.batch_size, learning_rate=args.learning_rate, timeout_s=args.timeout, seed=args.seed,
        accelerator=args.accelerator,
        space=load_space(args.space), budgets=Budgets(args.max_latency_ms, args.max_energy_mJ, args.max_memory_KiB),
        mutation_probability=args.mutation_probability, workers=args.workers, scheduler=args.scheduler,
        out=args.out)
    result = run_search(config, accelerator, resume=args.resume, progress=not args.quiet)
    print(f"{len(result.evaluations)} candidates evaluated ({result.trained} trained by this invocation) "
          f"in {result.wall_s:.0f} s; Pareto set of {len(result.pareto)}:")
    print(f"{'val_accuracy_%':>15}{'energy_mJ':>12}{'latency_ms':>12}{'memory_KiB':>12}  genotype")
    for e in result.pareto:
        print(f"{100 * (1 - e.accuracy_drop):>15.2f}{e.energy_mJ:>12.4f}{e.latency_ms:>12.4f}{e.memory_KiB:>12.1f}  "
              f"{json.dumps(e.genotype)}")
    print(f"wrote {result.out}/evaluations.csv, pareto.json, pareto.png, report.md")
    return 0


def register_pcc(subparsers) -> None:
    """Add `nascaps pcc`."""
    parser = subparsers.add_parser(
        "pcc", help="correlation of few-epoch and full-training accuracy (Table 2 of NASCaps)",
        description="Train random genotypes for --full-epochs epochs and report, for each of --epochs, the "
                    "Pearson correlation between the validation accuracy after that many epochs and the test "
                    "accuracy after full training, with the median cumulative training time.")
    _add_data_options(parser)
    parser.add_argument("--networks", type=_positive_int, default=20, help="random genotypes (default 20)")
    parser.add_argument("--epochs", default="1,3,5,10", metavar="E1,E2,...",
                        help="few-epoch budgets to correlate (default 1,3,5,10)")
    parser.add_argument("--full-epochs", type=_positive_int, default=20, help="full training epochs (default 20)")
    parser.add_argument("--train-samples", type=_positive_int, metavar="N",
                        help="training images, validation split included (default all)")
    parser.add_argument("--batch-size", type=_positive_int, default=100, help="batch size in images (default 100)")
    parser.add_argument("--learning-rate", type=_positive_float, default=0.001,
                        help="Adam learning rate of the first epoch (default 0.001)")
    parser.add_argument("--timeout", type=_positive_float, metavar="SECONDS", help="wall-clock limit per network")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the genotypes and trainings (default 0)")
    _add_space_option(parser)
    parser.add_argument("--out", default="nascaps-pcc", metavar="DIR",
                        help="folder for pcc.json and the per-network log (default nascaps-pcc)")
    parser.set_defaults(handler=_pcc_command)


def _epoch_list(text: str) -> list[int]:
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise InputError(f"--epochs {text!r}: a comma-separated list of positive integers") from None
    if not values or values[0] < 1:
        raise InputError(f"--epochs {text!r}: a comma-separated list of positive integers")
    return values


def _pcc_command(args) -> int:
    from nas.pcc import PccConfig, run_pcc
    epochs = _epoch_list(args.epochs)
    if epochs[-1] > args.full_epochs:
        raise InputError(f"--epochs {args.epochs}: {epochs[-1]} exceeds --full-epochs {args.full_epochs}")
    config = PccConfig(dataset=args.dataset, data=args.data, networks=args.networks, epochs=tuple(epochs),
                       full_epochs=args.full_epochs, train_samples=args.train_samples, batch_size=args.batch_size,
                       learning_rate=args.learning_rate, timeout_s=args.timeout,
                       seed=args.seed, space=load_space(args.space), out=args.out)
    result = run_pcc(config)
    print(f"{result['networks_ok']} of {config.networks} networks trained; "
          f"full training: {config.full_epochs} epochs")
    print(f"{'epochs':>7}{'pearson_r':>11}{'median_cumulative_s':>21}")
    for row in result["table"]:
        r = "n/a" if row["pearson_r"] is None else f"{row['pearson_r']:.3f}"
        print(f"{row['epochs']:>7}{r:>11}{row['median_cumulative_s']:>21.1f}")
    print(f"wrote {config.out}/pcc.json")
    return 0


def register_finalize(subparsers) -> None:
    """Add `nascaps finalize`."""
    parser = subparsers.add_parser(
        "finalize", help="fully train the Pareto set of a search run (Tables 3-4 of NASCaps)",
        description="Train every genotype of RUN_DIR/pareto.json for --epochs epochs and report its test "
                    "accuracy next to energy, latency and memory (final.json, final.md in RUN_DIR). Finished "
                    "trainings are kept in RUN_DIR/final.jsonl, the models in RUN_DIR/models; running again "
                    "continues. With --deploy, every fully trained network is then deployed by nascaps deploy "
                    "(RUN_DIR/deploy/INDEX) and its int8 accuracy, agreement and cycles join the report.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a search run folder")
    parser.add_argument("--epochs", type=_positive_int, default=100, help="training epochs (default 100)")
    parser.add_argument("--data", metavar="PATH", help="dataset location (default: the one the search used)")
    parser.add_argument("--train-samples", type=_positive_int, metavar="N",
                        help="training images, validation split included (default all)")
    parser.add_argument("--timeout", type=_positive_float, metavar="SECONDS", help="wall-clock limit per network")
    parser.add_argument("--deploy", action="store_true",
                        help="deploy every fully trained network in int8 (nascaps deploy, docs/deploy.md)")
    deploy = parser.add_argument_group("deploy options (with --deploy; see nascaps deploy)")
    deploy.add_argument("--rows", type=_positive_int, default=16, help="PE array rows (default 16)")
    deploy.add_argument("--cols", type=_positive_int, default=16, help="PE array columns (default 16)")
    deploy.add_argument("--calibration-images", type=_positive_int, default=256, metavar="N",
                        help="training images the shifts are chosen on (default 256)")
    deploy.add_argument("--simulate-images", type=int, default=0, metavar="K",
                        help="test images run on the RTL, bit-checked (default 0)")
    deploy.add_argument("--simulator", choices=("verilator", "amaranth"), default="verilator",
                        help="RTL back end (default verilator)")
    parser.set_defaults(handler=_finalize_command)


def _finalize_command(args) -> int:
    from nas.finalize import DeployOptions, finalize

    options = DeployOptions(args.rows, args.cols, args.calibration_images, args.simulate_images, args.simulator)
    if args.simulate_images < 0:
        raise InputError(f"--simulate-images {args.simulate_images}: must be 0 or more")
    if not args.deploy and options != DeployOptions():
        raise InputError("--rows, --cols, --calibration-images, --simulate-images and --simulator need --deploy")
    rows = finalize(args.run_dir, epochs=args.epochs, data=args.data, train_samples=args.train_samples,
                    timeout_s=args.timeout, deploy=options if args.deploy else None)
    print(f"{'test_accuracy_%':>16}{'energy_mJ':>12}{'latency_ms':>12}{'memory_KiB':>12}{'status':>9}  genotype")
    for row in rows:
        accuracy = "" if row["test_accuracy"] is None else f"{100 * row['test_accuracy']:.2f}"
        print(f"{accuracy:>16}{row['energy_mJ']:>12.4f}{row['latency_ms']:>12.4f}{row['memory_KiB']:>12.1f}"
              f"{row['status']:>9}  {json.dumps(row['genotype'])}")
    for index, row in enumerate(rows):
        if "deploy" in row:
            print(f"network {index}: " + (f"deploy failed: {row['deploy_error']}" if "deploy_error" in row else
                  f"int8 {row['int8_accuracy']:.4f} (float {row['float_accuracy']:.4f}), agreement "
                  f"{row['agreement']:.4f}; cycles per image: {row['model_cycles_per_image']} ({row['cost_model']})"
                  + ("" if row["rtl_cycles_per_image"] is None else
                     f", {row['rtl_cycles_per_image']} (RTL, bit-exact: {row['rtl_bit_exact']})")))
    print(f"wrote {args.run_dir}/final.json, final.md")
    return 0
