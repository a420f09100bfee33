"""Deploy a trained network on CapsAcc's integer arithmetic: quantise a float bundle (`nas.export`)
to int8 with power-of-two scales, choose each layer's requantization shift on calibration images, and
run the test set through the golden model (`sim.golden`), vectorised over images.

Formats (docs/deploy.md): every int8 tensor t stands for the real value t / 2**f, f its fractional
bits; all scales are powers of two because the datapath has shifts and no multipliers.
- input images: q = min(127, (pixel + 1) >> 1), f = 7 (q / 128 ~ pixel / 255).
- weights of a layer: f_w = the largest integer with max|w| * 2**f_w <= 127, w_q = round(w * 2**f_w);
  the sums then have f_acc = f_x + f_w.
- bias: the im2col bias column (`sim.driver.conv_patches`) holds the data value 2**p, the bias row
  round(b * 2**(f_acc - p)), p in 0..`MAX_BIAS_INPUT_BITS` the smallest that keeps every bias in
  int8 (saturated otherwise, and counted).
- ReLU convolution: shift = the smallest s >= 0 with the `SATURATION_PERCENTILE` (100: the largest)
  of the calibration sums' positive parts <= 127 * 2**s (the finest output format in which no
  calibration value saturates); output f = f_acc - shift.
- capsule convolution (squash): its input is Q3.4 so shift = f_acc - 4, output Q0.7 (f = 7).
- ClassCaps: shift chosen as for ReLU on |sums|, predictions f_u = f_acc - shift; the routing's
  sums (coupling Q0.7 times predictions) and logits have f_u + 7 fractional bits, squash and softmax
  read Q3.4, so shift_sum = shift_logits = f_u + 3.
- the class of an image: the output capsule of largest sum of squares (first on ties).
- resize 2: the host upsamples the int8 image (`upsample2`, Keras' bilinear in integers).
- CapsCell networks, step by step as `capsacc.mapping.chain` runs them: the convolution read by
  ToCapsules has its batch normalisation folded (`nas.export`) and its shift chosen as for ReLU over
  the sums and the offsets, at most f_acc - 4; ToCapsules adds the offset (int8 in the convolution's
  output format) and squashes with shift f - 4; a cell's sum of two Q0.7 maps gets the
  `saturating_shift` of its calibration sums (output f = 7 - shift); the ConvCaps3D votes (bias
  folded in, `nas.export`) are requantized by a shift chosen as for ClassCaps, at most f_acc - 4, and
  routed over the input types at each position as the class routing is (`ROUTINGS` iterations,
  shift_sum = shift_logits = f_v + 3).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from capsacc.errors import InputError
from capsacc.mapping import CHAIN_KINDS, ELEMENTWISE_KINDS, ROUTINGS, chain
from capsacc.network import Network, Operation
from sim import golden
from sim.driver import conv3d_patches, conv_patches
from sim.network_run import step_name

BUNDLE_FORMAT = "nascaps-float-bundle/1"
"""The bundle format this module reads (`nas.export.BUNDLE_FORMAT`)."""
INPUT_FRAC_BITS = 7
"""Fractional bits of the int8 input image."""
MAX_BIAS_INPUT_BITS = 6
"""The bias column's data value is 2**p with p at most 6 (64, the largest power of two in int8)."""
SATURATION_PERCENTILE = 100.0
"""Percentile of the calibration sums that a chosen shift keeps inside int8: 100, the largest (no
calibration value saturates). On the 3-epoch capsnet-like model of docs/deploy.md, 99.99 and 99 cost 0.5
and 1.0 points of int8 accuracy: a saturated value hurts more than a lost bit of resolution."""
PATCH_ELEMENTS = 1 << 24
"""Most im2col elements built at once (memory bound of the vectorised run)."""


