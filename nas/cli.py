"""The `nascaps` subcommands of nas."""

import json

from capsacc.errors import InputError
from capsacc.network import PRESETS


def register(subparsers) -> None:
    """Add nas's subcommands."""
    register_train(subparsers)


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
    from nas.genotype import Genotype
    from nas.train import TrainConfig, train

    genotype = Genotype.preset(args.genotype) if args.genotype in PRESETS else Genotype.load(args.genotype)
    genotype.validate()
    if args.save is not None and not args.save.endswith(".keras"):
        raise InputError(f"--save {args.save}: the file name must end in .keras")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                         learning_rate=args.learning_rate, timeout_s=args.timeout,
                         train_samples=args.train_samples, threads=args.threads)
    dataset = load_dataset(args.dataset, args.data)
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
