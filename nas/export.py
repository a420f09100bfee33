"""Export a trained model as a neutral float bundle for deployment (`sim.deploy` quantises it).

`python -m nas.export MODEL.keras --out DIR [--data PATH] [--calibration-images N] [--seed S]`
loads a model written by `nascaps train --save` (Sabour-style networks: convolutions, PrimaryCaps,
ConvCaps2D, ClassCaps; no resize), recovers its genotype from its layers and writes, each file
atomically (docs/deploy.md):

- DIR/bundle.json: `format` (`BUNDLE_FORMAT`), `genotype`, `operations` (one entry per operation of
  `capsacc.network.expand`, in order: `name`, `kind`, `layer` (the Keras layer), `weights` and `bias`
  (array names in bundle.npz, or null)), `routings`, `float_accuracy`, provenance (`model`: path and
  sha256 of the file; `dataset`: `Dataset.describe()`; `seed`; `calibration_indices`).
- DIR/bundle.npz: float32 weights in the im2col layout of `sim.driver.conv_patches`: a convolution
  or capsule convolution `(k * k * channels_in, channels_out)`, rows ordered (ky, kx, channel), columns
  (capsule, atom); its bias `(channels_out,)` (Conv2D, PrimaryCaps and ConvCaps2D have one, ClassCaps
  none); ClassCaps `(inputs, atoms_in, classes * atoms)` with `nas.layers.classcaps_multiplier` folded
  in. Images uint8 (n, h, w, c): `calibration_images` (N training images, a seeded draw),
  `test_images`, `test_labels` int64 (n,), `float_classes` int64 (n,) (the model's class per test image).

Bad input: one line on stderr, exit code 2.
"""

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np

from capsacc.errors import InputError
from capsacc.files import prepare_output_dir, write_atomic
from capsacc.network import CONV, SABOUR, Network

