"""Genetic operators on genotypes: random sampling, single-cut crossover, mutation.

Every operator returns genotypes that pass `Genotype.validate(space)`; none loops without a
bound: crossover enumerates the admissible cut points (at most |a| x |b|) and draws one,
mutation changes a bounded number of fields, and sampling builds a valid genotype directly
(sizes propagated by `Genotype.repair`).
"""

import math

import numpy as np

from capsacc.network import CAPSCELL, CONV, SABOUR

from nas.genotype import Genotype
from nas.space import SearchSpace

MUTATION_PROBABILITY = 0.1
"""Default p_m: the probability that a descriptor (or the skip position) is mutated."""


def _pick(rng: np.random.Generator, values):
    return values[int(rng.integers(len(values)))]


def _between(rng: np.random.Generator, limits: tuple[int, int]) -> int:
    return int(rng.integers(limits[0], limits[1] + 1))


def _fitting_kernels(space: SearchSpace, side: int) -> list[int]:
    fitting = [k for k in space.kernels if k <= side]
    return fitting or [min(space.kernels)]


def random_genotype(space: SearchSpace, rng: np.random.Generator) -> Genotype:
    """A uniformly drawn genotype of `space`: resize flag, capsule kind (Sabour layers or
    CapsCells, equally likely), layer counts, then each descriptor's kernel (among those that fit
    its input), stride, output channels and capsule atoms; the class layer is fully connected
    (kernel = n_in, stride 1, n_out 1); a CapsCell network gets a skip connection from a random
    earlier cell (given the last cell's atoms) half of the time."""
    resize = _pick(rng, space.resizes)
    kind = SABOUR if rng.random() < 0.5 else CAPSCELL
    n_conv = max(1, _between(rng, space.convolutions))
    n_caps = _between(rng, space.sabour_layers if kind == SABOUR else space.capscells)
    side = space.input_side * resize
    layers = []
    ch, caps = space.input_channels, 1
    for index in range(n_conv + n_caps):
        layer_type = CONV if index < n_conv else kind
        kernel = _pick(rng, _fitting_kernels(space, side))
        strides = [s for s in space.strides if math.ceil(side / s) >= min(space.kernels)]
        stride = _pick(rng, strides or [min(space.strides)])
        n_out = math.ceil(side / stride)
        ch_out = _between(rng, space.channels)
        caps_out = 1 if layer_type == CONV else _between(rng, space.capsules)
        if index == n_conv + n_caps - 1:
            kernel, stride, n_out, ch_out = side, 1, 1, space.n_classes
        layers.append((layer_type, side, ch, caps, kernel, stride, n_out, ch_out, caps_out))
        side, ch, caps = n_out, ch_out, caps_out
    skip = -1
    cells = [index for index in range(n_conv, len(layers) - 2)]
    if kind == CAPSCELL and cells and rng.random() < 0.5:
        source = _pick(rng, cells)
        layers[source] = layers[source][:8] + (layers[-2][8],)
        skip = source + 1
    return legalize(Genotype(tuple(layers), skip, resize), space)


def legalize(g: Genotype, space: SearchSpace) -> Genotype:
    """`g` repaired, then made to fit `space`: while a layer's input is smaller than the space's
    smallest kernel, the stride of the latest strided layer before it becomes the smallest stride
    (at most one pass per layer); a kernel outside the space becomes the largest one that fits; a
    skip connection from a cell whose atoms differ from the last cell's is removed (the model
    builder concatenates both cells' flattened capsules). The class layer is made fully connected
    by `Genotype.repair` (kernel = n_in, stride 1, n_out 1)."""
    smallest_kernel, smallest_stride = min(space.kernels), min(space.strides)
    g = g.repair(space)
    for _ in range(len(g.layers)):
        layers = [list(layer) for layer in g.layers]
        last = len(layers) - 1
        short = [i for i in range(last) if layers[i][1] < smallest_kernel]
        if not short:
            break
        strided = [i for i in range(short[0]) if layers[i][5] > smallest_stride]
        if not strided:
            break
        layers[strided[-1]][5] = smallest_stride
        g = Genotype(tuple(tuple(layer) for layer in layers), g.skip, g.resize).repair(space)
    layers = [list(layer) for layer in g.layers]
    for layer in layers[:-1]:
        if layer[4] not in space.kernels:
            layer[4] = max(_fitting_kernels(space, layer[1]))
    skip = g.skip if g.skip in _skip_choices(layers) else -1
    return Genotype(tuple(tuple(layer) for layer in layers), skip, g.resize).repair(space)


def _skip_choices(layers) -> list[int]:
    """Positions (from 1) a skip connection may start from: CapsCells before the last one whose
    capsules have as many atoms as the last cell's (their flattened capsules are concatenated)."""
    last = len(layers) - 1
    if last < 1:
        return []
    return [index + 1 for index in range(last - 1)
            if layers[index][0] == CAPSCELL and layers[index][8] == layers[last - 1][8]]


