"""The one description of a CapsAcc instance, shared by the RTL (`rtl.capsacc.CapsAcc`), the tiling
rules (`capsacc.mapping`) and the calibrated model (`capsacc.calibrated`).

`ArrayConfig` checks that every field is an integer within the bounds the cost model handles
(`ARRAY_LIMITS`); `rtl.capsacc.check_buildable` adds what the RTL can build (its instruction
fields bound the depths and the columns).

`batch` is a schedule parameter, not hardware: the number of images one pass of the network
processes together (`capsacc.mapping`'s tiling rules stack their rows; a ClassCaps weight tile is
loaded once per batch). It changes no part of the RTL: whatever builds the design takes the
hardware fields only (`ArrayConfig.hardware`).
"""

from dataclasses import asdict, dataclass, fields

from capsacc.errors import AcceleratorConfigError

ARRAY_LIMITS = {"rows": (1, 4096), "cols": (1, 4096), "acc_bits": (1, 64), "buffer_depth": (1, 2 ** 30),
                "program_depth": (3, 2 ** 30), "batch": (1, 4096), "offchip_bytes_per_cycle": (1, 4096),
                "offchip_latency_cycles": (1, 2 ** 20)}
"""Bounds of each `ArrayConfig` field (inclusive)."""
HARDWARE_FIELDS = ("rows", "cols", "acc_bits", "buffer_depth", "program_depth", "offchip_bytes_per_cycle",
                   "offchip_latency_cycles")
"""The `ArrayConfig` fields that describe the hardware (all but the schedule's `batch`)."""


@dataclass(frozen=True)
class ArrayConfig:
    """A CapsAcc instance: `rows` x `cols` PEs, accumulator width `acc_bits` (bits), rows of each
    buffer and of the partial-sum memory `buffer_depth`, program memory `program_depth` (words); and
    the schedule it runs: `batch` images per pass (1..4096, not hardware; see the module docstring);
    its off-chip memory port: `offchip_bytes_per_cycle` (W, the bytes of a beat, one beat per cycle)
    and `offchip_latency_cycles` (L, from a read request to its data), the DMA's (docs/rtl.md,
    "Memory system": 16 B per cycle is a 128-bit port; L = 64 cycles, a DRAM access of about 64 ns
    at 1 GHz)."""

    rows: int = 16
    cols: int = 16
    acc_bits: int = 25
    buffer_depth: int = 16384
    program_depth: int = 1024
    batch: int = 1
    offchip_bytes_per_cycle: int = 16
    offchip_latency_cycles: int = 64

    def __post_init__(self):
        for field in fields(self):
            value, (low, high) = getattr(self, field.name), ARRAY_LIMITS[field.name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise AcceleratorConfigError(f"array '{field.name}' must be an integer in {low}..{high}, "
                                             f"got {value!r:.80}")

    def to_dict(self) -> dict:
        """Every field, hardware and schedule (`batch`), by name."""
        return asdict(self)

    def hardware(self) -> dict:
        """The fields of `HARDWARE_FIELDS` by name: the parameters of `rtl.capsacc.CapsAcc`."""
        return {name: getattr(self, name) for name in HARDWARE_FIELDS}