@dataclass
class Layer:
    """One weighted operation, quantised: `weights` int8 (K + 1, M) with the bias row last (zero when the
    layer has no bias) or ClassCaps' (I, Din, J*Dout); `weight_frac_bits` f_w; `bias_input_bits` p;
    `bias_saturated` biases clipped to int8; `shift` its requantization shift (None until calibrated);
    `in_frac_bits` / `out_frac_bits` of its input and output; `bias` the float bias (M,) (zeros when the
    layer has none; None for ClassCaps); `offset` a convolution's float batch normalisation offset (M,)
    added after its ReLU (None without one) and `offset_q` that offset in the output format (int8, set
    when calibrated). `op` is the operation as its step of `capsacc.mapping.chain` runs it (a ConvCaps3D's
    votes on the cell's first output, stride 1)."""

    op: Operation
    weights: np.ndarray
    weight_frac_bits: int
    bias: np.ndarray | None = None
    bias_input_bits: int = 0
    bias_saturated: int = 0
    shift: int | None = None
    in_frac_bits: int = 0
    out_frac_bits: int = 0
    offset: np.ndarray | None = None
    offset_q: np.ndarray | None = None

    @property
    def accumulator_bits(self) -> int:
        """Bits (sign included) of the largest partial sum any int8 input can give: 128 times the largest
        sum of |weights| over one output (bias row included, with its data value 2**p)."""
        w = np.abs(self.weights)
        if self.op.kind == "classcaps":
            peak = int(w.sum(axis=1).max()) * 128
        else:
            peak = int((w[:-1].sum(axis=0) * 128 + w[-1] * (1 << self.bias_input_bits)).max())
        return peak.bit_length() + 1

    def record(self) -> dict:
        return {"operation": self.op.name, "kind": self.op.kind, "weight_frac_bits": self.weight_frac_bits,
                "accumulator_bits": self.accumulator_bits,
                "bias_input": 1 << self.bias_input_bits, "bias_saturated": self.bias_saturated, "shift": self.shift,
                "in_frac_bits": self.in_frac_bits, "out_frac_bits": self.out_frac_bits}


@dataclass
class Deployment:
    """The quantised network: its `network`, `layers` in order, the routing iterations and shifts,
    `resize` (1, or 2: the host upsamples the input, `upsample2`), and the shifts of the steps a
    CapsCell network adds (`capsacc.mapping.CHAIN_KINDS`; a ConvCaps3D routing's is its shift_sum and
    shift_logits) by step name (`sim.network_run.step_name`, e.g. "convcaps4.capsadd")."""

    network: Network
    layers: list[Layer]
    routings: int
    shift_sum: int | None = None
    shift_logits: int | None = None
    resize: int = 1
    elementwise: dict[str, int] = field(default_factory=dict)

    def shifts(self) -> dict:
        """Every requantization shift by operation name (an element-wise step's by step name), the
        routing's as `routing.sum` / `routing.logits`."""
        return {**{layer.op.name: layer.shift for layer in self.layers}, **self.elementwise,
                "routing.sum": self.shift_sum, "routing.logits": self.shift_logits}


def read_bundle(folder: str | Path) -> tuple[dict, dict]:
    """(bundle.json record, bundle.npz arrays) of a `nas.export` folder; `InputError` naming the file."""
    folder = Path(folder)
    try:
        record = json.loads((folder / "bundle.json").read_text())
        with np.load(folder / "bundle.npz") as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as error:
        raise InputError(f"{folder}: not a float bundle of nas.export ({error})") from None
    if not isinstance(record, dict) or record.get("format") != BUNDLE_FORMAT:
        raise InputError(f"{folder / 'bundle.json'}: format is not {BUNDLE_FORMAT}")
    return record, arrays


def weight_frac_bits(values: np.ndarray) -> int:
    """The largest f with max|values| * 2**f <= 127; 7 for all-zero values."""
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    return 7 if peak == 0 else int(np.floor(np.log2(127.0 / peak)))


