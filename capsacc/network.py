"""Networks as the accelerator sees them: ordered hardware operations expanded from a genotype,
and the one definition of the rules a genotype must follow.

A NASCaps genotype is a JSON list of nine-integer layer descriptors
`[type, n_in, ch_in, caps_in, kernel, stride, n_out, ch_out, caps_out]` (type 0 convolution,
1 capsule layer of Sabour et al., 2 DeepCaps CapsCell; sizes in pixels, channels and capsule
atoms) followed by `[skip]` and `[resize]` (see docs/model.md). `Network.from_genotype` checks it
with `check_genotype` and applies the expansion rules.

The rules (`check_genotype`; `nas.genotype.Genotype.validate` adds a search space's limits):
every field is an integer between 1 and its bound (`FIELD_LIMITS`); the first layer is a
convolution; convolutions all come before the capsule layers; at least one capsule layer (the
class layer; two for CapsCell networks: a cell and the class layer), all of one type; consecutive
layers agree on side and channels (channels x atoms when a convolution is involved, as a
convolution's output is read as capsules); n_out = ceil(n_in / stride) ('same' padding) for every
layer but the class layer (the fully connected ClassCaps uses neither its stride nor its n_out); no
kernel larger than its input; skip is -1 or the position (from 1) of a CapsCell before the last one
whose capsules have as many atoms as the class layer's input; resize is 1 or 2; and every count the
cost model derives stays below its bound (weights, data values, terms per output `MAX_COUNT`;
multiply-accumulates `MAX_MACS`), so that no 64-bit figure of `capsacc.model` or `capsacc.kernels`
can wrap around.
"""

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from capsacc.errors import GenotypeFormatError
from capsacc.files import read_json

DESCRIPTOR_FIELDS = ("type", "n_in", "ch_in", "caps_in", "kernel", "stride", "n_out", "ch_out", "caps_out")
OP_KINDS = ("conv", "convcaps", "convcaps3d", "classcaps", "routing")
"""Hardware operation kinds; an operation's kind code is its index here."""
OP_CONV, OP_CONVCAPS, OP_CONVCAPS3D, OP_CLASSCAPS, OP_ROUTING = range(5)
"""Kind codes of `OP_KINDS`."""
OP_FIELDS = ("kind",) + DESCRIPTOR_FIELDS[1:]
"""Columns of an operation row (`descriptor_operations`): kind code, then the eight shape fields."""
MAX_DESCRIPTOR_OPERATIONS = 7
"""Most operations one descriptor expands into (a CapsCell network's class layer)."""
LAYER_TYPES = {0: "conv", 1: "capsule (Sabour et al.)", 2: "CapsCell (DeepCaps)"}
CONV, SABOUR, CAPSCELL = 0, 1, 2
"""Layer type codes of a descriptor's first field."""

MAX_DESCRIPTORS = 256
"""Most layer descriptors in one genotype."""
MAX_SIDE = 4096
"""Largest feature-map side, kernel and stride, in pixels."""
MAX_CHANNELS = 65536
"""Most channels (capsule types) of a layer's input or output."""
MAX_ATOMS = 4096
"""Most atoms of a capsule."""
FIELD_LIMITS = {"n_in": MAX_SIDE, "ch_in": MAX_CHANNELS, "caps_in": MAX_ATOMS, "kernel": MAX_SIDE,
                "stride": MAX_SIDE, "n_out": MAX_SIDE, "ch_out": MAX_CHANNELS, "caps_out": MAX_ATOMS}
