"""Small components of the harness tests: an accumulator with a history memory."""

from amaranth import Module, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out


class Accumulator(wiring.Component):
    """Adds `data` (signed 8-bit) to `acc` (signed 16-bit, wrapping) on every cycle `en` is high;
    `clear` zeroes it. Each addition writes the new sum into a `depth`-word history memory at
    `count` (mod depth); `rd_addr` reads it back one cycle later on `rd_data`. `full` is high
    (combinationally) once `count` reaches `depth`."""

    def __init__(self, depth: int = 8):
        self.depth = depth
        super().__init__({
            "en": In(1), "clear": In(1), "data": In(signed(8)),
            "acc": Out(signed(16)), "count": Out(8), "full": Out(1),
            "rd": Out(wiring.Signature({"addr": In(range(depth)), "data": Out(signed(16))})),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.history = history = memory.Memory(shape=signed(16), depth=self.depth, init=[])
        write = history.write_port()
        read = history.read_port()
        total = self.acc + self.data
        m.d.comb += [self.full.eq(self.count >= self.depth), read.addr.eq(self.rd.addr),
                     self.rd.data.eq(read.data), write.addr.eq(self.count), write.data.eq(total)]
        with m.If(self.clear):
            m.d.sync += [self.acc.eq(0), self.count.eq(0)]
        with m.Elif(self.en):
            m.d.sync += [self.acc.eq(total), self.count.eq(self.count + 1)]
            m.d.comb += write.en.eq(1)
        return m
