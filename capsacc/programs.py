"""The host session of an operation on CapsAcc, as the driver plays it and the calibrated model
times it: the one definition of the programs (`capsacc.schedule` instructions, addresses by the
tiling rules of `capsacc.mapping`) and of the order of buffer writes, runs and result reads.

`operation_session(kind, op, config)` lists the `SessionEvent`s of an operation of a batch of
`config.batch` images: `Load` (the host puts rows into an int8 buffer), `PsumWrite` (into the
partial-sum memory), `Run` (one program, no HALT), `PsumRead` and `Store` (the host reads results).
`sim.driver.OperationDriver` plays them on a host or DMA session, filling each `Load` with the rows
its `part` names; `session_total_cycles` plays them on `capsacc.schedule.DmaScheduler` and times
the DMA programs with `capsacc.schedule.timing`: the cycles `nascaps rtl run` measures with the
off-chip memory (`total_cycles`, from the first byte in to the last result out, stalls included),
without simulating. Routing phases are played from `rtl.workloads.RoutingLayout` and not listed
here: `operation_session` refuses them (`SessionNotModelled`).
"""

import dataclasses
import functools
from dataclasses import dataclass

from capsacc.array import ArrayConfig
from capsacc.errors import InputError
from capsacc.mapping import (ACTIVATIONS, CHAIN_KINDS, ElementwiseShape, MatmulShape, act_lanes, ceil_div,
                             classcaps_act_pieces, classcaps_dims, classcaps_packing, classcaps_per_run,
                             elementwise_chunking, elementwise_shape, matmul_blocks, matmul_chunk_rows,
                             matmul_chunking, matmul_shape)
from capsacc.schedule import Act, DmaScheduler, MatMul, program_cycles


class SessionNotModelled(InputError):
    """An operation kind whose session `operation_session` does not list (routing phases)."""


@dataclass(frozen=True)
class Load:
    """The host puts `rows` int8 rows into buffer `memory` ("data", "weight", "routing") from row
    `base`; `part` names which rows of the operation (read by the driver that fills them)."""
    memory: str
    base: int
    rows: int
    part: tuple = ()


@dataclass(frozen=True)
class PsumWrite:
    """The host writes `rows` partial-sum rows from row `base`."""
    base: int
    rows: int
    part: tuple = ()


@dataclass(frozen=True)
class Run:
    """One program (no HALT): start, wait for busy to fall."""
    program: tuple


@dataclass(frozen=True)
class PsumRead:
    """The host reads partial-sum rows base..base+rows-1 (first `lanes` lanes) as result `name`."""
    name: str
    base: int
    rows: int
    lanes: int


@dataclass(frozen=True)
class Store:
    """The host reads int8 rows base..base+rows-1 of buffer `memory` (`lanes` lanes) as result
    `name`; `part` names which results of the operation they hold."""
    name: str
    memory: str
    base: int
    rows: int
    lanes: int
    part: tuple = ()


SessionEvent = Load | PsumWrite | Run | PsumRead | Store


def matmul_session(shape: MatmulShape, config: ArrayConfig, shift: int = 0) -> list[SessionEvent]:
    """A conv kind (`capsacc.mapping.matmul_shape`): per chunk of nc data rows from row n0, runs of
    kr K chunks (k0 .. k1 - 1): `Load` data part ("data", n0, nc, k0, k1) (chunk j's nc rows of lanes
    kk R .. from row j nc), `Load` weight part ("weight", k0, k1) (the tile of K chunk kk and block b at
    row (j mb + b) R), one MATMUL per (K chunk, block) with results of block b from partial-sum row
    b nc, the chunk's last run an ACT per span blocks (requantized by `shift`) to weight rows from
    depth - mb nc; then the chunk's sums are read (`PsumRead` "sums{n0}") and its results (`Store`
    "out{n0}", part (n0, nc))."""
    rows, cols, depth = config.rows, config.cols, config.buffer_depth
    blocks = matmul_blocks(shape)
    mb, kc = len(blocks), ceil_div(shape.k, rows)
    nc_max = matmul_chunk_rows(shape, config)
    events = []
    for n0 in range(0, shape.n, nc_max):
        nc = min(nc_max, shape.n - n0)
        kr = matmul_chunking(shape, config, nc)
        out_base = depth - mb * nc
        for k0 in range(0, kc, kr):
            k1 = min(kc, k0 + kr)
            program = []
            for j, kk in enumerate(range(k0, k1)):
                for b in range(mb):
                    program.append(MatMul(d_addr=j * nc, w_addr=(j * mb + b) * rows, p_addr=b * nc, n=nc,
                                          accumulate=kk > 0))
            if k1 == kc:  # an ACT per span blocks (a capsule type's, strided, when span > 1)
                for b in range(0, mb, shape.span):
                    program.append(Act(shape.func, p_addr=b * nc, n=shape.span * nc,
                                       length=shape.act_length(blocks[b][1]), shift=shift, dst="weight",
                                       dst_addr=out_base + b * nc, stride=nc if shape.span > 1 else 0))
            events += [Load("data", 0, (k1 - k0) * nc, ("data", n0, nc, k0, k1)),
                       Load("weight", 0, (k1 - k0) * mb * rows, ("weight", k0, k1)), Run(tuple(program))]
        events += [PsumRead(f"sums{n0}", 0, mb * nc, cols), Store(f"out{n0}", "weight", out_base, mb * nc, cols,
                                                                  (n0, nc))]
    return events