"""Largest value of each size field of a descriptor (the smallest is 1)."""
MAX_COUNT = 2 ** 48
"""Bound on the network's total weights and data values per weight and on any operation's terms per
output, the counts the int64 cost kernels use. With the accelerator's limits (at most 4096 rows and
columns, two pipeline stages: `capsacc.accelerator`) every int64 of the cost model stays below 2^62:
cycles <= (rows + stages - 1) * weights + data values, accumulators <= columns * terms per output."""
MAX_MACS = 2 ** 62
"""Bound on the network's multiply-accumulates (`Network.macs`, kept as a 64-bit integer in results)."""

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
        return self._table1[0]

    @property
    def sums_per_out(self) -> int:
        """Products summed into one output value (Table 1)."""
        return self._table1[1]

    @property
    def _table1(self) -> tuple[int, int, int]:
        """`table1` in exact Python integers (its Python function: no 64-bit wrap-around, so that
        `check_counts` sees the true counts)."""
        return table1.py_func(OP_KINDS.index(self.kind), self.ch_in, self.caps_in, self.kernel, self.n_out,
                              self.ch_out, self.caps_out)

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
        return self._table1[2]


@njit(cache=True, inline="always")
def table1(kind, ch_in, caps_in, kernel, n_out, ch_out, caps_out):
    """(weights, sums_per_out, data_per_weight) of an operation of kind code `kind` (`OP_KINDS`), Table 1
    of NASCaps: the one definition, run by the numba kernels and (exactly, in Python integers) by
    `Operation`."""
    volume = kernel * kernel * kernel if kind == OP_CONVCAPS3D else kernel * kernel
    if kind == OP_ROUTING:
        weights = ch_in * kernel * kernel * ch_out
        sums = caps_in
    else:
        weights = (ch_in * volume + 1) * ch_out * caps_out * caps_in
        sums = (volume + 1) * ch_in * caps_in
    data = 1 if kind == OP_CLASSCAPS or kind == OP_ROUTING else n_out * n_out * ch_in * caps_in
    return weights, sums, data


def parse_genotype(genotype) -> tuple[list[list[int]], int, int]:
    """Check the form of a genotype list (entries, lengths, integers) and return its layer
    descriptors, skip and resize; raises `GenotypeFormatError` naming the descriptor and field."""
    if not isinstance(genotype, (list, tuple)):
        raise GenotypeFormatError(f"a genotype must be a JSON list, got {type(genotype).__name__}")
    if len(genotype) < 3:
        raise GenotypeFormatError(
            f"a genotype needs at least one layer descriptor and the [skip] and [resize] entries, "
            f"got {len(genotype)} entries")
    if len(genotype) - 2 > MAX_DESCRIPTORS:
        raise GenotypeFormatError(f"{len(genotype) - 2} layer descriptors, more than the limit of {MAX_DESCRIPTORS}")
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


def check_genotype(genotype) -> tuple[list[list[int]], int, int]:
    """Check a genotype list against every rule of this module (see its docstring) and return its
    layer descriptors, skip and resize; raises `GenotypeFormatError` at the first broken rule,
    naming the descriptor and field. The one check that `nascaps estimate`, `nascaps train` and the
    search apply."""
    descriptors, skip, resize = parse_genotype(genotype)
    check_descriptors(descriptors, skip, resize)
    check_counts(descriptors)
    return descriptors, skip, resize


