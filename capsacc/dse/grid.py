"""Evaluation of every point of a design grid for one workload, vectorized in numba.

A design point is (rows, cols, dataflow, ifmap/filter/ofmap SRAM kB, clock period ns). Cycles and
SRAM accesses depend on the array and dataflow only, ifmap (filter) DRAM reads also on the ifmap
(filter) SRAM size, so the kernel sums the GEMMs once per array and dataflow and per SRAM size, and
then fills every point from those sums. Figures per point (`COLUMNS`):

- cycles: the GEMMs' compute cycles plus the activation unit's (one element per lane per cycle,
  one lane per column); latency_ms = cycles · period. No stalls (SCALE-Sim's CALC mode).
- energy_mJ, on chip: the PE array and one accumulator register per column clocked for all cycles
  (their synthesized power times the time), every SRAM access (reads and writes by the array and
  the fills from and drains to DRAM), and the activation unit's operations.
  dram_energy_mJ: the DRAM accesses, reported apart.
- power_mW = on-chip energy / latency; area_mm2: PEs, registers, the three SRAMs and the activation
  unit (present when the workload has element-wise work); TOPS/mm² and fJ/op count two operations
  per MAC of the PE array and use the on-chip energy.
"""

from dataclasses import dataclass

import numpy as np
from numba import njit

from capsacc.dse import hardware
from capsacc.dse.systolic import (DATAFLOWS, active_words, compute_cycles, dram_accesses, ofmap_dram_writes,
                                  sram_accesses, sram_words)
from capsacc.dse.workload import Workload
from capsacc.errors import InputError

COLUMNS = ("rows", "cols", "dataflow", "ifmap_sram_kB", "filter_sram_kB", "ofmap_sram_kB", "period_ns",
           "cycles", "latency_ms", "energy_mJ", "dram_energy_mJ", "power_mW", "area_mm2", "TOPS_per_mm2",
           "fJ_per_op", "sram_accesses", "dram_accesses")
"""Columns of `DesignResults.table` and of designs.csv (dataflow as its name in the CSV)."""


ARRAY_SIDE_RANGE = (1, 65536)
"""Rows and columns an array may have (inclusive)."""
SRAM_KB_RANGE = (1.0, float(2 ** 20))
"""SRAM sizes, kB, of each buffer (1 kB to 1 GiB, inclusive)."""
PERIOD_NS_MAX = 1000.0
"""The longest clock period, ns (the 45 nm tables cover 2, 3 and 4 ns)."""
SRAM_OVERHEAD_RANGE = (1.0, 1000.0)
"""SRAM macro area over its bit cells (inclusive)."""
BYTES_PER_POINT = 256
"""Memory per design point: the float64 result row (17 columns, 136 bytes), the Pareto filter's
objectives, order and front (48 bytes), and slack for the plot's subsample and sorting."""
MAX_GRID_BYTES = 2 * 2 ** 30
"""The most memory a grid may need (`DesignGrid.check_memory`), 2 GiB: about 8.4 million design points."""


def _number_in(value, low: float, high: float) -> bool:
    """A real number (not a bool, not NaN) in [low, high]."""
    return (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
            and low <= value <= high)


