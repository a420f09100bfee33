"""The DMA engine: random programs that move rows between the off-chip memory and the buffers while
MATMULs and ACTs run; memories, off-chip image, counters and cycles against sim.golden.execute and
rtl.isa.timing."""

import numpy as np
import pytest

from capsacc.schedule import overlay_loads, overlay_program, resident_words
from rtl.isa import (Act, Dma, MatMul, Wait, assemble, beats_per_row, buffer_lanes, disassemble, dma_cycles, encode,
                     program_cycles)
from rtl_bench import run_system
from sim import golden
from sim.host import word_beats

DEPTH = 32
HALF = DEPTH // 2
BEATS = 24


def segment(rng, rows: int, cols: int, half: int, bytes_per_cycle: int) -> list:
    """DMA transfers on the rows of the other half, MATMULs and row-mode ACTs on the rows of `half`
    of every buffer, then a WAIT: the one rule a program keeps (transfers and compute never share a
    row between two WAITs)."""
    base, other = half * HALF, (1 - half) * HALF
    program = []
    for _ in range(int(rng.integers(1, 4))):
        buffer = str(rng.choice(["data", "weight", "routing"]))
        per_row = beats_per_row(buffer_lanes(buffer, rows, cols), bytes_per_cycle)
        n = int(rng.integers(1, min(6, BEATS // per_row) + 1))
        program.append(Dma(buffer, other + int(rng.integers(0, HALF - n + 1)), n,
                           int(rng.integers(0, BEATS - n * per_row + 1)), store=bool(rng.integers(2))))
    for _ in range(int(rng.integers(2, 5))):
        if rng.random() < 0.6:
            n = int(rng.integers(1, 6))
            program.append(MatMul(d_addr=base + int(rng.integers(0, HALF - n + 1)),
                                  w_addr=base + int(rng.integers(0, HALF - rows + 1)),
                                  p_addr=int(rng.integers(DEPTH)), n=n, accumulate=bool(rng.integers(2)),
                                  src=str(rng.choice(["data", "routing"]))))
        else:
            n = int(rng.integers(1, 4))
            program.append(Act(func=str(rng.choice(["none", "relu"])), p_addr=int(rng.integers(DEPTH)), n=n,
                               length=cols, shift=int(rng.integers(0, 16)),
                               dst=str(rng.choice(["data", "weight", "routing"])),
                               dst_addr=base + int(rng.integers(0, HALF - n + 1))))
    return program + [Wait()]


@pytest.mark.parametrize("seed,rows,cols,bytes_per_cycle,latency", [
    (0, 2, 3, 2, 3), (1, 4, 4, 16, 1), (2, 3, 2, 1, 5), (3, 4, 4, 4, 2), (4, 2, 2, 8, 7)])
def test_dma_programs_match_golden_machine(seed, rows, cols, bytes_per_cycle, latency, record_property):
    rng = np.random.default_rng(seed)
    state = golden.MachineState(
        rows, cols, DEPTH,
        data=rng.integers(-128, 128, size=(DEPTH, rows)), weight=rng.integers(-128, 128, size=(DEPTH, cols)),
        routing=rng.integers(-128, 128, size=(DEPTH, rows)),
        psum=rng.integers(-(1 << 24), 1 << 24, size=(DEPTH, cols)), bytes_per_cycle=bytes_per_cycle,
        offchip=rng.integers(0, 256, size=(BEATS, bytes_per_cycle)).astype(np.uint8))
    program = [instruction for k in range(4) for instruction in segment(rng, rows, cols, k % 2, bytes_per_cycle)]
    got, counters = run_system(state, program, bytes_per_cycle, latency)
    want_counters = golden.execute(program, state)
    for name in ("data", "weight", "routing", "psum"):
        assert np.array_equal(got[name], getattr(state, name)), name
    assert np.array_equal(got["offchip"], state.offchip)
    assert {name: counters[name] for name in want_counters} == {**want_counters,
                                                               "instructions": len(program) + 1}
    assert counters["busy_cycles"] == program_cycles(program, rows, cols, bytes_per_cycle, latency)
    record_property("cycles", counters["busy_cycles"])


@pytest.mark.parametrize("seed,rows,cols,bytes_per_cycle,latency,program_depth", [
    (5, 2, 3, 2, 3, 16), (6, 4, 4, 16, 1, 8), (7, 3, 2, 1, 5, 16), (8, 4, 4, 4, 7, 32)])
def test_a_program_loads_its_continuation_and_runs_it(seed, rows, cols, bytes_per_cycle, latency, program_depth,
                                                      record_property):
    """An overlay program (`overlay_program`) of random DMA segments, longer than the program
    memory: the host writes its first half-memory segment and the off-chip image with the later
    segments' words, and starts once; the program loads each next segment into the other half while
    it runs, the program counter wrapping. Every memory, the off-chip image and the counters equal
    `sim.golden.execute`'s, the busy cycles `program_cycles` of the whole program."""
    rng = np.random.default_rng(seed)
    stream = [instruction for k in range(program_depth // 2) for instruction in segment(rng, rows, cols, k % 2, bytes_per_cycle)]
    image_beats = [BEATS]

    def allocate(beats: int) -> int:
        first = image_beats[0]
        image_beats[0] += beats
        return first

    program = overlay_program(stream, program_depth, bytes_per_cycle, allocate)
    words = assemble(program)
    loads = overlay_loads(program, program_depth)
    assert len(words) > 2 * program_depth and len(loads) >= 4
    half, per_segment = program_depth // 2, program_depth // 2 - 3
    for k in range(len(loads)):  # segment k: the load of segment k + 1 into the other half, the stream, two WAITs
        words_k = program[k * half:(k + 1) * half]
        assert words_k[0] == Dma("program", (k + 1) % 2 * half, loads[k][2], loads[k][0])
        assert words_k[1:-2] == stream[k * per_segment:(k + 1) * per_segment] and words_k[-2:] == [Wait(), Wait()]
    assert program[len(loads) * half:] == stream[len(loads) * per_segment:]
    offchip = np.zeros((image_beats[0], bytes_per_cycle), dtype=np.uint8)
    offchip[:BEATS] = rng.integers(0, 256, size=(BEATS, bytes_per_cycle))
    for ext, first, n in loads:
        beats = word_beats(words[first:first + n], bytes_per_cycle)
        offchip[ext:ext + len(beats)] = beats
    state = golden.MachineState(
        rows, cols, DEPTH,
        data=rng.integers(-128, 128, size=(DEPTH, rows)), weight=rng.integers(-128, 128, size=(DEPTH, cols)),
        routing=rng.integers(-128, 128, size=(DEPTH, rows)),
        psum=rng.integers(-(1 << 24), 1 << 24, size=(DEPTH, cols)), bytes_per_cycle=bytes_per_cycle,
        offchip=offchip, program_depth=program_depth)
    resident = words[:resident_words(len(words), program_depth)]
    assert len(resident) == program_depth // 2
    got, counters = run_system(state, resident, bytes_per_cycle, latency)
    want_counters = golden.execute(resident, state)
    for name in ("data", "weight", "routing", "psum"):
        assert np.array_equal(got[name], getattr(state, name)), name
    assert np.array_equal(got["offchip"], state.offchip)
    assert {name: counters[name] for name in want_counters} == {**want_counters, "instructions": len(program) + 1}
    assert counters["busy_cycles"] == program_cycles(program, rows, cols, bytes_per_cycle, latency)
    record_property("cycles", counters["busy_cycles"])


def test_golden_refuses_a_word_executed_while_a_load_may_write_it():
    """Fetch runs two words ahead: a word a program load writes runs as loaded only from the second
    word after the next WAIT (or DMA) on."""
    def state():
        return golden.MachineState(2, 2, DEPTH, bytes_per_cycle=8, program_depth=8,
                                   offchip=word_beats([encode(Wait())], 8))

    with pytest.raises(ValueError, match="program word 1"):  # the WAIT itself
        golden.execute([Dma("program", 1, 1, 0), Wait()], state())
    with pytest.raises(ValueError, match="program word 2"):  # the word after the WAIT
        golden.execute([Dma("program", 2, 1, 0), Wait(), Wait()], state())
    # Word 3 runs as loaded (a WAIT instead of the HALT the host wrote), then word 4's HALT.
    assert golden.execute([Dma("program", 3, 1, 0), Wait(), Wait()], state())["instructions"] == 5


def test_transfers_overlap_compute():
    """A load issued before a MATMUL runs under it: the program takes less than the two apart."""
    rows, cols, width, latency = 4, 4, 4, 3
    load = Dma("data", HALF, 12, 0)
    matmul = MatMul(d_addr=0, w_addr=0, p_addr=0, n=12)
    both = program_cycles([load, matmul, Wait()], rows, cols, width, latency)
    alone = program_cycles([load, Wait()], rows, cols, width, latency) + program_cycles([matmul], rows, cols)
    assert both < alone
    assert dma_cycles(load, rows, cols, width, latency) == 12 + latency + 1


@pytest.mark.parametrize("instruction", [Dma("weight", 3, 7, 123456, store=True), Dma("routing", 16383, 16383, 2 ** 29 - 1),
                                         Wait()])
def test_dma_round_trip(instruction):
    assert disassemble(encode(instruction)) == instruction


def test_dma_fields_are_checked():
    with pytest.raises(ValueError, match="n: 0"):
        encode(Dma("data", 0, 0, 0))
    with pytest.raises(ValueError, match="ext"):
        encode(Dma("data", 0, 1, 2 ** 29))
    with pytest.raises(ValueError, match="buffer"):
        encode(Dma("psum", 0, 1, 0))


def offchip_answers(latency: int, values: dict, requests: list) -> list[tuple[int, int]]:
    """(rvalid, rdata) of an `rtl.offchip.OffchipMemory` of L = `latency` (W = 2 bytes, 8 beats) in every
    cycle after the host wrote `values` (beat -> value): a read request of each beat of `requests` in turn,
    one a cycle (None: no request), then L + 1 cycles without one."""
    from amaranth.sim import Simulator

    from rtl.offchip import OffchipMemory

    dut = OffchipMemory(bytes_per_cycle=2, latency_cycles=latency, depth=8)
    seen = []

    async def bench(ctx):
        for beat, value in values.items():
            ctx.set(dut.host_addr, beat)
            ctx.set(dut.host_wdata, value)
            ctx.set(dut.host_we, 1)
            await ctx.tick()
        ctx.set(dut.host_we, 0)
        for beat in list(requests) + [None] * (latency + 1):
            ctx.set(dut.port.read, beat is not None)
            ctx.set(dut.port.addr, beat or 0)
            seen.append((ctx.get(dut.port.rvalid), ctx.get(dut.port.rdata)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen


@pytest.mark.parametrize("latency", [1, 2, 3, 5, 6, 7, 8, 9, 64])
def test_offchip_model_answers_a_read_exactly_latency_cycles_later(latency):
    """`rtl.offchip.OffchipMemory`: a read request in cycle t (back to back with a second one) is
    answered in cycles t + L and t + L + 1 with the beats the host wrote, `rvalid` high only then;
    with L >= 2 the request passes through the model's input register, which is the first of the L
    cycles, not one more; from L = 7 the data's delay is a register, a ring memory (`RING_MIN_STAGES`) of 2 ** k
    rows for the L - 5 stages, then two registers (7: two of two, 9: four of four, 64: 59 of 64)."""
    seen = offchip_answers(latency, {3: 0x1234, 4: 0xBEEF}, [3, 4])
    assert [cycle for cycle, (valid, _) in enumerate(seen) if valid] == [latency, latency + 1]
    assert [seen[latency][1], seen[latency + 1][1]] == [0x1234, 0xBEEF]


@pytest.mark.parametrize("latency", [4, 7, 11, 64])
def test_offchip_model_delays_every_read_by_the_latency_through_many_turns_of_its_ring(latency):
    """Random read requests (about two in three cycles, random beats) for 3 L + 40 cycles: every
    answer comes exactly L cycles after its request with the beat's value, `rvalid` high only then,
    so the ring memory's rows (L >= 7) are neither read early nor overwritten before they are read."""
    rng = np.random.default_rng(latency)
    values = {beat: int(value) for beat, value in enumerate(rng.integers(0, 1 << 16, size=8))}
    requests = [int(rng.integers(8)) if rng.random() < 0.67 else None for _ in range(3 * latency + 40)]
    seen = offchip_answers(latency, values, requests)
    want = [(0, None)] * latency + [(0, None) if beat is None else (1, values[beat]) for beat in requests]
    assert [valid for valid, _ in seen] == [valid for valid, _ in want] + [0] * (len(seen) - len(want))
    assert [data for (valid, data) in seen if valid] == [value for valid, value in want if valid]
