"""A performance counter whose adders stay short: `EventCounter`.

An event count of `bits` bits (`rtl.capsacc.COUNTER_BITS`, 48) added as one 48-bit sum behind the event's
logic is a long carry chain behind a long path, and one start signal clearing every counter is a net of
hundreds of flip-flops' resets (an ECP5 build measured both among its latest paths, docs/rtl.md). Here each
stage is a register:

- the increment is registered twice (`staged`, then `pending`: the events' logic sits with the units that
  raise them, across the device from the counters, and each register takes half of that route) and added
  in the cycle after;
- the count is two halves of bits / 2: the low half adds the pending increment, its carry out is registered
  and added into the high half a cycle later;
- `clear` is registered by the counter itself, so that each counter's reset has a net of its own.

What it reports, (`settled` + `unsettled`) mod 2^bits (one adder, shared by the counters a multiplexer
selects from), is in every cycle the sum modulo 2^bits of the increments presented before that cycle since
the last clear: a clear in cycle t drops the increments of cycle t and before (the registered clear zeroes
the count and the `pending` increment), and from cycle t + 2 on the counter reads the sum of the increments
from cycle t + 1 on.
"""

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class EventCounter(wiring.Component):
    """A `bits`-bit event counter (`bits` even) of increments of `increment_bits` bits (at most bits / 2).

    Ports: `increment` (events this cycle), `clear` (start again); `settled` (bits) and `unsettled`
    (bits / 2 + 2: the two registered increments not yet added, plus the carry not yet in the high half
    at bit bits / 2), whose sum is the count (module docstring)."""

    def __init__(self, bits: int, increment_bits: int):
        if bits < 2 or bits % 2:
            raise ValueError(f"bits: {bits} is not an even count >= 2")
        if not 1 <= increment_bits <= bits // 2:
            raise ValueError(f"increment_bits: {increment_bits} outside 1..{bits // 2}")
        self.bits, self.increment_bits = bits, increment_bits
        super().__init__({"increment": In(increment_bits), "clear": In(1),
                          "settled": Out(bits), "unsettled": Out(bits // 2 + 2)})

    def elaborate(self, platform):
        m = Module()
        half = self.bits // 2
        staged, pending = Signal(self.increment_bits), Signal(self.increment_bits)
        low, high, carry = Signal(half), Signal(half), Signal()
        clear = Signal(attrs={"keep": 1})  # one per counter: `rtl.fpga` keeps it from being merged
        m.d.sync += [staged.eq(self.increment), clear.eq(self.clear)]
        with m.If(clear):
            m.d.sync += [pending.eq(0), low.eq(0), high.eq(0), carry.eq(0)]
        with m.Else():
            m.d.sync += [pending.eq(staged), Cat(low, carry).eq(low + pending), high.eq(high + carry)]
        m.d.comb += [self.settled.eq(Cat(low, high)),
                     self.unsettled.eq(pending + staged + Cat(Const(0, half), carry))]
        return m
