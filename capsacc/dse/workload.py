"""Workloads for the systolic array: GEMMs (on the PE array) and element-wise operations (on the
activation unit), for inference or training, from SCALE-Sim topologies or NASCaps capsule networks.

GEMM convention (SCALE-Sim's): an `M x K` left operand ("ifmap", im2col rows) times a `K x N` right
operand ("filter") gives `M x N` outputs. For training every GEMM `Y = X·W` adds two passes, each a
GEMM with its own dimensions:

- data gradient `dX = dY·Wᵀ`: M x N times N x K, i.e. (M, K, N) -> (M, N, K);
- weight gradient `dW = Xᵀ·dY`: K x M times M x N, i.e. (M, K, N) -> (K, M, N).

Capsule operations (NASCaps expansion, `capsacc.network`) map onto GEMMs as documented in
`capsule_gemms`; softmax and squash of the dynamic routing run on the activation unit.
"""

import math
from dataclasses import dataclass

import numpy as np

from capsacc.dse.systolic import INT64_MAX, count_bound
from capsacc.dse.topology import ConvLayer
from capsacc.errors import InputError
from capsacc.network import PRESETS, Network, Operation

MODES = ("inference", "training")
PHASES = ("forward", "data_gradient", "weight_gradient")

SOFTMAX_MULTS, SOFTMAX_ADDS = 2, 2
"""Activation-unit operations per softmax element: exponential by table look-up with one
interpolating multiply and add, the running sum (an add), and the normalising multiply by the
reciprocal of the sum."""
SQUASH_MULTS, SQUASH_ADDS = 2, 1
"""Activation-unit operations per squash element: square and accumulate for the norm, and the
multiply by the per-vector scale |s|/(1+|s|²)."""


@dataclass(frozen=True)
class Gemm:
    """`count` independent GEMMs of M x K times K x N on the PE array.

    `ifmap_words` and `filter_words`: distinct values (one byte each) of the left and right operands
    of one instance, the DRAM footprint (the left operand of a convolution holds fewer distinct
    values than its M x K im2col form).
    """

    layer: str
    phase: str
    m: int
    k: int
    n: int
    count: int
    ifmap_words: int
    filter_words: int

    @property
    def macs(self) -> int:
        """Multiply-accumulates of all instances."""
        return self.count * self.m * self.k * self.n


@dataclass(frozen=True)
class VectorOp:
    """Element-wise work on the activation unit: `elements` values, each costing `mults`
    multiplies and `adds` additions (32-bit fixed point)."""

    layer: str
    phase: str
    function: str
    elements: int
    mults: int
    adds: int


@dataclass(frozen=True)
class Workload:
    """What one inference or one training step (forward and backward of a batch) runs."""

    name: str
    mode: str
    batch: int
    gemms: tuple[Gemm, ...]
    vector_ops: tuple[VectorOp, ...]

    def check_int64(self, rows: tuple[int, int], cols: tuple[int, int]) -> None:
        """Raise `InputError` unless every count the systolic kernels derive from this workload on
        arrays of `rows` = (fewest, most) rows and `cols` = (fewest, most) columns fits int64
        (`systolic.count_bound`, summed over the GEMMs in exact integers). Names the largest GEMM."""
        bounds = [count_bound(g.m, g.k, g.n, g.count, g.ifmap_words, g.filter_words, rows, cols) for g in self.gemms]
        total = sum(bounds) + self.vector_elements * (1 + max(SOFTMAX_MULTS + SOFTMAX_ADDS, SQUASH_MULTS + SQUASH_ADDS))
        if total > INT64_MAX:
            worst = self.gemms[max(range(len(bounds)), key=bounds.__getitem__)]
            raise InputError(
                f"{self.name} {self.mode} (batch {self.batch}): the cycle and access counts reach about {total:.2e}, "
                f"more than 64-bit integers hold (largest GEMM: layer {worst.layer}, {worst.phase}, "
                f"M={worst.m} K={worst.k} N={worst.n} x{worst.count}); use a smaller input, batch or network")

    def gemm_table(self) -> np.ndarray:
        """int64 (n_gemms, 6): m, k, n, count, ifmap_words, filter_words (check `check_int64` first)."""
        return np.array([(g.m, g.k, g.n, g.count, g.ifmap_words, g.filter_words) for g in self.gemms],
                        dtype=np.int64).reshape(-1, 6)

    @property
    def macs(self) -> int:
        """Multiply-accumulates on the PE array."""
        return sum(g.macs for g in self.gemms)

    @property
    def ops(self) -> int:
        """Operations counted for TOPS and fJ/op: two (multiply and add) per MAC."""
        return 2 * self.macs

    @property
    def vector_elements(self) -> int:
        """Elements processed by the activation unit."""
        return sum(v.elements for v in self.vector_ops)

    @property
    def vector_mults(self) -> int:
        return sum(v.elements * v.mults for v in self.vector_ops)

    @property
    def vector_adds(self) -> int:
        return sum(v.elements * v.adds for v in self.vector_ops)


