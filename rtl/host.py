"""The host protocol of `rtl.capsacc.CapsAcc` as command lists, and a player for Amaranth testbenches.

A host session is a list of commands over the top-level ports (the vocabulary of `sim.script`,
as plain tuples so that `rtl` imports nothing of `sim`):

    ("set", PORT, VALUE)          drive an input from now on
    ("step", N)                   N clock cycles
    ("until", PORT, VALUE, MAX)   step until an output equals VALUE (tested before each step)
    ("dump", PORT)                record an output's present value

`workload_commands` loads a `Workload`, starts it, waits for the end, dumps every counter and
reads the result regions; `decode` turns the dumped values back into arrays. `play` runs a command
list inside an Amaranth simulation testbench (`sim.add_testbench`); `sim.harness` runs the same
commands as a `sim.script.Script` (one `Script` method call per tuple: `getattr(script, c[0])(*c[1:])`)
on Amaranth or Verilator.
"""

import numpy as np

from rtl.capsacc import COUNTERS, SEL_DATA, SEL_PROGRAM, SEL_PSUM, SEL_ROUTING, SEL_WEIGHT
from rtl.offchip import SEL_OFFCHIP
from rtl.workloads import Region, Workload

SELECT = {"program": SEL_PROGRAM, "data": SEL_DATA, "weight": SEL_WEIGHT, "routing": SEL_ROUTING,
          "psum": SEL_PSUM, "offchip": SEL_OFFCHIP}
"""host_sel value of each memory ("offchip": the simulated off-chip memory of `rtl.offchip.CapsAccSystem`)."""


def pack_lane_group(row, group: int) -> int:
    """The 64-bit host word for lanes 8*group..8*group+7 of an int8 row (lane 8g in bits 7:0)."""
    word = 0
    for i, value in enumerate(row[8 * group:8 * group + 8]):
        word |= (int(value) & 0xFF) << (8 * i)
    return word


def write_command(memory: str, addr: int, lane: int, word: int) -> list[tuple]:
    """One host write (one cycle)."""
    return [("set", "host_sel", SELECT[memory]), ("set", "host_addr", addr), ("set", "host_lane", lane),
            ("set", "host_wdata", word & ((1 << 64) - 1)), ("set", "host_we", 1), ("step", 1),
            ("set", "host_we", 0)]


def load_commands(workload: Workload, zeroed: bool = True) -> list[tuple]:
    """Write the program and the memory images (int8 buffers: nonzero lane groups only when the
    memories are `zeroed`, as they start; partial sums: every lane)."""
    commands = []
    for addr, word in enumerate(workload.words()):
        commands += write_command("program", addr, 0, word)
    for memory in ("data", "weight", "routing"):
        for base, rows in getattr(workload, memory).items():
            for r, row in enumerate(np.asarray(rows)):
                for group in range((len(row) + 7) // 8):
                    word = pack_lane_group(row, group)
                    if word or not zeroed:
                        commands += write_command(memory, base + r, group, word)
    for base, rows in workload.psum.items():
        for r, row in enumerate(np.asarray(rows)):
            for lane, value in enumerate(row):
                commands += write_command("psum", base + r, lane, int(value))
    return commands


def run_commands(max_cycles: int = 1_000_000) -> list[tuple]:
    """Pulse start, wait until busy falls (the wait's length is the busy cycle count)."""
    return [("set", "start", 1), ("step", 1), ("set", "start", 0), ("until", "busy", 0, max_cycles),
            ("dump", "done")]


def counter_commands() -> list[tuple]:
    """Dump every counter, in `COUNTERS` order."""
    commands = []
    for index in range(len(COUNTERS)):
        commands += [("set", "counter_sel", index), ("dump", "counter")]
    return commands


def read_commands(region: Region) -> list[tuple]:
    """Read a region: one cycle and one dump per int8 lane group or partial-sum lane."""
    commands = [("set", "host_sel", SELECT[region.memory])]
    per_row = region.lanes if region.memory == "psum" else (region.lanes + 7) // 8
    for r in range(region.n_rows):
        for lane in range(per_row):
            commands += [("set", "host_addr", region.base + r), ("set", "host_lane", lane), ("step", 1),
                         ("dump", "host_rdata")]
    return commands


def workload_commands(workload: Workload | list[Workload], regions: dict[str, Region],
                      max_cycles: int = 1_000_000) -> list[tuple]:
    """Load, run and dump the counters of each workload in turn (one run each; a list shares the
    memories, as the runs of one operation do), then read every region (in `regions` order)."""
    commands = []
    for index, work in enumerate([workload] if isinstance(workload, Workload) else workload):
        commands += load_commands(work, zeroed=index == 0) + run_commands(max_cycles) + counter_commands()
    for region in regions.values():
        commands += read_commands(region)
    return commands


def _decode_region(values: list[int], region: Region) -> np.ndarray:
    out = np.zeros((region.n_rows, region.lanes), dtype=np.int64)
    it = iter(values)
    for r in range(region.n_rows):
        if region.memory == "psum":
            for lane in range(region.lanes):
                word = next(it) & ((1 << 64) - 1)
                out[r, lane] = word - (1 << 64) if word >> 63 else word
        else:
            for group in range((region.lanes + 7) // 8):
                word = next(it)
                for i in range(min(8, region.lanes - 8 * group)):
                    byte = (word >> (8 * i)) & 0xFF
                    out[r, 8 * group + i] = byte - 256 if byte > 127 else byte
    return out


def decode(dumps: list[int], regions: dict[str, Region], runs: int = 1) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """(results by region name, counters by name summed over the `runs` runs) from the dumped values
    of `workload_commands` (one value per dump, in order; each run's first is `done`)."""
    counters = dict.fromkeys((name for name, _ in COUNTERS), 0)
    position = 0
    for _ in range(runs):
        if len(dumps) <= position or dumps[position] != 1:
            raise ValueError("a run did not end with done = 1")
        for name, value in zip(counters, dumps[position + 1:position + 1 + len(COUNTERS)]):
            counters[name] += value
        position += 1 + len(COUNTERS)
    results = {}
    for name, region in regions.items():
        per_row = region.lanes if region.memory == "psum" else (region.lanes + 7) // 8
        count = region.n_rows * per_row
        results[name] = _decode_region(dumps[position:position + count], region)
        position += count
    return results, counters


async def play(ctx, dut, commands: list[tuple]) -> tuple[list[int], list[int]]:
    """Run commands in an Amaranth testbench; (dumped values, cycles each `until` waited).
    Raises TimeoutError when an `until` reaches its limit."""
    dumps, waits = [], []
    for command in commands:
        match command:
            case ("set", port, value):
                ctx.set(getattr(dut, port), value)
            case ("step", cycles):
                for _ in range(cycles):
                    await ctx.tick()
            case ("until", port, value, max_cycles):
                waited = 0
                while ctx.get(getattr(dut, port)) != value:
                    if waited == max_cycles:
                        raise TimeoutError(f"{port} did not reach {value} within {max_cycles} cycles")
                    await ctx.tick()
                    waited += 1
                waits.append(waited)
            case ("dump", port):
                dumps.append(ctx.get(getattr(dut, port)))
            case _:
                raise ValueError(f"unknown host command {command!r}")
    return dumps, waits
