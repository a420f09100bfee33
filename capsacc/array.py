"""The one description of a CapsAcc instance, shared by the RTL (`rtl.capsacc.CapsAcc`), the tiling
rules (`capsacc.mapping`) and the calibrated model (`capsacc.calibrated`).

`ArrayConfig` checks that every field is an integer within the bounds the cost model handles
(`ARRAY_LIMITS`); `rtl.capsacc.check_buildable` adds what the RTL can build (its instruction
fields bound the depths and the columns).
"""

from dataclasses import asdict, dataclass, fields

from capsacc.errors import AcceleratorConfigError

ARRAY_LIMITS = {"rows": (1, 4096), "cols": (1, 4096), "acc_bits": (1, 64), "buffer_depth": (1, 2 ** 30),
                "program_depth": (3, 2 ** 30)}
"""Bounds of each `ArrayConfig` field (inclusive)."""


@dataclass(frozen=True)
class ArrayConfig:
    """A CapsAcc instance: `rows` x `cols` PEs, accumulator width `acc_bits` (bits), rows of each
    buffer and of the partial-sum memory `buffer_depth`, program memory `program_depth` (words)."""

    rows: int = 16
    cols: int = 16
    acc_bits: int = 25
    buffer_depth: int = 16384
    program_depth: int = 1024

    def __post_init__(self):
        for field in fields(self):
            value, (low, high) = getattr(self, field.name), ARRAY_LIMITS[field.name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise AcceleratorConfigError(f"array '{field.name}' must be an integer in {low}..{high}, "
                                             f"got {value!r:.80}")

    def to_dict(self) -> dict:
        return asdict(self)
