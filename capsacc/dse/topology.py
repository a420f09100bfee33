"""Layers in SCALE-Sim's topology format, read from its CSV files or shipped with the package.

A SCALE-Sim topology CSV has a header line, then one layer a line:
`name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,`
(every row ends with a comma; an optional ninth field is a sparsity ratio `N:M`, only `1:1`, dense,
is modelled here). Padding is not modelled: SCALE-Sim's output side is ceil((H - F + S) / S), so
the shipped topologies give IFMAP sides with the padding already added. A layer whose name contains
`DP` is depthwise: SCALE-Sim runs it as one single-channel layer per channel, and so does this module.

SCALE-Sim's GEMM format (its `-i gemm` mode), rows `name, M, N, K,`, is read too (a row of four
fields): SCALE-Sim runs such a row as an M x K IFMAP with a 1 x K filter, one channel and N filters,
and so does this module.
"""

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from capsacc.errors import InputError
from capsacc.files import read_text

BUILTIN_TOPOLOGIES = ("alexnet", "lenet", "vgg16", "resnet18")
"""Topologies shipped as `capsacc/data/topology-<name>.csv` (padding folded into the IFMAP sides)."""

MAX_DIMENSION = 2 ** 31 - 1
"""The largest value of a topology field (sides, channels, filters, stride, M, N, K); the counts derived
from them are checked against int64 by `Workload.check_int64`."""
MAX_LAYERS = 65536
"""The most layers a topology may give, a depthwise layer counting once per channel."""

COLUMNS = ("IFMAP Height", "IFMAP Width", "Filter Height", "Filter Width", "Channels", "Num Filter", "Strides")
GEMM_COLUMNS = ("M", "N", "K")


@dataclass(frozen=True)
class ConvLayer:
    """One convolution or fully-connected layer (a fully-connected layer is a convolution whose
    filter covers the whole input). Sides in pixels; `stride` in both directions."""

    name: str
    ifmap_h: int
    ifmap_w: int
    filter_h: int
    filter_w: int
    channels: int
    num_filter: int
    stride: int

    @property
    def ofmap_h(self) -> int:
        """Output height, SCALE-Sim's convention ceil((H - F + S) / S)."""
        return math.ceil((self.ifmap_h - self.filter_h + self.stride) / self.stride)

    @property
    def ofmap_w(self) -> int:
        """Output width, SCALE-Sim's convention ceil((W - F + S) / S)."""
        return math.ceil((self.ifmap_w - self.filter_w + self.stride) / self.stride)

    @property
    def gemm_mkn(self) -> tuple[int, int, int]:
        """(M, K, N): output pixels, products per output (F_h·F_w·C), filters."""
        return (self.ofmap_h * self.ofmap_w, self.filter_h * self.filter_w * self.channels, self.num_filter)

    @property
    def ifmap_footprint(self) -> int:
        """Distinct input values the layer reads: all of them, as SCALE-Sim's output side makes the
        last window reach the edge ((ofmap - 1)·S + F >= H)."""
        return self.ifmap_h * self.ifmap_w * self.channels


def read_topology(path: str | Path) -> list[ConvLayer]:
    """The layers of a SCALE-Sim topology CSV; `InputError` names the file, line and field."""
    path = Path(path)
    return parse_topology(read_text(path), str(path))


def parse_topology(text: str, source: str) -> list[ConvLayer]:
    """Parse the text of a SCALE-Sim topology CSV; `source` names it in error messages."""
    layers = []
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise InputError(f"{source}: line 1: expected the header line (name, {', '.join(COLUMNS)},)")
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if fields and fields[-1] == "":
            fields.pop()
        where = f"{source}: line {number}"
        if len(fields) not in (4, 5, 8, 9):
            raise InputError(f"{where}: expected 8 fields (name, {', '.join(COLUMNS)}) or the 4 of the GEMM "
                             f"format (name, M, N, K), and an optional sparsity ratio; got {len(fields)}")
        name = fields[0]
        if not name:
            raise InputError(f"{where}: the layer name is empty")
        gemm = len(fields) in (4, 5)
        columns = GEMM_COLUMNS if gemm else COLUMNS
        values = []
        for column, field in zip(columns, fields[1:]):
            try:
                value = int(field)
            except ValueError:
                raise InputError(f"{where}: {column} must be an integer, got {field!r:.80}") from None
            if not 1 <= value <= MAX_DIMENSION:
                raise InputError(f"{where}: {column} must be in 1..{MAX_DIMENSION}, got {value}")
            values.append(value)
        if len(fields) == len(columns) + 2 and fields[-1].replace(" ", "") != "1:1":
            raise InputError(f"{where}: sparsity ratio {fields[-1]!r:.80} is not modelled (only 1:1, dense)")
        if gemm:
            m, n, k = values
            if len(layers) >= MAX_LAYERS:
                raise InputError(f"{where}: more than {MAX_LAYERS} layers")
            layers.append(ConvLayer(name, m, k, 1, k, 1, n, 1))
            continue
        ifmap_h, ifmap_w, filter_h, filter_w, channels, num_filter, stride = values
        if filter_h > ifmap_h or filter_w > ifmap_w:
            raise InputError(f"{where}: the filter ({filter_h}x{filter_w}) is larger than the IFMAP "
                             f"({ifmap_h}x{ifmap_w})")
        if len(layers) + (channels if "DP" in name else 1) > MAX_LAYERS:
            raise InputError(f"{where}: more than {MAX_LAYERS} layers (a depthwise layer counts once per channel)")
        if "DP" in name:
            layers.extend(ConvLayer(f"{name}Channel_{c}", ifmap_h, ifmap_w, filter_h, filter_w, 1, num_filter,
                                    stride) for c in range(channels))
        else:
            layers.append(ConvLayer(name, *values))
    if not layers:
        raise InputError(f"{source}: no layers after the header line")
    return layers


def builtin_topology(name: str) -> list[ConvLayer]:
    """One of `BUILTIN_TOPOLOGIES`."""
    if name not in BUILTIN_TOPOLOGIES:
        raise InputError(f"unknown topology '{name}' (known: {', '.join(BUILTIN_TOPOLOGIES)})")
    resource = resources.files("capsacc").joinpath("data").joinpath(f"topology-{name}.csv")
    return parse_topology(resource.read_text(), f"topology-{name}.csv")
