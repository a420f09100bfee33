"""Capsule layers for Keras 3, written with `keras.ops` only so that every backend runs them.

Shapes (batch first, channels last): a feature map is `(batch, height, width, channels)`; a
capsule map is `(batch, height, width, capsules, atoms)`; a capsule list is
`(batch, capsules, atoms)`. Convolutions use 'same' padding (output side = ceil(side / stride)), as
NASCaps does. Every layer is registered under the package name `nascaps` and implements
`get_config`, so saved `.keras` models load with `keras.models.load_model`.
"""

import numbers

import keras
from keras import ops

PACKAGE = "nascaps"
EPSILON = 1e-7
"""Added under square roots so that zero vectors give zero (not NaN) values and gradients."""
SQUASH_GAIN = 3.0
"""Initial gain of a capsule-to-capsule layer: the expected length of its pre-squash output
capsules over the length of its input capsules. Squash maps a length n to n^2 / (1 + n^2), so
a chain of layers of gain g maps lengths m -> (g m)^2 / (1 + (g m)^2): below g = 2 every length
shrinks towards 0 (quadratically once small, vanishing to exact zeros within a few layers of
Glorot-initialised narrow capsules); at g = 3 lengths above 0.13 settle at 0.87."""


def capsule_initializer(capsules_in: int, atoms: int, kernel: int, fan_in: int, coupling: float = 1.0):
    """Normal initializer for a capsule layer's kernel from `kernel x kernel x capsules_in` input
    capsules (any atoms each) to capsules of `atoms` atoms, weighted by `coupling` when summed,
    with standard deviation SQUASH_GAIN / (coupling · sqrt(kernel² · capsules_in · atoms)): the
    output length is then SQUASH_GAIN times the input length, in expectation over independent
    inputs. `fan_in` is the kernel tensor's fan-in (kernel² times its input channels). Returned as
    Keras' `VarianceScaling` (fan-in mode), so that it serialises like any Keras initializer."""
    scale = (SQUASH_GAIN / coupling) ** 2 * fan_in / (kernel * kernel * capsules_in * atoms)
    return keras.initializers.VarianceScaling(scale, mode="fan_in", distribution="untruncated_normal")


CLASSCAPS_REFERENCE_INPUTS = 1152
"""Input capsules of Sabour et al.'s DigitCaps (6 x 6 x 32), the layer whose N(0, 0.01) weights and
Adam step size train well; `ClassCaps` scales its votes so that every input count behaves like it."""


def classcaps_multiplier(inputs: int) -> float:
    """Factor on `ClassCaps`' votes for `inputs` input capsules: CLASSCAPS_REFERENCE_INPUTS / inputs.

    Each class capsule sums the votes of all inputs, and Adam moves every weight by about the
    learning rate whatever its gradient, so one step moves the sum in proportion to the number of
    inputs: NASCaps' CapsNet ('same' padding, 6,272 primary capsules) would learn 5.4 times too fast
    and stall. The raw weights are scaled by the inverse (the output multiplier of maximal-update
    parametrisation), so the effective weights train at the reference layer's rate."""
    return CLASSCAPS_REFERENCE_INPUTS / inputs


def classcaps_initializer(inputs: int):
    """Default initializer of `ClassCaps`' raw transformation matrices for `inputs` input capsules:
    N(0, 0.01 / classcaps_multiplier(inputs)), i.e. effective weights N(0, 0.01) (Sabour et al.)."""
    return keras.initializers.RandomNormal(stddev=0.01 / classcaps_multiplier(inputs))


def _check_arguments(layer: keras.layers.Layer, **arguments) -> None:
    """Raise a Keras-style ValueError naming `layer` and the argument unless every value is a
    positive integer."""
    for name, value in arguments.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"Layer {type(layer).__name__} '{layer.name}': argument `{name}` must be a positive "
                             f"integer. Received: {name}={value!r}")


def _initializer(layer: keras.layers.Layer, value):
    """`kernel_initializer` argument -> a Keras initializer, or None for the layer's default."""
    if value is None:
        return None
    try:
        return keras.initializers.get(value)
    except ValueError as error:
        raise ValueError(f"Layer {type(layer).__name__} '{layer.name}': argument `kernel_initializer` is not a "
                         f"Keras initializer ({error}). Received: kernel_initializer={value!r}") from None


