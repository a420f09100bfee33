"""Genotypes: NASCaps layer descriptors with their skip position and resize flag.

A descriptor is nine integers `(type, n_in, ch_in, caps_in, kernel, stride, n_out, ch_out, caps_out)`
(type 0 convolution, 1 capsule layer of Sabour et al., 2 DeepCaps CapsCell; sizes in pixels,
channels and capsule atoms). The NASCaps `.chr` form is the JSON list of descriptors followed by
`[skip]` and `[resize]` (see docs/model.md). Layers use 'same' padding: n_out = ceil(n_in / stride).

The structural rules, field bounds and cost-count bounds are those of
`capsacc.network.check_genotype`, the one definition that `nascaps estimate` applies too;
`Genotype.validate(space)` adds the search space's limits (`nas.space.SearchSpace.check`: kernel
and stride sets, channel and atom ranges, layer counts, resize, input shape, number of classes,
and a fully connected class layer: kernel = n_in, stride 1, n_out 1).
"""

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from capsacc.errors import GenotypeFormatError, InputError
from capsacc.files import write_atomic
from capsacc.network import (CAPSCELL, CONV, PRESETS, Network, check_genotype, parse_genotype,
                             read_genotype_json)

from nas.space import SearchSpace

GenotypeError = GenotypeFormatError
"""The error of a genotype that breaks a rule (capsacc's, under the name nas has always used);
`.index` (descriptor, from 0), `.field` and `.reason` say where and why."""


@dataclass(frozen=True)
class Genotype:
    """Layer descriptors (tuples of nine ints), skip position (from 1, -1 none) and resize flag (1 or 2)."""

    layers: tuple[tuple[int, ...], ...]
    skip: int = -1
    resize: int = 1

    @classmethod
    def from_list(cls, data) -> "Genotype":
        """From the NASCaps `.chr` JSON list form; a malformed list raises `GenotypeError` (the rules
        are checked by `validate`)."""
        layers, skip, resize = parse_genotype(data)
        return cls(tuple(tuple(layer) for layer in layers), skip, resize)

    @classmethod
    def preset(cls, name: str) -> "Genotype":
        """A reference genotype of `capsacc.network.PRESETS` (`capsnet`, `deepcaps`)."""
        if name not in PRESETS:
            raise InputError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
        return cls.from_list(PRESETS[name])

    def to_list(self) -> list:
        """The NASCaps `.chr` JSON list form."""
        return [list(layer) for layer in self.layers] + [[self.skip], [self.resize]]

    @classmethod
    def load(cls, path) -> "Genotype":
        """Read a `.chr`/`.json` file: a genotype list, or an object with a `genotype` list, checked by
        `capsacc.network.check_genotype`; errors name the file, as `nascaps estimate`'s do."""
        path = Path(path)
        data = read_genotype_json(path)
        try:
            layers, skip, resize = check_genotype(data)
        except GenotypeFormatError as error:
            raise error.in_file(path) from None
        return cls(tuple(tuple(layer) for layer in layers), skip, resize)

    def save(self, path) -> None:
        """Write the `.chr` JSON list form (atomically)."""
        write_atomic(path, json.dumps(self.to_list()) + "\n")

    def key(self) -> str:
        """Stable identity: the compact JSON list form (equal genotypes give equal keys)."""
        return json.dumps(self.to_list(), separators=(",", ":"))

    def to_network(self) -> Network:
        """The `capsacc.Network` (hardware operations) of this genotype."""
        return Network.from_genotype(self.to_list())

    @property
    def capsule_type(self) -> int | None:
        """Type code of the capsule layers (1 Sabour, 2 CapsCell), None if there are none."""
        types = [layer[0] for layer in self.layers if layer[0] != CONV]
        return types[0] if types else None

    @property
    def input_side(self) -> int:
        """Side in pixels of the first layer's input (after the resize flag's upsampling)."""
        return self.layers[0][1]

    @property
    def input_channels(self) -> int:
        """Channels of the first layer's input."""
        return self.layers[0][2] * self.layers[0][3]

    def validate(self, space: SearchSpace | None = None) -> None:
        """Raise `GenotypeError` at the first broken rule: those of `capsacc.network.check_genotype`
        (structure, field bounds, cost-count bounds), then, with `space`, its limits (kernel and
        stride sets, channel and atom ranges, layer counts, resize, input shape, number of classes,
        a fully connected class layer)."""
        check_genotype(self.to_list())
        if space is not None:
            space.check(self.layers, self.resize)

    def repair(self, space: SearchSpace | None = None) -> "Genotype":
        """Propagate sizes and channels from each layer to the next (NASCaps' correction step).

        With `space`, the first layer's input is set to the space's input (side x resize, channels),
        the class layer's ch_out to its number of classes, the class layer is made fully connected
        as the search builds it (kernel = n_in, stride 1, n_out 1), and a kernel larger than its
        input becomes the largest kernel of the space that fits (the input side itself if none
        fits). Without it the first layer's input is kept and an oversize kernel becomes the input
        side. n_out becomes
        ceil(n_in / stride) (except for the class layer), each n_in the previous n_out, and channels
        /atoms follow the previous layer (capsule to capsule exactly; through a convolution only when
        the channel x atom products differ). A skip that breaks the rules becomes -1. Structural
        faults (layer order, types) are left for `validate` to report.
        """
        layers = [list(layer) for layer in self.layers]
        if not layers:
            return self
        last = len(layers) - 1
        if space is not None:
            layers[0][1] = space.input_side * self.resize
            if layers[0][2] * layers[0][3] != space.input_channels:
                layers[0][2], layers[0][3] = space.input_channels, 1
            layers[last][7] = space.n_classes
        for index, layer in enumerate(layers):
            if index > 0:
                previous = layers[index - 1]
                layer[1] = previous[6]
                both_caps = previous[0] != CONV and layer[0] != CONV
                if both_caps or layer[2] * layer[3] != previous[7] * previous[8]:
                    layer[2], layer[3] = previous[7], previous[8]
            if layer[4] > layer[1]:
                fitting = [k for k in (space.kernels if space else ()) if k <= layer[1]]
                layer[4] = max(fitting) if fitting else layer[1]
            if index == last and space is not None:
                layer[4], layer[5], layer[6] = layer[1], 1, 1
            if index < last:
                layer[6] = math.ceil(layer[1] / max(layer[5], 1))
        repaired = Genotype(tuple(tuple(layer) for layer in layers), self.skip, self.resize)
        if self.skip != -1:
            position = self.skip - 1
            if not (0 <= position < last - 1 and layers[position][0] == CAPSCELL
                    and layers[position][8] == layers[last][3]):
                repaired = replace(repaired, skip=-1)
        return repaired

    def for_input(self, side: int, channels: int) -> "Genotype":
        """This genotype adapted to another input (side before resizing, channels), sizes repaired.

        Used to train a genotype on a dataset of a different shape (e.g. `deepcaps`, written for
        32 x 32 x 3 images, on MNIST).
        """
        first = list(self.layers[0])
        first[1] = side * self.resize
        if first[2] * first[3] != channels:
            first[2], first[3] = channels, 1
        return replace(self, layers=(tuple(first),) + self.layers[1:]).repair()

