"""The memory image files of a network run on the RTL with the off-chip memory (`nascaps deploy
--simulate-images K`): everything the host loads, in the order it loads it, so that a test bench
(or `replay`) runs the network from the files alone.

A run through `sim.host.DmaSession` is a sequence of streams (`sim.host.Stream`, one per flush of
each step's session): the host writes partial sums (state of a lone routing phase), writes the
off-chip image from beat 0, runs the programs (each loaded at program address 0, start, wait for
busy to fall), then reads the stored results from the off-chip image. For stream S (numbered from 0
in run order, four digits) the folder holds:

- `S.offchip.hex`: the off-chip image in `$readmemh` form, one beat a line (2W hex digits), the
  value the Verilog memory of `rtl.offchip.OFFCHIP_VERILOG` holds at that beat (byte i in bits
  8i + 7..8i, so the beat's last byte comes first); zero where nothing is loaded.
- `S.programP.hex`: program P of the stream, one 64-bit instruction word (`rtl.isa`) a line, HALT last;
  of an overlay program (`capsacc.schedule.overlay_program`) its first segment, the words the host
  writes (the later segments are loads of the off-chip image, its program words loaded by the program).
- `S.psumQ.hex`: partial-sum write Q, one lane a line (row by row), `acc_bits` two's complement.
- `offchip.bin` (one file): every stream's off-chip image, raw bytes in beat order, one after the other.

The manifest (`write_memory_files`' return value, `memory_files` in deploy.json) names each file with
its base address, size and contents: per stream its step and kind; `offchip` (file, `base_beat` 0,
`beats`, `bytes`, `bin_offset` in offchip.bin); `loads` (which tensor each region holds, the buffer
and rows it is loaded into, its `beat` and `address` (bytes) in the image, `beats` and `bytes`);
`programs` (file, instructions); `psum_writes` (file, first row, rows, lanes); `stores` (the result,
its buffer rows, its beat and address in the image where the DMA writes it).
"""

from pathlib import Path

import numpy as np

from capsacc.array import ArrayConfig
from capsacc.files import write_atomic
from capsacc.mapping import ELEMENTWISE_KINDS
from capsacc.network import Network
from capsacc.schedule import resident_words
from rtl.isa import assemble, buffer_lanes
from rtl.offchip import CapsAccSystem
from sim.harness import run as run_script
from sim.host import WRITE_PORTS, HostSession, offchip_write_table
from sim.network_run import NetworkRun, step_name

FORMAT = "nascaps-memory-files/1"
BIN_NAME = "offchip.bin"

_TENSORS = {("conv", "data"): "input patches (im2col rows, bias column last)",
            ("conv", "weight"): "weights (bias row last)", ("classcaps", "data"): "input capsules",
            ("classcaps", "weight"): "weights", ("chain", "data"): "capsule maps",
            ("chain", "weight"): "identity tiles"}


def tensor_name(kind: str, buffer: str, first: bool) -> str:
    """What a loaded region of a step of `kind` into `buffer` holds (`first`: the network's first step,
    whose input is the images)."""
    if buffer == "program":
        return "program words (an overlay segment)"
    group = "conv" if kind in ("conv", "convcaps", "convcaps3d") else "chain" if kind in ELEMENTWISE_KINDS else kind
    name = _TENSORS.get((group, buffer), f"routing operands ({buffer} buffer)")
    return name.replace("input patches", "input image patches") if first and buffer == "data" else name


def _hex_lines(values: np.ndarray, digits: int) -> str:
    return "".join(f"{int(v):0{digits}x}\n" for v in values)


def beats_hex(image: np.ndarray) -> str:
    """uint8 beats (n, W) as `$readmemh` lines: each beat's bytes last first."""
    text = image[:, ::-1].tobytes().hex()
    width = 2 * image.shape[1]
    return "".join(text[i:i + width] + "\n" for i in range(0, len(text), width))


def read_beats_hex(path: Path, width: int) -> np.ndarray:
    """The uint8 beats (n, `width`) of a file written by `beats_hex`."""
    text = "".join(path.read_text().split())
    return np.frombuffer(bytes.fromhex(text), dtype=np.uint8).reshape(-1, width)[:, ::-1].copy()