def _check_known(layer: keras.layers.Layer, input_shape, axes) -> None:
    """Raise a Keras-style ValueError unless the input dimensions at `axes` are known (not None)."""
    if any(input_shape[axis] is None for axis in axes):
        raise ValueError(f"Layer {type(layer).__name__} '{layer.name}' needs known sizes on input axes "
                         f"{list(axes)}. Received: input_shape={tuple(input_shape)}")


def _serialize(initializer):
    return None if initializer is None else keras.initializers.serialize(initializer)


def squash(vectors, axis: int = -1, epsilon: float = EPSILON):
    """Sabour et al.'s squash: v |v|^2 / (1 + |v|^2) / |v| along `axis`; zero vectors stay zero."""
    squared = ops.sum(ops.square(vectors), axis=axis, keepdims=True)
    return vectors * (squared / (1.0 + squared) / ops.sqrt(squared + epsilon))


def route(votes, routings: int, bias=None):
    """Dynamic routing by agreement (Sabour et al., procedure 1).

    `votes`: `(..., inputs, outputs, atoms)` predictions of every input capsule for every output
    capsule. Coupling logits start at zero; each iteration takes a softmax over the outputs,
    sums the weighted votes over the inputs (plus `bias`, shape `(outputs, atoms)`), squashes,
    and adds the agreement (dot product of vote and output) to the logits. Intermediate iterations
    do not propagate gradients into the votes (as in the reference implementations). A single
    output capsule gets coupling 1 directly (the softmax over one element). Returns the output
    capsules `(..., outputs, atoms)`.
    """
    logits = ops.zeros_like(votes[..., 0])
    stopped = ops.stop_gradient(votes)
    for iteration in range(routings):
        last = iteration == routings - 1
        coupling = ops.ones_like(logits) if votes.shape[-2] == 1 else ops.softmax(logits, axis=-1)
        total = ops.sum(ops.expand_dims(coupling, -1) * (votes if last else stopped), axis=-3)
        if bias is not None:
            total = total + bias
        outputs = squash(total)
        if not last:
            logits = logits + ops.sum(stopped * ops.expand_dims(outputs, -3), axis=-1)
    return outputs


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvCaps2D(keras.layers.Layer):
    """2-D capsule convolution (DeepCaps' ConvCaps2D, one routing iteration = a plain convolution).

    Input `(batch, h, w, capsules_in, atoms_in)`; all input atoms of a `kernel x kernel` window
    feed every output atom; output `(batch, ceil(h/stride), ceil(w/stride), capsules, atoms)`,
    squashed. Weights: kernel² · capsules_in · atoms_in · capsules · atoms (`capsule_initializer`),
    plus one bias per output.
    """

    input_rank = 5

    def __init__(self, capsules: int, atoms: int, kernel: int, stride: int = 1, kernel_initializer=None,
                 **kwargs):
        super().__init__(**kwargs)
        _check_arguments(self, capsules=capsules, atoms=atoms, kernel=kernel, stride=stride)
        self.capsules, self.atoms, self.kernel, self.stride = capsules, atoms, kernel, stride
        self.kernel_initializer = _initializer(self, kernel_initializer)
        self.input_spec = keras.InputSpec(ndim=self.input_rank)

    def _channels_in(self, input_shape) -> int:
        return input_shape[-2] * input_shape[-1]

    def _default_initializer(self, input_shape):
        return capsule_initializer(input_shape[-2], self.atoms, self.kernel,
                                   self.kernel * self.kernel * self._channels_in(input_shape))

    def build(self, input_shape):
        _check_known(self, input_shape, range(-self.input_rank + 3, 0))
        self.kernel_weights = self.add_weight(
            name="kernel", shape=(self.kernel, self.kernel, self._channels_in(input_shape),
                                  self.capsules * self.atoms),
            initializer=self.kernel_initializer or self._default_initializer(input_shape))
        self.bias = self.add_weight(name="bias", shape=(self.capsules * self.atoms,), initializer="zeros")

    def _flatten(self, inputs):
        shape = ops.shape(inputs)
        return ops.reshape(inputs, (-1, shape[1], shape[2], shape[3] * shape[4]))

    def call(self, inputs):
        features = ops.conv(self._flatten(inputs), self.kernel_weights, strides=self.stride, padding="same")
        features = features + self.bias
        shape = ops.shape(features)
        return squash(ops.reshape(features, (-1, shape[1], shape[2], self.capsules, self.atoms)))

    def compute_output_shape(self, input_shape):
        side = [None if s is None else -(-s // self.stride) for s in input_shape[1:3]]
        return (input_shape[0], *side, self.capsules, self.atoms)

    def get_config(self):
        return {**super().get_config(), "capsules": self.capsules, "atoms": self.atoms,
                "kernel": self.kernel, "stride": self.stride,
                "kernel_initializer": _serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PrimaryCaps(ConvCaps2D):
    """Sabour et al.'s PrimaryCaps: a convolution of a feature map `(batch, h, w, channels)`,
    reshaped into `capsules` capsules of `atoms` atoms per position and squashed (Glorot-uniform
    kernel by default, as for any convolution of a feature map)."""

    input_rank = 4

    def _channels_in(self, input_shape) -> int:
        return input_shape[-1]

    def _default_initializer(self, input_shape):
        return keras.initializers.GlorotUniform()

    def _flatten(self, inputs):
        return inputs


@keras.saving.register_keras_serializable(package=PACKAGE)
class ToCapsules(keras.layers.Layer):
    """Reshape a feature map `(batch, h, w, capsules · atoms)` into squashed capsules
    `(batch, h, w, capsules, atoms)` (a convolution's output read as capsules)."""

    def __init__(self, capsules: int, atoms: int, **kwargs):
        super().__init__(**kwargs)
        _check_arguments(self, capsules=capsules, atoms=atoms)
        self.capsules, self.atoms = capsules, atoms
        self.input_spec = keras.InputSpec(ndim=4)

    def build(self, input_shape):
        if input_shape[-1] != self.capsules * self.atoms:
            raise ValueError(f"Layer ToCapsules '{self.name}' reads {self.capsules} capsules of {self.atoms} atoms, "
                             f"so it needs {self.capsules * self.atoms} input channels. "
                             f"Received: input_shape={tuple(input_shape)}")

    def call(self, inputs):
        shape = ops.shape(inputs)
        return squash(ops.reshape(inputs, (-1, shape[1], shape[2], self.capsules, self.atoms)))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.capsules, self.atoms)

    def get_config(self):
        return {**super().get_config(), "capsules": self.capsules, "atoms": self.atoms}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvCaps3D(keras.layers.Layer):
    """DeepCaps' 3-D capsule convolution with dynamic routing.

    Input `(batch, h, w, capsules_in, atoms_in)`. Every input capsule type is convolved by the same
    `kernel x kernel x atoms_in` kernel (a 3-D convolution whose depth kernel and stride equal
    atoms_in) into votes for every output capsule, `(batch, h', w', capsules_in, capsules, atoms)`;
    routing over the input capsules at each position gives `(batch, h', w', capsules, atoms)`.
    Weights: kernel² · atoms_in · capsules · atoms (`capsule_initializer`, for the initial coupling
    1 / capsules), plus a bias per output capsule atom.
    """

    def __init__(self, capsules: int, atoms: int, kernel: int, stride: int = 1, routings: int = 3,
                 kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        _check_arguments(self, capsules=capsules, atoms=atoms, kernel=kernel, stride=stride, routings=routings)
        self.capsules, self.atoms, self.kernel, self.stride, self.routings = capsules, atoms, kernel, stride, routings
        self.kernel_initializer = _initializer(self, kernel_initializer)
        self.input_spec = keras.InputSpec(ndim=5)

    def build(self, input_shape):
        _check_known(self, input_shape, (1, 2, 3, 4))
        fan_in = self.kernel * self.kernel * input_shape[-1]
        self.kernel_weights = self.add_weight(
            name="kernel", shape=(self.kernel, self.kernel, input_shape[-1], self.capsules * self.atoms),
            initializer=self.kernel_initializer or capsule_initializer(input_shape[-2], self.atoms, self.kernel,
                                                                       fan_in, 1 / self.capsules))
        self.bias = self.add_weight(name="bias", shape=(self.capsules, self.atoms), initializer="zeros")

    def call(self, inputs):
        _, height, width, capsules_in, atoms_in = inputs.shape
        per_type = ops.reshape(ops.transpose(inputs, (0, 3, 1, 2, 4)), (-1, height, width, atoms_in))
        votes = ops.conv(per_type, self.kernel_weights, strides=self.stride, padding="same")
        out_h, out_w = votes.shape[1], votes.shape[2]
        votes = ops.reshape(votes, (-1, capsules_in, out_h, out_w, self.capsules, self.atoms))
        votes = ops.transpose(votes, (0, 2, 3, 1, 4, 5))
        return route(votes, self.routings, self.bias)

    def compute_output_shape(self, input_shape):
        side = [None if s is None else -(-s // self.stride) for s in input_shape[1:3]]
        return (input_shape[0], *side, self.capsules, self.atoms)

    def get_config(self):
        return {**super().get_config(), "capsules": self.capsules, "atoms": self.atoms, "kernel": self.kernel,
                "stride": self.stride, "routings": self.routings,
                "kernel_initializer": _serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CapsCell(keras.layers.Layer):
    """DeepCaps' CapsCell: ConvCaps2D(stride) -> ConvCaps2D -> ConvCaps2D, plus a skip branch from the
    first one's output (a ConvCaps2D, or a routed ConvCaps3D in the last cell), summed.

    Input `(batch, h, w, capsules_in, atoms_in)`, output `(batch, ceil(h/stride), ceil(w/stride),
    capsules, atoms)`.
    """

    def __init__(self, capsules: int, atoms: int, kernel: int, stride: int = 1, last: bool = False,
                 routings: int = 3, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        _check_arguments(self, capsules=capsules, atoms=atoms, kernel=kernel, stride=stride, routings=routings)
        if not isinstance(last, bool):
            raise ValueError(f"Layer CapsCell '{self.name}': argument `last` must be True or False. "
                             f"Received: last={last!r}")
        self.capsules, self.atoms, self.kernel, self.stride = capsules, atoms, kernel, stride
        self.last, self.routings = last, routings
        self.kernel_initializer = _initializer(self, kernel_initializer)
        self.input_spec = keras.InputSpec(ndim=5)
        init = _serialize(self.kernel_initializer)  # a new instance for each inner layer
        self.first = ConvCaps2D(capsules, atoms, kernel, stride, kernel_initializer=init, name="first")
        self.second = ConvCaps2D(capsules, atoms, kernel, 1, kernel_initializer=init, name="second")
        self.third = ConvCaps2D(capsules, atoms, kernel, 1, kernel_initializer=init, name="third")
        self.skip = (ConvCaps3D(capsules, atoms, kernel, 1, routings, kernel_initializer=init, name="skip3d") if last
                     else ConvCaps2D(capsules, atoms, kernel, 1, kernel_initializer=init, name="skip"))

    def build(self, input_shape):
        self.first.build(input_shape)
        inner = self.first.compute_output_shape(input_shape)
        self.second.build(inner)
        self.third.build(inner)
        self.skip.build(inner)

    def call(self, inputs):
        first = self.first(inputs)
        return self.third(self.second(first)) + self.skip(first)

    def compute_output_shape(self, input_shape):
        return self.first.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "capsules": self.capsules, "atoms": self.atoms, "kernel": self.kernel,
                "stride": self.stride, "last": self.last, "routings": self.routings,
                "kernel_initializer": _serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FlatCaps(keras.layers.Layer):
    """Flatten a capsule map `(batch, h, w, capsules, atoms)` into a list `(batch, h·w·capsules, atoms)`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.input_spec = keras.InputSpec(ndim=5)

    def build(self, input_shape):
        _check_known(self, input_shape, (1, 2, 3, 4))

    def call(self, inputs):
        return ops.reshape(inputs, (-1, inputs.shape[1] * inputs.shape[2] * inputs.shape[3], inputs.shape[4]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] * input_shape[2] * input_shape[3], input_shape[4])


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClassCaps(keras.layers.Layer):
    """Fully-connected capsules with dynamic routing (Sabour et al.'s DigitCaps).

    Input `(batch, inputs, atoms_in)`; a transformation matrix per (input, output) pair,
    weights inputs · atoms_in · capsules · atoms (no bias); routing iterations `routings` with a
    softmax over the output capsules; output `(batch, capsules, atoms)`. The votes are the raw
    products times `classcaps_multiplier(inputs)`, so the effective weights are `transform` times
    that constant (fold it into the weights to deploy them).
    """

    def __init__(self, capsules: int, atoms: int, routings: int = 3, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        _check_arguments(self, capsules=capsules, atoms=atoms, routings=routings)
        self.capsules, self.atoms, self.routings = capsules, atoms, routings
        self.kernel_initializer = _initializer(self, kernel_initializer)
        self.input_spec = keras.InputSpec(ndim=3)

    def build(self, input_shape):
        _check_known(self, input_shape, (1, 2))
        self.transform = self.add_weight(
            name="transform", shape=(input_shape[1], input_shape[2], self.capsules * self.atoms),
            initializer=self.kernel_initializer or classcaps_initializer(input_shape[1]))

    def call(self, inputs):
        votes = ops.einsum("bni,nio->bno", inputs, self.transform) * classcaps_multiplier(inputs.shape[1])
        votes = ops.reshape(votes, (-1, inputs.shape[1], self.capsules, self.atoms))
        return route(votes, self.routings)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.capsules, self.atoms)

    def get_config(self):
        return {**super().get_config(), "capsules": self.capsules, "atoms": self.atoms, "routings": self.routings,
                "kernel_initializer": _serialize(self.kernel_initializer)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Length(keras.layers.Layer):
    """Capsule lengths: `(batch, capsules, atoms)` -> `(batch, capsules)` (class probabilities); any
    capsule array of rank 2 or more, lengths along its last axis."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.input_spec = keras.InputSpec(min_ndim=2)

    def call(self, inputs):
        return ops.sqrt(ops.sum(ops.square(inputs), axis=-1) + EPSILON)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])


@keras.saving.register_keras_serializable(package=PACKAGE)
class Mask(keras.layers.Layer):
    """Keep one capsule and zero the others, flattened: `(batch, capsules, atoms)` -> `(batch, capsules·atoms)`.

    Called on `[capsules, one_hot_labels]` it keeps the true class (training); called on the
    capsules alone it keeps the longest one (evaluation).
    """

    def build(self, input_shape):
        shapes = input_shape if isinstance(input_shape, (list, tuple)) and isinstance(
            input_shape[0], (list, tuple)) else [input_shape]
        if len(shapes) > 2 or len(shapes[0]) != 3 or (len(shapes) == 2 and tuple(shapes[1][1:]) != (shapes[0][1],)):
            raise ValueError(f"Layer Mask '{self.name}' takes capsules (batch, capsules, atoms), optionally with "
                             f"one-hot labels (batch, capsules). Received: input_shape={input_shape}")

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            capsules, mask = inputs
        else:
            capsules = inputs
            lengths = ops.sum(ops.square(capsules), axis=-1)
            mask = ops.one_hot(ops.argmax(lengths, axis=-1), capsules.shape[1])
        masked = capsules * ops.expand_dims(ops.cast(mask, capsules.dtype), -1)
        return ops.reshape(masked, (-1, capsules.shape[1] * capsules.shape[2]))

    def compute_output_shape(self, input_shape):
        shape = input_shape[0] if isinstance(input_shape, (list, tuple)) and isinstance(
            input_shape[0], (list, tuple)) else input_shape
        return (shape[0], shape[1] * shape[2])


@keras.saving.register_keras_serializable(package=PACKAGE)
def margin_loss(y_true, y_pred, m_plus: float = 0.9, m_minus: float = 0.1, down_weight: float = 0.5):
    """Margin loss of Sabour et al. per image `(batch,)` from capsule lengths `(batch, classes)` and one-hot labels."""
    y_true = ops.cast(y_true, y_pred.dtype)
    present = y_true * ops.square(ops.relu(m_plus - y_pred))
    absent = down_weight * (1.0 - y_true) * ops.square(ops.relu(y_pred - m_minus))
    return ops.sum(present + absent, axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
def reconstruction_loss(y_true, y_pred):
    """Sum of squared pixel errors per image `(batch,)` (Sabour et al. weight it by 0.0005)."""
    y_true = ops.cast(y_true, y_pred.dtype)
    axes = tuple(range(1, len(y_pred.shape)))
    return ops.sum(ops.square(y_true - y_pred), axis=axes)


CUSTOM_OBJECTS = {cls.__name__: cls for cls in (ConvCaps2D, PrimaryCaps, ToCapsules, ConvCaps3D, CapsCell,
                                                  FlatCaps, ClassCaps, Length, Mask)}
CUSTOM_OBJECTS.update(margin_loss=margin_loss, reconstruction_loss=reconstruction_loss)
"""Every custom object, for `keras.models.load_model(..., custom_objects=CUSTOM_OBJECTS)`."""
