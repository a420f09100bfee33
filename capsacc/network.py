"""Networks as the accelerator sees them: ordered hardware operations expanded from a genotype.

A NASCaps genotype is a JSON list of nine-integer layer descriptors
`[type, n_in, ch_in, caps_in, kernel, stride, n_out, ch_out, caps_out]` followed by `[skip]` and
`[resize]` (see NASCAPS_MODEL.md). `Network.from_genotype` applies the published expansion rules.
"""

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capsacc.errors import GenotypeFormatError
from capsacc.files import read_json

DESCRIPTOR_FIELDS = ("type", "n_in", "ch_in", "caps_in", "kernel", "stride", "n_out", "ch_out", "caps_out")
OP_KINDS = ("conv", "convcaps", "convcaps3d", "classcaps", "routing")
"""Hardware operation kinds; an operation's kind code is its index here."""
LAYER_TYPES = {0: "conv", 1: "capsule (Sabour et al.)", 2: "CapsCell (DeepCaps)"}

PRESETS = {
    "capsnet": [[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 9, 2, 14, 32, 8],
                [1, 14, 32, 8, 9, 2, 7, 10, 16], [-1], [1]],
    "deepcaps": [[0, 64, 3, 1, 3, 1, 64, 128, 1], [2, 64, 32, 4, 3, 2, 32, 32, 4],
                 [2, 32, 32, 4, 3, 2, 16, 32, 8], [2, 16, 32, 8, 3, 2, 8, 32, 8],
                 [2, 8, 32, 8, 3, 2, 4, 32, 8], [2, 4, 32, 8, 4, 1, 1, 10, 16], [4], [2]],
}
"""The two reference genotypes of NASCaps: Sabour et al.'s CapsNet (MNIST) and DeepCaps."""


