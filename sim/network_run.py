"""Run a whole network of conv / capsule layers on the RTL, layer after layer, bit-exact.

Each operation of `capsacc.network.Network` runs through `sim.driver.OperationDriver` (checked
against the golden model), and its RTL outputs feed the next operation: a convolution's int8
feature map is the next layer's image, the last capsule layer's squashed capsules are the
ClassCaps inputs, and its predictions the routing's. The routing operations are the phases of
`capsacc.mapping.ROUTINGS` = 3 iterations (`capsacc.mapping.operation_kinds`): the uniform first
coupling's sums and squash, then per further iteration an agreement update of the logits (from
zero) and a softmax iteration over them; each phase reads the logits and capsules the previous ones
produced. Weights are random int8 (seeded): the run measures cycles
and bit-exactness, not accuracy. Genotypes of CapsCells (DeepCaps, type 2) are not chained.
"""

from dataclasses import dataclass

import numpy as np

from capsacc.errors import InputError
from capsacc.mapping import operation_kinds
from capsacc.network import Network
from sim.driver import OperationDriver, OperationRun

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


def run_network(network: Network, driver: OperationDriver, image: np.ndarray, seed: int = 0,
                progress=None) -> NetworkRun:
    """Run every operation of `network` on the RTL with the driver; `image` (n, n, ch) int8 is the input."""
    if any(op.kind in ("convcaps3d",) for op in network.operations) or \
            any(op.kind == "routing" and i and network.operations[i - 1].kind not in ("classcaps", "routing")
                for i, op in enumerate(network.operations)):
        raise InputError("run_network chains conv, convcaps, classcaps and routing (Sabour-style) networks only")
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
