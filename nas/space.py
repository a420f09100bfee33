"""The search space: which layer descriptors a search may generate.

Defaults follow NASCaps: kernels 3, 5, 9; strides 1, 2; 1-64 channels and 1-64 capsule atoms;
1-6 convolutions (the genotypes NASCaps published have 1 to 5, so its space allowed a single
one) followed by 2-6 capsule layers in the style of Sabour et al. or 4-8 CapsCell descriptors
(counting the final FlatCaps + ClassCaps descriptor); the resize flag (x2 input upsampling)
allowed; MNIST-shaped input (28 x 28 pixels, 1 channel) and 10 classes.
"""

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from capsacc.errors import GenotypeFormatError, InputError
from capsacc.files import read_text
from capsacc.network import CAPSCELL, CONV, MAX_SIDE, SABOUR, check_counts, check_descriptors


@dataclass(frozen=True)
class SearchSpace:
    """Limits on genotypes. Ranges are inclusive `(min, max)` pairs; sizes in pixels/channels/atoms."""

    kernels: tuple[int, ...] = (3, 5, 9)
    strides: tuple[int, ...] = (1, 2)
    channels: tuple[int, int] = (1, 64)
    capsules: tuple[int, int] = (1, 64)
    convolutions: tuple[int, int] = (1, 6)
    sabour_layers: tuple[int, int] = (2, 6)
    capscells: tuple[int, int] = (4, 8)
    allow_resize: bool = True
    input_side: int = 28
    input_channels: int = 1
    n_classes: int = 10

    def __post_init__(self):
        for name in ("kernels", "strides"):
            values = getattr(self, name)
            if not values or any(not _is_int(v) or v < 1 for v in values):
                raise InputError(f"search space: '{name}' must be a non-empty list of positive integers, "
                                 f"got {values!r}")
        for name in ("channels", "capsules", "convolutions", "sabour_layers", "capscells"):
            pair = getattr(self, name)
            if (len(pair) != 2 or any(not _is_int(v) for v in pair) or pair[0] > pair[1]
                    or pair[0] < (0 if name == "convolutions" else 1)):
                raise InputError(f"search space: '{name}' must be a [min, max] pair of integers with "
                                 f"min <= max, got {list(pair)!r}")
        for name in ("input_side", "input_channels", "n_classes"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise InputError(f"search space: '{name}' must be a positive integer, got {value!r}")
        if not isinstance(self.allow_resize, bool):
            raise InputError(f"search space: 'allow_resize' must be true or false, got {self.allow_resize!r}")
        for name in ("kernels", "strides"):
            if max(getattr(self, name)) > MAX_SIDE:
                raise InputError(f"search space: '{name}' must be at most {MAX_SIDE}, got {max(getattr(self, name))}")
        for kind in (SABOUR, CAPSCELL):
            try:
                layers = self.largest_genotype(kind)
                check_descriptors(layers)
                check_counts(layers)
            except GenotypeFormatError as error:
                raise InputError(f"search space: its largest {'capsule-layer' if kind == SABOUR else 'CapsCell'} "
                                 f"networks break a genotype bound ({error}); narrow its ranges") from None

    def check(self, layers, resize: int) -> None:
        """Raise `GenotypeFormatError` at the first limit of this space that the layer descriptors
        (nine ints each, already checked by `capsacc.network.check_genotype`) and resize flag break:
        resize allowed, input side x resize and channels, number of classes, numbers of
        convolutions and of capsule layers or CapsCells, kernels and strides of the space (but the
        class layer's), channel and atom ranges, and a fully connected class layer (kernel = n_in,
        stride 1, n_out 1: the ClassCaps the search trains)."""
        last = len(layers) - 1
        if resize not in self.resizes:
            raise GenotypeFormatError(f"resize {resize} not allowed by the search space", field="resize")
        if layers[0][1] != self.input_side * resize:
            raise GenotypeFormatError(f"n_in {layers[0][1]} != input side {self.input_side} x resize {resize}",
                                      index=0, field="n_in")
        if layers[0][2] * layers[0][3] != self.input_channels:
            raise GenotypeFormatError(f"ch_in x caps_in = {layers[0][2] * layers[0][3]} != input channels "
                                      f"{self.input_channels}", index=0, field="ch_in")
        if layers[last][7] != self.n_classes:
            raise GenotypeFormatError(f"the class layer needs ch_out = {self.n_classes} classes, got "
                                      f"{layers[last][7]}", index=last, field="ch_out")
        convolutions = sum(1 for layer in layers if layer[0] == CONV)
        _check_range(convolutions, self.convolutions, "convolutions", 0)
        if layers[last][0] == SABOUR:
            _check_range(len(layers) - convolutions, self.sabour_layers, "capsule layers", last)
        else:
            _check_range(len(layers) - convolutions, self.capscells, "CapsCells", last)
        for index, layer in enumerate(layers):
            if index == last:
                for field, value, want in (("kernel", layer[4], layer[1]), ("stride", layer[5], 1),
                                           ("n_out", layer[6], 1)):
                    if value != want:
                        raise GenotypeFormatError(f"{field} {value} != {want}: the search space's class layer is "
                                                  f"fully connected (kernel = n_in, stride 1, n_out 1)",
                                                  index=index, field=field)
                _check_value(layer[8], self.capsules, index, "caps_out")
                continue
            if layer[4] not in self.kernels:
                raise GenotypeFormatError(f"kernel {layer[4]} not in {list(self.kernels)}", index=index,
                                          field="kernel")
            if layer[5] not in self.strides:
                raise GenotypeFormatError(f"stride {layer[5]} not in {list(self.strides)}", index=index,
                                          field="stride")
            _check_value(layer[7], self.channels, index, "ch_out")
            if layer[0] != CONV:
                _check_value(layer[8], self.capsules, index, "caps_out")

    def largest_genotype(self, kind: int) -> list[list[int]]:
        """The descriptors of a network of capsule layers of `kind` (1 Sabour, 2 CapsCell) that bounds
        every one the space allows from above in each cost count (weights, multiply-accumulates,
        data values, terms per output, all increasing in every size): the most layers, the largest
        input (resize included), stride 1, the largest kernel that fits, channels and atoms."""
        side = self.input_side * max(self.resizes)
        kernel = min(max(self.kernels), side)
        channels, atoms = self.channels[1], self.capsules[1]
        n_caps = (self.sabour_layers if kind == SABOUR else self.capscells)[1]
        layers = [[CONV, side, self.input_channels, 1, kernel, 1, side, channels, 1]]
        layers += [[CONV, side, channels, 1, kernel, 1, side, channels, 1]] * (max(self.convolutions[1], 1) - 1)
        layers.append([kind, side, channels, 1, kernel, 1, side, channels, atoms])
        layers += [[kind, side, channels, atoms, kernel, 1, side, channels, atoms]] * (n_caps - 2)
        layers.append([kind, side, channels, atoms, side, 1, 1, self.n_classes, atoms])
        return layers

    @property
    def resizes(self) -> tuple[int, ...]:
        """Allowed values of the resize flag."""
        return (1, 2) if self.allow_resize else (1,)

    @classmethod
    def from_dict(cls, data: dict, source: str = "search space") -> "SearchSpace":
        """Build from a mapping of field names (lists become tuples); errors name `source` and the key."""
        known = {f.name for f in fields(cls)}
        values = {}
        for key, value in data.items():
            if key not in known:
                raise InputError(f"{source}: unknown key '{key}' (known: {', '.join(sorted(known))})")
            values[key] = tuple(value) if isinstance(value, list) else value
        try:
            return cls(**values)
        except InputError as error:
            raise InputError(f"{source}: {str(error).removeprefix('search space: ')}") from None
        except TypeError as error:
            raise InputError(f"{source}: {error}") from None

    @classmethod
    def from_toml(cls, path) -> "SearchSpace":
        """Read a TOML file whose top-level keys are field names (or one `[space]` table of them)."""
        path = Path(path)
        try:
            data = tomllib.loads(read_text(path))
        except tomllib.TOMLDecodeError as error:
            raise InputError(f"{path}: not TOML ({error})") from None
        if set(data) == {"space"} and isinstance(data["space"], dict):
            data = data["space"]
        return cls.from_dict(data, source=str(path))


def _check_range(count: int, limits: tuple[int, int], what: str, index: int) -> None:
    if not limits[0] <= count <= limits[1]:
        raise GenotypeFormatError(f"{count} {what}, the search space allows {limits[0]}-{limits[1]}", index=index,
                                  field="type")


def _check_value(value: int, limits: tuple[int, int], index: int, field: str) -> None:
    if not limits[0] <= value <= limits[1]:
        raise GenotypeFormatError(f"{value} outside the search space's {limits[0]}-{limits[1]}", index=index,
                                  field=field)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


QUICK_SPACE = SearchSpace(kernels=(3, 5), strides=(1, 2), channels=(1, 8), capsules=(1, 8),
                          convolutions=(1, 2), sabour_layers=(2, 3), capscells=(4, 5), allow_resize=False)
"""The default search space of `nascaps search`: the paper's strides with kernels 3 and 5 and
narrower layers (1-8 channels, 1-8 atoms), 1-2 convolutions, 2-3 capsule layers or 4-5 CapsCell
descriptors and no input upsampling, so that a candidate trains in seconds on a 2-core machine.
`--space paper` (or a TOML file) selects the NASCaps space."""