@dataclass(frozen=True)
class Operation:
    """One hardware operation with the shape fields of the descriptor it came from.

    Sizes: `n_in`/`n_out` feature-map side in pixels, `ch_*` channels, `caps_*` capsule
    dimension (atoms), `kernel` side, `stride`.
    """

    name: str
    kind: str
    n_in: int
    ch_in: int
    caps_in: int
    kernel: int
    stride: int
    n_out: int
    ch_out: int
    caps_out: int

    @property
    def kernel_volume(self) -> int:
        """k³ for a 3-D capsule convolution, k² otherwise (k = n_in for ClassCaps)."""
        return self.kernel ** 3 if self.kind == "convcaps3d" else self.kernel ** 2

    @property
    def weights(self) -> int:
        """Weights held in memory (Table 1 of NASCaps), one byte each."""
        if self.kind == "routing":
            return self.ch_in * self.kernel ** 2 * self.ch_out
        return (self.ch_in * self.kernel_volume + 1) * self.ch_out * self.caps_out * self.caps_in

    @property
    def sums_per_out(self) -> int:
        """Products summed into one output value (Table 1)."""
        if self.kind == "routing":
            return self.caps_in
        return (self.kernel_volume + 1) * self.ch_in * self.caps_in

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one inference in the layer's own arithmetic (not the
        accelerator's mapping): every kernel weight once per output position (n_out² of them) for
        convolutions, every transformation weight once for ClassCaps (k = n_in), and every routing
        coefficient times a caps_out-atom vector."""
        if self.kind == "routing":
            return self.weights * self.caps_out
        if self.kind == "classcaps":
            return self.n_in ** 2 * self.ch_in * self.caps_in * self.ch_out * self.caps_out
        return self.n_out ** 2 * self.kernel_volume * self.ch_in * self.caps_in * self.ch_out * self.caps_out

    @property
    def data_per_weight(self) -> int:
        """Data values streamed past one loaded weight (Table 1)."""
        if self.kind in ("classcaps", "routing"):
            return 1
        return self.n_out ** 2 * self.ch_in * self.caps_in


def parse_genotype(genotype) -> tuple[list[list[int]], int, int]:
    """Check the form of a genotype list (entries, lengths, integers) and return its layer
    descriptors, skip and resize; raises `GenotypeFormatError` naming the descriptor and field."""
    if not isinstance(genotype, (list, tuple)):
        raise GenotypeFormatError(f"a genotype must be a JSON list, got {type(genotype).__name__}")
    if len(genotype) < 3:
        raise GenotypeFormatError(
            f"a genotype needs at least one layer descriptor and the [skip] and [resize] entries, "
            f"got {len(genotype)} entries")
    for position, label in ((len(genotype) - 2, "skip"), (len(genotype) - 1, "resize")):
        entry = genotype[position]
        if not (isinstance(entry, (list, tuple)) and len(entry) == 1 and _is_int(entry[0])):
            raise GenotypeFormatError(f"entry {position} must be [{label}] with one integer, got {entry!r}",
                                      field=label)
    descriptors = []
    for index, descriptor in enumerate(genotype[:-2]):
        if not isinstance(descriptor, (list, tuple)) or len(descriptor) != len(DESCRIPTOR_FIELDS):
            raise GenotypeFormatError(f"must be a list of {len(DESCRIPTOR_FIELDS)} integers, got {descriptor!r}",
                                      index=index)
        for field, value in zip(DESCRIPTOR_FIELDS, descriptor):
            if not _is_int(value):
                raise GenotypeFormatError(f"must be an integer, got {value!r}", index=index, field=field)
        descriptors.append([int(value) for value in descriptor])
    return descriptors, int(genotype[-2][0]), int(genotype[-1][0])


def read_genotype_json(path: str | Path):
    """The genotype list in a JSON file: the list itself or an object's `genotype` entry.

    Raises `InputError` naming the file when it cannot be read or is not JSON.
    """
    data = read_json(path)
    if isinstance(data, dict) and "genotype" in data:
        return data["genotype"]
    return data


def _check_genotype(genotype) -> list[list[int]]:
    """Check the form and the sizes of a genotype list and return its layer descriptors."""
    descriptors, skip, resize = parse_genotype(genotype)
    if resize not in (1, 2):
        raise GenotypeFormatError(f"resize must be 1 or 2, got {resize}", field="resize")
    for index, descriptor in enumerate(descriptors):
        if descriptor[0] not in LAYER_TYPES:
            raise GenotypeFormatError(f"unknown layer type {descriptor[0]} (0 conv, 1 capsule, 2 CapsCell)",
                                      index=index, field="type")
        for field, value in zip(DESCRIPTOR_FIELDS[1:], descriptor[1:]):
            if value < 1:
                raise GenotypeFormatError(f"must be positive, got {value}", index=index, field=field)
    if skip != -1 and not 1 <= skip <= len(descriptors):
        raise GenotypeFormatError(f"skip must be -1 or a descriptor position 1..{len(descriptors)}, got {skip}",
                                  field="skip")
    return descriptors


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def expand(descriptors: list[list[int]]) -> list[Operation]:
    """The published expansion of layer descriptors into hardware operations, in order."""
    operations = []
    last = len(descriptors) - 1

    def add(kind, fields):
        operations.append(Operation(f"{kind}{len(operations)}", kind, *fields))

    for i, (kind, *fields) in enumerate(descriptors):
        n_in, ch_in, caps_in, kernel, stride, n_out, ch_out, caps_out = fields
        if kind == 0:
            add("conv", fields)
        elif kind == 1 and i < last:
            add("convcaps", fields)
        elif kind == 1:
            add("classcaps", fields)
            for _ in range(5):
                add("routing", fields)
        elif i < last - 1:
            add("convcaps", fields)
            inner = [n_in, ch_in, caps_out, kernel, stride, n_out, ch_out, caps_out]
            for _ in range(3):
                add("convcaps", inner)
        elif i == last - 1:
            for _ in range(3):
                add("convcaps", fields)
            add("convcaps3d", fields)
        else:
            for _ in range(6):
                add("routing", fields)
            add("classcaps", fields)
    return operations


@dataclass(frozen=True)
class Network:
    """An ordered tuple of hardware operations."""

    operations: tuple[Operation, ...]
    name: str = ""

    @classmethod
    def from_genotype(cls, genotype, name: str = "") -> "Network":
        """Expand a NASCaps genotype (a JSON list as in `.chr` files).

        Raises `GenotypeFormatError` (a `ValueError`) naming the descriptor index and field.
        """
        return cls(tuple(expand(_check_genotype(genotype))), name)

    @classmethod
    def preset(cls, name: str) -> "Network":
        """A reference network: `capsnet` or `deepcaps`."""
        if name not in PRESETS:
            raise KeyError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
        return cls.from_genotype(PRESETS[name], name)

    @property
    def weights(self) -> int:
        """Weights of all operations (the published model counts routing coefficients too)."""
        return sum(op.weights for op in self.operations)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one inference, summed over the operations (`Operation.macs`)."""
        return sum(op.macs for op in self.operations)

    @functools.cached_property
    def table(self) -> np.ndarray:
        """Operation parameters as a read-only int64 array of shape (n_ops, 4): kind code, weights,
        sums_per_out, data_per_weight."""
        table = np.array([(OP_KINDS.index(op.kind), op.weights, op.sums_per_out, op.data_per_weight)
                         for op in self.operations], dtype=np.int64).reshape(-1, 4)
        table.flags.writeable = False
        return table
