"""Logic synthesis with Debian's yosys (`synth`, `stat -json`) and an area estimate, per part,
with the on-chip memories as SRAM macros.

The design keeps its hierarchy (one module per Amaranth component). The five memories of the
configuration (`SRAM_MEMORIES`: data, weight and routing buffers, partial sums, program) become
SRAM macros: each is moved into a module of its own with yosys `submod` and made a blackbox, so
yosys synthesizes the logic around them only, and each macro is priced by the SRAM table of
`capsacc.energy` (area: 45 nm bit cells times a stated overhead; energy of one row access:
Horowitz's square-root fit). Every other RAM (`$mem_v2` cell with a write port: the activation
unit's small row buffers) is moved into a module of its own too and synthesized, so the logic area
splits into three parts: `pe_array` (the modules of rtl/pe_array.py and every module below them),
`buffers` (those small RAMs, as flip-flops and multiplexers: yosys has no memory library here) and
`rest` (control, accumulator, activation unit, host port, counters).

The area estimate multiplies yosys's generic gate counts by per-cell areas of 45 nm standard cells
(`CELL_AREA_UM2`, approximate X1 drive-strength areas of the Nangate 45 nm Open Cell Library;
flip-flop variants add the area of the gate their reset or enable needs). It is a coarse,
technology-mapped-free estimate for comparison with the published 45 nm CapsAcc figures
(Synopsys DC syntheses: 1333.75 um^2 per PE, 494.17 um^2 per 25-bit register).
"""

import json
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from capsacc.energy import SRAM_BIT_UM2, SRAM_OVERHEAD, sram_access_pJ, sram_area_um2
from rtl.version import rtl_version

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


PARTS = ("pe_array", "buffers", "rest")
"""The parts the logic area is split into (see the module docstring)."""

BUFFER_SUBMODULE = "buffers"
"""The `submod` name the RAMs of a module are moved under (yosys names the module PARENT_buffers)."""

SRAM_MEMORIES = {"data_buf": "data_depth", "weight_buf": "weight_depth", "routing_buf": "routing_depth",
                 "psum": "psum_depth", "program": "program_depth"}
"""The memories of the top level synthesized as SRAM macros, by name, with the `ArrayConfig` field of
their depth. The macro of memory M is the blackbox module TOP_sram_M."""


