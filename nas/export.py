"""Export a trained model as a neutral float bundle for deployment (`sim.deploy` quantises it).

`python -m nas.export MODEL.keras --out DIR [--data PATH] [--calibration-images N] [--seed S]`
loads a model written by `nascaps train --save` (Sabour-style networks: convolutions, PrimaryCaps,
ConvCaps2D, ClassCaps; CapsCell networks with one convolution and no skip into the class layer;
resize 1 or 2), recovers its genotype from its layers and writes, each file atomically
(docs/deploy.md):

- DIR/bundle.json: `format` (`BUNDLE_FORMAT`), `genotype`, `operations` (one entry per operation of
  `capsacc.network.expand`, in order: `name`, `kind`, `layer` (the Keras layer; a CapsCell's inner
  one as "cell/inner"), `weights`, `bias` and `offset` (array names in bundle.npz, or null)),
  `routings`, `float_accuracy`, provenance (`model`: path and sha256 of the file; `dataset`:
  `Dataset.describe()`; `seed`; `calibration_indices`).
- DIR/bundle.npz: float32 weights in the im2col layout of `sim.driver.conv_patches`: a convolution
  or capsule convolution `(k * k * channels_in, channels_out)`, rows ordered (ky, kx, channel), columns
  (capsule, atom); its bias `(channels_out,)` (zeros for a Conv2D without one; ClassCaps has none); a
  convolution followed by BatchNormalization has it folded (`_conv_source`: the scale into kernel and
  bias, the shift as `offset` (channels_out,), added after the ReLU); a last CapsCell's ConvCaps3D as
  the RTL's votes `(k * k * k * atoms, capsules * atoms)` (`_votes_source`); ClassCaps `(inputs,
  atoms_in, classes * atoms)` with `nas.layers.classcaps_multiplier` folded in. Images uint8 (n, h, w,
  c), as the dataset holds them (resize 2 is the deployment's upsampling): `calibration_images` (N
  training images, a seeded draw), `test_images`, `test_labels` int64 (n,), `float_classes` int64 (n,)
  (the model's class per test image).

Bad input: one line on stderr, exit code 2.
"""

import argparse
import hashlib
import io
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capsacc.errors import InputError
from capsacc.files import prepare_output_dir, write_atomic
from capsacc.network import CAPSCELL, CONV, SABOUR, Network

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
    if not zipfile.is_zipfile(path):  # Keras says "File not found" for such a file
        raise InputError(f"{path}: not a Keras model (not a zip archive, as a .keras file is)")
    import keras

    from nas.layers import CUSTOM_OBJECTS

    try:
        return keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False)
    except Exception as error:  # Keras raises many kinds for a file that is not a model
        raise InputError(f"{path}: not a Keras model ({type(error).__name__}: {' '.join(str(error).split())[:200]})"
                         ) from None


def _side(shape) -> int:
    return int(shape[1])


HANDLED_LAYERS = ("UpSampling2D", "Conv2D", "BatchNormalization", "ToCapsules", "PrimaryCaps", "ConvCaps2D",
                  "CapsCell", "ClassCaps")
"""The Keras layers of `nas.builder` that deploy reads (FlatCaps, Length and the decoder carry no weights
of the classifier)."""


@dataclass
class Source:
    """The float arrays of one weighted operation of `expand` (the module docstring's layouts): `kind`
    the operation's, `layer` the Keras layer (a CapsCell's inner layer as "cell/inner"), `weights`,
    `bias` (or None) and `offset` (or None: a convolution's batch normalisation shift, added after
    its ReLU, (channels_out,))."""

    kind: str
    layer: str
    weights: np.ndarray
    bias: np.ndarray | None = None
    offset: np.ndarray | None = None


def _conv_source(layer, norm) -> Source:
    """A Conv2D ('same', ReLU), with the BatchNormalization `norm` after it (or None) folded: the
    normalisation a * relu(z) + b has a = gamma / sqrt(variance + epsilon) >= 0 per channel, so
    a * relu(z) = relu(a * z) folds into the kernel and bias, and b is the offset."""
    config = layer.get_config()
    kernel = layer.kernel.numpy().astype(np.float64)
    bias = layer.bias.numpy().astype(np.float64) if layer.use_bias else np.zeros(kernel.shape[-1])
    offset = None
    if norm is not None:
        n_config = norm.get_config()
        scale = norm.gamma.numpy() if n_config["scale"] else np.ones(kernel.shape[-1])
        a = scale / np.sqrt(norm.moving_variance.numpy() + n_config["epsilon"])
        if np.any(a < 0):
            raise InputError(f"layer {norm.name}: a negative scale (channel {int(np.argmin(a))}) does not fold "
                             f"into the ReLU convolution before it")
        shift = norm.beta.numpy() if n_config["center"] else np.zeros(kernel.shape[-1])
        kernel, bias, offset = kernel * a, bias * a, shift - a * norm.moving_mean.numpy()
    return Source("conv", layer.name, kernel.reshape(-1, kernel.shape[-1]).astype(np.float32),
                  bias.astype(np.float32), None if offset is None else offset.astype(np.float32))