@dataclass(frozen=True)
class DesignGrid:
    """The values explored per parameter; the grid is their Cartesian product."""

    rows: tuple[int, ...]
    cols: tuple[int, ...]
    dataflows: tuple[str, ...] = DATAFLOWS
    ifmap_sram_kB: tuple[float, ...] = (32.0, 128.0, 512.0)
    filter_sram_kB: tuple[float, ...] = (32.0, 128.0, 512.0)
    ofmap_sram_kB: tuple[float, ...] = (32.0, 128.0, 512.0)
    period_ns: tuple[float, ...] = (2.0, 3.0, 4.0)
    sram_overhead: float = 2.0
    """SRAM macro area over its bit cells (an assumption, `hardware.sram_area_um2`)."""
    acc_bits: int = 25

    def __post_init__(self):
        for name in ("rows", "cols", "dataflows", "ifmap_sram_kB", "filter_sram_kB", "ofmap_sram_kB", "period_ns"):
            if not getattr(self, name):
                raise InputError(f"--{name.replace('_', '-')}: no values given")
        for name in ("rows", "cols"):
            low, high = ARRAY_SIDE_RANGE
            bad = [v for v in getattr(self, name)
                   if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not low <= v <= high]
            if bad:
                raise InputError(f"--{name}: must be integers in {low}..{high}, got {bad[0]!r}")
        for d in self.dataflows:
            if d not in DATAFLOWS:
                raise InputError(f"--dataflow: unknown dataflow '{d}' (known: {', '.join(DATAFLOWS)})")
        for name in ("ifmap_sram_kB", "filter_sram_kB", "ofmap_sram_kB"):
            low, high = SRAM_KB_RANGE
            bad = [v for v in getattr(self, name) if not _number_in(v, low, high)]
            if bad:
                buffer = name.split("_")[0]
                raise InputError(f"{buffer} SRAM (--sram-kB or --{buffer}-sram-kB): sizes must be numbers in "
                                 f"{low:g}..{high:,.0f} kB, got {bad[0]!r}")
        bad = [v for v in self.period_ns if not _number_in(v, 0, PERIOD_NS_MAX) or v == 0]
        if bad:
            raise InputError(f"--period-ns: periods must be numbers in (0, {PERIOD_NS_MAX:g}] ns, got {bad[0]!r}")
        if not _number_in(self.sram_overhead, *SRAM_OVERHEAD_RANGE):
            raise InputError(f"--sram-overhead: must be a number in {SRAM_OVERHEAD_RANGE[0]:g}.."
                             f"{SRAM_OVERHEAD_RANGE[1]:g}, got {self.sram_overhead!r}")

    @property
    def memory_bytes(self) -> int:
        """The memory `evaluate` and the result files need for this grid, bytes (an estimate:
        `BYTES_PER_POINT` per design point and the per-array sums)."""
        arrays = len(self.rows) * len(self.cols) * len(self.dataflows)
        per_array = 8 * (4 + len(self.ifmap_sram_kB) + len(self.filter_sram_kB) + len(self.ofmap_sram_kB))
        return self.size * BYTES_PER_POINT + arrays * per_array

    def check_memory(self, limit_bytes: int | None = None) -> None:
        """Raise `InputError` when `memory_bytes` exceeds `limit_bytes` (default `MAX_GRID_BYTES`)."""
        limit = MAX_GRID_BYTES if limit_bytes is None else limit_bytes
        if self.memory_bytes > limit:
            raise InputError(f"the grid has {self.size:,} design points and needs about "
                             f"{self.memory_bytes / 2 ** 20:,.0f} MiB, more than the {limit / 2 ** 20:,.0f} MiB limit; "
                             "give fewer values of --rows, --cols, --dataflow, the SRAM sizes or --period-ns")

    @property
    def size(self) -> int:
        """Number of design points."""
        return (len(self.rows) * len(self.cols) * len(self.dataflows) * len(self.ifmap_sram_kB)
                * len(self.filter_sram_kB) * len(self.ofmap_sram_kB) * len(self.period_ns))

    def to_dict(self) -> dict:
        return {"rows": list(self.rows), "cols": list(self.cols), "dataflows": list(self.dataflows),
                "ifmap_sram_kB": list(self.ifmap_sram_kB), "filter_sram_kB": list(self.filter_sram_kB),
                "ofmap_sram_kB": list(self.ofmap_sram_kB), "period_ns": list(self.period_ns),
                "sram_overhead": self.sram_overhead, "acc_bits": self.acc_bits}


@dataclass(frozen=True)
class DesignResults:
    """`table`: float64 (n_points, len(COLUMNS)); dataflow as its code (index in DATAFLOWS)."""

    table: np.ndarray
    workload: Workload
    grid: DesignGrid

    def column(self, name: str) -> np.ndarray:
        return self.table[:, COLUMNS.index(name)]