def write_memory_files(network: Network, run: NetworkRun, folder: str | Path) -> dict:
    """Write the memory image files of `run` (a `run_network` of `network` on an `OperationDriver`
    with `offchip`) into `folder`; returns the manifest (module docstring). Earlier files of this
    format in `folder` are removed first."""
    folder = Path(folder)
    config = run.runs[0].config
    folder.mkdir(parents=True, exist_ok=True)
    for old in list(folder.glob("[0-9][0-9][0-9][0-9].*.hex")) + [folder / BIN_NAME]:
        old.unlink(missing_ok=True)
    width, digits = config.offchip_bytes_per_cycle, -(-config.acc_bits // 4)
    streams, images, offset, number = [], [], 0, 0
    for position, (step, operation_run) in enumerate(zip(run.steps, run.runs)):
        for stream in operation_run.streams:
            prefix = f"{number:04d}"
            entry = {"stream": number, "step_index": position, "step": step_name(network, step), "kind": step.kind,
                     "psum_writes": [], "programs": []}
            for q, (row, sums) in enumerate(stream.psum_writes):
                name = f"{prefix}.psum{q}.hex"
                write_atomic(folder / name, _hex_lines(sums.reshape(-1) & ((1 << config.acc_bits) - 1), digits))
                entry["psum_writes"].append({"file": name, "row": row, "rows": len(sums), "lanes": sums.shape[1]})
            name = f"{prefix}.offchip.hex"
            write_atomic(folder / name, beats_hex(stream.image))
            entry["offchip"] = {"file": name, "base_beat": 0, "beats": len(stream.image),
                                "bytes": stream.image.size, "bin_offset": offset}
            images.append(stream.image.tobytes())
            offset += stream.image.size
            entry["loads"] = [{"tensor": tensor_name(step.kind, load.buffer, position == 0), "buffer": load.buffer,
                               "buffer_row": load.row, "rows": load.rows, "beat": load.beat,
                               "address": load.beat * width, "beats": load.beats, "bytes": load.beats * width}
                              for load in stream.loads]
            for p, program in enumerate(stream.programs):
                name = f"{prefix}.program{p}.hex"
                words = assemble(program)
                words = words[:resident_words(len(words), config.program_depth)]
                write_atomic(folder / name, _hex_lines(np.array(words, dtype=object), 16))
                entry["programs"].append({"file": name, "instructions": len(words)})
            entry["stores"] = [{"result": store.name, "buffer": store.buffer, "buffer_row": store.row,
                                "rows": store.rows, "beat": store.beat, "address": store.beat * width,
                                "beats": store.beats, "bytes": store.beats * width} for store in stream.stores]
            streams.append(entry)
            number += 1
    write_atomic(folder / BIN_NAME, b"".join(images))
    return {"format": FORMAT, "folder": folder.name, "beat_bytes": width, "acc_bits": config.acc_bits,
            "offchip_bin": {"file": BIN_NAME, "bytes": offset}, "streams": streams}


def replay(folder: str | Path, manifest: dict, config: ArrayConfig, backend: str = "amaranth") -> list[dict]:
    """Run the streams of `manifest` from the files in `folder` alone on the RTL of `config`, each
    step's streams on a fresh (reset) accelerator as the run did; returns, per stream, its stored
    results (int8 rows (rows, buffer lanes) as int64, by result name) and the counters of each of its
    programs, as {"results": ..., "counters": [...]}."""
    steps = {}
    for entry in manifest["streams"]:
        steps.setdefault(entry["step_index"], []).append(entry)
    return [stream for entries in steps.values() for stream in _replay_step(Path(folder), entries, manifest, config,
                                                                            backend)]


def _replay_step(folder: Path, entries: list[dict], manifest: dict, config: ArrayConfig, backend: str) -> list[dict]:
    width = manifest["beat_bytes"]
    host = HostSession(config.rows, config.cols, config.acc_bits)
    beats, plan = 2, []
    for entry in entries:
        for write in entry["psum_writes"]:
            values = np.array([int(line, 16) for line in (folder / write["file"]).read_text().split()], dtype=np.int64)
            values = np.where(values >> (config.acc_bits - 1), values - (1 << config.acc_bits), values)
            host.write_psum(write["row"], values.reshape(write["rows"], write["lanes"]))
        image = read_beats_hex(folder / entry["offchip"]["file"], width)
        beats = max(beats, len(image))
        host.script.drive(WRITE_PORTS, offchip_write_table(0, image))
        host.script.set("host_we", 0)
        for program in entry["programs"]:
            host.start([int(line, 16) for line in (folder / program["file"]).read_text().split()])
        names = []
        for store in entry["stores"]:
            lanes = buffer_lanes(store["buffer"], config.rows, config.cols)
            name = f"{entry['stream']}.{store['result']}"
            host.read_offchip(name, store["beat"], store["rows"], store["beats"] // store["rows"], lanes, width)
            names.append((store["result"], name))
        plan.append((names, len(entry["programs"])))
    component = CapsAccSystem(config, 1 << max(1, (beats - 1).bit_length()), verilog_memory=backend == "verilator")
    results, counters = host.decode(run_script(component, host.script, backend))
    replayed = []
    for names, programs in plan:
        replayed.append({"results": {result: results[name] for result, name in names},
                         "counters": counters[:programs]})
        counters = counters[programs:]
    return replayed