def to_int8(values: np.ndarray, frac_bits: int) -> tuple[np.ndarray, int]:
    """(round(values * 2**frac_bits) saturated to int8 as int64, number of saturated values)."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * 2.0 ** frac_bits)
    return np.clip(scaled, -128, 127).astype(np.int64), int(np.sum(np.abs(scaled) > 127.5))


def quantise(record: dict, arrays: dict) -> Deployment:
    """The layers of a bundle with int8 weights and biases (shifts still unset); `InputError` when a
    weight array does not have its operation's shape."""
    network = Network.from_genotype(record["genotype"])
    step_ops = {step.index: step.op for step in chain(network.operations) if step.kind not in CHAIN_KINDS}
    layers = []
    for index, entry in enumerate(record["operations"]):
        if entry["weights"] is None:
            continue
        op = step_ops[index]
        w = arrays[entry["weights"]]
        if op.kind == "classcaps":
            want = (op.n_in ** 2 * op.ch_in, op.caps_in, op.ch_out * op.caps_out)
        elif op.kind == "convcaps3d":
            want = (op.kernel ** 3 * op.caps_in, op.ch_out * op.caps_out)
        else:
            want = (op.kernel ** 2 * op.ch_in * op.caps_in, op.ch_out * op.caps_out)
        if w.shape != want:
            raise InputError(f"bundle {entry['weights']}: shape {w.shape}, operation {op.name} needs {want}")
        f_w = weight_frac_bits(w)
        w_q, _ = to_int8(w, f_w)
        layer = Layer(op, w_q, f_w)
        if op.kind != "classcaps":
            bias = arrays[entry["bias"]] if entry["bias"] else np.zeros(want[1], np.float32)
            layer.weights = np.vstack([w_q, np.zeros((1, want[1]), np.int64)])
            layer.bias = bias
            if entry.get("offset"):
                layer.offset = arrays[entry["offset"]]
        layers.append(layer)
    return Deployment(network, layers, int(record["routings"]), resize=int(record["genotype"][-1][0]))


def input_int8(pixels: np.ndarray) -> np.ndarray:
    """uint8 images (B, h, w, c) -> int8 (as int64) q = min(127, (pixel + 1) >> 1), Q0.7."""
    return np.minimum(127, (np.asarray(pixels, dtype=np.int64) + 1) >> 1)


def upsample2(q: np.ndarray) -> np.ndarray:
    """int8 images (B, h, w, c) -> (B, 2h, 2w, c): Keras' UpSampling2D(2, "bilinear") (half-pixel
    centres) in integers, done by the host. Along each axis output 2i weighs input i by 3/4 and i - 1
    by 1/4, output 2i + 1 input i by 3/4 and i + 1 by 1/4 (clamped at the edges); both axes together
    are (9a + 3b + 3c + d + 8) >> 4, round half up, at most 127 (no saturation)."""
    def along(x, axis):
        n = x.shape[axis]
        before = np.take(x, np.maximum(np.arange(n) - 1, 0), axis=axis)
        after = np.take(x, np.minimum(np.arange(n) + 1, n - 1), axis=axis)
        pairs = np.stack([3 * x + before, 3 * x + after], axis=axis + 1)
        return pairs.reshape(*x.shape[:axis], 2 * n, *x.shape[axis + 1:])

    return (along(along(np.asarray(q, dtype=np.int64), 1), 2) + 8) >> 4


def network_input(deployment: "Deployment", pixels: np.ndarray) -> np.ndarray:
    """The int8 input of the network's first operation for uint8 images (B, h, w, c): `input_int8`,
    upsampled by `upsample2` for resize 2 (Q0.7 either way)."""
    q = input_int8(pixels)
    return upsample2(q) if deployment.resize == 2 else q


def _set_bias(layer: Layer, in_frac_bits: int) -> None:
    """Quantise the layer's float bias for inputs of `in_frac_bits` (module docstring's rule)."""
    layer.in_frac_bits = in_frac_bits
    f_acc = in_frac_bits + layer.weight_frac_bits
    for p in range(MAX_BIAS_INPUT_BITS + 1):
        row, saturated = to_int8(layer.bias, f_acc - p)
        if not saturated:
            break
    layer.bias_input_bits, layer.bias_saturated = p, saturated
    layer.weights[-1] = row


def check_accumulator(layer: Layer) -> None:
    """`InputError` unless no int8 input can make the layer's sums wrap the `golden.ACC_BITS` accumulator."""
    if layer.accumulator_bits > golden.ACC_BITS:
        raise InputError(f"operation {layer.op.name}: sums need {layer.accumulator_bits} bits, the accumulator "
                         f"has {golden.ACC_BITS}")