@njit(cache=True)
def _array_sums(table, rows, cols, dataflows, ifmap_active, filter_active, ofmap_words):
    """Per (rows, cols, dataflow): cycles and SRAM accesses; DRAM ifmap reads per ifmap SRAM size,
    filter reads per filter SRAM size and ofmap writes per ofmap SRAM size (sums over the GEMMs)."""
    nr, nc, nd = rows.shape[0], cols.shape[0], dataflows.shape[0]
    ni, nf = ifmap_active.shape[0], filter_active.shape[0]
    no = ofmap_words.shape[0]
    base = np.zeros((nr, nc, nd, 4), np.int64)
    dram_ifmap = np.zeros((nr, nc, nd, ni), np.int64)
    dram_filter = np.zeros((nr, nc, nd, nf), np.int64)
    dram_ofmap = np.zeros((nr, nc, nd, no), np.int64)
    for a in range(nr):
        for b in range(nc):
            for d in range(nd):
                r, c, flow = rows[a], cols[b], dataflows[d]
                for g in range(table.shape[0]):
                    m, k, n, count = table[g, 0], table[g, 1], table[g, 2], table[g, 3]
                    base[a, b, d, 0] += count * compute_cycles(m, k, n, r, c, flow)
                    si, sf, so = sram_accesses(m, k, n, r, c, flow)
                    base[a, b, d, 1] += count * si
                    base[a, b, d, 2] += count * sf
                    base[a, b, d, 3] += count * so
                    _, _, do = dram_accesses(m, k, n, table[g, 4], table[g, 5], r, c, flow, 0, 0)
                    for o in range(no):
                        dram_ofmap[a, b, d, o] += count * ofmap_dram_writes(do, c, ofmap_words[o])
                    for i in range(ni):
                        di, _, _ = dram_accesses(m, k, n, table[g, 4], table[g, 5], r, c, flow, ifmap_active[i], 0)
                        dram_ifmap[a, b, d, i] += count * di
                    for f in range(nf):
                        _, df, _ = dram_accesses(m, k, n, table[g, 4], table[g, 5], r, c, flow, 0, filter_active[f])
                        dram_filter[a, b, d, f] += count * df
    return base, dram_ifmap, dram_filter, dram_ofmap