def _structure_ok(layers, space: SearchSpace) -> bool:
    """Layer order and counts of `space`, before sizes are repaired."""
    if not layers or layers[0][0] != CONV:
        return False
    types = [layer[0] for layer in layers]
    n_conv = types.count(CONV)
    if types[:n_conv] != [CONV] * n_conv or n_conv == len(types):
        return False
    kinds = set(types[n_conv:])
    if len(kinds) != 1:
        return False
    limits = space.sabour_layers if kinds == {SABOUR} else space.capscells
    n_caps = len(types) - n_conv
    return (space.convolutions[0] <= n_conv <= space.convolutions[1] and n_caps >= 2
            and limits[0] <= n_caps <= limits[1])


def crossover_cuts(a: Genotype, b: Genotype, space: SearchSpace) -> list[tuple[int, int]]:
    """Admissible single cut points (i, j): children a[:i] + b[j:] and b[:j] + a[i:] both keep a
    convolution first, all convolutions before the capsule layers, capsule layers of one kind and
    at least two of them, and the space's layer counts; the cuts that give back the parents are left out.
    Cuts fall before each parent's class layer, so each child ends with its tail's class layer."""
    cuts = []
    for i in range(1, len(a.layers)):
        for j in range(1, len(b.layers)):
            first = a.layers[:i] + b.layers[j:]
            second = b.layers[:j] + a.layers[i:]
            if first in (a.layers, b.layers) and second in (a.layers, b.layers):
                continue
            if _structure_ok(first, space) and _structure_ok(second, space):
                cuts.append((i, j))
    return cuts


def _child_skip(head: Genotype, tail: Genotype, i: int, j: int, layers) -> int:
    """The head's skip if it lies in the head part, else the tail's shifted to its new place."""
    if head.skip != -1 and head.skip <= i:
        skip = head.skip
    elif tail.skip != -1 and tail.skip > j:
        skip = tail.skip - j + i
    else:
        return -1
    return skip if skip in _skip_choices(layers) else -1


def crossover(a: Genotype, b: Genotype, rng: np.random.Generator,
              space: SearchSpace | None = None) -> tuple[Genotype, Genotype]:
    """Single-point crossover: one cut point per parent, drawn among `crossover_cuts`, tails swapped,
    sizes repaired. Each child keeps its head parent's resize flag. Parents with no admissible
    cut come back unchanged."""
    space = space or SearchSpace()
    cuts = crossover_cuts(a, b, space)
    if not cuts:
        return a, b
    i, j = cuts[int(rng.integers(len(cuts)))]
    children = []
    for head, tail, hi, ti in ((a, b, i, j), (b, a, j, i)):
        layers = head.layers[:hi] + tail.layers[ti:]
        skip = _child_skip(head, tail, hi, ti, layers)
        children.append(legalize(Genotype(layers, skip, head.resize), space))
    return children[0], children[1]


def mutate(g: Genotype, rng: np.random.Generator, p_m: float = MUTATION_PROBABILITY,
           space: SearchSpace | None = None) -> Genotype:
    """Each descriptor, with probability `p_m`, gets one of its kernel, stride or output capsule
    atoms changed to another value of the space (the class layer: its atoms); in a CapsCell
    network the skip position is, with probability `p_m`, moved to another admissible cell or
    removed. Sizes are then repaired."""
    space = space or SearchSpace()
    layers = [list(layer) for layer in g.layers]
    last = len(layers) - 1
    for index, layer in enumerate(layers):
        if rng.random() >= p_m:
            continue
        fields = ("caps_out",) if index == last else ("kernel", "stride", "caps_out")
        if layer[0] == CONV:
            fields = ("kernel", "stride")
        field = _pick(rng, fields)
        if field == "kernel":
            options = [k for k in _fitting_kernels(space, layer[1]) if k != layer[4]]
            if options:
                layer[4] = _pick(rng, options)
        elif field == "stride":
            options = [s for s in space.strides if s != layer[5]]
            if options:
                layer[5] = _pick(rng, options)
        elif space.capsules[1] > space.capsules[0]:
            value = _between(rng, (space.capsules[0], space.capsules[1] - 1))
            layer[8] = value + (value >= layer[8])
    skip = g.skip
    if g.capsule_type == CAPSCELL and rng.random() < p_m:
        options = [s for s in _skip_choices(layers) + [-1] if s != g.skip]
        skip = _pick(rng, options) if options else g.skip
    return legalize(Genotype(tuple(tuple(layer) for layer in layers), skip, g.resize), space)


def variation(space: SearchSpace, p_m: float = MUTATION_PROBABILITY):
    """The `NSGA2` variation callable: crossover of two parents, then mutation of each child."""

    def vary(a: Genotype, b: Genotype, rng: np.random.Generator) -> tuple[Genotype, Genotype]:
        first, second = crossover(a, b, rng, space)
        return mutate(first, rng, p_m, space), mutate(second, rng, p_m, space)

    return vary


def sampler(space: SearchSpace):
    """The `NSGA2` sampling callable for `space`."""

    def sample(rng: np.random.Generator) -> Genotype:
        return random_genotype(space, rng)

    return sample
