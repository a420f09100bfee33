"""Random programs: the RTL's memories and counters after each equal sim.golden.execute's."""

import numpy as np
import pytest

from rtl.isa import Act, MatMul, program_cycles
from rtl.workloads import Region, Workload
from rtl_bench import run_workload
from sim import golden

DEPTH = 16


def random_program(rng, rows: int, cols: int, length: int) -> list:
    program = []
    for _ in range(length):
        if rng.random() < 0.55:
            program.append(MatMul(d_addr=int(rng.integers(DEPTH)), w_addr=int(rng.integers(DEPTH)),
                                  p_addr=int(rng.integers(DEPTH)), n=int(rng.integers(1, 7)),
                                  accumulate=bool(rng.integers(2)), src=str(rng.choice(["data", "routing"])),
                                  hold=bool(rng.random() < 0.25)))
        else:
            # L > C spans ceil(L / C) rows per capsule: n is then often several whole capsules, so
            # that strided row mode (stride > 0) steps from capsule to capsule.
            length = int(rng.integers(1, cols + 1) if rng.random() < 0.6 else rng.integers(1, 65))
            capsules = -(-length // cols) if rng.random() < 0.5 else 1
            program.append(Act(func=str(rng.choice(["none", "relu", "squash", "softmax"])),
                               p_addr=int(rng.integers(DEPTH)), n=int(rng.integers(1, 4)) * capsules,
                               length=length, shift=int(rng.integers(0, 16)),
                               dst=str(rng.choice(["data", "weight", "routing"])),
                               dst_addr=int(rng.integers(DEPTH)), column=bool(rng.integers(2)),
                               stride=int(rng.integers(0, 6))))
    return program


@pytest.mark.parametrize("seed,rows,cols", [(seed, *shape) for seed, shape in
                                              enumerate([(2, 3), (3, 2), (4, 4), (1, 1), (2, 3), (4, 4), (3, 4), (2, 2)])])
def test_random_program_matches_golden_machine(seed, rows, cols, record_property):
    rng = np.random.default_rng(seed)
    state = golden.MachineState(
        rows, cols, DEPTH,
        data=rng.integers(-128, 128, size=(DEPTH, rows)), weight=rng.integers(-128, 128, size=(DEPTH, cols)),
        routing=rng.integers(-128, 128, size=(DEPTH, rows)),
        psum=rng.integers(-(1 << 24), 1 << 24, size=(DEPTH, cols)))
    program = random_program(rng, rows, cols, 10)
    work = Workload(program=program, data={0: state.data.copy()}, weight={0: state.weight.copy()},
                    routing={0: state.routing.copy()}, psum={0: state.psum.copy()})
    regions = {"data": Region("data", 0, DEPTH, rows), "weight": Region("weight", 0, DEPTH, cols),
               "routing": Region("routing", 0, DEPTH, rows), "psum": Region("psum", 0, DEPTH, cols)}
    got, cycles, counters = run_workload(work, regions, rows, cols, buffer_depth=DEPTH)
    want_counters = golden.execute(program, state)
    for name in regions:
        assert np.array_equal(got[name], getattr(state, name)), name
    assert {name: counters[name] for name in want_counters} == {**want_counters,
                                                               "instructions": len(program) + 1}
    assert cycles == counters["busy_cycles"] == program_cycles(program, rows, cols)
    record_property("cycles", cycles)


def test_host_writes_and_start_while_busy_are_ignored(record_property):
    """While busy the control unit owns the memories: host writes and a second start do nothing."""
    from amaranth.sim import Simulator

    from rtl import host
    from capsacc.array import buffer_depths
    from rtl.capsacc import CapsAcc

    rows, cols = 2, 3
    work = Workload(program=[MatMul(d_addr=0, w_addr=0, p_addr=0, n=4)], data={0: np.ones((4, rows))},
                    weight={0: np.ones((rows, cols))})
    dut = CapsAcc(rows, cols, **buffer_depths(DEPTH), program_depth=16)
    commands = host.load_commands(work) + [("set", "start", 1), ("step", 1), ("set", "start", 0), ("step", 2)]
    commands += host.write_command("data", 1, 0, 0x7F7F) + host.write_command("psum", 9, 0, 77)
    commands += [("set", "start", 1), ("step", 1), ("set", "start", 0), ("dump", "busy"),
                 ("until", "busy", 0, 100), ("dump", "done")]
    commands += host.read_commands(Region("data", 1, 1, rows)) + host.read_commands(Region("psum", 9, 1, 1))
    commands += host.read_commands(Region("psum", 0, 4, cols))
    played = {}

    async def bench(ctx):
        played["dumps"], played["waits"] = await host.play(ctx, dut, commands)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    busy, done, data_word, psum9, *sums = played["dumps"]
    assert busy == 1 and done == 1
    assert data_word == 0x0101 and psum9 == 0
    assert sums == [2] * (4 * cols)
    total = 2 + 1 + 1 + 1 + played["waits"][0]  # steps after the first start, then the wait
    assert total == program_cycles(work.program, rows, cols)
    record_property("cycles", total)
