"""Record SCALE-Sim 3.0.0 reports (run with SCALE-Sim's own Python).

    SCALESIM_VENV/bin/python tests/dse/data/record_scalesim.py

(SCALESIM_VENV any folder: `python -m venv SCALESIM_VENV && SCALESIM_VENV/bin/pip install
scalesim==3.0.0 "numpy<2.4"`). Writes beside this script, one row per layer and configuration, with
the configuration (dataflow, array rows and cols, SRAM sizes in kB, CALC interface bandwidth mode)
and SCALE-Sim's COMPUTE_REPORT and DETAILED_ACCESS_REPORT columns for that layer:

- `scalesim_reports.csv`: the convolution-format layers of `scalesim_layers.csv` on four arrays,
  ws/os/is, 64 kB and 1 kB SRAMs;
- `scalesim_gemm_reports.csv`: the GEMM-format (`-i gemm`) rows of `scalesim_gemms.csv` (training
  passes of LeNet's conv2 and fc2) on two arrays, ws/os/is, 64 kB SRAMs.
"""

import contextlib
import csv
import io
import itertools
import tempfile
from pathlib import Path

from scalesim.scale_sim import scalesim

HERE = Path(__file__).parent
DATAFLOWS = ("ws", "os", "is")
RECORDINGS = (  # topology, output, GEMM format, arrays, SRAM sizes (ifmap, filter, ofmap kB)
    ("scalesim_layers.csv", "scalesim_reports.csv", False, ((4, 4), (8, 8), (4, 16), (16, 8)),
     ((64, 64, 64), (1, 1, 1))),
    ("scalesim_gemms.csv", "scalesim_gemm_reports.csv", True, ((4, 4), (8, 16)), ((64, 64, 64),)),
)

CONFIG = """[general]
run_name = record

[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : {ifmap}
FilterSramSzkB : {filter}
OfmapSramSzkB : {ofmap}
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Dataflow : {dataflow}
Bandwidth : 10
ReadRequestBuffer : 32
WriteRequestBuffer : 32

[layout]
IfmapCustomLayout : False
IfmapSRAMBankBandwidth : 10
IfmapSRAMBankNum : 10
IfmapSRAMBankPort : 2
FilterCustomLayout : False
FilterSRAMBankBandwidth : 10
FilterSRAMBankNum : 10
FilterSRAMBankPort : 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth : CALC
UseRamulatorTrace : False
"""


def read_report(path: Path) -> list[list[str]]:
    """Rows of a SCALE-Sim report without its header, fields stripped, trailing comma dropped."""
    lines = path.read_text().splitlines()[1:]
    return [[field.strip() for field in line.split(",")[:-1]] for line in lines if line.strip()]


def record(topology: Path, output: Path, gemm: bool, arrays, sram_sizes) -> None:
    layer_names = [line.split(",")[0].strip() for line in topology.read_text().splitlines()[1:] if line.strip()]
    rows = []
    for dataflow, (array_rows, array_cols), (ifmap, filt, ofmap) in itertools.product(DATAFLOWS, arrays, sram_sizes):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            config = tmp / "scale.cfg"
            config.write_text(CONFIG.format(rows=array_rows, cols=array_cols, ifmap=ifmap, filter=filt,
                                            ofmap=ofmap, dataflow=dataflow))
            sim = scalesim(save_disk_space=True, verbose=False, config=str(config), topology=str(topology),
                           layout=str(topology), input_type_gemm=gemm)
            with contextlib.redirect_stdout(io.StringIO()):
                sim.run_scale(top_path=str(tmp / "out"))
            compute = read_report(tmp / "out" / "record" / "COMPUTE_REPORT.csv")
            detail = read_report(tmp / "out" / "record" / "DETAILED_ACCESS_REPORT.csv")
        for name, comp, det in zip(layer_names, compute, detail):
            rows.append([name, dataflow, array_rows, array_cols, ifmap, filt, ofmap,
                         comp[1], comp[2], comp[3], det[3], det[6], det[9], det[12], det[15], det[18]])
    with output.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["layer", "dataflow", "rows", "cols", "ifmap_sram_kB", "filter_sram_kB", "ofmap_sram_kB",
                         "total_cycles_incl_prefetch", "total_cycles", "stall_cycles",
                         "sram_ifmap_reads", "sram_filter_reads", "sram_ofmap_writes",
                         "dram_ifmap_reads", "dram_filter_reads", "dram_ofmap_writes"])
        writer.writerows(rows)


def main() -> None:
    for topology, output, gemm, arrays, sram_sizes in RECORDINGS:
        record(HERE / topology, HERE / output, gemm, arrays, sram_sizes)


if __name__ == "__main__":
    main()