@dataclass(frozen=True)
class SynthResult:
    """A synthesized design: `config` (the hardware fields of its `ArrayConfig`); its logic (every
    cell yosys made: `cells`, `flip_flops`, `logic_area_um2`, per part in `parts`: PARTS ->
    {"cells", "flip_flops", "area_um2"}; `modules`: module -> its own figures, instances and part;
    `rams`: the RAMs left as flip-flops of the buffers part, `memory_bits` their bits); its SRAM
    macros (`srams`: [{"memory", "depth", "width", "bits", "area_um2", "access_pJ"}], one full-row
    access each; `sram_area_um2` their sum); `area_um2` = logic + SRAM; with the published figure
    and one PE synthesized alone; `rtl_version` the RTL synthesized (`rtl.version.rtl_version`)."""
    top: str
    config: dict
    cells: int
    flip_flops: int
    memory_bits: int
    rams: list
    srams: list
    logic_area_um2: float
    sram_area_um2: float
    area_um2: float
    published_um2: float
    parts: dict
    modules: dict
    cells_by_type: dict
    yosys: str
    pe_cells: int
    pe_area_um2: float
    rtl_version: str

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """A human-readable table of the figures."""
        rows, cols = self.config["rows"], self.config["cols"]
        n_pe = rows * cols
        def row(name, cells, flip_flops, area):
            return f"{name:<38}{cells:>10}{flip_flops:>12}{area:>14.1f}{area / self.area_um2:>9.1%}"
        depths = ", ".join(f"{name} {value}" for name, value in self.config.items() if name.endswith("_depth"))
        lines = [
            f"CapsAcc {rows}x{cols} (RTL {self.rtl_version[:12]}), acc_bits {self.config['acc_bits']}, {depths}; "
            f"{self.yosys}: synth (hierarchy kept, the {len(self.srams)} memories as SRAM macros); stat",
            f"{'':<38}{'cells':>10}{'flip_flops':>12}{'area_um2':>14}{'share':>9}",
            row("whole design (logic + SRAM)", self.cells, self.flip_flops, self.area_um2),
            row("logic (yosys generic gates)", self.cells, self.flip_flops, self.logic_area_um2),
        ]
        labels = {"pe_array": f"  PE array ({n_pe} PEs)", "buffers": f"  small RAMs ({self.memory_bits} bits as FFs)",
                  "rest": "  rest"}
        for name in PARTS:
            part = self.parts[name]
            lines.append(row(labels[name], part["cells"], part["flip_flops"], part["area_um2"]))
            if name == "rest":
                for module, figures in sorted(self.modules.items(), key=lambda item: -item[1]["area_um2"]):
                    if figures["part"] == "rest":
                        lines.append(row(f"    {module}", figures["cells"] * figures["instances"],
                                         figures["flip_flops"] * figures["instances"],
                                         figures["area_um2"] * figures["instances"]))
        lines.append(f"{'SRAM macros':<28}{'depth':>10}{'width':>10}{'KiB':>10}{'area_um2':>14}{'share':>9}"
                     f"{'pJ/access':>11}")
        for sram in self.srams:
            lines.append(f"{'  ' + sram['memory']:<28}{sram['depth']:>10}{sram['width']:>10}"
                         f"{sram['bits'] / 8192:>10.1f}{sram['area_um2']:>14.1f}{sram['area_um2'] / self.area_um2:>9.1%}"
                         f"{sram['access_pJ']:>11.2f}")
        lines += [
            f"{'  all SRAM':<28}{'':>20}{sum(s['bits'] for s in self.srams) / 8192:>10.1f}{self.sram_area_um2:>14.1f}"
            f"{self.sram_area_um2 / self.area_um2:>9.1%}",
            f"one PE (synthesized alone){'':<12}{self.pe_cells:>10}{'':>12}{self.pe_area_um2:>14.1f}",
            f"published 45 nm: {n_pe} PEs x {PUBLISHED_PE_UM2:.2f} + {cols} x 25-bit registers x "
            f"{PUBLISHED_REG25_UM2:.2f} = {self.published_um2:.1f} um2",
            f"ratio estimate/published: logic {self.logic_area_um2 / self.published_um2:.3f}, "
            f"PE array {self.parts['pe_array']['area_um2'] / (n_pe * PUBLISHED_PE_UM2):.3f}, "
            f"PE alone {self.pe_area_um2 / PUBLISHED_PE_UM2:.3f}",
            "logic: Nangate45 X1 cell areas per generic gate (rtl/synth.py CELL_AREA_UM2); SRAM: "
            f"{SRAM_BIT_UM2} um2 bit cells x {SRAM_OVERHEAD:g} (assumed overhead), Horowitz 10 pJ per 64 bits x "
            "sqrt(KiB / 8) (capsacc/energy.py)",
        ]
        return "\n".join(lines)


def memory_shapes(config) -> dict:
    """(depth, width in bits) of each memory of SRAM_MEMORIES in the CapsAcc of `config`: R int8
    lanes a row (data, routing), C int8 lanes (weight), C lanes of acc_bits (partial sums), 64-bit
    instruction words (program)."""
    rows, cols = config.rows, config.cols
    widths = {"data_buf": 8 * rows, "weight_buf": 8 * cols, "routing_buf": 8 * rows,
              "psum": config.acc_bits * cols, "program": 64}
    return {memory: (getattr(config, field), widths[memory]) for memory, field in SRAM_MEMORIES.items()}