BUNDLE_FORMAT = "nascaps-float-bundle/1"
BUNDLE_FILES = ("bundle.json", "bundle.npz")
CALIBRATION_IMAGES = 256
"""Default number of training images the shifts are chosen on."""


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(path: str | Path):
    """The Keras model in `path`; `InputError` naming the file when it is missing or not a model."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    if path.suffix != ".keras":
        raise InputError(f"{path}: a model file must end in .keras (written by nascaps train --save)")
    import keras

    from nas.layers import CUSTOM_OBJECTS

    try:
        return keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False)
    except Exception as error:  # Keras raises many kinds for a file that is not a model
        raise InputError(f"{path}: not a Keras model ({type(error).__name__}: {' '.join(str(error).split())[:200]})"
                         ) from None


def _side(shape) -> int:
    return int(shape[1])


def genotype_and_layers(model) -> tuple[list, list]:
    """(genotype list, [(operation kind, Keras layer or None)] per operation of `expand`) of a Sabour-style
    model; `InputError` for a model deploy does not handle yet (CapsCell networks, resize, ToCapsules)."""
    body = [layer for layer in model.layers if type(layer).__name__ in
            ("Conv2D", "PrimaryCaps", "ConvCaps2D", "ClassCaps", "UpSampling2D", "CapsCell", "ToCapsules",
             "BatchNormalization", "ConvCaps3D")]
    names = [type(layer).__name__ for layer in body]
    unsupported = sorted(set(names) - {"Conv2D", "PrimaryCaps", "ConvCaps2D", "ClassCaps"})
    if unsupported:
        raise InputError(f"model layers {', '.join(unsupported)}: deploy handles Sabour-style networks "
                         f"(Conv2D, PrimaryCaps, ConvCaps2D, ClassCaps) without resize so far")
    if not names or names[-1] != "ClassCaps" or names.count("ClassCaps") != 1:
        raise InputError("the model must end in one ClassCaps layer")
    descriptors, layers = [], []
    for layer in body:
        kind = type(layer).__name__
        shape = layer.input.shape
        if kind == "Conv2D":
            config = layer.get_config()
            kernel, stride = config["kernel_size"][0], config["strides"][0]
            if config["padding"] != "same" or config["activation"] != "relu" or config["kernel_size"][1] != kernel:
                raise InputError(f"layer {layer.name}: deploy takes square 'same' Conv2D with relu")
            side = _side(shape)
            descriptors.append([CONV, side, int(shape[3]), 1, kernel, stride, -(-side // stride), config["filters"], 1])
            layers.append(("conv", layer))
        elif kind in ("PrimaryCaps", "ConvCaps2D"):
            side = _side(shape)
            ch_in, caps_in = (int(shape[3]), 1) if kind == "PrimaryCaps" else (int(shape[3]), int(shape[4]))
            descriptors.append([SABOUR, side, ch_in, caps_in, layer.kernel, layer.stride, -(-side // layer.stride),
                                layer.capsules, layer.atoms])
            layers.append(("convcaps", layer))
        else:
            previous = body[body.index(layer) - 1]
            if type(previous).__name__ == "Conv2D":
                raise InputError(f"layer {layer.name}: a ClassCaps reading a feature map is not deployed yet")
            out = previous.output.shape
            side = int(out[1])
            descriptors.append([SABOUR, side, int(out[3]), int(out[4]), side, 1, 1, layer.capsules, layer.atoms])
            layers.append(("classcaps", layer))
    genotype = descriptors + [[-1], [1]]
    operations = Network.from_genotype(genotype).operations
    with_layers = iter(layers)
    paired = [next(with_layers)[1] if op.kind != "routing" else None for op in operations]
    return genotype, paired


def layer_arrays(layer) -> tuple[np.ndarray, np.ndarray | None]:
    """(weights, bias or None) of a layer in the bundle layout (module docstring), float32."""
    from nas.layers import classcaps_multiplier

    kind = type(layer).__name__
    if kind == "ClassCaps":
        transform = layer.transform.numpy()
        return (transform * classcaps_multiplier(transform.shape[0])).astype(np.float32), None
    if kind == "Conv2D":
        kernel = layer.kernel.numpy()
        bias = layer.bias.numpy() if layer.use_bias else None
    else:
        kernel, bias = layer.kernel_weights.numpy(), layer.bias.numpy()
    return kernel.reshape(-1, kernel.shape[-1]).astype(np.float32), None if bias is None else bias.astype(np.float32)


def export(model_path: str | Path, out: str | Path, data=None, calibration_images: int = CALIBRATION_IMAGES,
           seed: int = 0) -> dict:
    """Write DIR/bundle.json and DIR/bundle.npz (module docstring) for the model in `model_path` and the
    MNIST-like dataset `data` (None: the packaged subset); returns the bundle.json record."""
    from nas.datasets import load_dataset
    from nas.train import to_float

    if calibration_images < 1:
        raise InputError(f"--calibration-images {calibration_images}: must be at least 1")
    out = prepare_output_dir(out, files=BUNDLE_FILES)
    model = load_model(model_path)
    genotype, layers = genotype_and_layers(model)
    dataset = load_dataset("mnist", data)
    if tuple(model.input_shape[1:]) != dataset.input_shape:
        raise InputError(f"{model_path}: takes {tuple(model.input_shape[1:])} images, the dataset has "
                         f"{dataset.input_shape}")
    if calibration_images > len(dataset.x_train):
        raise InputError(f"--calibration-images {calibration_images}: the dataset has {len(dataset.x_train)} "
                         f"training images")
    arrays, operations = {}, []
    for index, (op, layer) in enumerate(zip(Network.from_genotype(genotype).operations, layers)):
        entry = {"name": op.name, "kind": op.kind, "layer": None if layer is None else layer.name,
                 "weights": None, "bias": None}
        if layer is not None:
            weights, bias = layer_arrays(layer)
            entry["weights"] = arrays_key = f"op{index}_weights"
            arrays[arrays_key] = weights
            if bias is not None:
                entry["bias"] = f"op{index}_bias"
                arrays[entry["bias"]] = bias
        operations.append(entry)
    lengths = model.predict(to_float(dataset.x_test), batch_size=100, verbose=0)
    lengths = lengths[0] if isinstance(lengths, (list, tuple)) else lengths
    float_classes = np.argmax(lengths, axis=1).astype(np.int64)
    chosen = np.sort(np.random.default_rng(seed).choice(len(dataset.x_train), calibration_images, replace=False))
    arrays.update(calibration_images=dataset.x_train[chosen], test_images=dataset.x_test,
                  test_labels=dataset.y_test.astype(np.int64), float_classes=float_classes)
    classcaps = next(layer for layer in layers if layer is not None and type(layer).__name__ == "ClassCaps")
    record = {"format": BUNDLE_FORMAT, "genotype": genotype, "operations": operations,
              "routings": classcaps.routings,
              "float_accuracy": float(np.mean(float_classes == dataset.y_test)),
              "model": {"path": str(model_path), "sha256": file_sha256(model_path)},
              "dataset": dataset.describe(), "seed": seed, "calibration_indices": chosen.tolist()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(out / "bundle.npz", buffer.getvalue())
    write_atomic(out / "bundle.json", json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    """The command line of `export` (module docstring); returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m nas.export", description=__doc__.splitlines()[0])
    parser.add_argument("model", metavar="MODEL.keras")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--data", metavar="PATH", help="mnist.npz (default: the packaged subset)")
    parser.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES, metavar="N")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from nas.backend import configure_environment

    configure_environment()
    try:
        record = export(args.model, args.out, args.data, args.calibration_images, args.seed)
    except InputError as error:
        print(f"{parser.prog}: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"{parser.prog}: error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(f"float accuracy {record['float_accuracy']:.4f} on {record['dataset']['test_images']} test images; "
          f"bundle in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