def check_descriptors(descriptors: list[list[int]], skip: int = -1, resize: int = 1) -> None:
    """The structural rules of the module docstring on parsed descriptors (lists of nine ints)."""
    if not descriptors:
        raise GenotypeFormatError("a genotype needs at least one layer descriptor")
    if len(descriptors) > MAX_DESCRIPTORS:
        raise GenotypeFormatError(f"{len(descriptors)} layer descriptors, more than the limit of {MAX_DESCRIPTORS}")
    if resize not in (1, 2):
        raise GenotypeFormatError(f"resize must be 1 or 2, got {resize}", field="resize")
    for index, descriptor in enumerate(descriptors):
        if descriptor[0] not in LAYER_TYPES:
            raise GenotypeFormatError(f"unknown layer type {descriptor[0]} (0 conv, 1 capsule, 2 CapsCell)",
                                      index=index, field="type")
        for field, value in zip(DESCRIPTOR_FIELDS[1:], descriptor[1:]):
            if value < 1:
                raise GenotypeFormatError(f"must be positive, got {value}", index=index, field=field)
            if value > FIELD_LIMITS[field]:
                raise GenotypeFormatError(f"{value} is larger than the limit of {FIELD_LIMITS[field]}",
                                          index=index, field=field)
    if descriptors[0][0] != CONV:
        raise GenotypeFormatError("the first layer must be a convolution (type 0)", index=0, field="type")
    capsule_indices = [i for i, descriptor in enumerate(descriptors) if descriptor[0] != CONV]
    last = len(descriptors) - 1
    if not capsule_indices:
        raise GenotypeFormatError("needs at least one capsule layer (the class layer), got none",
                                  index=last, field="type")
    if descriptors[-1][0] == CAPSCELL and len(capsule_indices) < 2:
        raise GenotypeFormatError("a CapsCell network needs at least one CapsCell before its class layer",
                                  index=last, field="type")
    kind = descriptors[capsule_indices[0]][0]
    for index in range(capsule_indices[0], len(descriptors)):
        if descriptors[index][0] == CONV:
            raise GenotypeFormatError("a convolution cannot follow a capsule layer", index=index, field="type")
        if descriptors[index][0] != kind:
            raise GenotypeFormatError(f"capsule layers of mixed types ({kind} and {descriptors[index][0]})",
                                      index=index, field="type")
    for index in range(len(descriptors)):
        _check_sizes(descriptors, index, last)
    if skip != -1:
        position = skip - 1
        if not (0 <= position < last - 1 and descriptors[position][0] == CAPSCELL):
            raise GenotypeFormatError(f"skip must be -1 or the position (from 1) of a CapsCell before the last "
                                      f"one, got {skip}", field="skip")
        if descriptors[position][8] != descriptors[last][3]:
            raise GenotypeFormatError(f"the skip cell (position {skip}) has {descriptors[position][8]} atoms, "
                                      f"the class layer takes {descriptors[last][3]}", field="skip")


def _check_sizes(descriptors: list[list[int]], index: int, last: int) -> None:
    """Kernel, 'same' padding, and agreement with the previous descriptor of descriptor `index`."""
    layer = descriptors[index]
    _, n_in, ch_in, caps_in, kernel, stride, n_out, _, _ = layer
    if kernel > n_in:
        raise GenotypeFormatError(f"kernel {kernel} larger than its input side {n_in}", index=index, field="kernel")
    if index < last and n_out != math.ceil(n_in / stride):
        raise GenotypeFormatError(f"n_out {n_out} != ceil(n_in {n_in} / stride {stride}) = "
                                  f"{math.ceil(n_in / stride)} ('same' padding)", index=index, field="n_out")
    if index == 0:
        return
    previous = descriptors[index - 1]
    if n_in != previous[6]:
        raise GenotypeFormatError(f"n_in {n_in} != n_out {previous[6]} of descriptor {index - 1}",
                                  index=index, field="n_in")
    if previous[0] != CONV and layer[0] != CONV:
        for field, got, want in (("ch", ch_in, previous[7]), ("caps", caps_in, previous[8])):
            if got != want:
                raise GenotypeFormatError(f"{field}_in {got} != {field}_out {want} of descriptor {index - 1}",
                                          index=index, field=f"{field}_in")
    elif ch_in * caps_in != previous[7] * previous[8]:
        raise GenotypeFormatError(f"ch_in x caps_in = {ch_in * caps_in} != ch_out x caps_out = "
                                  f"{previous[7] * previous[8]} of descriptor {index - 1}", index=index,
                                  field="ch_in")