@njit(cache=True)
def _fill(base, dram_ifmap, dram_filter, dram_ofmap, rows, cols, dataflows, ifmap_kB, filter_kB, ofmap_kB, periods,
          ifmap_pj, filter_pj, ofmap_pj, dram_pj, pe_power, pe_area, reg_power, reg_area, sram_um2_per_kB,
          lane_um2, vector_elements, vector_pj, ops):
    nr, nc, nd = rows.shape[0], cols.shape[0], dataflows.shape[0]
    ni, nf, no, nt = ifmap_kB.shape[0], filter_kB.shape[0], ofmap_kB.shape[0], periods.shape[0]
    out = np.empty((nr * nc * nd * ni * nf * no * nt, 17), np.float64)
    p = 0
    for a in range(nr):
        for b in range(nc):
            r, c = rows[a], cols[b]
            vector_cycles = -(-vector_elements // c)
            lanes_um2 = c * lane_um2 if vector_elements > 0 else 0.0
            for d in range(nd):
                cycles = base[a, b, d, 0] + vector_cycles
                sram_total = base[a, b, d, 1] + base[a, b, d, 2] + base[a, b, d, 3]
                for i in range(ni):
                    for f in range(nf):
                        dram_i = dram_ifmap[a, b, d, i]
                        dram_f = dram_filter[a, b, d, f]
                        for o in range(no):
                            dram_o = dram_ofmap[a, b, d, o]
                            dram_total = dram_i + dram_f + dram_o
                            sram_pj = ((base[a, b, d, 1] + dram_i) * ifmap_pj[i]
                                       + (base[a, b, d, 2] + dram_f) * filter_pj[f]
                                       + (base[a, b, d, 3] + dram_o) * ofmap_pj[o])
                            sram_area = (ifmap_kB[i] + filter_kB[f] + ofmap_kB[o]) * sram_um2_per_kB
                            for t in range(nt):
                                period = periods[t]
                                latency_ns = cycles * period
                                array_pj = (r * c * pe_power[t] + c * reg_power[t]) * latency_ns
                                energy_pj = array_pj + sram_pj + vector_pj
                                area_mm2 = (r * c * pe_area[t] + c * reg_area[t] + sram_area + lanes_um2) * 1e-6
                                row = out[p]
                                row[0], row[1], row[2] = r, c, dataflows[d]
                                row[3], row[4], row[5], row[6] = ifmap_kB[i], filter_kB[f], ofmap_kB[o], period
                                row[7] = cycles
                                row[8] = latency_ns * 1e-6
                                row[9] = energy_pj * 1e-9
                                row[10] = dram_total * dram_pj * 1e-9
                                row[11] = energy_pj / latency_ns
                                row[12] = area_mm2
                                row[13] = ops / latency_ns * 1e-3 / area_mm2
                                row[14] = energy_pj * 1e3 / ops
                                row[15] = sram_total
                                row[16] = dram_total
                                p += 1
    return out


def evaluate(workload: Workload, grid: DesignGrid) -> DesignResults:
    """Every design point of `grid` for `workload` (module docstring). Refuses (`InputError`) a grid
    that needs more than `MAX_GRID_BYTES` and a workload whose counts could pass int64."""
    grid.check_memory()
    workload.check_int64((min(grid.rows), max(grid.rows)), (min(grid.cols), max(grid.cols)))
    table = workload.gemm_table()
    rows = np.array(grid.rows, np.int64)
    cols = np.array(grid.cols, np.int64)
    flows = np.array([DATAFLOWS.index(d) for d in grid.dataflows], np.int64)
    ifmap_kB = np.array(grid.ifmap_sram_kB, np.float64)
    filter_kB = np.array(grid.filter_sram_kB, np.float64)
    ofmap_kB = np.array(grid.ofmap_sram_kB, np.float64)
    ifmap_active = np.array([active_words(s) for s in grid.ifmap_sram_kB], np.int64)
    filter_active = np.array([active_words(s) for s in grid.filter_sram_kB], np.int64)
    figures = [hardware.ArrayFigures.at(t, grid.acc_bits) for t in grid.period_ns]
    ofmap_words = np.array([sram_words(s) for s in grid.ofmap_sram_kB], np.int64)
    base, dram_ifmap, dram_filter, dram_ofmap = _array_sums(table, rows, cols, flows, ifmap_active, filter_active,
                                                            ofmap_words)
    vector_pj = (workload.vector_mults * hardware.HOROWITZ_MULT32_PJ
                 + workload.vector_adds * hardware.HOROWITZ_ADD32_PJ)
    out = _fill(base, dram_ifmap, dram_filter, dram_ofmap, rows, cols, flows, ifmap_kB, filter_kB, ofmap_kB,
                np.array(grid.period_ns, np.float64),
                np.array([hardware.sram_pj_per_word(s) for s in grid.ifmap_sram_kB]),
                np.array([hardware.sram_pj_per_word(s) for s in grid.filter_sram_kB]),
                np.array([hardware.sram_pj_per_word(s) for s in grid.ofmap_sram_kB]),
                hardware.dram_pj_per_word(),
                np.array([f.pe_power_mW for f in figures]), np.array([f.pe_area_um2 for f in figures]),
                np.array([f.reg_power_mW for f in figures]), np.array([f.reg_area_um2 for f in figures]),
                hardware.sram_area_um2(1.0, grid.sram_overhead), hardware.ACTIVATION_LANE_UM2,
                workload.vector_elements, float(vector_pj), float(workload.ops))
    return DesignResults(out, workload, grid)