def classcaps_session(op, config: ArrayConfig, shift: int = 0) -> list[SessionEvent]:
    """ClassCaps: per run of ci input capsules from capsule i0 (cn of them, in `groups` groups of k),
    `Load` data part ("data", i0, cn, groups) (rows of group g and K chunk kk from (g kc + kk) B k),
    `Load` weight part ("weight", i0, cn, groups) (tile of (g, kk, t) at ((g kc + kk) mb + t) R), one
    MATMUL per (group, K chunk, column tile), ACTs "none" over the run's partial sums to weight rows
    from groups kc mb R, then `Store` "u_hat{i0}" (part (i0, cn, groups))."""
    rows, cols, batch = config.rows, config.cols, config.batch
    n_in, d_in, n_out, dim = classcaps_dims(op)
    flat = n_out * dim
    kc, mb = ceil_div(d_in, rows), ceil_div(flat, cols)
    k, ci = classcaps_packing(d_in, config), classcaps_per_run(d_in, flat, config)
    data_rows = batch * k
    events = []
    for i0 in range(0, n_in, ci):
        cn = min(ci, n_in - i0)
        groups = ceil_div(cn, k)
        program = []
        for g in range(groups):
            for kk in range(kc):
                for t in range(mb):
                    program.append(MatMul(d_addr=(g * kc + kk) * data_rows, w_addr=((g * kc + kk) * mb + t) * rows,
                                          p_addr=(g * mb + t) * data_rows, n=data_rows, accumulate=kk > 0))
        out_base = groups * kc * mb * rows
        for first, n in classcaps_act_pieces(groups * mb * data_rows):
            program.append(Act("none", p_addr=first, n=n, length=cols, shift=shift, dst="weight",
                               dst_addr=out_base + first))
        part = (i0, cn, groups)
        events += [Load("data", 0, groups * kc * data_rows, ("data",) + part),
                   Load("weight", 0, groups * kc * mb * rows, ("weight",) + part), Run(tuple(program)),
                   Store(f"u_hat{i0}", "weight", out_base, groups * mb * data_rows, cols, part)]
    return events


def elementwise_session(shape: ElementwiseShape, config: ArrayConfig, shift: int = 0) -> list[SessionEvent]:
    """A `CHAIN_KINDS` sum of `shape.operands` maps: per chunk of nc rows from n0 and run of operands
    p0 .. p1 - 1, `Load` data part ("data", n0, nc, p0, p1) (operand j's K chunk kk of block b at row
    ((j kc + kk) mb + b) nc), `Load` weight part ("identity",) (the kc identity tiles from row 0), one
    accumulating MATMUL per (operand, K chunk, block), the chunk's last run an ACT per span blocks to
    weight rows from kc R; then `Store` "out{n0}" (part (n0, nc))."""
    rows, cols = config.rows, config.cols
    columns = shape.columns
    blocks = matmul_blocks(columns)
    mb, kc, span = len(blocks), shape.chunks, columns.span
    nc_max, pr = elementwise_chunking(shape, config)
    out_base = kc * rows
    events = []
    for n0 in range(0, shape.n, nc_max):
        nc = min(nc_max, shape.n - n0)
        for p0 in range(0, shape.operands, pr):
            p1 = min(shape.operands, p0 + pr)
            program = []
            for j, p in enumerate(range(p0, p1)):
                for kk in range(kc):
                    for b in range(mb):
                        program.append(MatMul(d_addr=((j * kc + kk) * mb + b) * nc, w_addr=kk * rows, p_addr=b * nc,
                                              n=nc, accumulate=p > 0 or kk > 0))
            if p1 == shape.operands:  # an ACT per span blocks, as `matmul_session`'s
                for b in range(0, mb, span):
                    program.append(Act(shape.func, p_addr=b * nc, n=span * nc, length=columns.act_length(blocks[b][1]),
                                       shift=shift, dst="weight", dst_addr=out_base + b * nc,
                                       stride=nc if span > 1 else 0))
            events += [Load("data", 0, (p1 - p0) * kc * mb * nc, ("data", n0, nc, p0, p1)),
                       Load("weight", 0, kc * rows, ("identity",)), Run(tuple(program))]
        events.append(Store(f"out{n0}", "weight", out_base, mb * nc, cols, (n0, nc)))
    return events


