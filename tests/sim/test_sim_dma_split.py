"""Element-wise steps whose operands go in separate runs through the off-chip memory: the next
run's operand reloads the data rows the previous run's MATMUL reads, so its MATMUL starts a new
step (`sim.host.DmaSession._add`) and the sum stays bit-exact."""

from dataclasses import replace

import numpy as np
import pytest

from capsacc.array import ArrayConfig, buffer_depths
from capsacc.mapping import elementwise_chunking, elementwise_shape
from capsacc.network import Operation
from rtl.isa import Dma, MatMul
from sim.driver import OperationDriver

CONFIG = ArrayConfig(rows=4, cols=4, acc_bits=34, **buffer_depths(16), program_depth=32)
"""Buffers of 16 rows: one operand per run, each run one MATMUL on the same data rows."""

CASES = {"tocaps": Operation("tocaps", "convcaps", 4, 2, 2, 3, 1, 4, 2, 2),
         "capsadd": Operation("capsadd", "convcaps", 3, 2, 2, 3, 1, 3, 3, 2)}


def maps_of(kind: str) -> dict:
    shape = elementwise_shape(kind, CASES[kind], CONFIG)
    rng = np.random.default_rng(5)
    return {"maps": [rng.integers(-60, 60, (1, shape.n, shape.m)) for _ in range(2)]}


@pytest.mark.parametrize("kind", CASES)
def test_each_operand_loads_before_its_own_matmul(kind):
    shape = elementwise_shape(kind, CASES[kind], CONFIG)
    assert elementwise_chunking(replace(shape, operands=2), CONFIG)[1] == 1  # the operands split over runs
    session = OperationDriver(CONFIG, "amaranth", offchip=True).prepare(kind, CASES[kind], inputs=maps_of(kind))[0]
    session.flush()
    stream = [i for program in session.programs for i in program]
    loaded = {}  # data row -> off-chip beat of its last load
    used = []  # (MATMUL position, the beats of the rows it read)
    for position, instruction in enumerate(stream):
        if isinstance(instruction, Dma) and instruction.buffer == "data" and not instruction.store:
            for row in range(instruction.n):
                loaded[instruction.addr + row] = instruction.ext + row
        elif isinstance(instruction, MatMul):
            used.append(tuple(loaded[instruction.d_addr + row] for row in range(instruction.n)))
    assert len(set(used)) == len(used)  # every MATMUL reads rows no other MATMUL read: its own operand


@pytest.mark.parametrize("kind", ["tocaps", "capsadd"])
def test_split_operands_through_the_dma_are_bit_exact(kind):
    run = OperationDriver(CONFIG, "amaranth", offchip=True).run(kind, CASES[kind], inputs=maps_of(kind))
    assert run.runs >= 1 and np.array_equal(run.outputs["out"], run.golden["out"])
