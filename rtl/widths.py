"""Datapath widths of CapsAcc, derived from the search space (pure Python: no Amaranth import,
so the `nascaps rtl` command line can show the defaults cheaply).

int8 x int8 products lie in [-16256, 16384] (-128 * 127 and -128 * -128), so a sum of T products
lies in [-16256 T, 16384 T] and needs `product_sum_bits(T)` two's-complement bits.
"""

MAX_SUM_TERMS = 9 * 9 * 64 * 64 + 1
"""The longest sum of int8 products an operation of the search space accumulates: a convolution
with kernel 9 over 64 channels of 64-atom capsules, K = k²·ch·caps + 1 (bias) = 331,777 terms
(convcaps3d: k³·caps + 1 = 46,657; classcaps: caps_in <= 64; a routing sum runs over at most
I = 64²·64 = 262,144 input capsules)."""


def product_sum_bits(terms: int) -> int:
    """Two's-complement bits that hold every sum of `terms` int8 x int8 products exactly."""
    return max(terms * (1 << 14), 1).bit_length() + 1


ACC_BITS = product_sum_bits(MAX_SUM_TERMS)
"""Accumulator and partial-sum memory width, 34 bits: MAX_SUM_TERMS · 2^14 = 5,435,834,368 < 2^33,
so no operation of the search space can wrap (the PE array needs only product_sum_bits(R))."""
