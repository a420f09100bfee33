"""Run a whole network of conv / capsule layers on the RTL, step after step, bit-exact.

The steps are `capsacc.mapping.chain`'s: each runs through `sim.driver.OperationDriver` (checked
against the golden model), and its RTL outputs feed the steps that read it: a convolution's int8
feature map is the next layer's image, the last capsule layer's squashed capsules are the ClassCaps
inputs, and its predictions the routing's. The routing operations are the phases of
`capsacc.mapping.ROUTINGS` = 3 iterations (`capsacc.mapping.operation_kinds`): the uniform first
coupling's sums and squash, then per further iteration an agreement update of the logits (from zero)
and a softmax iteration over them; each phase reads the logits and capsules the previous ones
produced. A routing's phases run in one session (`OperationDriver.run_routing`, `routing_steps`),
the logits and sums kept in the partial-sum memory from phase to phase (image after image when the
batch's states do not fit side by side), with the shifts given to its first phase. CapsCell networks
(DeepCaps) run as nas.layers builds them, with the deviations docs/rtl.md lists: ToCapsules squashes
the convolutions' feature map, each cell's second convolution reads its first, the skip branch reads
the first too, and the cell's output is the third's capsules plus the skip's ("capsadd"); the last
cell's skip is the ConvCaps3D's votes and their dynamic routing over the input capsule types at each position
("route3d", `capsacc.mapping.ROUTINGS` = 3 iterations, the first coupling uniform:
`capsacc.mapping.route3d_routing`); ClassCaps then runs before its routing phases. Weights are
random int8 (seeded): the run measures cycles and bit-exactness, not accuracy. The network runs on a
batch of B = `config.batch` images at once (`capsacc.mapping`'s rules; every activation carries a
leading batch axis): each step's cycles are the batch's. `check_chainable` refuses, before anything
runs, a routing no ClassCaps feeds and any step the tiling rules cannot place. `nascaps rtl run`
(`sim.cli`) is the command line of `run_network`.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capsacc.array import ArrayConfig
from capsacc.errors import InputError
from capsacc.mapping import (CHAIN_KINDS, ELEMENTWISE_KINDS, ROUTING_PHASES, UPDATE_PHASES, MappingError, Step, chain,
                             elementwise_shape, plan_counts, routing_geometry, routing_phases, routing_run_kinds)
from capsacc.network import Network
from sim.driver import MismatchError, OperationDriver, OperationRun

PACKAGED_MNIST = Path(__file__).resolve().parent.parent / "nas" / "data" / "mnist_subset.npz"
"""The MNIST subset the distribution ships (package data of nas, a file beside sim; read, not imported).
Its test image 0 is MNIST's test image 0."""

MNIST_TEST_IMAGES = 1000
"""Test images in `PACKAGED_MNIST`: the largest batch `network_images` draws from it."""

SHIFT_LOGITS = 10
"""Requantization shift of the routing logits before the softmax."""


@dataclass
class NetworkRun:
    """The steps (`capsacc.mapping.chain`) and their runs in order (each over the whole batch), and
    the final output capsules v (B, J, D) int8."""

    steps: list[Step]
    runs: list[OperationRun]
    output: np.ndarray

    @property
    def cycles(self) -> int:
        return sum(r.cycles for r in self.runs)

    @property
    def host_cycles(self) -> int:
        return sum(r.host_cycles for r in self.runs)


def step_name(network: Network, step: Step) -> str:
    """The name of a step: its operation's, with ".kind" for a step beyond the expansion's (`CHAIN_KINDS`)."""
    name = network.operations[step.index].name
    return f"{name}.{step.kind}" if step.kind in CHAIN_KINDS else name


def step_macs(step: Step, config: ArrayConfig) -> int:
    """The multiply-accumulates a step runs for one image: its operation's (`Operation.macs`); for an
    element-wise step the values it streams (rows x values x operands, each through an identity weight);
    for a routing phase those of `routing_phase_macs`, and for a ConvCaps3D's routing, per position those
    of its phases."""
    if step.kind == "route3d":
        op = step.op
        geometry = routing_geometry(op.ch_in, op.ch_out, op.caps_out, config)
        phase = op.ch_in * op.ch_out * op.caps_out
        return op.n_out ** 2 * sum(routing_phase_macs(kind, phase, geometry) for kind in routing_phases())
    if step.kind in ELEMENTWISE_KINDS:
        shape = elementwise_shape(step.kind, step.op, dataclasses.replace(config, batch=1))
        return shape.n * shape.m * shape.operands
    if step.kind in ROUTING_PHASES:
        op = step.op
        return routing_phase_macs(step.kind, op.macs, routing_geometry(op.n_in ** 2 * op.ch_in, op.ch_out,
                                                                        op.caps_out, config))
    return step.op.macs