def activation_session(func: str, op, config: ArrayConfig, shift: int = 0) -> list[SessionEvent]:
    """A lone activation: `PsumWrite` of n = op.n_in rows rounded up to whole capsules of L =
    op.caps_in (1..64), one row-mode ACT, `Store` "out" of those rows. ValueError when the rows
    do not fit the activation unit or half the buffer."""
    n, length = op.n_in, op.caps_in
    span = act_lanes(config.cols, func, length)[0] if 1 <= length else 1
    rows = ceil_div(n, span) * span
    if not 1 <= length <= 64 or not 1 <= n <= 1023 or rows > config.buffer_depth // 2:
        raise ValueError(f"{func}: {n} rows with L = {length} do not fit the activation unit")
    return [PsumWrite(0, rows), Run((Act(func, p_addr=0, n=n, length=length, shift=shift, dst="weight", dst_addr=0),)),
            Store("out", "weight", 0, rows, config.cols)]


def operation_session(kind: str, op, config: ArrayConfig, shift: int = 0, operands: int | None = None) -> list[SessionEvent]:
    """The `SessionEvent`s of `op` as `kind` on `config` (ACTs requantized by `shift`; a `CHAIN_KINDS`
    sum of `operands` maps, default its shape's); `SessionNotModelled` for routing phases,
    `capsacc.mapping.MappingError` when the operation does not fit."""
    if kind in ("conv", "convcaps", "convcaps3d"):
        return matmul_session(matmul_shape(kind, op, config), config, shift)
    if kind == "classcaps":
        return classcaps_session(op, config, shift)
    if kind in CHAIN_KINDS:
        shape = elementwise_shape(kind, op, config)
        if operands is not None:
            shape = ElementwiseShape(shape.columns, shape.length, operands, shape.chunks)
        return elementwise_session(shape, config, shift)
    if kind in ACTIVATIONS:
        return activation_session(kind, op, config, shift)
    raise SessionNotModelled(f"the session of a {kind!r} operation is not modelled (routing phases run "
                             "rtl.workloads.RoutingLayout's programs)")


def dma_programs(events: list[SessionEvent], config: ArrayConfig) -> list[list]:
    """The DMA programs (no HALT) that a session with the off-chip memory runs for `events`
    (`sim.host.DmaSession`: loads and stores through `capsacc.schedule.DmaScheduler`, the merged
    stream ended by every partial-sum access and by the session's end)."""
    scheduler = DmaScheduler(config.rows, config.cols, config.buffer_depth, config.program_depth,
                             config.offchip_bytes_per_cycle, config.offchip_latency_cycles)
    programs = []
    for event in events:
        if isinstance(event, Load):
            scheduler.load(event.memory, event.base, event.rows)
        elif isinstance(event, Run):
            scheduler.execute(list(event.program))
        elif isinstance(event, Store):
            scheduler.store(event.memory, event.base, event.rows)
        else:
            programs += scheduler.flush()
    return programs + scheduler.flush()


def session_total_cycles(events: list[SessionEvent], config: ArrayConfig) -> int:
    """Busy cycles of the DMA programs of `events` (`dma_programs`), summed: `capsacc.schedule.timing`
    with the port of `config` (W = `offchip_bytes_per_cycle`, L = `offchip_latency_cycles`)."""
    return sum(program_cycles(program, config.rows, config.cols, config.offchip_bytes_per_cycle,
                              config.offchip_latency_cycles) for program in dma_programs(events, config))


def operation_total_cycles(kind: str, op, config: ArrayConfig) -> int:
    """The batch's busy cycles of `op` as `kind` with the off-chip memory, data movement and port
    stalls included (`session_total_cycles` of `operation_session`); the `total_cycles` of `nascaps rtl
    run`. `SessionNotModelled` for routing phases. Memoized by the operation's shape (its name aside)
    and the array."""
    return _total_cycles(kind, dataclasses.replace(op, name=""), config)


@functools.lru_cache(maxsize=1024)
def _total_cycles(kind: str, op, config: ArrayConfig) -> int:
    return session_total_cycles(operation_session(kind, op, config), config)
