"""`capsacc.schedule`: the control unit's timing and the DMA session's ordering, the one definition
that `rtl.isa` (timing, tested against the RTL in tests/rtl), `sim.host.DmaSession` and the
calibrated model's total cycles share. No RTL here: the rules as their docstrings state them."""

from hypothesis import given, settings
from hypothesis import strategies as st

from capsacc.mapping import result_delay_cycles
from capsacc.schedule import (Act, Dma, DmaScheduler, MatMul, PendingRows, Wait, act_unit_cycles,
                              activation_latency_cycles, beats_per_row, dma_cycles, overlay_loads, resident_words,
                              timing)

R, C, W, L = 4, 4, 2, 9


def test_a_load_then_wait_then_matmul_issue_as_the_rules_say():
    load = Dma("data", 0, 3, 0)
    program = [load, Wait(), MatMul(0, 0, 0, 3), Act("relu", 0, 3, 4, 0, "weight", 8)]
    issue = timing(program, R, C, W, L).issue
    transfer = 3 * beats_per_row(R, W) + L + 1  # a load: T beats + latency + 1
    assert dma_cycles(load, R, C, W, L) == transfer
    assert issue[0] == 2 and issue[1] == 2 + transfer  # the WAIT waits for the engine
    assert issue[2] == issue[1] + 1  # the MATMUL the cycle after
    last_read = issue[2] + 1 + 3  # streams rows F + 2 .. F + 1 + n
    assert issue[3] == last_read + result_delay_cycles(R, C) + 1  # the ACT waits for every result
    done = issue[3] + 2 + act_unit_cycles(C, "relu", 3, 4)
    assert issue[4] == done  # the HALT: the next word offered the cycle after the unit's done
    assert act_unit_cycles(C, "relu", 3, 4) == 3 + activation_latency_cycles(C, 1) + 1


def test_a_store_and_a_load_share_the_engine():
    store, load = Dma("weight", 0, 2, 0, store=True), Dma("data", 0, 5, 4)
    issue = timing([store, load], R, C, W, L).issue
    assert issue[1] - issue[0] == dma_cycles(store, R, C, W, L) == 2 * beats_per_row(C, W) + 3
    assert issue[2] == issue[1] + dma_cycles(load, R, C, W, L)  # the HALT waits for the engine


def scheduler(program_depth: int = 64) -> DmaScheduler:
    return DmaScheduler(R, C, depth=32, program_depth=program_depth, bytes_per_cycle=W, latency_cycles=L)


def test_the_next_step_loads_under_the_current_one_when_no_row_is_shared():
    schedule = scheduler()
    schedule.load("data", 0, 6)
    schedule.load("weight", 0, 4)
    schedule.execute([MatMul(0, 0, 0, 6)])
    schedule.load("data", 8, 6)  # other rows: the pong half
    schedule.load("weight", 4, 4)
    schedule.execute([MatMul(8, 4, 0, 6, accumulate=True)])
    stream = [i for p in schedule.flush() for i in p]
    first, second = stream.index(MatMul(0, 0, 0, 6)), stream.index(MatMul(8, 4, 0, 6, accumulate=True))
    loads = [i for i in stream if isinstance(i, Dma)]
    assert loads == [Dma("data", 0, 6, 0), Dma("weight", 0, 4, 6 * 2), Dma("data", 8, 6, 20), Dma("weight", 4, 4, 32)]
    assert stream.index(loads[2]) < first < stream.index(loads[3]) < second  # one prefetch before each MATMUL
    assert isinstance(stream[first - 2], Wait) and isinstance(stream[-1], Wait)


def test_a_step_that_reloads_the_rows_of_the_previous_one_waits_for_it():
    schedule = scheduler()
    schedule.load("data", 0, 6)
    schedule.load("weight", 0, 4)
    schedule.execute([MatMul(0, 0, 0, 6)])
    schedule.load("data", 0, 6)  # the same rows: loaded only once the first step has read them
    schedule.execute([MatMul(0, 0, 0, 6, accumulate=True)])
    stream = [i for p in schedule.flush() for i in p]
    reload = stream.index(Dma("data", 0, 6, 20))  # after 12 + 8 beats
    assert stream.index(MatMul(0, 0, 0, 6)) < reload and isinstance(stream[reload - 1], Wait)


