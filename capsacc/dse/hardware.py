"""Power, energy and area figures of a systolic accelerator at 45 nm, each with its source.

Sources (docs/energy_tables.md):
- PE and accumulator register: the NASCaps/CapsAcc 45 nm syntheses (`capsacc.tables`), by clock
  period, accumulator width, inputs per PE and pipeline stages.
- SRAM access energy: Horowitz, "Computing's energy problem", ISSCC 2014: 10 pJ per 64-bit access
  of an 8 KB SRAM, following 10 pJ·sqrt(capacity / 8 KB) (20 pJ at 32 KB, 100 pJ at 1 MB).
  A one-byte word access is taken as 1/8 of a 64-bit access (energy per bit).
- DRAM access energy: Horowitz 2014, 1.3-2.6 nJ per 64 bits; the midpoint, 1.95 nJ, per 64 bits.
- SRAM area: Intel's 45 nm 6T bit cell, 0.346 um², times `sram_overhead` (decoders, sense
  amplifiers, wiring), a parameter; 2.0 by default (an assumption, stated in every result).
- Activation unit: one lane per array column, each a 32-bit integer multiplier and adder pair
  twice over (Horowitz 2014: 32-bit multiply 3.1 pJ, 3495 um²; 32-bit add 0.1 pJ, 137 um²).
"""

import math
from dataclasses import dataclass

from capsacc.tables import pe_figures, register_figures

HOROWITZ_SRAM_8KB_PJ_PER_64BIT = 10.0
"""Horowitz ISSCC 2014: energy of a 64-bit access to an 8 KB SRAM, pJ."""
HOROWITZ_DRAM_PJ_PER_64BIT = 1950.0
"""Horowitz ISSCC 2014: DRAM 1.3-2.6 nJ per 64-bit access; the midpoint, pJ."""
HOROWITZ_MULT32_PJ, HOROWITZ_MULT32_UM2 = 3.1, 3495.0
"""Horowitz ISSCC 2014: 32-bit integer multiply, pJ and um²."""
HOROWITZ_ADD32_PJ, HOROWITZ_ADD32_UM2 = 0.1, 137.0
"""Horowitz ISSCC 2014: 32-bit integer add, pJ and um²."""
SRAM_BITCELL_UM2 = 0.346
"""Intel 45 nm 6T SRAM bit cell, um²."""
ACTIVATION_LANE_UM2 = 2 * (HOROWITZ_MULT32_UM2 + HOROWITZ_ADD32_UM2)
"""One activation-unit lane: two 32-bit multipliers and two 32-bit adders, um²."""


def sram_pj_per_word(sram_kB: float, word_bits: int = 8) -> float:
    """Energy of one word access to an SRAM of `sram_kB` kB, pJ (Horowitz's square-root fit)."""
    return HOROWITZ_SRAM_8KB_PJ_PER_64BIT * math.sqrt(sram_kB / 8.0) * word_bits / 64


def dram_pj_per_word(word_bits: int = 8) -> float:
    """Energy of one word access to DRAM, pJ."""
    return HOROWITZ_DRAM_PJ_PER_64BIT * word_bits / 64


def sram_area_um2(sram_kB: float, overhead: float) -> float:
    """Area of an SRAM of `sram_kB` kB: bit cells times `overhead`, um²."""
    return sram_kB * 1024 * 8 * SRAM_BITCELL_UM2 * overhead


@dataclass(frozen=True)
class ArrayFigures:
    """Per-unit figures of the array at one clock period: one PE (8-bit inputs, `acc_bits`
    output, one input, one stage) and one `acc_bits` accumulator register, mW and um²."""

    period_ns: float
    pe_power_mW: float
    pe_area_um2: float
    reg_power_mW: float
    reg_area_um2: float

    @classmethod
    def at(cls, period_ns: float, acc_bits: int = 25) -> "ArrayFigures":
        """From the NASCaps 45 nm tables; `AcceleratorConfigError` if they lack the period."""
        pe_power, pe_area = pe_figures(period_ns, acc_bits, 1, 1)
        reg_power, reg_area = register_figures(period_ns, acc_bits)
        return cls(float(period_ns), pe_power, pe_area, reg_power, reg_area)
