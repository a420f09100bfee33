"""The calibrated model's data movement (`capsacc.mapping.plan_transfers`) against the DMA programs
the driver builds (`sim.host.DmaSession`, timed and checked against the RTL in test_sim_dma.py):
the rows each buffer loads and stores and the bytes through the port, equal for every kind on
random small operations, arrays, buffer and program depths, batches, port widths and latencies; and
its total cycles (`capsacc.programs.operation_total_cycles`): the same DMA programs, so the same
cycles, for every kind. No simulation: the programs are built, not run (test_sim_dma_total.py runs
them)."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsacc import Accelerator, Network, estimate
from capsacc.array import ArrayConfig, buffer_depths
from capsacc.mapping import TRANSFER_FIELDS, MappingError, chain, classcaps_dims, plan_transfers, routing_geometry
from capsacc.network import Operation
from capsacc.programs import (PsumWrite, Run, ScheduledCost, dma_programs, operation_session,
                              operation_total_cycles, session_cost)
from genotype_strategies import small_genotypes
from rtl.isa import Act, Dma, MatMul, beats_per_row, buffer_lanes, program_cycles
from sim.driver import OperationDriver
from test_sim_calibrated_model import isa_calibration
from test_sim_capscell_run import GENOTYPE as CAPSCELL_GENOTYPE

KINDS = ("conv", "convcaps", "convcaps3d", "classcaps", "routing_uniform", "routing_softmax", "routing_update",
         "routing_first_update", "routing", "tocaps", "capsadd", "route3d", "relu", "squash", "softmax")
ARRAYS = ((4, 4), (8, 8), (3, 5), (8, 4))


def random_op(kind: str, rng) -> Operation:
    """A small operation of `kind` (its fields as `OperationDriver.prepare` reads them)."""
    def draw(low, high):
        return int(rng.integers(low, high + 1))
    if kind in ("relu", "squash", "softmax"):
        return Operation(kind, kind, draw(1, 12), 1, draw(1, 20), 1, 1, 1, 1, 1)
    if kind.startswith("routing"):
        return Operation("r", "routing", draw(1, 6), draw(1, 4), 1, 1, 1, 1, draw(1, 12), draw(1, 12))
    if kind == "classcaps":
        return Operation("c", "classcaps", draw(1, 4), draw(1, 4), draw(1, 10), 1, 1, 1, draw(1, 6), draw(1, 10))
    n_in, stride = draw(1, 6), draw(1, 2)
    return Operation("x", kind if kind in ("conv", "convcaps3d") else "convcaps", n_in, draw(1, 4), draw(1, 4),
                     draw(1, min(3, n_in)), stride, -(-n_in // stride), draw(1, 4), draw(1, 9))


def dma_transfers(programs, config: ArrayConfig) -> dict[str, int]:
    """The rows of each buffer the DMA instructions of `programs` load and store, and the bytes (an
    overlay program's loads of its own words aside: the model counts the operands' movement)."""
    moved = dict.fromkeys(TRANSFER_FIELDS, 0)
    width = config.offchip_bytes_per_cycle
    moved["offchip_bytes"] = 0
    for instruction in (i for program in programs for i in program if isinstance(i, Dma) and i.buffer != "program"):
        moved[f"{instruction.buffer}_{'stores' if instruction.store else 'loads'}"] += instruction.n
        moved["offchip_bytes"] += instruction.n * width * beats_per_row(
            buffer_lanes(instruction.buffer, config.rows, config.cols), width)
    return moved


@pytest.mark.parametrize("kind", KINDS)
def test_transfers_equal_the_dma_programs(kind):
    rng = np.random.default_rng(KINDS.index(kind))
    compared = 0
    for trial in range(40):
        rows, cols = ARRAYS[trial % len(ARRAYS)]
        config = ArrayConfig(rows, cols, 25, **buffer_depths(int(rng.choice([16, 32, 64, 256]))),
                             program_depth=int(rng.choice([8, 16, 64])), batch=int(rng.integers(1, 4)),
                             offchip_bytes_per_cycle=int(rng.choice([1, 2, 4, 8, 16, 64])),
                             offchip_latency_cycles=int(rng.integers(1, 80)))
        op = random_op(kind, rng)
        try:
            session = OperationDriver(config, "amaranth", offchip=True).prepare(kind, op, 0)[0]
        except MappingError:  # refused by the tiling rules: by both
            with pytest.raises(MappingError):
                plan_transfers(kind, op, config)
            continue
        except ValueError:  # the driver's limits of a lone activation
            continue
        session.flush()
        assert plan_transfers(kind, op, config) == dma_transfers(session.programs, config), (op, config)
        compared += 1
    assert compared >= 10


def random_config(rng, trial: int) -> ArrayConfig:
    rows, cols = ARRAYS[trial % len(ARRAYS)]
    return ArrayConfig(rows, cols, 25, **buffer_depths(int(rng.choice([16, 32, 64, 256]))),
                       program_depth=int(rng.choice([8, 16, 64])), batch=int(rng.integers(1, 4)),
                       offchip_bytes_per_cycle=int(rng.choice([1, 2, 4, 8, 16, 64])),
                       offchip_latency_cycles=int(rng.integers(1, 80)))


def unshifted(programs) -> list:
    """`programs` with every ACT's requantization shift 0, as the model builds them (the shift does
    not change the timing)."""
    return [[dataclasses.replace(i, shift=0) if isinstance(i, Act) else i for i in p] for p in programs]


def session_cycles(programs, config: ArrayConfig) -> int:
    return sum(program_cycles(p, config.rows, config.cols, config.offchip_bytes_per_cycle,
                              config.offchip_latency_cycles) for p in programs)


def session_program_bytes(programs, config: ArrayConfig) -> int:
    """Bytes of the program words the DMA loads into the program memory: every word a beat or more of W."""
    width = config.offchip_bytes_per_cycle
    return sum(i.n * beats_per_row(8, width) * width for p in programs for i in p
               if isinstance(i, Dma) and i.buffer == "program" and not i.store)


@pytest.mark.parametrize("kind", KINDS)
def test_total_cycles_are_those_of_the_dma_programs(kind):
    """The model's programs are the driver's, instruction for instruction (the ACTs' shifts aside),
    so its total cycles are theirs (`rtl.isa.timing`, exact against the RTL)."""
    rng = np.random.default_rng(100 + KINDS.index(kind))
    compared = 0
    for trial in range(40):
        config = random_config(rng, trial)
        op = random_op(kind, rng)
        try:
            session = OperationDriver(config, "amaranth", offchip=True).prepare(kind, op, 0)[0]
        except MappingError:
            continue
        except ValueError:  # the driver's limits of a lone activation: the model's too
            with pytest.raises(ValueError):
                operation_total_cycles(kind, op, config)
            continue
        session.flush()
        assert dma_programs(operation_session(kind, op, config), config) == unshifted(session.programs), (op, config)
        total = operation_total_cycles(kind, op, config)
        assert total == session_cycles(session.programs, config)
        assert total > 0 or kind in ("routing_update", "routing_first_update")  # recomputed logits: no update runs
        compared += 1
    assert compared >= 10


def test_sessions_timed_by_segments_have_the_cycles_of_all_their_programs():
    """`session_cost` schedules each distinct segment (events between partial-sum accesses) once: on
    sessions of several random operations one after the other, some repeated, some with their programs
    rebuilt (equal content, other objects), some changed in one MATMUL's row count, its total cycles are
    those of every DMA program of the whole session, and its program bytes those of every program load
    (overlay programs on the 8- and 16-word program memories among them)."""
    rng = np.random.default_rng(31)
    compared = overlaid = 0
    for trial in range(30):
        config = random_config(rng, trial)
        events = []
        for kind in rng.choice(KINDS, size=4):
            try:
                session = operation_session(str(kind), random_op(str(kind), rng), config)
            except (MappingError, ValueError):
                continue
            rebuilt = [Run(tuple(dataclasses.replace(i) for i in e.program)) if isinstance(e, Run) else e
                       for e in session]
            events += session + [PsumWrite(0, 1)] + rebuilt + session
        runs = [i for i, e in enumerate(events) if isinstance(e, Run)
                and any(isinstance(x, MatMul) and x.n > 1 for x in e.program)]
        if runs:
            changed = runs[len(runs) // 2]
            program = list(events[changed].program)
            at = next(i for i, x in enumerate(program) if isinstance(x, MatMul) and x.n > 1)
            program[at] = dataclasses.replace(program[at], n=program[at].n - 1)
            events[changed] = Run(tuple(program))
        programs = dma_programs(events, config)
        cost = session_cost(events, config)
        assert cost == ScheduledCost(session_cycles(programs, config), session_program_bytes(programs, config))
        compared += bool(events)
        overlaid += cost.program_bytes > 0
    assert compared >= 20 and overlaid >= 5


def test_transfers_of_routings_whose_logits_are_recomputed():
    """Logits too many for the partial-sum memory: a softmax phase recomputes them from the output
    capsule sets the host writes (a whole routing: from the sets its phases wrote)."""
    rng = np.random.default_rng(7)
    compared = 0
    for trial in range(200):
        rows, cols = ARRAYS[trial % 3]
        config = ArrayConfig(rows, cols, 25, **buffer_depths(int(rng.choice([16, 32, 64]))),
                             program_depth=int(rng.choice([8, 16, 64])), batch=int(rng.integers(1, 3)),
                             offchip_bytes_per_cycle=int(rng.choice([1, 4, 16])))
        op = Operation("r", "routing", int(rng.integers(2, 7)), int(rng.integers(1, 4)), 1, 1, 1, 1,
                       int(rng.integers(1, 12)), int(rng.integers(1, 12)))
        try:
            if routing_geometry(classcaps_dims(op)[0], op.ch_out, op.caps_out, config)["resident"]:
                continue
        except MappingError:
            continue
        kind = KINDS[4 + trial % 4]
        session = OperationDriver(config, "amaranth", offchip=True).prepare(kind, op, 0)[0]
        session.flush()
        assert plan_transfers(kind, op, config) == dma_transfers(session.programs, config), (kind, op, config)
        assert dma_programs(operation_session(kind, op, config), config) == unshifted(session.programs)
        compared += 1
    assert compared >= 10


@settings(max_examples=12, deadline=None)
@given(genotype=small_genotypes(), array=st.sampled_from(((4, 4), (8, 8))), batch=st.integers(1, 3),
       port=st.sampled_from(((16, 64), (4, 5), (1, 1), (64, 30))))
def test_estimate_reports_the_data_movement_of_the_dma_programs(genotype, array, batch, port):
    """`estimate` on a calibrated accelerator: each operation's off-chip bytes (an image's share of
    the batch's) and bound are those of the DMA programs of its chained steps, and the energies
    price them (the port's pJ per byte; the buffer rows at the calibration's read energies)."""
    check_movement(Network.from_genotype(genotype), *array, batch, *port)


@pytest.mark.parametrize("port", [(16, 64, 64), (2, 7, 64), (2, 7, 16)])
def test_estimate_of_a_capscell_network_reports_its_data_movement(port):
    """The chained steps of a CapsCell network (tocaps, the cells' convolutions, convcaps3d, route3d,
    capsadd) charged to its operations; on a 16-word program memory most of them run as overlay programs."""
    check_movement(Network.from_genotype(CAPSCELL_GENOTYPE), 4, 4, 2, *port)


def check_movement(network: Network, rows: int, cols: int, batch: int, width: int, latency: int,
                   program_depth: int = 64) -> None:
    """`estimate`'s data movement of `network` on a calibrated R x C accelerator with a port of W =
    `width` bytes and a program memory of `program_depth` words equals that of the DMA programs the driver
    builds for its chained steps: buffer rows, total cycles, program words."""
    config = ArrayConfig(rows, cols, 25, **buffer_depths(256), program_depth=program_depth, batch=batch,
                         offchip_bytes_per_cycle=width, offchip_latency_cycles=latency)
    calibration = isa_calibration(config)
    accelerator = dataclasses.replace(Accelerator.published(), rows=rows, cols=cols, calibration=calibration,
                                      offchip_bytes_per_cycle=width, offchip_latency_cycles=latency,
                                      offchip_pJ_per_byte=2.5)
    result = estimate(network, accelerator)
    driver = OperationDriver(config, "amaranth", offchip=True)
    moved = [dict.fromkeys(TRANSFER_FIELDS + ("offchip_bytes",), 0) for _ in network.operations]
    compute = [0] * len(network.operations)
    totals = [0] * len(network.operations)
    loaded = [0] * len(network.operations)
    for step in chain(network.operations):
        session = driver.prepare(step.kind, step.op, 0)[0]
        session.flush()
        for name, value in dma_transfers(session.programs, config).items():
            moved[step.index][name] += value
        compute[step.index] += session.compute_cycles
        totals[step.index] += session_cycles(session.programs, config)
        loaded[step.index] += session.program_beats * width
    assert [op.total_cycles for op in result.operations] == [-(-t // batch) for t in totals]
    assert result.total_cycles == sum(-(-t // batch) for t in totals)
    assert [op.program_bytes for op in result.operations] == [-(-b // batch) for b in loaded]
    assert result.program_bytes > 0 or program_depth == 64  # the 16-word case runs overlay programs
    assert result.program_energy_mJ == pytest.approx(sum(loaded) * 2.5e-9 / batch, rel=1e-12)
    energies = calibration.energies
    for op, want, cycles in zip(result.operations, moved, compute):
        assert op.offchip_bytes == -(-want["offchip_bytes"] // batch)
        assert op.bound == ("bandwidth" if -(-want["offchip_bytes"] // width) > cycles else "compute")
    total = sum(want["offchip_bytes"] for want in moved)
    assert result.offchip_bytes == sum(-(-want["offchip_bytes"] // batch) for want in moved) > 0
    assert result.offchip_energy_mJ == pytest.approx(total * 2.5e-9 / batch, rel=1e-12)
    narrow = sum(want[f] for want in moved for f in TRANSFER_FIELDS if not f.startswith("weight"))
    wide = sum(want[f] for want in moved for f in TRANSFER_FIELDS if f.startswith("weight"))
    assert result.dma_buffer_energy_mJ == pytest.approx(
        (narrow * energies.data_read + wide * energies.weight_read) * 1e-9 / batch, rel=1e-12)
    assert result.total_energy_mJ == pytest.approx(
        result.energy_mJ + result.offchip_energy_mJ + result.dma_buffer_energy_mJ, rel=1e-12)
    assert estimate(network, Accelerator.published()).movement is None