def test_stores_come_after_the_results_and_programs_are_cut_at_the_program_memory():
    schedule = scheduler(program_depth=4)
    schedule.load("data", 0, 2)
    schedule.load("weight", 0, 4)
    schedule.execute([MatMul(0, 0, 0, 2), Act("none", 0, 2, 4, 0, "weight", 16)])
    ext = schedule.store("weight", 16, 2)
    assert ext == 2 * 2 + 4 * 2 and schedule.next_beat == ext + 2 * 2  # two beats a row
    programs = schedule.flush()
    assert all(len(p) <= 3 for p in programs) and schedule.next_beat == 0
    stream = [i for p in programs for i in p]
    assert stream[-1] == Dma("weight", 16, 2, ext, store=True)
    assert stream.index(Act("none", 0, 2, 4, 0, "weight", 16)) < len(stream) - 1
    assert schedule.offchip_beats == ext + 4


def test_a_stream_longer_than_the_program_memory_is_one_overlay_program():
    """Segments of half the program memory: each loads the next into the other half (its words at new
    beats of the image, after the operands'), runs the stream in order and ends with two WAITs; the
    last ends the stream (the HALT appended); the host writes the first segment."""
    def flushed(program_depth: int):
        schedule = scheduler(program_depth)
        for step in range(12):  # steps on alternating rows: a load, a MATMUL and a WAIT each, prefetched
            schedule.load("data", step % 2 * 8, 6)
            schedule.execute([MatMul(step % 2 * 8, 16, 0, 6, accumulate=step > 0)])
        return schedule, schedule.flush()

    whole, [stream] = flushed(1024)  # the merged stream, as one program of a large program memory
    operands = whole.image_beats
    schedule, [program] = flushed(16)
    loads = overlay_loads(program, 16)
    assert len(stream) + 1 > 16 and len(loads) == -(-(len(stream) - 7) // 5)
    assert [i for i in program if not (isinstance(i, Dma) and i.buffer == "program")] == \
        [i for k in range(len(loads)) for i in stream[5 * k:5 * k + 5] + [Wait(), Wait()]] + stream[5 * len(loads):]
    per_word = beats_per_row(8, W)
    beats = [operands + k * 8 * per_word for k in range(len(loads))]
    assert loads == [(beat, 8 * (k + 1), 8 if k + 1 < len(loads) else len(program) + 1 - 8 * len(loads))
                     for k, beat in enumerate(beats)]
    assert [program[8 * k] for k in range(len(loads))] == [Dma("program", (k + 1) % 2 * 8, n, beat)
                                                           for k, (beat, _, n) in enumerate(loads)]
    assert schedule.image_beats == beats[-1] + loads[-1][2] * per_word and schedule.next_beat == 0
    assert resident_words(len(program) + 1, 16) == 8 and resident_words(16, 16) == 16


@settings(max_examples=200, deadline=None)
@given(depth=st.integers(1, 40), per_row=st.integers(1, 3),
       operations=st.lists(st.tuples(st.booleans(), st.integers(0, 90), st.integers(1, 90)), max_size=25))
def test_pending_rows_are_those_of_a_row_by_row_record(depth, per_row, operations):
    """`PendingRows` (pieces of rows) against a plain record of one beat per row: after any loads
    (wrapping, longer than the buffer, over earlier ones) and takes, each take returns exactly the
    rows the record holds in the window, ascending, at their beats."""
    pending, record, beat = PendingRows(depth, per_row), [None] * depth, 0
    for is_load, first, n in operations:
        if is_load:
            pending.add(first, n, beat)
            for i in range(n):
                record[(first + i) % depth] = beat + i * per_row
            beat += n * per_row
            continue
        rows = sorted({(first + i) % depth for i in range(n)})
        expected = [(row, record[row]) for row in rows if record[row] is not None]
        taken = [(row, start + (row - low) * per_row) for low, high, start in pending.take(first, n)
                 for row in range(low, high)]
        assert taken == expected
        for row in rows:
            record[row] = None
    left = [(row, start + (row - low) * per_row) for low, high, start in pending.take(0, depth)
            for row in range(low, high)]
    assert left == [(row, value) for row, value in enumerate(record) if value is not None]
