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
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capsacc.errors import InputError
from capsacc.network import Network, Operation
from sim import golden
from sim.driver import conv_patches

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
    layer has none; None for ClassCaps)."""

    op: Operation
    weights: np.ndarray
    weight_frac_bits: int
    bias: np.ndarray | None = None
    bias_input_bits: int = 0
    bias_saturated: int = 0
    shift: int | None = None
    in_frac_bits: int = 0
    out_frac_bits: int = 0

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
    """The quantised network: its `network`, `layers` in order, the routing iterations and shifts."""

    network: Network
    layers: list[Layer]
    routings: int
    shift_sum: int | None = None
    shift_logits: int | None = None

    def shifts(self) -> dict:
        """Every requantization shift by operation name, the routing's as `routing.sum` / `routing.logits`."""
        return {**{layer.op.name: layer.shift for layer in self.layers},
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
    layers = []
    for op, entry in zip(network.operations, record["operations"]):
        if entry["weights"] is None:
            continue
        w = arrays[entry["weights"]]
        if op.kind == "classcaps":
            want = (op.n_in ** 2 * op.ch_in, op.caps_in, op.ch_out * op.caps_out)
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
        layers.append(layer)
    return Deployment(network, layers, int(record["routings"]))


def input_int8(pixels: np.ndarray) -> np.ndarray:
    """uint8 images (B, h, w, c) -> int8 (as int64) q = min(127, (pixel + 1) >> 1), Q0.7."""
    return np.minimum(127, (np.asarray(pixels, dtype=np.int64) + 1) >> 1)


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
    (B, I, Din)): (B, positions, M) for convolutions, (B, I, J*Dout) for ClassCaps."""
    op = layer.op
    if op.kind == "classcaps":
        return golden.classcaps_sums(x, layer.weights)
    per_image = op.n_out ** 2 * layer.weights.shape[0]
    step = max(1, PATCH_ELEMENTS // per_image)
    out = []
    for first in range(0, len(x), step):
        patches = np.stack([conv_patches(image, op.kernel, op.stride, op.n_out) for image in x[first:first + step]])
        patches[..., -1] = 1 << layer.bias_input_bits
        out.append(golden.matmul(patches, layer.weights))
    return np.concatenate(out)


def saturating_shift(values: np.ndarray) -> int:
    """The smallest shift s >= 0 with the `SATURATION_PERCENTILE` percentile of `values` (>= 0) at most
    127 * 2**s."""
    peak = float(np.percentile(values, SATURATION_PERCENTILE)) if values.size else 0.0
    return max(0, int(np.ceil(np.log2(peak / 127.0)))) if peak > 127 else 0


def forward(deployment: Deployment, pixels: np.ndarray, calibrate: bool = False) -> np.ndarray:
    """The output capsules v (B, J, D) int8 of uint8 images `pixels` (B, h, w, c) on the golden model.
    `calibrate`: choose every layer's shift on these images first (module docstring), in order."""
    x, f_x = input_int8(pixels), INPUT_FRAC_BITS
    batch = len(x)
    for layer in deployment.layers:
        op = layer.op
        if op.kind == "classcaps":
            x = x.reshape(batch, -1, op.caps_in)
            layer.in_frac_bits = f_x
        elif calibrate:
            _set_bias(layer, f_x)
        check_accumulator(layer)
        f_acc = f_x + layer.weight_frac_bits
        acc = sums(layer, x)
        if op.kind == "convcaps":
            layer.shift = f_acc - golden.SQUASH_FRAC_BITS
            if layer.shift < 0:
                raise InputError(f"operation {op.name}: sums have {f_acc} fractional bits, fewer than the "
                                 f"squash input's {golden.SQUASH_FRAC_BITS}")
            x = golden.activate(acc.reshape(batch, -1, op.ch_out, op.caps_out), layer.shift, "squash")
            x = x.reshape(batch, op.n_out, op.n_out, -1)
            f_x = golden.OUT_FRAC_BITS
        else:
            if calibrate:
                layer.shift = saturating_shift(np.abs(acc) if op.kind == "classcaps" else np.maximum(acc, 0))
            f_x = f_acc - layer.shift
            if op.kind == "conv":
                x = golden.activate(acc, layer.shift, "relu").reshape(batch, op.n_out, op.n_out, -1)
            else:
                x = golden.requantize(acc, layer.shift).reshape(batch, -1, op.ch_out, op.caps_out)
        layer.out_frac_bits = f_x
    routing_shift = f_x + golden.OUT_FRAC_BITS - golden.SQUASH_FRAC_BITS
    if routing_shift < 0:
        raise InputError(f"ClassCaps predictions with {f_x} fractional bits: the routing needs at least "
                         f"{golden.SQUASH_FRAC_BITS - golden.OUT_FRAC_BITS}")
    deployment.shift_sum = deployment.shift_logits = routing_shift
    routing_bits = (max(x.shape[1], x.shape[3]) * 127 * 128 * deployment.routings).bit_length() + 1
    if routing_bits > golden.ACC_BITS:
        raise InputError(f"the routing's logits need {routing_bits} bits, the accumulator has {golden.ACC_BITS}")
    _, _, v, _ = golden.routing(x, deployment.routings, deployment.shift_logits, deployment.shift_sum)
    return v