def training_passes(forward: Gemm) -> tuple[Gemm, Gemm, Gemm]:
    """The forward GEMM and its data-gradient and weight-gradient GEMMs (module docstring)."""
    m, k, n = forward.m, forward.k, forward.n
    outputs = m * n
    data_gradient = Gemm(forward.layer, "data_gradient", m, n, k, forward.count, outputs, forward.filter_words)
    weight_gradient = Gemm(forward.layer, "weight_gradient", k, m, n, forward.count, forward.ifmap_words, outputs)
    return forward, data_gradient, weight_gradient


def _finish(name: str, mode: str, batch: int, gemms: list[Gemm], vector_ops: list[VectorOp]) -> Workload:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "training":
        gemms = [g for forward in gemms for g in training_passes(forward)]
        vector_ops = vector_ops + [VectorOp(v.layer, "data_gradient", v.function, v.elements, v.mults, v.adds)
                                   for v in vector_ops]
    return Workload(name, mode, batch, tuple(gemms), tuple(vector_ops))


def conv_gemm(layer: ConvLayer, batch: int = 1) -> Gemm:
    """The forward GEMM of a SCALE-Sim layer: M = batch·output pixels, K = F_h·F_w·C, N = filters."""
    m, k, n = layer.gemm_mkn
    return Gemm(layer.name, "forward", batch * m, k, n, 1, batch * layer.ifmap_footprint, k * n)


def topology_workload(name: str, layers: list[ConvLayer], mode: str, batch: int = 1) -> Workload:
    """A SCALE-Sim topology as a workload (convolutions and fully-connected layers only)."""
    return _finish(name, mode, batch, [conv_gemm(layer, batch) for layer in layers], [])