def check_counts(descriptors: list[list[int]], operations: list["Operation"] | None = None) -> None:
    """Refuse descriptors whose derived counts reach their bounds, computed exactly (Python ints):
    the running totals of weights and of data values per weight (`MAX_COUNT`) and of
    multiply-accumulates (`MAX_MACS`) over the operations, and each operation's terms per output
    (`MAX_COUNT`). The error names the descriptor where a bound is first reached. `operations`:
    `expand(descriptors)`, when already built."""
    operations = expand(descriptors) if operations is None else operations
    totals = {"weights": 0, "data values": 0, "multiply-accumulates": 0}
    limits = {"weights": (MAX_COUNT, "2^48"), "data values": (MAX_COUNT, "2^48"),
              "multiply-accumulates": (MAX_MACS, "2^62"), "terms per output": (MAX_COUNT, "2^48")}
    last = len(descriptors) - 1
    position = 0
    for index, descriptor in enumerate(descriptors):
        count = len(_descriptor_operations(index, descriptor, last))
        for op in operations[position:position + count]:
            totals["weights"] += op.weights
            totals["data values"] += op.data_per_weight
            totals["multiply-accumulates"] += op.macs
            for what, value in (*totals.items(), ("terms per output", op.sums_per_out)):
                limit, name = limits[what]
                if value >= limit:
                    raise GenotypeFormatError(f"the network's {what} reach {value:.3g} here, past the limit of "
                                              f"{name} = {limit:.3g} (64-bit cost figures)", index=index)
        position += count


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@njit(cache=True, inline="always")
def descriptor_operation(layer_type, position, last, row):
    """(kind code, inner) of operation `row` of a layer descriptor of type `layer_type`, at `position`
    of a genotype whose last descriptor is at `last`; kind code -1 past its last operation. The one
    definition of the expansion of docs/model.md, run by `descriptor_operations` (`expand`) and the
    numba kernels. `inner` marks a CapsCell's inner convolution (after the first, strided one): it
    takes the first one's output, n_out-sided maps of ch_out capsules of caps_out atoms, stride 1."""
    if layer_type == CONV or (layer_type == SABOUR and position < last):
        kind = OP_CONV if layer_type == CONV else OP_CONVCAPS
        return (kind, False) if row == 0 else (-1, False)
    if layer_type == SABOUR:
        if row == 0:
            return OP_CLASSCAPS, False
        return (OP_ROUTING, False) if row < 6 else (-1, False)
    if position < last:
        if row == 0:
            return OP_CONVCAPS, False
        if row < 3 or (row == 3 and position < last - 1):
            return OP_CONVCAPS, True
        return (OP_CONVCAPS3D, False) if row == 3 else (-1, False)
    if row < 6:
        return OP_ROUTING, False
    return (OP_CLASSCAPS, False) if row == 6 else (-1, False)


@njit(cache=True, inline="always")
def operation_table1(descriptor, kind, inner):
    """`table1` of the operation of kind code `kind` (and `inner`, `descriptor_operation`) of layer
    descriptor `descriptor` (nine integers)."""
    if inner:
        return table1(kind, descriptor[7], descriptor[8], descriptor[4], descriptor[6], descriptor[7], descriptor[8])
    return table1(kind, descriptor[2], descriptor[3], descriptor[4], descriptor[6], descriptor[7], descriptor[8])


@njit(cache=True)
def descriptor_operations(descriptor, position, last, out):
    """Write the operations of layer descriptor `descriptor` (nine integers), at `position` of a
    genotype whose last descriptor is at `last`, into the first rows of `out` (at least
    `MAX_DESCRIPTOR_OPERATIONS` rows of the `OP_FIELDS` columns), by `descriptor_operation`; return
    their count."""
    for row in range(MAX_DESCRIPTOR_OPERATIONS):
        kind, inner = descriptor_operation(descriptor[0], position, last, row)
        if kind < 0:
            return row
        _operation_row(out, row, kind, descriptor, inner)
    return MAX_DESCRIPTOR_OPERATIONS


