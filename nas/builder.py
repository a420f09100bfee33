"""Genotype -> Keras models: one to train (decoder masked by the true label) and one to evaluate
(decoder masked by the longest capsule), sharing their layers.

Layers per descriptor (see nas/genotype.py for the descriptor fields):
- type 0: `Conv2D(ch_out · caps_out, kernel, stride, 'same', relu)` (followed by batch normalisation
  in CapsCell networks, as in DeepCaps);
- type 1: `PrimaryCaps` on a feature map, `ConvCaps2D` on capsules; the last one `FlatCaps` +
  `ClassCaps` with dynamic routing (its kernel, stride and n_out are not used);
- type 2: `CapsCell` (the last cell with the routed `ConvCaps3D` skip branch); the last descriptor
  is `FlatCaps` of the last cell (and of the skip cell when skip != -1, concatenated) + `ClassCaps`.
A convolution's output entering a capsule layer that needs capsules is read as `ch_in` capsules
of `caps_in` atoms (`ToCapsules`). Resize 2 upsamples the input x2 (bilinear) inside the model; the
decoder reconstructs the image as given (before upsampling): fully connected 512-1024-pixels for
Sabour-style networks, transposed convolutions for CapsCell networks.
"""

import math
from dataclasses import dataclass

import keras

from nas.genotype import CAPSCELL, CONV, Genotype, GenotypeError
from nas.layers import CapsCell, ClassCaps, ConvCaps2D, FlatCaps, Length, Mask, PrimaryCaps, ToCapsules


CONV_INITIALIZER = "he_normal"
"""Kernel initializer of the convolutions (type 0): He et al.'s N(0, 2 / fan_in), which keeps the
scale of ReLU features from layer to layer. Keras' default, Glorot, divides by fan_in + fan_out: a
9x9 convolution of one channel to 256 (`capsnet`) has fan-in 81 and fan-out 20,736, and its
features came out 17x smaller (0.018 rms). Its primary capsules were then 0.003 long after
squashing and its class capsules 2e-6, under the sqrt(1e-7) floor of `Length`, where the
margin loss's gradients are too small to train the first steps (docs/training.md)."""


@dataclass(frozen=True)
class CapsModels:
    """`train`: inputs [image, one-hot label] -> [lengths, reconstruction]; `evaluate`: image ->
    [lengths, reconstruction of the longest capsule]; `classifier`: image -> lengths `(batch, classes)`.
    `decoder` is the reconstruction network they share."""

    train: keras.Model
    evaluate: keras.Model
    classifier: keras.Model
    decoder: keras.Model

    @property
    def params(self) -> int:
        """Parameters of the classifier (without the decoder)."""
        return self.classifier.count_params()

    @property
    def decoder_params(self) -> int:
        """Parameters of the decoder."""
        return self.decoder.count_params()


def build_models(genotype: Genotype, input_shape: tuple[int, int, int] = (28, 28, 1), n_classes: int = 10,
                 routings: int = 3) -> CapsModels:
    """Build the models of `genotype` for images of `input_shape` (height, width, channels).

    The genotype must be valid, take that input (side x resize, channels) and end with `n_classes`
    capsules; otherwise `GenotypeError`.
    """
    genotype.validate()
    side, _, channels = input_shape
    if genotype.input_side != side * genotype.resize or genotype.input_channels != channels:
        raise GenotypeError(f"takes {genotype.input_side} x {genotype.input_side} x {genotype.input_channels} "
                            f"inputs, the data is {side} x {side} x {channels} with resize {genotype.resize}",
                            index=0, field="n_in")
    if genotype.layers[-1][7] != n_classes:
        raise GenotypeError(f"the class layer has {genotype.layers[-1][7]} capsules, the data {n_classes} classes",
                            index=len(genotype.layers) - 1, field="ch_out")
    image = keras.Input(shape=input_shape, name="image")
    capsules = _body(genotype, image, routings)
    lengths = Length(name="lengths")(capsules)
    decoder = _decoder(genotype, capsules.shape[1] * capsules.shape[2], input_shape)
    label = keras.Input(shape=(n_classes,), name="label")
    train = keras.Model([image, label], [lengths, decoder(Mask(name="mask_by_label")([capsules, label]))],
                        name="train")
    evaluate = keras.Model(image, [lengths, decoder(Mask(name="mask_by_length")(capsules))], name="evaluate")
    classifier = keras.Model(image, lengths, name="classifier")
    return CapsModels(train, evaluate, classifier, decoder)


def _body(genotype: Genotype, image, routings: int):
    layers = genotype.layers
    last = len(layers) - 1
    x = image
    if genotype.resize != 1:
        x = keras.layers.UpSampling2D(genotype.resize, interpolation="bilinear", name="resize")(x)
    cells = {}
    for index, (kind, _, ch_in, caps_in, kernel, stride, _, ch_out, caps_out) in enumerate(layers):
        if kind == CONV:
            x = keras.layers.Conv2D(ch_out * caps_out, kernel, stride, padding="same", activation="relu",
                                    kernel_initializer=CONV_INITIALIZER, name=f"conv{index}")(x)
            if genotype.capsule_type == CAPSCELL:
                x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
            continue
        feature_map = len(x.shape) == 4
        if index == last:
            if feature_map:
                x = ToCapsules(ch_in, caps_in, name=f"to_capsules{index}")(x)
            flat = [FlatCaps(name=f"flat{index}")(x)]
            if kind == CAPSCELL and genotype.skip != -1:
                flat.insert(0, FlatCaps(name=f"flat_skip{genotype.skip - 1}")(cells[genotype.skip - 1]))
                x = keras.layers.Concatenate(axis=1, name="concat_skip")(flat)
            else:
                x = flat[0]
            x = ClassCaps(ch_out, caps_out, routings, name=f"classcaps{index}")(x)
        elif kind == CAPSCELL:
            if feature_map:
                x = ToCapsules(ch_in, caps_in, name=f"to_capsules{index}")(x)
            x = CapsCell(ch_out, caps_out, kernel, stride, last=index == last - 1, routings=routings,
                         name=f"capscell{index}")(x)
            cells[index] = x
        elif feature_map:
            x = PrimaryCaps(ch_out, caps_out, kernel, stride, name=f"primarycaps{index}")(x)
        else:
            x = ConvCaps2D(ch_out, caps_out, kernel, stride, name=f"convcaps{index}")(x)
    return x


def _decoder(genotype: Genotype, masked_size: int, input_shape: tuple[int, int, int]) -> keras.Model:
    side, _, channels = input_shape
    layers = [keras.Input(shape=(masked_size,))]
    if genotype.capsule_type == CAPSCELL:
        start = math.ceil(side / 4)
        layers += [keras.layers.Dense(start * start * 16, activation="relu"),
                   keras.layers.Reshape((start, start, 16)),
                   keras.layers.Conv2DTranspose(64, 3, 1, padding="same", activation="relu"),
                   keras.layers.Conv2DTranspose(32, 3, 2, padding="same", activation="relu"),
                   keras.layers.Conv2DTranspose(16, 3, 2, padding="same", activation="relu"),
                   keras.layers.Conv2DTranspose(channels, 3, 1, padding="same", activation="sigmoid")]
        if 4 * start != side:
            layers.append(keras.layers.Cropping2D(((0, 4 * start - side), (0, 4 * start - side))))
    else:
        layers += [keras.layers.Dense(512, activation="relu"), keras.layers.Dense(1024, activation="relu"),
                   keras.layers.Dense(side * side * channels, activation="sigmoid"),
                   keras.layers.Reshape(input_shape)]
    return keras.Sequential(layers, name="decoder")
