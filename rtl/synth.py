"""Logic synthesis with Debian's yosys (`synth -flatten`, `stat -json`) and an area estimate.

The area estimate multiplies yosys's generic gate counts by per-cell areas of 45 nm standard cells
(`CELL_AREA_UM2`, approximate X1 drive-strength areas of the Nangate 45 nm Open Cell Library;
flip-flop variants add the area of the gate their reset or enable needs). It is a coarse,
technology-mapped-free estimate for comparison with the published 45 nm CapsAcc figures
(Synopsys DC syntheses: 1333.75 um^2 per PE, 494.17 um^2 per 25-bit register).
"""

import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

PUBLISHED_PE_UM2 = 1333.750616
"""Area of one CapsAcc PE (8-bit inputs, 25-bit output, 3 ns), NASCaps pe.json.gz (docs/energy_tables.md)."""

PUBLISHED_REG25_UM2 = 494.1729
"""Area of one 25-bit register at 3 ns, NASCaps mem.json.gz (docs/energy_tables.md)."""

_DFF, _AND, _MUX = 4.522, 1.064, 1.862
CELL_AREA_UM2 = {
    "$_NOT_": 0.532, "$_BUF_": 0.798,
    "$_NAND_": 0.798, "$_NOR_": 0.798,
    "$_AND_": _AND, "$_OR_": _AND, "$_ANDNOT_": _AND, "$_ORNOT_": _AND,
    "$_XOR_": 1.596, "$_XNOR_": 1.596,
    "$_MUX_": _MUX, "$_NMUX_": _MUX,
    "$_AOI3_": _AND, "$_OAI3_": _AND, "$_AOI4_": 1.33, "$_OAI4_": 1.33,
}
"""um^2 per generic yosys gate (Nangate45 X1: INV 0.532, NAND2/NOR2 0.798, AND2/OR2/AOI21 1.064,
AOI22 1.33, XOR2 1.596, MUX2 1.862, DFF 4.522)."""


def cell_area_um2(cell: str) -> float:
    """Area of one generic cell; flip-flops: DFF plus an AND per reset and a MUX per enable."""
    if cell in CELL_AREA_UM2:
        return CELL_AREA_UM2[cell]
    if "DFF" in cell or "DLATCH" in cell:
        kind = cell.strip("$_").split("_")[0]
        area = _DFF
        if kind.startswith(("SDFF", "DFFSR")) or kind in ("ADFF", "ADFFE", "ALDFF", "ALDFFE"):
            area += _AND
        if kind.endswith("E") or kind.startswith("SDFFC"):
            area += _MUX
        return area
    return _AND


def is_flip_flop(cell: str) -> bool:
    return "DFF" in cell


@dataclass(frozen=True)
class SynthResult:
    """Cells, flip-flops and estimated area of a synthesized design, with the published figure."""
    top: str
    rows: int
    cols: int
    acc_bits: int
    buffer_depth: int
    program_depth: int
    cells: int
    flip_flops: int
    memory_bits: int
    area_um2: float
    published_um2: float
    cells_by_type: dict
    yosys: str
    pe_cells: int
    pe_area_um2: float

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """A human-readable table of the figures."""
        n_pe = self.rows * self.cols
        lines = [
            f"CapsAcc {self.rows}x{self.cols}, acc_bits {self.acc_bits}, buffer_depth {self.buffer_depth}, "
            f"program_depth {self.program_depth}; {self.yosys}: synth -flatten; stat",
            f"{'':<34}{'cells':>10}{'flip_flops':>12}{'area_um2':>14}",
            f"{'whole design (yosys generic gates)':<34}{self.cells:>10}{self.flip_flops:>12}{self.area_um2:>14.1f}",
            f"{'one PE (synthesized alone)':<34}{self.pe_cells:>10}{'':>12}{self.pe_area_um2:>14.1f}",
            f"{'PE array estimate (R*C PEs)':<34}{self.pe_cells * n_pe:>10}{'':>12}{self.pe_area_um2 * n_pe:>14.1f}",
            f"published 45 nm: {n_pe} PEs x {PUBLISHED_PE_UM2:.2f} + {self.cols} x 25-bit registers x "
            f"{PUBLISHED_REG25_UM2:.2f} = {self.published_um2:.1f} um2",
            f"ratio estimate/published: whole design {self.area_um2 / self.published_um2:.3f}, "
            f"PE {self.pe_area_um2 / PUBLISHED_PE_UM2:.3f}",
            "area factor: Nangate45 X1 cell areas per generic gate (rtl/synth.py CELL_AREA_UM2)",
        ]
        return "\n".join(lines)


class SynthError(RuntimeError):
    """yosys is missing or failed."""


def _yosys_stat(verilog: str, top: str, yosys: str, workdir: Path) -> dict:
    source = workdir / f"{top}.v"
    source.write_text(verilog)
    stat_file = workdir / f"{top}_stat.json"
    script = f"read_verilog {source}; synth -flatten -top {top}; tee -q -o {stat_file} stat -json"
    result = subprocess.run([yosys, "-q", "-p", script], capture_output=True, text=True)
    if result.returncode != 0:
        said = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise SynthError(f"yosys failed on {top} (exit code {result.returncode})"
                         + (f": {said[-1]}" if said else ""))
    return json.loads(stat_file.read_text())["design"]


def _area(cells_by_type: dict) -> float:
    return sum(cell_area_um2(cell) * count for cell, count in cells_by_type.items())


def synthesize(rows: int, cols: int, acc_bits: int = 25, buffer_depth: int = 16, program_depth: int = 16,
               yosys: str = "yosys") -> SynthResult:
    """Synthesize CapsAcc and one PE with yosys; ValueError on bad parameters, SynthError on yosys."""
    from amaranth.back import verilog

    from capsacc.array import ArrayConfig
    from rtl.capsacc import check_buildable
    from rtl.export import TOP, export_verilog
    from rtl.pe_array import PE

    config = ArrayConfig(rows, cols, acc_bits, buffer_depth, program_depth)
    check_buildable(config)
    path = shutil.which(yosys)
    if path is None:
        raise SynthError(f"yosys: '{yosys}' is not on PATH (Debian: apt-get install yosys)")
    version = subprocess.run([path, "-V"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="nascaps-synth-") as tmp:
        work = Path(tmp)
        design = _yosys_stat(export_verilog(config), TOP, path, work)
        pe = _yosys_stat(verilog.convert(PE(acc_bits), name="pe"), "pe", path, work)
    by_type = dict(sorted(design["num_cells_by_type"].items()))
    return SynthResult(
        top=TOP, rows=rows, cols=cols, acc_bits=acc_bits, buffer_depth=buffer_depth,
        program_depth=program_depth, cells=design["num_cells"],
        flip_flops=sum(n for cell, n in by_type.items() if is_flip_flop(cell)),
        memory_bits=design.get("num_memory_bits", 0), area_um2=round(_area(by_type), 3),
        published_um2=round(rows * cols * PUBLISHED_PE_UM2 + cols * PUBLISHED_REG25_UM2, 3),
        cells_by_type=by_type, yosys=version, pe_cells=pe["num_cells"],
        pe_area_um2=round(_area(pe["num_cells_by_type"]), 3))