def routing_phase_macs(kind: str, macs: int, geometry: dict) -> int:
    """The multiply-accumulates routing phase `kind` runs, of a routing whose phases each compute `macs`
    (I·J·D) and whose layout is `geometry` (`capsacc.mapping.routing_geometry`): `macs`, but when the
    logits are not resident, an update phase runs nothing and a softmax phase also recomputes the logits
    from the earlier iterations' outputs (`recompute` sets of `macs` each; docs: the mapping's routing
    phases), so that its compute bound counts the work it runs."""
    if geometry["resident"]:
        return macs
    if kind in UPDATE_PHASES:
        return 0
    return macs * (1 + geometry["recompute"]) if kind == "routing_softmax" else macs


def mnist_image(path: str, index: int = 0) -> np.ndarray:
    """Test image `index` of a keras-layout mnist.npz as int8 (28, 28, 1): pixel // 2 (0..127)."""
    with np.load(path) as data:
        return (data["x_test"][index].astype(np.int64) // 2).reshape(28, 28, 1)


def network_images(network: Network, batch: int = 1, path: Path = PACKAGED_MNIST) -> tuple[np.ndarray, str]:
    """The input of `network`'s first operation for a batch of `batch` images, (batch, n_in, n_in,
    ch_in) int8: MNIST test images 0 .. batch - 1 (`mnist_image`), resized to n_in by nearest
    neighbour where n_in != 28, the same image in every channel; and a description of where they
    came from."""
    if not 1 <= batch <= MNIST_TEST_IMAGES:
        raise InputError(f"a batch of {batch} images: the packaged MNIST subset has {MNIST_TEST_IMAGES} test images")
    first = network.operations[0]
    images = np.stack([mnist_image(path, index) for index in range(batch)])
    where = f"{path.name} x_test[{'0' if batch == 1 else f'0:{batch}'}] // 2"
    if first.n_in != images.shape[1]:
        pick = np.arange(first.n_in) * images.shape[1] // first.n_in
        images = images[:, pick][:, :, pick]
        where += f", nearest-neighbour resized to {first.n_in}x{first.n_in}"
    if first.ch_in != 1:
        where += f", repeated over {first.ch_in} channels"
    return np.repeat(images, first.ch_in, axis=3), where


def check_chainable(network: Network, config: ArrayConfig) -> None:
    """Raise `InputError` naming the first step of `capsacc.mapping.chain` that `run_network` cannot
    run on `config`, and why: a routing that no ClassCaps feeds, or a step the tiling rules of
    `capsacc.mapping` refuse (`MappingError`'s reason)."""
    steps = chain(network.operations)
    for step in steps:
        op = network.operations[step.index]
        if op.kind == "routing" and (not step.inputs or steps[step.inputs[0]].kind != "classcaps"):
            raise InputError(f"operation {op.name} ({op.kind}): not chained on the RTL (a routing that no "
                             f"classcaps feeds)")
        try:
            plan_counts(step.kind, step.op, config)
        except MappingError as error:
            raise InputError(f"operation {step_name(network, step)} ({step.kind}): does not map onto the "
                             f"{config.rows}x{config.cols} array: {error}") from None


def routing_steps(steps: list[Step], first: int) -> list[int]:
    """The positions of the routing phases that step `first` (a routing's uniform phase) starts: it and
    the phase steps after it that read the same ClassCaps, in order (`capsacc.mapping.routing_run_kinds`
    of their number; `ValueError` otherwise)."""
    positions = [first]
    for position in range(first + 1, len(steps)):
        step = steps[position]
        if step.kind not in ROUTING_PHASES or step.kind == "routing_uniform" or step.inputs != steps[first].inputs:
            break
        positions.append(position)
    kinds = tuple(steps[p].kind for p in positions)
    if kinds != routing_run_kinds(len(kinds)):
        raise ValueError(f"steps {positions[0]}..{positions[-1]}: routing phases {kinds} are not a routing's")
    return positions


def run_network(network: Network, driver: OperationDriver, images: np.ndarray, seed: int = 0,
                progress=None, operation_inputs: dict[str, dict] | None = None) -> NetworkRun:
    """Run every step of `network` (`capsacc.mapping.chain`) on the RTL with the driver on a batch of
    B = `driver.config.batch` images, `images` (B, n, n, ch) int8. `check_chainable` runs first: nothing is simulated for a network it
    refuses. `progress(step, run)` is called after each step. `operation_inputs`: inputs of
    `OperationDriver.run` by step name (`step_name`; a deployed network's "weights", "shift", "bias_input",
    "shift_sum", "shift_logits"; an element-wise step's "shift" and a ToCapsules' "offset" (M,), a
    constant map added as a second operand), added to the chained ones; random weights for the others."""
    check_chainable(network, driver.config)
    steps = chain(network.operations)
    batch = driver.config.batch
    runs, outputs, output = [], [], None
    routing_runs = {}  # the runs of a routing's later phases by step position, run with its first phase
    for position, step in enumerate(steps):
        op, kind = step.op, step.kind
        rng_seed = seed * 1000 + position
        given = (operation_inputs or {}).get(step_name(network, step), {})
        inputs = [outputs[i] for i in step.inputs] or [images]
        if kind in ("conv", "convcaps", "convcaps3d"):
            expected = (batch, op.n_in, op.n_in, op.ch_in * op.caps_in)
            features = inputs[0]
            if features.size != np.prod(expected):
                raise InputError(f"step {step_name(network, step)} ({kind}) expects input {expected}, "
                                 f"got {features.shape}")
            features = features.reshape(batch, op.n_in, op.n_in, op.ch_in, op.caps_in) if kind == "convcaps3d" \
                else features.reshape(expected)
            result = driver.run(kind, op, seed=rng_seed, inputs={**given, "image": features})
            outputs.append(result.outputs["out"])
        elif kind == "route3d":  # votes (B, n_out²·ch_in rows (y, x, type), M) -> one routing per image and position
            u_hat = inputs[0].reshape(-1, op.ch_in, op.ch_out, op.caps_out)
            result = driver.run(kind, op, seed=rng_seed, inputs={"u_hat": u_hat, "shift_logits": SHIFT_LOGITS, **given})
            outputs.append(result.outputs["v"].reshape(batch, op.n_out ** 2, op.ch_out * op.caps_out))
        elif kind in ELEMENTWISE_KINDS:
            shape = elementwise_shape(kind, op, driver.config)
            per_image = (batch, shape.n // batch, shape.m)
            maps = [x.reshape(per_image) for x in inputs]
            if "offset" in given:  # a deployed ToCapsules' batch normalisation offset, one more operand
                maps.append(np.broadcast_to(given["offset"], per_image).copy())
            result = driver.run(kind, op, seed=rng_seed,
                                inputs={"maps": maps, **({"shift": given["shift"]} if "shift" in given else {})})
            outputs.append(result.outputs["out"])
        elif kind == "classcaps":
            u = inputs[0].reshape(batch, -1, op.caps_in)
            if u.shape[1] != op.n_in ** 2 * op.ch_in:
                raise InputError(f"step {step_name(network, step)} (classcaps) expects {op.n_in ** 2 * op.ch_in} "
                                 f"capsules, got {u.shape[1]}")
            result = driver.run("classcaps", op, seed=rng_seed, inputs={**given, "u": u})
            outputs.append(result.outputs["u_hat"])
        else:
            if position not in routing_runs:
                phases = routing_steps(steps, position)
                try:
                    phase_runs = driver.run_routing([steps[p].op for p in phases], seed=rng_seed, inputs={
                        "u_hat": inputs[0], "shift_logits": SHIFT_LOGITS, **given})
                except MismatchError as error:  # the phases before the one that differs are reported
                    for phase, run in zip(phases, error.finished):
                        runs.append(run)
                        if progress:
                            progress(steps[phase], run)
                    raise
                routing_runs.update(zip(phases, phase_runs))
            result = routing_runs.pop(position)
            if kind not in UPDATE_PHASES:
                output = result.outputs["v"]
            outputs.append(None)
        runs.append(result)
        if progress:
            progress(step, result)
    return NetworkRun(steps, runs, output)