def classes(v: np.ndarray) -> np.ndarray:
    """The class of each image: argmax over capsules of the sum of squares, (B, J, D) -> (B,)."""
    return np.argmax(np.sum(np.asarray(v, dtype=np.int64) ** 2, axis=-1), axis=-1)


def evaluate(deployment: Deployment, pixels: np.ndarray, images_per_batch: int = 100) -> np.ndarray:
    """The int8 class of every image of `pixels` (B, h, w, c) uint8, `images_per_batch` at a time."""
    return np.concatenate([classes(forward(deployment, pixels[first:first + images_per_batch]))
                           for first in range(0, len(pixels), images_per_batch)])


def operation_inputs(deployment: Deployment) -> dict[str, dict]:
    """The quantised weights and shifts by operation name, as `sim.network_run.run_network` takes them:
    "weights", "shift" and "bias_input" of every weighted operation, "shift_sum" and "shift_logits"
    of every routing operation."""
    given = {layer.op.name: {"weights": layer.weights, "shift": layer.shift, "bias_input": 1 << layer.bias_input_bits}
             for layer in deployment.layers}
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
    from capsacc.mapping import ROUTINGS
    from sim.driver import OperationDriver
    from sim.network_run import run_network

    if deployment.routings != ROUTINGS:
        raise InputError(f"the model routes {deployment.routings} times; the RTL chain runs {ROUTINGS} iterations")
    config = ArrayConfig(rows=rows, cols=cols, acc_bits=golden.ACC_BITS, batch=len(pixels))
    run = run_network(deployment.network, OperationDriver(config, simulator, offchip=True), input_int8(pixels),
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
    `rtl_dma_buffer_energy_mJ_per_image` (each row the DMA instructions move, priced as a `data_read`
    or, in the weight buffer, a `weight_read`: the calibrated model's rule) and their sum
    `rtl_energy_mJ_per_image`. Per image values are the batch's divided by `images` (cycles and bytes
    rounded up)."""
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
                    if isinstance(i, Dma))
    onchip_mJ, offchip_mJ = onchip_pJ * 1e-9 / images, offchip_bytes * offchip_pJ_per_byte * 1e-9 / images
    buffer_mJ = buffer_pJ * 1e-9 / images
    return {"rtl_cycles_per_image": per_image(run.cycles, images),
            "rtl_total_cycles_per_image": per_image(sum(r.total_cycles for r in run.runs), images),
            "rtl_batch_cycles": run.cycles, "rtl_events_per_image": {e: events[e] / images for e in EVENTS},
            "rtl_offchip_bytes_per_image": per_image(offchip_bytes, images),
            "rtl_onchip_energy_mJ_per_image": onchip_mJ, "rtl_offchip_energy_mJ_per_image": offchip_mJ,
            "rtl_dma_buffer_energy_mJ_per_image": buffer_mJ,
            "rtl_energy_mJ_per_image": onchip_mJ + offchip_mJ + buffer_mJ}


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
