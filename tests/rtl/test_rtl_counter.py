# amaranth: UnusedElaboratable=no
"""`rtl.counter.EventCounter`: settled + unsettled is the sum of the increments, across the carry between
the halves and around a clear (Amaranth simulation). (The comment above is Amaranth's switch for the
file: the objects whose widths are refused are never elaborated, which it would otherwise warn of.)"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from rtl.counter import EventCounter


def run_counter(bits: int, increments: list[int], clears: set[int]) -> list[int]:
    """The count of an EventCounter of `bits` bits in each cycle, (settled + unsettled) mod 2^bits (read
    before the cycle's clock edge), presented increments[t] and a clear in the cycles of `clears`."""
    dut = EventCounter(bits, bits // 2)
    seen = []

    async def bench(ctx):
        for cycle, increment in enumerate(increments):
            ctx.set(dut.increment, increment)
            ctx.set(dut.clear, cycle in clears)
            seen.append((ctx.get(dut.settled) + ctx.get(dut.unsettled)) % (1 << bits))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen


@pytest.mark.parametrize("bits", [8, 48])
def test_the_count_is_the_sum_of_the_increments_across_the_halves(bits):
    """Increments of up to the half's range, so the low half carries into the high one every few
    cycles (and at 8 bits the count wraps many times): every cycle reads the sum of the increments of
    the cycles before it, modulo 2^bits."""
    rng = np.random.default_rng(bits)
    half = 1 << (bits // 2)
    increments = [half - 1, half - 1, 1, 0, half - 1] + [int(v) for v in rng.integers(0, half, size=300)]
    seen = run_counter(bits, increments, set())
    running = np.concatenate([[0], np.cumsum(increments[:-1], dtype=object)]) % (1 << bits)
    assert seen == [int(v) for v in running]


def test_a_clear_starts_the_count_again_from_the_cycle_after_it():
    """Clears at cycles 10 and 30 (and back to back at 50 and 51): from two cycles after a clear the
    counter reads the increments from the cycle after it on; nothing of before survives."""
    rng = np.random.default_rng(7)
    increments = [int(v) for v in rng.integers(0, 1 << 4, size=80)]
    clears = {10, 30, 50, 51}
    seen = run_counter(8, increments, clears)
    for clear in (10, 30, 51):
        following = [increments[clear + 1]]
        for cycle in range(clear + 2, clear + 8):
            assert seen[cycle] == sum(following) % 256, (clear, cycle)
            following.append(increments[cycle])


@pytest.mark.parametrize("bits,increment_bits", [(7, 3), (0, 1), (8, 5), (8, 0)])
def test_bad_widths_are_refused(bits, increment_bits):
    """An odd or too small width, or increments wider than a half (their sum with the low half would
    carry more than one bit), are refused."""
    with pytest.raises(ValueError):
        EventCounter(bits, increment_bits)
