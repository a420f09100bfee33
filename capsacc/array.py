"""The one description of a CapsAcc instance, shared by the RTL (`rtl.capsacc.CapsAcc`), the tiling
rules (`capsacc.mapping`) and the calibrated model (`capsacc.calibrated`).

`ArrayConfig` checks that every field is an integer within the bounds the cost model handles
(`ARRAY_LIMITS`); `rtl.capsacc.check_buildable` adds what the RTL can build (its instruction
fields bound the depths and the columns).

Each on-chip memory has its own depth (`MEMORY_DEPTHS`: data, weight and routing buffers, the
partial-sum memory, in rows; the program memory, in words). The tiling rules of `capsacc.mapping`
and the driver of `sim/` lay every buffer out alike, so they use `buffer_depth`, the rows that
every buffer has (the smallest of the four); the RTL builds each memory at its own depth, and the
synthesis prices each one (`rtl.synth`).

`batch` is a schedule parameter, not hardware: the number of images one pass of the network
processes together (`capsacc.mapping`'s tiling rules stack their rows; a ClassCaps weight tile is
loaded once per batch). It changes no part of the RTL: whatever builds the design takes the
hardware fields only (`ArrayConfig.hardware`).
"""

from dataclasses import KW_ONLY, asdict, dataclass, fields

from capsacc.errors import AcceleratorConfigError

BUFFER_DEPTHS = ("data_depth", "weight_depth", "routing_depth", "psum_depth")
"""The depth fields of the four buffers (rows): data, weight, routing, partial sums."""
MEMORY_DEPTHS = BUFFER_DEPTHS + ("program_depth",)
"""The depth fields of every on-chip memory: the four buffers (rows) and the program (words)."""
DEFAULT_BUFFER_DEPTH = 16384
"""Rows of each buffer by default (docs/rtl.md, "Memory sizes": a choice of this project)."""
DEFAULT_PROGRAM_DEPTH = 1024
"""Program words by default (docs/rtl.md, "Memory sizes")."""
ARRAY_LIMITS = {"rows": (1, 4096), "cols": (1, 4096), "acc_bits": (1, 64),
                **{name: (1, 2 ** 30) for name in BUFFER_DEPTHS}, "program_depth": (3, 2 ** 30), "batch": (1, 4096),
                "offchip_bytes_per_cycle": (1, 4096), "offchip_latency_cycles": (1, 2 ** 20)}
"""Bounds of each `ArrayConfig` field (inclusive)."""
HARDWARE_FIELDS = ("rows", "cols", "acc_bits") + MEMORY_DEPTHS + ("offchip_bytes_per_cycle", "offchip_latency_cycles")
"""The `ArrayConfig` fields that describe the hardware (all but the schedule's `batch`)."""


def buffer_depths(depth: int) -> dict:
    """The four buffer depth fields (`BUFFER_DEPTHS`) all set to `depth` rows, for `ArrayConfig(**...)`."""
    return {name: depth for name in BUFFER_DEPTHS}


@dataclass(frozen=True)
class ArrayConfig:
    """A CapsAcc instance: `rows` x `cols` PEs, accumulator width `acc_bits` (bits); the depths of
    its memories (keyword only, as every field after them): `data_depth`, `weight_depth`,
    `routing_depth` (rows of the int8 buffers), `psum_depth` (rows of the partial-sum memory),
    `program_depth` (words); the schedule it runs: `batch` images per pass (1..4096, not hardware;
    see the module docstring); its off-chip memory port: `offchip_bytes_per_cycle` (W, the bytes of
    a beat, one beat per cycle) and `offchip_latency_cycles` (L, from a read request to its data),
    the DMA's (docs/rtl.md, "Memory system": 16 B per cycle is a 128-bit port; L = 64 cycles, a
    DRAM access of about 64 ns at 1 GHz)."""

    rows: int = 16
    cols: int = 16
    acc_bits: int = 25
    _: KW_ONLY
    data_depth: int = DEFAULT_BUFFER_DEPTH
    weight_depth: int = DEFAULT_BUFFER_DEPTH
    routing_depth: int = DEFAULT_BUFFER_DEPTH
    psum_depth: int = DEFAULT_BUFFER_DEPTH
    program_depth: int = DEFAULT_PROGRAM_DEPTH
    batch: int = 1
    offchip_bytes_per_cycle: int = 16
    offchip_latency_cycles: int = 64

    def __post_init__(self):
        for field in fields(self):
            value, (low, high) = getattr(self, field.name), ARRAY_LIMITS[field.name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise AcceleratorConfigError(f"array '{field.name}' must be an integer in {low}..{high}, "
                                             f"got {value!r:.80}")

    @property
    def buffer_depth(self) -> int:
        """The rows every buffer has (the smallest of `BUFFER_DEPTHS`): the depth the tiling rules use."""
        return min(getattr(self, name) for name in BUFFER_DEPTHS)

    def to_dict(self) -> dict:
        """Every field, hardware and schedule (`batch`), by name."""
        return asdict(self)

    def hardware(self) -> dict:
        """The fields of `HARDWARE_FIELDS` by name: the parameters of `rtl.capsacc.CapsAcc`."""
        return {name: getattr(self, name) for name in HARDWARE_FIELDS}
