"""Numba kernels of the published NASCaps cost model (docs/model.md, "Cost of one operation").

Operation tables are int64 arrays of shape (n_ops, 4): kind code (index in `OP_KINDS`), weights,
sums_per_out, data_per_weight. Accelerator parameters are a float64 array laid out as `PARAMS`.
The single-network and batch paths call the same `_op_cost`, and sum in the same order, so their
totals are bit-identical. Every int64 here stays below 2^62 for the genotypes that
`capsacc.network.check_genotype` (and `capsacc.model.GenotypeBatch`) accept: their totals of
weights and data values and each operation's terms per output are below
`capsacc.network.MAX_COUNT` = 2^48, and the accelerator has at most 4096 rows and columns.
"""

import math

import numpy as np
from numba import njit

PARAMS = ("rows", "cols", "inputs_per_pe", "pe_stages", "pe_power_mW", "reg_power_mW", "period_ns")

CONV, CONVCAPS, CONVCAPS3D, CLASSCAPS, ROUTING = range(5)


@njit(cache=True, inline="always")
def _op_cost(weights, sums_per_out, data_per_weight, params):
    """(w_loads, cycles, accumulators, power_mW, energy_mJ) of one operation."""
    rows, cols, inputs, stages = params[0], params[1], params[2], params[3]
    pe_power, reg_power, period_ns = params[4], params[5], params[6]
    w_load_cycles = int(rows + stages - 1)
    terms = rows * inputs
    w_loads = math.ceil(weights / cols / min(terms, sums_per_out))
    cycles = w_load_cycles * w_loads + data_per_weight
    if data_per_weight == 1:
        accumulators = int(cols)
    else:
        accumulators = int(cols) * max(sums_per_out - int(terms) + 1, 1)
    power = pe_power * rows * cols + accumulators * reg_power
    energy = power * cycles * (period_ns * 1e-9)
    return w_loads, cycles, accumulators, power, energy


@njit(cache=True)
def network_costs(table, params):
    """Per-operation costs and totals of one network.

    Returns w_loads, cycles, accumulators (int64 arrays), power_mW, energy_mJ (float64 arrays), each
    of length n_ops, then total cycles, total energy_mJ and total weights, summed in the same order
    as `batch_totals`.
    """
    n = table.shape[0]
    w_loads = np.empty(n, np.int64)
    cycles = np.empty(n, np.int64)
    accumulators = np.empty(n, np.int64)
    power = np.empty(n, np.float64)
    energy = np.empty(n, np.float64)
    total_cycles = 0
    total_energy = 0.0
    total_weights = 0
    for i in range(n):
        w_loads[i], cycles[i], accumulators[i], power[i], energy[i] = _op_cost(
            table[i, 1], table[i, 2], table[i, 3], params)
        total_cycles += cycles[i]
        total_energy += energy[i]
        total_weights += table[i, 1]
    return w_loads, cycles, accumulators, power, energy, total_cycles, total_energy, total_weights


@njit(cache=True)
def batch_totals(table, offsets, params):
    """Totals per network of a flattened batch: network j owns rows offsets[j]:offsets[j+1].

    Returns cycles (int64), energy_mJ (float64), weights (int64), each of length n_networks.
    """
    n = offsets.shape[0] - 1
    cycles = np.zeros(n, np.int64)
    energy = np.zeros(n, np.float64)
    weights = np.zeros(n, np.int64)
    for j in range(n):
        total_cycles = 0
        total_energy = 0.0
        total_weights = 0
        for i in range(offsets[j], offsets[j + 1]):
            _, c, _, _, e = _op_cost(table[i, 1], table[i, 2], table[i, 3], params)
            total_cycles += c
            total_energy += e
            total_weights += table[i, 1]
        cycles[j] = total_cycles
        energy[j] = total_energy
        weights[j] = total_weights
    return cycles, energy, weights


@njit(cache=True, inline="always")
def _op_row(out, row, kind, n_in, ch_in, caps_in, kernel, n_out, ch_out, caps_out):
    """Write one operation's kind, weights, sums_per_out and data_per_weight (Table 1)."""
    volume = kernel * kernel * kernel if kind == CONVCAPS3D else kernel * kernel
    if kind == ROUTING:
        weights = ch_in * kernel * kernel * ch_out
        sums = caps_in
    else:
        weights = (ch_in * volume + 1) * ch_out * caps_out * caps_in
        sums = (volume + 1) * ch_in * caps_in
    data = 1 if kind == CLASSCAPS or kind == ROUTING else n_out * n_out * ch_in * caps_in
    out[row, 0] = kind
    out[row, 1] = weights
    out[row, 2] = sums
    out[row, 3] = data


