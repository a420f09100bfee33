"""Drive a `CapsAcc` from an Amaranth simulation testbench (async functions of the testbench
context `ctx`), following the host protocol of `rtl.capsacc`.

Every access takes one clock cycle; reads return the value presented one cycle earlier.
"""

import numpy as np

from rtl.capsacc import COUNTERS, SEL_DATA, SEL_PROGRAM, SEL_PSUM, SEL_ROUTING, SEL_WEIGHT
from rtl.workloads import Workload

SELECT = {"program": SEL_PROGRAM, "data": SEL_DATA, "weight": SEL_WEIGHT, "routing": SEL_ROUTING,
          "psum": SEL_PSUM}
"""host_sel value of each memory."""


def pack_lane_group(row, group: int) -> int:
    """The 64-bit host word for lanes 8*group..8*group+7 of an int8 row (lane 8g in bits 7:0)."""
    word = 0
    for i, value in enumerate(row[8 * group:8 * group + 8]):
        word |= (int(value) & 0xFF) << (8 * i)
    return word


async def write(ctx, dut, memory: str, addr: int, lane: int, word: int) -> None:
    """One host write cycle."""
    ctx.set(dut.host_sel, SELECT[memory])
    ctx.set(dut.host_addr, addr)
    ctx.set(dut.host_lane, lane)
    ctx.set(dut.host_wdata, word & ((1 << 64) - 1))
    ctx.set(dut.host_we, 1)
    await ctx.tick()
    ctx.set(dut.host_we, 0)


async def load(ctx, dut, workload: Workload) -> None:
    """Write a workload's program and memory images (only nonzero int8 lane groups; psum rows whole)."""
    for addr, word in enumerate(workload.words()):
        await write(ctx, dut, "program", addr, 0, word)
    for memory in ("data", "weight", "routing"):
        for base, rows in getattr(workload, memory).items():
            for r, row in enumerate(np.asarray(rows)):
                for group in range((len(row) + 7) // 8):
                    word = pack_lane_group(row, group)
                    if word:
                        await write(ctx, dut, memory, base + r, group, word)
    for base, rows in workload.psum.items():
        for r, row in enumerate(np.asarray(rows)):
            for lane, value in enumerate(row):
                await write(ctx, dut, "psum", base + r, lane, int(value))


async def run(ctx, dut, max_cycles: int = 1_000_000) -> int:
    """Pulse start and wait for done; the number of cycles busy was high."""
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)
    cycles = 0
    while ctx.get(dut.busy):
        await ctx.tick()
        cycles += 1
        if cycles > max_cycles:
            raise TimeoutError(f"CapsAcc still busy after {max_cycles} cycles")
    assert ctx.get(dut.done)
    return cycles


async def read_int8(ctx, dut, memory: str, base: int, n_rows: int, lanes: int) -> np.ndarray:
    """(n_rows, lanes) int8 values of an int8 buffer from row `base`."""
    out = np.zeros((n_rows, lanes), dtype=np.int64)
    ctx.set(dut.host_sel, SELECT[memory])
    for r in range(n_rows):
        for group in range((lanes + 7) // 8):
            ctx.set(dut.host_addr, base + r)
            ctx.set(dut.host_lane, group)
            await ctx.tick()
            word = ctx.get(dut.host_rdata)
            for i in range(min(8, lanes - 8 * group)):
                byte = (word >> (8 * i)) & 0xFF
                out[r, 8 * group + i] = byte - 256 if byte > 127 else byte
    return out


async def read_psum(ctx, dut, base: int, n_rows: int, lanes: int) -> np.ndarray:
    """(n_rows, lanes) partial sums (signed) from row `base`."""
    out = np.zeros((n_rows, lanes), dtype=np.int64)
    ctx.set(dut.host_sel, SEL_PSUM)
    for r in range(n_rows):
        for lane in range(lanes):
            ctx.set(dut.host_addr, base + r)
            ctx.set(dut.host_lane, lane)
            await ctx.tick()
            word = ctx.get(dut.host_rdata)
            out[r, lane] = word - (1 << 64) if word >> 63 else word
    return out


async def read_counters(ctx, dut) -> dict[str, int]:
    """All performance counters by name."""
    values = {}
    for index, (name, _) in enumerate(COUNTERS):
        ctx.set(dut.counter_sel, index)
        values[name] = ctx.get(dut.counter)
    return values
