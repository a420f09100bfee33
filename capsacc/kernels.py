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

from capsacc.network import MAX_DESCRIPTOR_OPERATIONS, descriptor_operation, operation_table1

PARAMS = ("rows", "cols", "inputs_per_pe", "pe_stages", "pe_power_mW", "reg_power_mW", "period_ns")

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
def _operation_count(descriptors, offsets, j):
    """Operations of genotype j of flattened genotypes (`expand_batch`)."""
    last = offsets[j + 1] - offsets[j] - 1
    count = 0
    for i in range(offsets[j], offsets[j + 1]):
        for row in range(MAX_DESCRIPTOR_OPERATIONS):
            kind, _ = descriptor_operation(descriptors[i, 0], i - offsets[j], last, row)
            if kind < 0:
                break
            count += 1
    return count


@njit(cache=True)
def expand_batch(descriptors, offsets):
    """Expand flattened genotypes (descriptors int64 (n_desc, 9); genotype j owns rows
    offsets[j]:offsets[j+1]) into an operation table and its offsets, by the published rules
    (`capsacc.network.descriptor_operation`, `capsacc.network.table1`)."""
    n = offsets.shape[0] - 1
    op_offsets = np.zeros(n + 1, np.int64)
    for j in range(n):
        op_offsets[j + 1] = op_offsets[j] + _operation_count(descriptors, offsets, j)
    table = np.empty((op_offsets[n], 4), np.int64)
    for j in range(n):
        out = op_offsets[j]
        last = offsets[j + 1] - offsets[j] - 1
        for i in range(offsets[j], offsets[j + 1]):
            descriptor = descriptors[i]
            for row in range(MAX_DESCRIPTOR_OPERATIONS):
                kind, inner = descriptor_operation(descriptor[0], i - offsets[j], last, row)
                if kind < 0:
                    break
                table[out, 0] = kind
                table[out, 1], table[out, 2], table[out, 3] = operation_table1(descriptor, kind, inner)
                out += 1
    return table, op_offsets


@njit(cache=True)
def genotype_totals(descriptors, offsets, params):
    """`batch_totals` of flattened genotypes, each operation's Table 1 row computed from its
    descriptor on the fly (no table)."""
    n = offsets.shape[0] - 1
    cycles = np.zeros(n, np.int64)
    energy = np.zeros(n, np.float64)
    weights = np.zeros(n, np.int64)
    for j in range(n):
        last = offsets[j + 1] - offsets[j] - 1
        total_cycles = 0
        total_energy = 0.0
        total_weights = 0
        for i in range(offsets[j], offsets[j + 1]):
            descriptor = descriptors[i]
            for row in range(MAX_DESCRIPTOR_OPERATIONS):
                kind, inner = descriptor_operation(descriptor[0], i - offsets[j], last, row)
                if kind < 0:
                    break
                w, sums, data = operation_table1(descriptor, kind, inner)
                _, c, _, _, e = _op_cost(w, sums, data, params)
                total_cycles += c
                total_energy += e
                total_weights += w
        cycles[j] = total_cycles
        energy[j] = total_energy
        weights[j] = total_weights
    return cycles, energy, weights