def _capsule_source(layer, label: str) -> Source:
    kernel = layer.kernel_weights.numpy()
    return Source("convcaps", label, kernel.reshape(-1, kernel.shape[-1]).astype(np.float32),
                  layer.bias.numpy().astype(np.float32))


def _votes_source(layer, label: str, types: int) -> Source:
    """A ConvCaps3D as the RTL's `convcaps3d` votes, which the RTL routes (`route3d`): its k x k x atoms
    kernel at the centre type tap of the k x k x k windows of `sim.driver.conv3d_patches` (zeros at the
    others), with its bias (J, atoms) folded in: votes u_ij + J·bias_j / `types`, so that the first
    routing iteration's weighted sum (uniform coupling 1 / J over the `types` input capsule types) is
    Keras' (later iterations weigh the bias by their couplings, Keras adds it once)."""
    kernel = layer.kernel_weights.numpy().astype(np.float64)
    k, _, atoms, outputs = kernel.shape
    full = np.zeros((k, k, k, atoms, outputs))
    full[:, :, k // 2] = kernel
    bias = layer.bias.numpy().astype(np.float64).reshape(-1) * layer.capsules / types
    return Source("convcaps3d", label, full.reshape(-1, outputs).astype(np.float32), bias.astype(np.float32))


def genotype_and_sources(model) -> tuple[list, list]:
    """(genotype list, per operation of `expand`: its `Source`, or None for a routing operation) of a
    model `nas.builder` built; `InputError` for a model deploy does not handle."""
    from nas.layers import classcaps_multiplier

    kinds = [type(layer).__name__ for layer in model.layers]
    if "Concatenate" in kinds:
        raise InputError("the genotype's skip connection into the class layer (skip != -1) is not run on the "
                         "RTL (docs/rtl.md), so not deployed")
    body = [layer for layer in model.layers if type(layer).__name__ in HANDLED_LAYERS + ("ConvCaps3D",)]
    names = [type(layer).__name__ for layer in body]
    if "ConvCaps3D" in names:
        raise InputError("a ConvCaps3D outside a CapsCell is not deployed")
    if not names or names[-1] != "ClassCaps" or names.count("ClassCaps") != 1:
        raise InputError("the model must end in one ClassCaps layer")
    resize = 1
    if names[0] == "UpSampling2D":
        config = body[0].get_config()
        if tuple(config["size"]) != (2, 2) or config["interpolation"] != "bilinear":
            raise InputError(f"layer {body[0].name}: deploy takes UpSampling2D(2, bilinear), got size "
                             f"{tuple(config['size'])}, {config['interpolation']}")
        resize, body, names = 2, body[1:], names[1:]
    if "UpSampling2D" in names:
        raise InputError("an UpSampling2D after the input is not deployed")
    capscell = "CapsCell" in names
    if capscell and names.count("Conv2D") > 1:
        raise InputError("a CapsCell network with more than one convolution: the batch normalisation between "
                         "two convolutions does not fold into the RTL's steps (deploy takes one)")
    descriptors, sources = [], []
    for position, layer in enumerate(body):
        kind = type(layer).__name__
        after = names[position + 1] if position + 1 < len(names) else None
        shape = layer.input.shape
        if kind == "Conv2D":
            config = layer.get_config()
            kernel, stride = config["kernel_size"][0], config["strides"][0]
            if config["padding"] != "same" or config["activation"] != "relu" or config["kernel_size"][1] != kernel:
                raise InputError(f"layer {layer.name}: deploy takes square 'same' Conv2D with relu")
            norm = body[position + 1] if after == "BatchNormalization" else None
            if norm is not None and names[position + 2] != "ToCapsules":
                raise InputError(f"layer {norm.name}: a batch normalisation not read by ToCapsules is not deployed")
            side = _side(shape)
            descriptors.append([CONV, side, int(shape[3]), 1, kernel, stride, -(-side // stride), config["filters"], 1])
            sources.append(_conv_source(layer, norm))
        elif kind in ("PrimaryCaps", "ConvCaps2D"):
            side = _side(shape)
            ch_in, caps_in = (int(shape[3]), 1) if kind == "PrimaryCaps" else (int(shape[3]), int(shape[4]))
            descriptors.append([SABOUR, side, ch_in, caps_in, layer.kernel, layer.stride, -(-side // layer.stride),
                                layer.capsules, layer.atoms])
            sources.append(_capsule_source(layer, layer.name))
        elif kind == "CapsCell":
            side, ch_in, caps_in = _side(shape), int(shape[3]), int(shape[4])
            descriptors.append([CAPSCELL, side, ch_in, caps_in, layer.kernel, layer.stride,
                                -(-side // layer.stride), layer.capsules, layer.atoms])
            sources += [_capsule_source(inner, f"{layer.name}/{inner.name}")
                        for inner in (layer.first, layer.second, layer.third)]
            if layer.last:
                if (ch_in, caps_in) != (layer.capsules, layer.atoms):
                    raise InputError(f"layer {layer.name}: the last CapsCell must keep its capsules ({ch_in}x{caps_in} "
                                     f"in, {layer.capsules}x{layer.atoms} out): the RTL's ConvCaps3D takes the "
                                     f"cell's input shape")
                sources.append(_votes_source(layer.skip, f"{layer.name}/{layer.skip.name}", layer.capsules))
            else:
                sources.append(_capsule_source(layer.skip, f"{layer.name}/{layer.skip.name}"))
        elif kind == "ClassCaps":
            previous = body[position - 1]
            if type(previous).__name__ in ("Conv2D", "BatchNormalization"):
                raise InputError(f"layer {layer.name}: a ClassCaps reading a feature map is not deployed yet")
            out = previous.output.shape
            side = int(out[1])
            descriptors.append([CAPSCELL if capscell else SABOUR, side, int(out[3]), int(out[4]), side, 1, 1,
                                layer.capsules, layer.atoms])
            transform = layer.transform.numpy()
            sources.append(Source("classcaps", layer.name,
                                  (transform * classcaps_multiplier(transform.shape[0])).astype(np.float32)))
    genotype = descriptors + [[-1], [resize]]
    try:
        operations = Network.from_genotype(genotype).operations
    except ValueError as error:
        raise InputError(f"the recovered genotype {genotype}: {error}") from None
    weighted = iter(sources)
    paired = [None if op.kind == "routing" else next(weighted) for op in operations]
    for op, source in zip(operations, paired):
        if source is not None and source.kind != op.kind:
            raise InputError(f"operation {op.name} ({op.kind}): the model gives a {source.kind} ({source.layer})")
    return genotype, paired


def export(model_path: str | Path, out: str | Path, data=None, calibration_images: int = CALIBRATION_IMAGES,
           seed: int = 0) -> dict:
    """Write DIR/bundle.json and DIR/bundle.npz (module docstring) for the model in `model_path` and the
    MNIST-like dataset `data` (None: the packaged subset); returns the bundle.json record. The model and
    the dataset are checked before DIR is created: bad input leaves no folder."""
    from nas.datasets import load_dataset
    from nas.train import to_float

    if calibration_images < 1:
        raise InputError(f"--calibration-images {calibration_images}: must be at least 1")
    model = load_model(model_path)
    genotype, sources = genotype_and_sources(model)
    dataset = load_dataset("mnist", data)
    if tuple(model.input_shape[1:]) != dataset.input_shape:
        raise InputError(f"{model_path}: takes {tuple(model.input_shape[1:])} images, the dataset has "
                         f"{dataset.input_shape}")
    if calibration_images > len(dataset.x_train):
        raise InputError(f"--calibration-images {calibration_images}: the dataset has {len(dataset.x_train)} "
                         f"training images")
    out = prepare_output_dir(out, files=BUNDLE_FILES)  # after the inputs, before the predictions
    arrays, operations = {}, []
    for index, (op, source) in enumerate(zip(Network.from_genotype(genotype).operations, sources)):
        entry = {"name": op.name, "kind": op.kind, "layer": None if source is None else source.layer,
                 "weights": None, "bias": None, "offset": None}
        for field in ("weights", "bias", "offset"):
            values = None if source is None else getattr(source, field)
            if values is not None:
                entry[field] = f"op{index}_{field}"
                arrays[entry[field]] = values
        operations.append(entry)
    lengths = model.predict(to_float(dataset.x_test), batch_size=100, verbose=0)
    lengths = lengths[0] if isinstance(lengths, (list, tuple)) else lengths
    float_classes = np.argmax(lengths, axis=1).astype(np.int64)
    chosen = np.sort(np.random.default_rng(seed).choice(len(dataset.x_train), calibration_images, replace=False))
    arrays.update(calibration_images=dataset.x_train[chosen], test_images=dataset.x_test,
                  test_labels=dataset.y_test.astype(np.int64), float_classes=float_classes)
    classcaps = next(layer for layer in model.layers if type(layer).__name__ == "ClassCaps")
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
