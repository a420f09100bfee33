"""Shared helpers for the RTL tests: run a workload on CapsAcc in Amaranth's simulator; the registers
that generated Verilog marks `keep`."""

import re

from amaranth.sim import Simulator

from rtl import host, workloads
from capsacc.array import buffer_depths
from rtl.capsacc import CapsAcc
from rtl.widths import ACC_BITS


def run_workload(work, regions, rows: int, cols: int, acc_bits: int = ACC_BITS, buffer_depth: int = 128):
    """Load, run and read back with `rtl.host`'s commands (a workload, or a list of them run in turn
    on the same memories); ({region: array}, busy cycles, counters summed over the runs)."""
    works = [work] if isinstance(work, workloads.Workload) else work
    for memory in ("data", "weight", "routing", "psum"):
        for one in works:
            assert one.rows_used(memory) <= buffer_depth, f"{memory} image does not fit {buffer_depth} rows"
    dut = CapsAcc(rows, cols, acc_bits=acc_bits, **buffer_depths(buffer_depth), program_depth=64)
    played = {}

    async def bench(ctx):
        played["dumps"], played["waits"] = await host.play(ctx, dut, host.workload_commands(work, regions))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    results, counters = host.decode(played["dumps"], regions, len(works))
    assert counters["busy_cycles"] == sum(played["waits"])
    return results, counters["busy_cycles"], counters


def system_commands(state, program, bytes_per_cycle: int) -> tuple[list[tuple], dict]:
    """The host commands that load a `sim.golden.MachineState` (every buffer row lane group by lane
    group, the off-chip beats) and `program` (`sim.golden.host_words`) into
    `rtl.offchip.CapsAccSystem`, run it, dump the counters and read every memory back; and the
    regions `decode_system` reads."""
    from sim.golden import host_words

    rows, cols, depth = state.rows, state.cols, state.depth
    commands = []
    for memory, lanes in (("data", rows), ("weight", cols), ("routing", rows)):
        for r, row in enumerate(getattr(state, memory)):
            for group in range((lanes + 7) // 8):
                commands += host.write_command(memory, r, group, host.pack_lane_group(row, group))
    for r, row in enumerate(state.psum):
        for lane, value in enumerate(row):
            commands += host.write_command("psum", r, lane, int(value))
    groups = (bytes_per_cycle + 7) // 8
    for beat, values in enumerate(state.offchip):
        for group in range(groups):
            commands += host.write_command("offchip", beat, group, host.pack_lane_group(values, group))
    for addr, word in enumerate(host_words(program)):
        commands += host.write_command("program", addr, 0, word)
    commands += host.run_commands() + host.counter_commands()
    regions = {memory: workloads.Region(memory, 0, depth, lanes) for memory, lanes in
               (("data", rows), ("weight", cols), ("routing", rows), ("psum", cols))}
    for region in regions.values():
        commands += host.read_commands(region)
    for beat in range(len(state.offchip)):
        for group in range(groups):
            commands += [("set", "host_sel", host.SELECT["offchip"]), ("set", "host_addr", beat),
                         ("set", "host_lane", group), ("step", 1), ("dump", "host_rdata")]
    return commands, regions


def decode_system(dumps: list[int], regions: dict, beats: int, bytes_per_cycle: int):
    """(memories by name, the off-chip beats as "offchip"; counters) from `system_commands`' dumps."""
    import numpy as np

    groups = (bytes_per_cycle + 7) // 8
    tail = dumps[len(dumps) - beats * groups:] if beats else []
    results, counters = host.decode(dumps[:len(dumps) - len(tail)], regions)
    words = np.array(tail, dtype=np.uint64).reshape(beats, groups)
    results["offchip"] = words.view(np.uint8).reshape(beats, -1)[:, :bytes_per_cycle]
    return results, counters


def run_system(state, program, bytes_per_cycle: int, latency_cycles: int, acc_bits: int = ACC_BITS):
    """Run `program` (`sim.golden.host_words`) on `rtl.offchip.CapsAccSystem` (Amaranth) from the
    memories of a `sim.golden.MachineState` (its off-chip beats and program depth included);
    (memories by name as the state holds them, counters of the run)."""
    from capsacc.array import ArrayConfig
    from rtl.offchip import CapsAccSystem

    beats = len(state.offchip)
    config = ArrayConfig(state.rows, state.cols, acc_bits, **buffer_depths(state.depth), program_depth=state.program_depth,
                         offchip_bytes_per_cycle=bytes_per_cycle, offchip_latency_cycles=latency_cycles)
    dut = CapsAccSystem(config, 1 << max(1, (beats - 1).bit_length()))
    commands, regions = system_commands(state, program, bytes_per_cycle)
    played = {}

    async def bench(ctx):
        played["dumps"], played["waits"] = await host.play(ctx, dut, commands)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    results, counters = decode_system(played["dumps"], regions, beats, bytes_per_cycle)
    assert counters["busy_cycles"] == played["waits"][0]
    return results, counters


def kept_registers(verilog_text: str) -> set[str]:
    """The names of the registers that Amaranth's Verilog declares with a `keep` attribute (a
    `Signal(attrs={"keep": 1})`, one flip-flop each after `rtl.fpga.KEEP_FLIP_FLOPS`)."""
    declarations = re.findall(r"((?:\(\*[^\n]*\*\)\s*)+)reg (?:\[[^\]]*\] )?(\w+)", verilog_text)
    return {name for attributes, name in declarations if "keep" in attributes}