def sram_macros(rams: list, config) -> list:
    """The SRAM macros of `rams` (`_rams`: {"memory", "depth", "width"}) whose memory is one of
    SRAM_MEMORIES, priced by `capsacc.energy`; SynthError unless each of SRAM_MEMORIES is there
    once, of the shape `memory_shapes` gives it."""
    found = [ram for ram in rams if ram["memory"] in SRAM_MEMORIES]
    names = sorted(ram["memory"] for ram in found)
    if names != sorted(SRAM_MEMORIES):
        raise SynthError(f"the design's memories {names} are not the SRAM macros {sorted(SRAM_MEMORIES)}")
    macros, shapes = [], memory_shapes(config)
    for ram in sorted(found, key=lambda ram: list(SRAM_MEMORIES).index(ram["memory"])):
        depth, width = ram["depth"], ram["width"]
        if (depth, width) != shapes[ram["memory"]]:
            raise SynthError(f"memory {ram['memory']}: {depth} rows of {width} bits, the configuration gives "
                             f"{shapes[ram['memory']][0]} of {shapes[ram['memory']][1]}")
        macros.append({"memory": ram["memory"], "depth": depth, "width": width, "bits": depth * width,
                       "area_um2": round(sram_area_um2(width, depth), 3),
                       "access_pJ": round(sram_access_pJ(width, width * depth // 8), 4)})
    return macros


class SynthError(RuntimeError):
    """yosys is missing or failed, or the design lacks a part."""


def _run_yosys(yosys: str, script: str, workdir: Path, what: str) -> None:
    result = subprocess.run([yosys, "-q", "-p", script], capture_output=True, text=True, cwd=workdir)
    if result.returncode != 0:
        said = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise SynthError(f"yosys failed on {what} (exit code {result.returncode})"
                         + (f": {said[-1]}" if said else ""))


def _read_stat(path: Path) -> dict:
    """yosys's `stat -json` output; yosys 0.23 leaves a comma before the closing brace."""
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json.loads(re.sub(r",\s*}\s*$", "}", text))


def _yosys_stat_flat(verilog: str, top: str, yosys: str, workdir: Path) -> dict:
    """`synth -flatten` of a small design: its stat -json "design" object."""
    (workdir / f"{top}.v").write_text(verilog)
    _run_yosys(yosys, f"read_verilog {top}.v; synth -flatten -top {top}; tee -q -o {top}_stat.json stat -json",
               workdir, top)
    return _read_stat(workdir / f"{top}_stat.json")["design"]


def _yosys_stat_modules(verilog: str, top: str, yosys: str, workdir: Path) -> tuple[dict, list, Counter]:
    """Synthesize with the hierarchy kept, the memories of SRAM_MEMORIES as blackbox modules and the
    other RAMs of every module moved into a submodule. Returns the stat of each synthesized module
    (name -> {"num_cells_by_type": {cell type or submodule: count}, ...}, the SRAM instances taken
    out), every RAM ([{"memory", "depth", "width"}], before yosys maps them) and the instances of
    each SRAM macro module."""
    (workdir / f"{top}.v").write_text(verilog)
    rams = "t:$mem_v2 r:WR_PORTS>0 %i"
    macros = {f"{top}_sram_{memory}": memory for memory in SRAM_MEMORIES}
    script = "; ".join([
        f"read_verilog {top}.v", f"hierarchy -check -top {top}", "proc", "opt_clean", "memory -nomap",
        f"tee -q -o {top}_rams.il dump {rams}",
        f'setattr -set submod "{BUFFER_SUBMODULE}" {rams}',
        *(f'setattr -set submod "sram_{memory}" {top}/c:{memory} {rams} %i' for memory in SRAM_MEMORIES),
        "submod", f"blackbox {' '.join(macros)}",
        f"synth -top {top}",
        "setattr -mod -unset top",  # stat of the modules only (yosys 0.23 writes the hierarchy into the JSON)
        f"tee -q -o {top}_modules.json stat -json"])
    _run_yosys(yosys, script, workdir, top)
    modules, instances = {}, Counter()
    for name, stat in _read_stat(workdir / f"{top}_modules.json")["modules"].items():
        cells = stat["num_cells_by_type"]
        for cell in [cell for cell in cells if cell.lstrip("\\") in macros]:
            instances[cell.lstrip("\\")] += cells.pop(cell)
        modules[name.lstrip("\\")] = stat
    return modules, _rams((workdir / f"{top}_rams.il").read_text()), instances


def _rams(rtlil: str) -> list:
    """The $mem_v2 cells of an RTLIL dump: [{"memory", "depth", "width"}]."""
    rams = []
    for line in rtlil.splitlines():
        words = line.split()
        if words[:2] == ["cell", "$mem_v2"]:
            rams.append({"memory": words[2].lstrip("\\"), "depth": 0, "width": 0})
        elif rams and words[:2] in (["parameter", "\\SIZE"], ["parameter", "\\WIDTH"]):
            rams[-1]["depth" if words[1] == "\\SIZE" else "width"] = int(words[2])
    return rams


def without_memory_init(verilog: str, memories) -> str:
    """`verilog` without the `initial` block that follows the declaration of each memory named in
    `memories`: an SRAM macro has no initial contents, and yosys spends minutes on the one
    assignment per row that Amaranth writes (16,384 rows each by default). Other memories (the
    activation unit's ROMs) keep theirs. SynthError if a named memory is not declared."""
    lines, kept, found, index = verilog.splitlines(keepends=True), [], set(), 0
    while index < len(lines):
        kept.append(lines[index])
        match = _MEMORY.match(lines[index])
        index += 1
        if match is not None and match.group(1) in memories:
            found.add(match.group(1))
            if index < len(lines) and lines[index].strip() == "initial begin":
                while lines[index].strip() != "end":
                    index += 1
                index += 1
    missing = sorted(set(memories) - found)
    if missing:
        raise SynthError(f"memories {missing} are not declared in the exported Verilog")
    return "".join(kept)


_MEMORY = re.compile(r"^\s*reg \[\d+:0\] \\?(\w+)\s+\[\d+:0\];$")
_SOURCE = re.compile(r'^\(\* src = "([^"]*?):\d+[^"]*" \*\)$')
_MODULE = re.compile(r"^module \\?(\S+?)\s*\(")


def module_sources(verilog: str) -> dict:
    """Module name -> the source file (as Amaranth wrote it) of each module of an exported design."""
    sources, current = {}, None
    for line in verilog.splitlines():
        match = _SOURCE.match(line)
        if match is not None:
            current = match.group(1)
            continue
        match = _MODULE.match(line)
        if match is not None:
            sources[match.group(1)] = current
            current = None
    return sources


def split_parts(modules: dict, sources: dict, top: str, pe_array_source: str) -> tuple[dict, dict]:
    """Per-part and per-module figures of a hierarchical stat (`_yosys_stat_modules`).

    `sources`: module -> source file (`module_sources`); the PE array is every child of `top` whose
    file ends with `pe_array_source` and every module below one (a component of that file used
    elsewhere, such as the activation unit's `Multiplier`s, counts in its user's part); the
    buffers are the modules that yosys
    made (those without a source: `submod`); the rest is every other module. Each module's own cells
    count once per instance reachable from `top`. SynthError if no module is of the PE array."""
    instances = Counter({top: 1})
    children = {}
    for name, stat in modules.items():
        children[name] = {cell: n for cell, n in stat["num_cells_by_type"].items() if cell.lstrip("\\") in modules}
    order = [top]
    for name in order:  # breadth first; Amaranth's hierarchy is a tree
        for child, count in children[name].items():
            child = child.lstrip("\\")
            instances[child] += instances[name] * count
            if child not in order:
                order.append(child)
    pe_roots = [child for child in (name.lstrip("\\") for name in children[top])
                if (sources.get(child) or "").endswith(pe_array_source)]
    if not pe_roots:
        raise SynthError(f"no module of the PE array ({pe_array_source}) in the synthesized design")
    part_of = {}
    for name in order:
        if any(name == root or name.startswith(root + ".") for root in pe_roots):
            part_of[name] = "pe_array"
        elif name not in sources:
            part_of[name] = "buffers"
        else:
            part_of[name] = "rest"
    per_module, totals = {}, {part: Counter() for part in PARTS}
    for name in order:
        own = {cell: n for cell, n in modules[name]["num_cells_by_type"].items() if cell not in children[name]}
        figures = {"part": part_of[name], "instances": instances[name], "cells": sum(own.values()),
                   "flip_flops": sum(n for cell, n in own.items() if is_flip_flop(cell)),
                   "area_um2": round(_area(own), 3), "cells_by_type": dict(sorted(own.items()))}
        per_module[name] = figures
        for key in ("cells", "flip_flops", "area_um2"):
            totals[part_of[name]][key] += figures[key] * instances[name]
    parts = {part: {"cells": int(t["cells"]), "flip_flops": int(t["flip_flops"]),
                    "area_um2": round(float(t["area_um2"]), 3)} for part, t in totals.items()}
    return parts, per_module


def _area(cells_by_type: dict) -> float:
    return sum(cell_area_um2(cell) * count for cell, count in cells_by_type.items())


def synthesize(config, yosys: str = "yosys") -> SynthResult:
    """Synthesize CapsAcc of `config` (a `capsacc.array.ArrayConfig`; hierarchy kept, split into PARTS,
    the memories of SRAM_MEMORIES as priced SRAM macros) and one PE with yosys; ValueError on a
    configuration the RTL cannot build, SynthError on yosys."""
    from amaranth.back import verilog

    import rtl.pe_array
    from rtl.capsacc import check_buildable
    from rtl.export import TOP, export_verilog
    from rtl.pe_array import PE

    check_buildable(config)
    path = shutil.which(yosys)
    if path is None:
        raise SynthError(f"yosys: '{yosys}' is not on PATH (Debian: apt-get install yosys)")
    version = subprocess.run([path, "-V"], capture_output=True, text=True).stdout.strip()
    source_version = rtl_version()  # before elaborating: the sources may change during a long run
    design = export_verilog(config)
    with tempfile.TemporaryDirectory(prefix="nascaps-synth-") as tmp:
        work = Path(tmp)
        modules, rams, instances = _yosys_stat_modules(without_memory_init(design, SRAM_MEMORIES), TOP, path, work)
        pe = _yosys_stat_flat(verilog.convert(PE(config.acc_bits), name="pe"), "pe", path, work)
    srams = sram_macros(rams, config)
    if any(instances[f"{TOP}_sram_{sram['memory']}"] != 1 for sram in srams):
        raise SynthError(f"the synthesized design holds the SRAM macros {dict(instances)}, not one of each")
    flip_flop_rams = [ram for ram in rams if ram["memory"] not in SRAM_MEMORIES]
    parts, per_module = split_parts(modules, module_sources(design), TOP, Path(rtl.pe_array.__file__).name)
    by_type = Counter()
    for figures in per_module.values():
        for cell, n in figures["cells_by_type"].items():
            by_type[cell] += n * figures["instances"]
    by_type = dict(sorted(by_type.items()))
    logic = round(_area(by_type), 3)
    sram = round(sum(macro["area_um2"] for macro in srams), 3)
    rows, cols = config.rows, config.cols
    return SynthResult(
        top=TOP, config=config.hardware(), cells=sum(by_type.values()),
        flip_flops=sum(n for cell, n in by_type.items() if is_flip_flop(cell)),
        memory_bits=sum(ram["depth"] * ram["width"] for ram in flip_flop_rams), rams=flip_flop_rams, srams=srams,
        logic_area_um2=logic, sram_area_um2=sram, area_um2=round(logic + sram, 3),
        published_um2=round(rows * cols * PUBLISHED_PE_UM2 + cols * PUBLISHED_REG25_UM2, 3),
        parts=parts, modules=per_module, cells_by_type=by_type, yosys=version, pe_cells=pe["num_cells"],
        pe_area_um2=round(_area(pe["num_cells_by_type"]), 3), rtl_version=source_version)