def sums(layer: Layer, x: np.ndarray) -> np.ndarray:
    """The wrapped partial sums of `layer` on int8 inputs x (B, n, n, channels) (ClassCaps: capsules
    (B, I, Din)): (B, positions, M) for convolutions (ConvCaps3D: (B, positions * ch_in, M), rows
    (y, x, input type) as `sim.driver.conv3d_patches`), (B, I, J*Dout) for ClassCaps."""
    op = layer.op
    if op.kind == "classcaps":
        return golden.classcaps_sums(x, layer.weights)
    volume = op.kind == "convcaps3d"
    per_image = op.n_out ** 2 * layer.weights.shape[0] * (op.ch_in if volume else 1)
    step = max(1, PATCH_ELEMENTS // per_image)
    out = []
    for first in range(0, len(x), step):
        patches = np.stack([conv3d_patches(image.reshape(op.n_in, op.n_in, op.ch_in, op.caps_in), op.kernel,
                                           op.stride, op.n_out) if volume else
                            conv_patches(image, op.kernel, op.stride, op.n_out) for image in x[first:first + step]])
        patches[..., -1] = 1 << layer.bias_input_bits
        out.append(golden.matmul(patches, layer.weights))
    return np.concatenate(out)


def saturating_shift(values: np.ndarray) -> int:
    """The smallest shift s >= 0 with the `SATURATION_PERCENTILE` percentile of `values` (>= 0) at most
    127 * 2**s."""
    peak = float(np.percentile(values, SATURATION_PERCENTILE)) if values.size else 0.0
    return max(0, int(np.ceil(np.log2(peak / 127.0)))) if peak > 127 else 0


def squash_shift(frac_bits: int, what: str) -> int:
    """The shift that brings sums of `frac_bits` fractional bits to the squash's Q3.4 input; `InputError`
    naming `what` when they have fewer."""
    if frac_bits < golden.SQUASH_FRAC_BITS:
        raise InputError(f"{what}: sums have {frac_bits} fractional bits, fewer than the squash input's "
                         f"{golden.SQUASH_FRAC_BITS}")
    return frac_bits - golden.SQUASH_FRAC_BITS


def _weighted_step(layer: Layer, x: np.ndarray, f_x: int, calibrate: bool) -> tuple[np.ndarray, int]:
    """(int8 output, its fractional bits) of a conv, convcaps or convcaps3d step on inputs x of f_x
    fractional bits; `calibrate` sets the bias and chooses the shift first (module docstring).
    Outputs (B, n, n, M); ConvCaps3D's votes (B, positions * ch_in, M)."""
    op, batch = layer.op, len(x)
    if calibrate:
        _set_bias(layer, f_x)
    check_accumulator(layer)
    f_acc = f_x + layer.weight_frac_bits
    acc = sums(layer, x.reshape(batch, op.n_in, op.n_in, -1))
    if op.kind == "convcaps":
        layer.shift = squash_shift(f_acc, f"operation {op.name}")
        out = golden.activate(acc.reshape(batch, -1, op.ch_out, op.caps_out), layer.shift, "squash")
        layer.out_frac_bits = golden.OUT_FRAC_BITS
        return out.reshape(batch, op.n_out, op.n_out, -1), layer.out_frac_bits
    if calibrate:
        peaks = np.abs(acc) if op.kind == "convcaps3d" else np.maximum(acc, 0)
        if layer.offset is not None:
            peaks = np.concatenate([peaks.reshape(-1), np.abs(layer.offset) * 2.0 ** f_acc])
        layer.shift = saturating_shift(peaks)
        if op.kind == "convcaps3d" or layer.offset is not None:  # read by a squash: at least Q3.4
            layer.shift = min(layer.shift, squash_shift(f_acc, f"operation {op.name}"))
        if layer.offset is not None:
            layer.offset_q, _ = to_int8(layer.offset, f_acc - layer.shift)
    layer.out_frac_bits = f_acc - layer.shift
    if op.kind == "convcaps3d":
        return golden.requantize(acc, layer.shift), layer.out_frac_bits
    return golden.activate(acc, layer.shift, "relu").reshape(batch, op.n_out, op.n_out, -1), layer.out_frac_bits


def _elementwise_step(deployment: Deployment, name: str, kind: str, op: Operation, operands: list, offset,
                      calibrate: bool) -> tuple[np.ndarray, int]:
    """(int8 output (B, n, n, M), fractional bits) of an `ELEMENTWISE_KINDS` step named `name` on
    `operands` [(values, fractional bits)], by `golden.capsule_sum` as the RTL runs it. "tocaps": the
    map plus the batch normalisation `offset` (int8 (M,), or None), shift to Q3.4, squash; "capsadd":
    the two squashed maps (Q0.7) added, shift chosen on the calibration images (`saturating_shift` of
    the sums' magnitudes: 1 where they pass 127, the output then Q1.6)."""
    values, f_in = operands[0]
    batch = len(values)
    side = op.n_in if kind == "tocaps" else op.n_out
    maps = [v.reshape(batch * side * side, -1) for v, _ in operands]
    if any(f != f_in for _, f in operands):
        raise InputError(f"step {name}: operands of {[f for _, f in operands]} fractional bits")
    if offset is not None:
        maps.append(np.broadcast_to(offset, maps[0].shape))
    if kind == "capsadd":
        if calibrate:
            deployment.elementwise[name] = saturating_shift(np.abs(golden.wrap(np.sum(maps, axis=0))))
        function, length = "none", op.caps_out
    else:
        deployment.elementwise[name] = squash_shift(f_in, f"step {name}")
        function, length = "squash", op.caps_in if kind == "tocaps" else op.caps_out
    shift = deployment.elementwise[name]
    out = golden.capsule_sum(maps, shift, function, length)
    f_out = f_in - shift if kind == "capsadd" else golden.OUT_FRAC_BITS
    return out.reshape(batch, side, side, -1), f_out


def routing_shift(f_u: int, inputs: int, dim: int, routings: int, what: str) -> int:
    """shift_sum = shift_logits of a routing over `inputs` capsules of predictions with f_u fractional
    bits into capsules of `dim` atoms, `routings` iterations: sums and logits have f_u + 7 bits, the
    squash and softmax read Q3.4. `InputError` when the predictions have too few fractional bits or
    the logits would need more bits than the accumulator has."""
    shift = f_u + golden.OUT_FRAC_BITS - golden.SQUASH_FRAC_BITS
    if shift < 0:
        raise InputError(f"{what}: predictions with {f_u} fractional bits: the routing needs at least "
                         f"{golden.SQUASH_FRAC_BITS - golden.OUT_FRAC_BITS}")
    routing_bits = (max(inputs, dim) * 127 * 128 * routings).bit_length() + 1
    if routing_bits > golden.ACC_BITS:
        raise InputError(f"{what}: the routing's logits need {routing_bits} bits, the accumulator has "
                         f"{golden.ACC_BITS}")
    return shift


def _route3d_step(deployment: Deployment, name: str, op: Operation, votes: tuple) -> tuple[np.ndarray, int]:
    """(int8 output capsules (B, n, n, ch_out·caps_out) Q0.7, their fractional bits) of a ConvCaps3D's
    routing named `name` on its (votes (B, n_out²·ch_in, M), fractional bits f_v): at each position a
    dynamic routing over the ch_in input types (`golden.routing`, `ROUTINGS` iterations, the RTL's
    route3d), shift `routing_shift`."""
    values, f_v = votes
    batch = len(values)
    deployment.elementwise[name] = shift = routing_shift(f_v, op.ch_in, op.caps_out, ROUTINGS, f"step {name}")
    u_hat = values.reshape(batch * op.n_out ** 2, op.ch_in, op.ch_out, op.caps_out)
    _, _, v, _ = golden.routing(u_hat, ROUTINGS, shift, shift)
    return v.reshape(batch, op.n_out, op.n_out, -1), golden.OUT_FRAC_BITS


def forward(deployment: Deployment, pixels: np.ndarray, calibrate: bool = False) -> np.ndarray:
    """The output capsules v (B, J, D) int8 of uint8 images `pixels` (B, h, w, c) on the golden model,
    step by step as `capsacc.mapping.chain` orders them (the RTL's data flow). `calibrate`: choose every
    shift on these images first (module docstring), in order."""
    network = deployment.network
    layers = {layer.op.name: layer for layer in deployment.layers}
    steps = chain(network.operations)
    outputs = []
    x = network_input(deployment, pixels)
    batch, f_u = len(x), None
    for step in steps:
        kind, op = step.kind, step.op
        values, f_x = outputs[step.inputs[0]] if step.inputs else (x, INPUT_FRAC_BITS)
        if kind in ("conv", "convcaps", "convcaps3d"):
            outputs.append(_weighted_step(layers[op.name], values, f_x, calibrate))
        elif kind == "route3d":
            outputs.append(_route3d_step(deployment, step_name(network, step), op, outputs[step.inputs[0]]))
        elif kind in ELEMENTWISE_KINDS:
            source = network.operations[steps[step.inputs[0]].index]
            offset = layers[source.name].offset_q if kind == "tocaps" else None
            outputs.append(_elementwise_step(deployment, step_name(network, step), kind, op,
                                             [outputs[i] for i in step.inputs], offset, calibrate))
        elif kind == "classcaps":
            layer = layers[op.name]
            layer.in_frac_bits = f_x
            check_accumulator(layer)
            f_acc = f_x + layer.weight_frac_bits
            acc = sums(layer, values.reshape(batch, -1, op.caps_in))
            if calibrate:
                layer.shift = saturating_shift(np.abs(acc))
            f_u = layer.out_frac_bits = f_acc - layer.shift
            u_hat = golden.requantize(acc, layer.shift).reshape(batch, -1, op.ch_out, op.caps_out)
            outputs.append((u_hat, f_u))
        else:
            outputs.append((None, None))  # the routing phases: run together below
    deployment.shift_sum = deployment.shift_logits = routing_shift(f_u, u_hat.shape[1], u_hat.shape[3],
                                                                   deployment.routings, "ClassCaps")
    _, _, v, _ = golden.routing(u_hat, deployment.routings, deployment.shift_logits, deployment.shift_sum)
    return v


def classes(v: np.ndarray) -> np.ndarray:
    """The class of each image: argmax over capsules of the sum of squares, (B, J, D) -> (B,)."""
    return np.argmax(np.sum(np.asarray(v, dtype=np.int64) ** 2, axis=-1), axis=-1)


def evaluate(deployment: Deployment, pixels: np.ndarray, images_per_batch: int = 100) -> np.ndarray:
    """The int8 class of every image of `pixels` (B, h, w, c) uint8, `images_per_batch` at a time."""
    return np.concatenate([classes(forward(deployment, pixels[first:first + images_per_batch]))
                           for first in range(0, len(pixels), images_per_batch)])


def operation_inputs(deployment: Deployment) -> dict[str, dict]:
    """The quantised weights and shifts by step name, as `sim.network_run.run_network` takes them:
    "weights", "shift" and "bias_input" of every weighted operation, "shift_sum" and "shift_logits"
    of every routing operation and of a ConvCaps3D's routing, "shift" of every element-wise step and,
    for a ToCapsules reading a batch-normalised convolution, its "offset" (int8 (M,), added as a second
    operand)."""
    given = {layer.op.name: {"weights": layer.weights, "shift": layer.shift, "bias_input": 1 << layer.bias_input_bits}
             for layer in deployment.layers}
    given.update({name: {"shift_sum": shift, "shift_logits": shift} if name.endswith(".route3d")
                  else {"shift": shift} for name, shift in deployment.elementwise.items()})
    steps = chain(deployment.network.operations)
    for step in steps:
        if step.kind == "tocaps":
            source = deployment.network.operations[steps[step.inputs[0]].index]
            layer = next(layer for layer in deployment.layers if layer.op.name == source.name)
            if layer.offset_q is not None:
                given[step_name(deployment.network, step)]["offset"] = layer.offset_q
    for op in deployment.network.operations:
        if op.kind == "routing":
            given[op.name] = {"shift_sum": deployment.shift_sum, "shift_logits": deployment.shift_logits}
    return given


def simulate(deployment: Deployment, pixels: np.ndarray, rows: int, cols: int, simulator: str = "verilator"):
    """Run the uint8 images `pixels` (K, h, w, c) as one batch through the RTL (`sim.network_run`, the
    path of `nascaps rtl run`, off-chip memory included) with the deployment's weights and shifts; every
    step is checked against the golden model by the driver (`sim.driver.MismatchError` otherwise).
    Returns (the `NetworkRun`, whether its output capsules equal `forward`'s bit for bit)."""
    from capsacc.array import ArrayConfig
    from sim.driver import OperationDriver
    from sim.network_run import run_network

    if deployment.routings != ROUTINGS:
        raise InputError(f"the model routes {deployment.routings} times; the RTL chain runs {ROUTINGS} iterations")
    config = ArrayConfig(rows=rows, cols=cols, acc_bits=golden.ACC_BITS, batch=len(pixels))
    run = run_network(deployment.network, OperationDriver(config, simulator, offchip=True),
                      network_input(deployment, pixels),
                      operation_inputs=operation_inputs(deployment))
    return run, bool(np.array_equal(run.output, forward(deployment, pixels)))


def rtl_figures(run, images: int, offchip_pJ_per_byte: float) -> dict:
    """Per image figures of `run` (a `sim.network_run.NetworkRun` of `images` images with the off-chip
    memory) from the RTL's counters: `rtl_cycles_per_image` (compute cycles, as the cost models count),
    `rtl_total_cycles_per_image` (the DMA programs' busy cycles, data movement and stalls included),
    `rtl_batch_cycles`, `rtl_events_per_image` (`capsacc.calibrated.events_from_counters` of the summed
    counters), `rtl_offchip_bytes_per_image`, and energy in mJ: `rtl_onchip_energy_mJ_per_image` (the
    events priced by `capsacc.energy.EventEnergies.from_tables` of the simulated array),
    `rtl_offchip_energy_mJ_per_image` (off-chip bytes x `offchip_pJ_per_byte`),
    `rtl_dma_buffer_energy_mJ_per_image` (each buffer row the DMA instructions move, priced as a `data_read`
    or, in the weight buffer, a `weight_read`: the calibrated model's rule) and their sum
    `rtl_energy_mJ_per_image`; apart from it, as the calibrated model's `program_bytes` and
    `program_energy_mJ`, `rtl_program_bytes_per_image` (the program words overlay programs loaded through
    the port, beats times W) and `rtl_program_energy_mJ_per_image` (those bytes x `offchip_pJ_per_byte`).
    Per image values are the batch's divided by `images` (cycles and bytes rounded up)."""
    from capsacc.calibrated import events_from_counters, per_image
    from capsacc.energy import EVENTS, EventEnergies
    from rtl.isa import Dma

    config = run.runs[0].config
    counters = {name: sum(r.counters[name] for r in run.runs) for name in run.runs[0].counters}
    events = events_from_counters(counters, config.rows, config.cols)
    energies = EventEnergies.from_tables(config)
    onchip_pJ = sum(events[event] * getattr(energies, event) for event in EVENTS)
    offchip_bytes = sum(r.offchip_bytes for r in run.runs)
    buffer_pJ = sum(i.n * (energies.weight_read if i.buffer == "weight" else energies.data_read)
                    for r in run.runs for stream in r.streams for program in stream.programs for i in program
                    if isinstance(i, Dma) and i.buffer != "program")
    program_bytes = sum(r.program_bytes for r in run.runs)
    onchip_mJ, offchip_mJ = onchip_pJ * 1e-9 / images, offchip_bytes * offchip_pJ_per_byte * 1e-9 / images
    buffer_mJ = buffer_pJ * 1e-9 / images
    return {"rtl_cycles_per_image": per_image(run.cycles, images),
            "rtl_total_cycles_per_image": per_image(sum(r.total_cycles for r in run.runs), images),
            "rtl_batch_cycles": run.cycles, "rtl_events_per_image": {e: events[e] / images for e in EVENTS},
            "rtl_offchip_bytes_per_image": per_image(offchip_bytes, images),
            "rtl_onchip_energy_mJ_per_image": onchip_mJ, "rtl_offchip_energy_mJ_per_image": offchip_mJ,
            "rtl_dma_buffer_energy_mJ_per_image": buffer_mJ,
            "rtl_energy_mJ_per_image": onchip_mJ + offchip_mJ + buffer_mJ,
            "rtl_program_bytes_per_image": per_image(program_bytes, images),
            "rtl_program_energy_mJ_per_image": program_bytes * offchip_pJ_per_byte * 1e-9 / images}


def deploy_bundle(folder: str | Path) -> tuple[Deployment, dict]:
    """Quantise and calibrate the bundle in `folder`, run its test set on the golden model; returns the
    deployment and the figures: `float_accuracy`, `int8_accuracy`, `agreement`, `test_images`,
    `layers` (each `Layer.record`), `shifts`."""
    record, arrays = read_bundle(folder)
    deployment = quantise(record, arrays)
    forward(deployment, arrays["calibration_images"], calibrate=True)
    predicted = evaluate(deployment, arrays["test_images"])
    labels, float_classes = arrays["test_labels"], arrays["float_classes"]
    figures = {"float_accuracy": float(np.mean(float_classes == labels)),
               "int8_accuracy": float(np.mean(predicted == labels)),
               "agreement": float(np.mean(predicted == float_classes)), "test_images": int(len(labels)),
               "calibration_images": int(len(arrays["calibration_images"])),
               "layers": [layer.record() for layer in deployment.layers], "shifts": deployment.shifts()}
    return deployment, figures
