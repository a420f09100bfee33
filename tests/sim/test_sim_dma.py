"""Operations with the off-chip memory (`OperationDriver(offchip=True)`): the host writes only the
programs and the off-chip image, the DMA moves every row; every kind bit-exact, the compute's cycles
those of the host-loaded runs, the DMA programs' busy cycles those of `rtl.isa.timing`, the bytes
the off-chip port moved those of the DMA instructions (the program words of overlay programs apart),
one host start per program."""

import dataclasses
import shutil

import numpy as np
import pytest

from capsacc.programs import operation_cost, operation_total_cycles
from capsacc.schedule import overlay_loads
from rtl.isa import Dma, Wait, beats_per_row, buffer_lanes, dma_cycles, program_cycles
from sim.driver import OperationDriver
from test_sim_driver import CONFIG, OPS, kind_of

PORTS = [(4, 5), (1, 1), (16, 64)]


@pytest.mark.parametrize("name", OPS)
def test_every_kind_through_the_dma_is_bit_exact_and_timed_exactly(name, record_property):
    width, latency = PORTS[sorted(OPS).index(name) % len(PORTS)]
    config = dataclasses.replace(CONFIG, offchip_bytes_per_cycle=width, offchip_latency_cycles=latency)
    driver = OperationDriver(config, "amaranth", offchip=True)
    run = driver.run(kind_of(name), OPS[name], seed=3)
    host_loaded = OperationDriver(config, "amaranth").run(kind_of(name), OPS[name], seed=3)
    for output, want in run.golden.items():
        assert np.array_equal(run.outputs[output], want) and np.array_equal(host_loaded.outputs[output], want)
    assert run.cycles == host_loaded.cycles and run.counts == host_loaded.counts
    session = driver.prepare(kind_of(name), OPS[name], seed=3)[0]
    session.flush()
    assert run.runs == len(session.programs)  # one start per program, an overlay program's too
    assert run.total_cycles == sum(program_cycles(p, config.rows, config.cols, width, latency)
                                   for p in session.programs)
    dmas = [i for p in session.programs for i in p if isinstance(i, Dma)]
    transfers = [i for i in dmas if i.buffer != "program"]
    beats = sum(i.n * beats_per_row(buffer_lanes(i.buffer, config.rows, config.cols), width) for i in transfers)
    assert run.offchip_bytes == beats * width > 0
    overlays = [p for p in session.programs if len(p) >= config.program_depth]
    program_beats = sum(i.n * beats_per_row(8, width) for i in dmas if i.buffer == "program")
    assert run.program_bytes == program_beats * width and (program_beats > 0) == bool(overlays)
    record_property("overlay_programs", len(overlays))
    assert run.counters["offchip_write_beats"] * width == sum(
        i.n * beats_per_row(buffer_lanes(i.buffer, config.rows, config.cols), width) * width
        for i in transfers if i.store)
    record_property("total_cycles", run.total_cycles)


def test_a_layer_longer_than_the_program_memory_runs_with_one_host_start(record_property):
    """ClassCaps on the test array: its merged stream, about four times the 32-word program memory
    (five programs the host wrote and started in turn before overlays), is one overlay program:
    the host writes its first 16 words and the off-chip image and starts once. Bit-exact, and its
    total cycles and the bytes of the program words it loads are the calibrated model's."""
    config = dataclasses.replace(CONFIG, offchip_bytes_per_cycle=4, offchip_latency_cycles=5)
    op = OPS["classcaps"]
    run = OperationDriver(config, "amaranth", offchip=True).run("classcaps", op, seed=3)
    for output, want in run.golden.items():
        assert np.array_equal(run.outputs[output], want), output
    [stream] = run.streams
    [program] = stream.programs
    assert run.runs == 1 and len(program) > 3 * config.program_depth
    loads = overlay_loads(program, config.program_depth)
    assert len(loads) == len(program) // (config.program_depth // 2)
    assert [load.rows for load in stream.loads if load.buffer == "program"] == [n for _, _, n in loads]
    assert run.counters["instructions"] == len(program) + 1
    assert run.total_cycles == operation_total_cycles("classcaps", op, config)
    assert run.program_bytes == operation_cost("classcaps", op, config).program_bytes > 0
    record_property("total_cycles", run.total_cycles)


@pytest.mark.verilator
@pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator not installed")
def test_an_overlay_program_runs_on_verilator_as_on_amaranth(tmp_path):
    """The overlay program of ClassCaps' stream (one host start) on Verilator: bit-exact, the same
    busy cycles and counters as on Amaranth."""
    config = dataclasses.replace(CONFIG, offchip_bytes_per_cycle=4, offchip_latency_cycles=5)
    runs = [OperationDriver(config, backend, cache_dir=tmp_path, offchip=True).run("classcaps", OPS["classcaps"], seed=3)
            for backend in ("verilator", "amaranth")]
    for output, want in runs[0].golden.items():
        assert np.array_equal(runs[0].outputs[output], want), output
    assert runs[0].runs == runs[1].runs == 1 and runs[0].counters == runs[1].counters
    assert runs[0].total_cycles == runs[1].total_cycles


def test_loads_run_under_the_compute():
    """A convolution of many k-chunks: the next chunk's rows load while the current chunk's
    MATMULs run (a load before a MATMUL, both before the WAIT), so the programs cost less than the
    compute plus every transfer one after the other."""
    config = dataclasses.replace(CONFIG, offchip_bytes_per_cycle=4, offchip_latency_cycles=5)
    driver = OperationDriver(config, "amaranth", offchip=True)
    session = driver.prepare("conv", OPS["conv"], seed=1)[0]
    session.flush()
    stream = [i for p in session.programs for i in p]
    overlapped = [k for k in range(1, len(stream) - 1) if isinstance(stream[k], Dma)
                  and type(stream[k + 1]).__name__ == "MatMul" and not isinstance(stream[k - 1], Wait)]
    assert overlapped
    serial = session.compute_cycles + sum(dma_cycles(i, config.rows, config.cols, 4, 5)
                                          for i in stream if isinstance(i, Dma))
    assert sum(program_cycles(p, config.rows, config.cols, 4, 5) for p in session.programs) < serial
