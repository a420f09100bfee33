"""Run a whole network of conv / capsule layers on the RTL, layer after layer, bit-exact.

Each operation of `capsacc.network.Network` runs through `sim.driver.OperationDriver` (checked
against the golden model), and its RTL outputs feed the next operation: a convolution's int8
feature map is the next layer's image, the last capsule layer's squashed capsules are the
ClassCaps inputs, and its predictions the routing's. The routing operations are the phases of
`capsacc.mapping.ROUTINGS` = 3 iterations (`capsacc.mapping.operation_kinds`): the uniform first
coupling's sums and squash, then per further iteration an agreement update of the logits (from
zero) and a softmax iteration over them; each phase reads the logits and capsules the previous ones
produced. Weights are random int8 (seeded): the run measures cycles
and bit-exactness, not accuracy. Genotypes of CapsCells (DeepCaps, type 2) are not chained:
`check_chainable` refuses them, and any operation the tiling rules cannot place, before anything runs.
`nascaps rtl run` (`sim.cli`) is the command line of `run_network`.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capsacc.array import ArrayConfig
from capsacc.errors import InputError
from capsacc.mapping import MappingError, operation_kinds, plan_counts
from capsacc.network import CAPSCELL, Network
from sim.driver import OperationDriver, OperationRun

PACKAGED_MNIST = Path(__file__).resolve().parent.parent / "nas" / "data" / "mnist_subset.npz"
"""The MNIST subset the distribution ships (package data of nas, a file beside sim; read, not imported).
Its test image 0 is MNIST's test image 0."""

SHIFT_LOGITS = 10
"""Requantization shift of the routing logits before the softmax."""


@dataclass
class NetworkRun:
    """The operations' runs in order and the final output capsules v (J, D) int8."""

    runs: list[OperationRun]
    output: np.ndarray

    @property
    def cycles(self) -> int:
        return sum(r.cycles for r in self.runs)

    @property
    def host_cycles(self) -> int:
        return sum(r.host_cycles for r in self.runs)


def mnist_image(path: str, index: int = 0) -> np.ndarray:
    """Test image `index` of a keras-layout mnist.npz as int8 (28, 28, 1): pixel // 2 (0..127)."""
    with np.load(path) as data:
        return (data["x_test"][index].astype(np.int64) // 2).reshape(28, 28, 1)


def network_image(network: Network, path: Path = PACKAGED_MNIST, index: int = 0) -> tuple[np.ndarray, str]:
    """The input of `network`'s first operation, (n_in, n_in, ch_in) int8, from MNIST test image
    `index` (`mnist_image`): resized to n_in by nearest neighbour where n_in != 28, the same image in
    every channel; and a description of where it came from."""
    first = network.operations[0]
    image = mnist_image(path, index)
    where = f"{path.name} x_test[{index}] // 2"
    if first.n_in != image.shape[0]:
        pick = np.arange(first.n_in) * image.shape[0] // first.n_in
        image = image[pick][:, pick]
        where += f", nearest-neighbour resized to {first.n_in}x{first.n_in}"
    if first.ch_in != 1:
        where += f", repeated over {first.ch_in} channels"
    return np.repeat(image, first.ch_in, axis=2), where


def check_chainable(network: Network, config: ArrayConfig, descriptors: list[list[int]] | None = None) -> None:
    """Raise `InputError` naming the first operation `run_network` cannot run on `config`, and why:
    a CapsCell's (descriptor type 2 among `descriptors`, the genotype's layer descriptors when known:
    skip connections, ConvCaps3D and 3-D routing are not chained), a ConvCaps3D or a routing that no
    ClassCaps feeds, or one the tiling rules of `capsacc.mapping` refuse (`MappingError`'s reason)."""
    operations = network.operations
    for index, descriptor in enumerate(descriptors or ()):
        if descriptor[0] == CAPSCELL:  # the descriptors before it expand to one operation each
            op = operations[index]
            raise InputError(f"operation {op.name} ({op.kind}, descriptor {index}): a CapsCell; CapsCells "
                             f"(skip connections, ConvCaps3D, 3-D routing) are not chained on the RTL")
    for index, (op, kind) in enumerate(zip(operations, operation_kinds(operations))):
        if op.kind == "convcaps3d" or (op.kind == "routing" and (
                index == 0 or operations[index - 1].kind not in ("classcaps", "routing"))):
            raise InputError(f"operation {op.name} ({op.kind}): not chained on the RTL (only conv, convcaps, "
                             f"and classcaps followed by its routing)")
        try:
            plan_counts(kind, op, config)
        except MappingError as error:
            raise InputError(f"operation {op.name} ({kind}): does not map onto the {config.rows}x{config.cols} "
                             f"array: {error}") from None


def run_network(network: Network, driver: OperationDriver, image: np.ndarray, seed: int = 0,
                progress=None) -> NetworkRun:
    """Run every operation of `network` on the RTL with the driver; `image` (n, n, ch) int8 is the input.
    `check_chainable` runs first: nothing is simulated for a network it refuses."""
    check_chainable(network, driver.config)
    runs = []
    features, logits, u_hat, output = image, None, None, None
    for index, (op, kind) in enumerate(zip(network.operations, operation_kinds(network.operations))):
        rng_seed = seed * 1000 + index
        if op.kind in ("conv", "convcaps"):
            expected = (op.n_in, op.n_in, op.ch_in * op.caps_in)
            if features.shape != expected:
                raise InputError(f"operation {index} ({op.kind}) expects input {expected}, got {features.shape}")
            result = driver.run(op.kind, op, seed=rng_seed, inputs={"image": features})
            out = result.outputs["out"]
            features = out.reshape(op.n_out, op.n_out, op.ch_out * op.caps_out)
        elif op.kind == "classcaps":
            u = features.reshape(-1, op.caps_in)
            if len(u) != op.n_in ** 2 * op.ch_in:
                raise InputError(f"operation {index} (classcaps) expects {op.n_in ** 2 * op.ch_in} capsules, "
                                 f"got {len(u)}")
            result = driver.run("classcaps", op, seed=rng_seed, inputs={"u": u})
            u_hat = result.outputs["u_hat"]
            logits = np.zeros(u_hat.shape[:2], dtype=np.int64)
        else:
            result = driver.run(kind, op, seed=rng_seed, inputs={"logits": logits, "u_hat": u_hat, "v": output,
                                                                 "shift_logits": SHIFT_LOGITS})
            if kind == "routing_update":
                logits = result.outputs["b"]
            else:
                output = result.outputs["v"]
        runs.append(result)
        if progress:
            progress(result)
    return NetworkRun(runs, output)