@njit(cache=True, inline="always")
def _operation_row(out, row, kind, descriptor, inner):
    """Write row `row` of `out`: an operation of kind code `kind` with the shape of `descriptor`, or
    (`inner`) of a CapsCell's inner convolution: the descriptor's output as its input, stride 1."""
    out[row, 0] = kind
    if inner:
        out[row, 1], out[row, 2], out[row, 3], out[row, 5] = descriptor[6], descriptor[7], descriptor[8], 1
    else:
        out[row, 1], out[row, 2], out[row, 3], out[row, 5] = descriptor[1], descriptor[2], descriptor[3], descriptor[5]
    out[row, 4], out[row, 6], out[row, 7], out[row, 8] = descriptor[4], descriptor[6], descriptor[7], descriptor[8]


def _descriptor_operations(i: int, descriptor: list[int], last: int) -> list[tuple[str, list[int]]]:
    """The operations (kind, eight shape fields, Python integers) of descriptor `i` of a genotype whose
    last descriptor is `last` (`descriptor_operations`)."""
    rows = np.empty((MAX_DESCRIPTOR_OPERATIONS, len(OP_FIELDS)), np.int64)
    count = descriptor_operations(np.asarray(descriptor, np.int64), i, last, rows)
    return [(OP_KINDS[row[0]], row[1:]) for row in rows[:count].tolist()]


def operation_rows(operations) -> np.ndarray:
    """Operations as the int64 rows of `OP_FIELDS` (n_ops, 9) that the numba kernels take."""
    return np.array([(OP_KINDS.index(op.kind), op.n_in, op.ch_in, op.caps_in, op.kernel, op.stride, op.n_out, op.ch_out,
                      op.caps_out) for op in operations], np.int64).reshape(-1, len(OP_FIELDS))


def expand(descriptors: list[list[int]]) -> list[Operation]:
    """The expansion of layer descriptors into hardware operations, in order (docs/model.md)."""
    operations = []
    last = len(descriptors) - 1
    for i, descriptor in enumerate(descriptors):
        for kind, fields in _descriptor_operations(i, descriptor, last):
            operations.append(Operation(f"{kind}{len(operations)}", kind, *fields))
    return operations


@dataclass(frozen=True)
class Network:
    """An ordered tuple of hardware operations."""

    operations: tuple[Operation, ...]
    name: str = ""

    @classmethod
    def from_genotype(cls, genotype, name: str = "") -> "Network":
        """Expand a NASCaps genotype (a JSON list as in `.chr` files).

        Raises `GenotypeFormatError` (a `ValueError`) naming the descriptor index and field at the
        first rule of `check_genotype` it breaks.
        """
        descriptors, skip, resize = parse_genotype(genotype)
        check_descriptors(descriptors, skip, resize)
        operations = expand(descriptors)
        check_counts(descriptors, operations)
        return cls(tuple(operations), name)

    @classmethod
    def preset(cls, name: str) -> "Network":
        """A reference network: `capsnet` or `deepcaps`."""
        if name not in PRESETS:
            raise KeyError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
        return cls.from_genotype(PRESETS[name], name)

    @functools.cached_property
    def weights(self) -> int:
        """Weights of all operations (the published model counts routing coefficients too)."""
        return sum(op.weights for op in self.operations)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one inference, summed over the operations (`Operation.macs`)."""
        return sum(op.macs for op in self.operations)

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """The operations as a read-only int64 array of shape (n_ops, 9) (`operation_rows`)."""
        rows = operation_rows(self.operations)
        rows.flags.writeable = False
        return rows

    @functools.cached_property
    def table(self) -> np.ndarray:
        """Operation parameters as a read-only int64 array of shape (n_ops, 4): kind code, weights,
        sums_per_out, data_per_weight."""
        table = np.array([(OP_KINDS.index(op.kind), op.weights, op.sums_per_out, op.data_per_weight)
                         for op in self.operations], dtype=np.int64).reshape(-1, 4)
        table.flags.writeable = False
        return table