@njit(cache=True)
def _descriptor_ops(d, position, last, out):
    """Write the operations of descriptor `d` (at `position`, `last` the index of the genotype's last
    descriptor) into rows of `out` (at least 7 x 4) by the expansion of `capsacc.network` (a
    CapsCell's inner convolutions take its first convolution's ch_out x caps_out output); return
    their count."""
    t, n_in, ch_in, caps_in, k, n_out, ch_out, caps_out = d[0], d[1], d[2], d[3], d[4], d[6], d[7], d[8]
    if t == 0:
        _op_row(out, 0, CONV, n_in, ch_in, caps_in, k, n_out, ch_out, caps_out)
        return 1
    if t == 1 and position < last:
        _op_row(out, 0, CONVCAPS, n_in, ch_in, caps_in, k, n_out, ch_out, caps_out)
        return 1
    if t == 1:
        _op_row(out, 0, CLASSCAPS, n_in, ch_in, caps_in, k, n_out, ch_out, caps_out)
        for row in range(1, 6):
            _op_row(out, row, ROUTING, n_in, ch_in, caps_in, k, n_out, ch_out, caps_out)
        return 6
    if position < last - 1:
        _op_row(out, 0, CONVCAPS, n_in, ch_in, caps_in, k, n_out, ch_out, caps_out)
        for row in range(1, 4):
            _op_row(out, row, CONVCAPS, n_out, ch_out, caps_out, k, n_out, ch_out, caps_out)
        return 4
    if position == last - 1:
        _op_row(out, 0, CONVCAPS, n_in, ch_in, caps_in, k, n_out, ch_out, caps_out)
        for row in range(1, 3):
            _op_row(out, row, CONVCAPS, n_out, ch_out, caps_out, k, n_out, ch_out, caps_out)
        _op_row(out, 3, CONVCAPS3D, n_in, ch_in, caps_in, k, n_out, ch_out, caps_out)
        return 4
    for row in range(6):
        _op_row(out, row, ROUTING, n_in, ch_in, caps_in, k, n_out, ch_out, caps_out)
    _op_row(out, 6, CLASSCAPS, n_in, ch_in, caps_in, k, n_out, ch_out, caps_out)
    return 7


@njit(cache=True)
def expand_batch(descriptors, offsets):
    """Expand flattened genotypes (descriptors int64 (n_desc, 9); genotype j owns rows
    offsets[j]:offsets[j+1]) into an operation table and its offsets, by the published rules."""
    n = offsets.shape[0] - 1
    scratch = np.empty((7, 4), np.int64)
    op_offsets = np.zeros(n + 1, np.int64)
    for j in range(n):
        last = offsets[j + 1] - offsets[j] - 1
        count = 0
        for i in range(offsets[j], offsets[j + 1]):
            count += _descriptor_ops(descriptors[i], i - offsets[j], last, scratch)
        op_offsets[j + 1] = op_offsets[j] + count
    table = np.empty((op_offsets[n], 4), np.int64)
    for j in range(n):
        row = op_offsets[j]
        last = offsets[j + 1] - offsets[j] - 1
        for i in range(offsets[j], offsets[j + 1]):
            count = _descriptor_ops(descriptors[i], i - offsets[j], last, scratch)
            table[row:row + count] = scratch[:count]
            row += count
    return table, op_offsets


@njit(cache=True)
def genotype_totals(descriptors, offsets, params):
    """`batch_totals` of flattened genotypes, expanding each descriptor on the fly (no table)."""
    n = offsets.shape[0] - 1
    scratch = np.empty((7, 4), np.int64)
    cycles = np.zeros(n, np.int64)
    energy = np.zeros(n, np.float64)
    weights = np.zeros(n, np.int64)
    for j in range(n):
        last = offsets[j + 1] - offsets[j] - 1
        total_cycles = 0
        total_energy = 0.0
        total_weights = 0
        for i in range(offsets[j], offsets[j + 1]):
            count = _descriptor_ops(descriptors[i], i - offsets[j], last, scratch)
            for r in range(count):
                _, c, _, _, e = _op_cost(scratch[r, 1], scratch[r, 2], scratch[r, 3], params)
                total_cycles += c
                total_energy += e
                total_weights += scratch[r, 1]
        cycles[j] = total_cycles
        energy[j] = total_energy
        weights[j] = total_weights
    return cycles, energy, weights