def capsule_gemms(operation: Operation, routing_index: int, batch: int = 1) -> tuple[list[Gemm], list[VectorOp]]:
    """GEMMs and activation-unit work of one NASCaps hardware operation.

    - `conv`, `convcaps`: a convolution, M = batch·n_out², K = k²·ch_in·caps_in, N = ch_out·caps_out.
    - `convcaps3d` (DeepCaps' 3-D capsule convolution, kernel k x k x caps_in with depth stride
      caps_in): M = batch·n_out²·ch_in, K = k²·caps_in, N = ch_out·caps_out.
    - `classcaps`: the transformation matrices, one per input capsule and class; with NASCaps'
      Table 1 count of input capsules, n_caps = ch_in·k², it is n_caps GEMMs of
      M = batch, K = caps_in, N = ch_out·caps_out.
    - `routing`, alternately sum and update (NASCaps expands three sums and two or three updates):
      sum: softmax of the n_caps·ch_out logits, then per sample and class a GEMM M = 1,
      K = n_caps, N = caps_out, then the squash of the ch_out·caps_out results;
      update (agreement): per sample and class M = n_caps, K = caps_out, N = 1.
    """
    o = operation
    if o.kind in ("conv", "convcaps"):
        m, k, n = o.n_out ** 2, o.kernel ** 2 * o.ch_in * o.caps_in, o.ch_out * o.caps_out
        footprint = o.n_in ** 2 * o.ch_in * o.caps_in
        return [Gemm(o.name, "forward", batch * m, k, n, 1, batch * footprint, k * n)], []
    if o.kind == "convcaps3d":
        m, k, n = o.n_out ** 2 * o.ch_in, o.kernel ** 2 * o.caps_in, o.ch_out * o.caps_out
        footprint = o.n_in ** 2 * o.ch_in * o.caps_in
        return [Gemm(o.name, "forward", batch * m, k, n, 1, batch * footprint, k * n)], []
    n_caps = o.ch_in * o.kernel ** 2
    if o.kind == "classcaps":
        k, n = o.caps_in, o.ch_out * o.caps_out
        return [Gemm(o.name, "forward", batch, k, n, n_caps, batch * k, k * n)], []
    if routing_index % 2 == 0:
        softmax = VectorOp(o.name, "forward", "softmax", batch * n_caps * o.ch_out, SOFTMAX_MULTS, SOFTMAX_ADDS)
        squash = VectorOp(o.name, "forward", "squash", batch * o.ch_out * o.caps_out, SQUASH_MULTS, SQUASH_ADDS)
        gemm = Gemm(o.name, "forward", 1, n_caps, o.caps_out, batch * o.ch_out, n_caps, n_caps * o.caps_out)
        return [gemm], [softmax, squash]
    gemm = Gemm(o.name, "forward", n_caps, o.caps_out, 1, batch * o.ch_out, n_caps * o.caps_out, o.caps_out)
    return [gemm], []


def capsule_workload(network: Network, mode: str, batch: int = 1) -> Workload:
    """A NASCaps network (its hardware operations) as a workload."""
    gemms, vector_ops = [], []
    routing_index = 0
    for operation in network.operations:
        routing_index = routing_index + 1 if operation.kind == "routing" else 0
        g, v = capsule_gemms(operation, routing_index - 1, batch)
        gemms += g
        vector_ops += v
    return _finish(network.name, mode, batch, gemms, vector_ops)


def rescaled_genotype(genotype: list, input_side: int, input_channels: int) -> list:
    """A capsule genotype for another input size: feature-map sides follow from the input side and
    each descriptor's stride ('same' padding, side = ceil(side / stride)); a descriptor whose kernel
    covered its whole input (a ClassCaps layer) covers the new input; the first descriptor reads
    `input_channels` channels. Other fields are unchanged."""
    if input_side < 1 or input_channels < 1:
        raise ValueError(f"input side and channels must be positive, got {input_side}, {input_channels}")
    descriptors = [list(d) for d in genotype[:-2]]
    side = input_side
    for index, d in enumerate(descriptors):
        whole = d[4] == d[1]
        d[1] = side
        if index == 0:
            d[2] = input_channels
        if whole:
            d[4] = side
            d[6] = 1
        else:
            d[6] = math.ceil(side / d[5])
        side = d[6]
    return descriptors + [list(e) for e in genotype[-2:]]


def preset_network(name: str, input_side: int | None = None, input_channels: int | None = None) -> Network:
    """A NASCaps preset (`capsnet`, `deepcaps`), optionally rescaled to another input."""
    genotype = PRESETS[name]
    if input_side is None and input_channels is None:
        return Network.preset(name)
    side = input_side if input_side is not None else genotype[0][1]
    channels = input_channels if input_channels is not None else genotype[0][2]
    return Network.from_genotype(rescaled_genotype(genotype, side, channels), f"{name}-{side}x{side}x{channels}")
