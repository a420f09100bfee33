"""Per-event energies of the calibrated model, from published 45 nm figures.

The calibrated model counts events on the RTL (multiply-accumulates, register writes of the weight
chain and the PE pipeline, buffer reads and writes) and prices each with the figures below. Sources
(see docs/energy_tables.md):

- [H14] M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014,
  45 nm, 0.9 V: 8-bit integer multiply 0.2 pJ; integer add 0.03 pJ (8-bit), 0.05 pJ (16-bit),
  0.1 pJ (32-bit); SRAM read of 64 bits 10 pJ (8 KB), 20 pJ (32 KB), 100 pJ (1 MB), which follows
  10 pJ * sqrt(capacity / 8 KB).
  Off-chip DRAM: 1.3 to 2.6 nJ per 64-bit access (the same table; M. Horowitz's figure, restated
  by S. Han et al., "Learning both weights and connections", NeurIPS 2015, Table 1, as 640 pJ per
  32-bit DRAM access: 160 pJ per byte).
- [A14] Aladdin (Shao et al., ISCA 2014), 40 nm, as tabulated in Accelergy's component library:
  1-bit register 0.009 pJ per access.
- [I45] Intel's 45 nm 6T SRAM bit cell, 0.346 um²; an SRAM macro's area is its bit cells times
  `SRAM_OVERHEAD` (decoders, sense amplifiers, wiring), a factor this project chose (2.0), not a
  published figure. (The NASCaps release's 45 nm `mem.json.gz` holds registers only, no SRAM.)

Only dynamic energy of counted events is modelled; clock tree and leakage are not (state this
beside any figure derived from it).
"""

import math
from dataclasses import asdict, dataclass

MULT8_PJ = 0.2
"""[H14] 8-bit integer multiply, pJ."""
ADD_PJ = {8: 0.03, 16: 0.05, 32: 0.1}
"""[H14] integer add by width in bits, pJ."""
REGISTER_BIT_PJ = 0.009
"""[A14] one register bit written, pJ (40 nm, used unscaled for 45 nm)."""
SRAM_64BIT_8KB_PJ = 10.0
"""[H14] one 64-bit access of an 8 KB SRAM, pJ."""
OFFCHIP_PJ_PER_BYTE = 1300.0 / 8
"""[H14] one byte moved to or from off-chip DRAM, pJ: the low end of 1.3-2.6 nJ per 64-bit DRAM access
(1.3 nJ / 8 bytes = 162.5 pJ per byte; 640 pJ per 32-bit access in Han et al.'s restatement is 160)."""
SRAM_BIT_UM2 = 0.346
"""[I45] one 6T SRAM bit cell, um²."""
SRAM_OVERHEAD = 2.0
"""SRAM macro area over its bit cells: this project's assumption (docs/energy_tables.md)."""


def add_pJ(bits: int) -> float:
    """Energy of a `bits`-wide integer add, pJ: [H14] interpolated linearly between tabulated widths."""
    widths = sorted(ADD_PJ)
    if bits <= widths[0]:
        return ADD_PJ[widths[0]] * bits / widths[0]
    for low, high in zip(widths, widths[1:]):
        if bits <= high:
            return ADD_PJ[low] + (ADD_PJ[high] - ADD_PJ[low]) * (bits - low) / (high - low)
    return ADD_PJ[widths[-1]] * bits / widths[-1]


def sram_access_pJ(width_bits: int, capacity_bytes: int) -> float:
    """Energy of one access of `width_bits` to an SRAM of `capacity_bytes`, pJ:
    [H14] 10 pJ per 64 bits at 8 KB, scaled by sqrt(capacity / 8 KB) and linearly in width."""
    return SRAM_64BIT_8KB_PJ * (width_bits / 64) * math.sqrt(capacity_bytes / 8192)


def sram_area_um2(width_bits: int, depth: int) -> float:
    """Area of an SRAM macro of `depth` words of `width_bits`, um²: [I45] bit cells x `SRAM_OVERHEAD`."""
    return width_bits * depth * SRAM_BIT_UM2 * SRAM_OVERHEAD


EVENTS = ("mac", "weight_shift", "data_read", "weight_read", "psum_read", "psum_write", "element_write",
          "activation")
"""Events the calibrated model counts (from the RTL's performance counters):

mac: one PE multiply-accumulate (`pe_active_cycles`); weight_shift: one PE's weight register
written by a weight load (`weight_load_cycles` x C: one row of C PEs per load cycle); data_read: one R-lane row read from the
data or routing buffer; weight_read: one C-lane row read from the weight buffer; psum_read /
psum_write: one C-lane partial-sum row; element_write: one int8 result written by the activation
unit; activation: one element through the activation unit."""


@dataclass(frozen=True)
class EventEnergies:
    """Energy of one event of each kind (`EVENTS`), pJ."""

    mac: float
    weight_shift: float
    data_read: float
    weight_read: float
    psum_read: float
    psum_write: float
    element_write: float
    activation: float

    @classmethod
    def from_tables(cls, config) -> "EventEnergies":
        """Energies of the CapsAcc of `config` (a `capsacc.array.ArrayConfig`: R x C, `acc_bits`, the
        depth of each buffer):

        mac = [H14] 8-bit multiply + `acc_bits` add + [A14] (8 + acc_bits) register bits (the
        datum and partial-sum pipeline registers); weight_shift = [A14] 8 register bits; buffer
        rows = [H14] SRAM access of the row width at that buffer's capacity (writes priced as reads;
        a routing-buffer row read is priced as a data-buffer one);
        element_write = an 8-bit access of the weight buffer; activation = an `acc_bits` add.
        """
        rows, cols, acc_bits = config.rows, config.cols, config.acc_bits
        data_bits, weight_bits, psum_bits = 8 * rows, 8 * cols, acc_bits * cols
        psum = sram_access_pJ(psum_bits, psum_bits * config.psum_depth // 8)
        return cls(mac=MULT8_PJ + add_pJ(acc_bits) + REGISTER_BIT_PJ * (8 + acc_bits),
                   weight_shift=REGISTER_BIT_PJ * 8,
                   data_read=sram_access_pJ(data_bits, data_bits * config.data_depth // 8),
                   weight_read=sram_access_pJ(weight_bits, weight_bits * config.weight_depth // 8),
                   psum_read=psum, psum_write=psum,
                   element_write=sram_access_pJ(8, weight_bits * config.weight_depth // 8),
                   activation=add_pJ(acc_bits))

    def to_dict(self) -> dict:
        return asdict(self)
