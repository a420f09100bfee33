"""`nascaps calibrate --quick` on a small array, end to end (Verilator), and the fit on its own."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from capsacc.calibrated import TARGET_FEATURES, Calibration
from capsacc.cli import main
from capsacc.array import ArrayConfig, buffer_depths
from capsacc.network import Operation
from capsacc.energy import EventEnergies, sram_area_um2
from rtl.synth import memory_shapes
from rtl.widths import ACC_BITS
from sim.calibration import Point, area_estimate, error_rows, fit, summary_table


def test_area_is_the_synthesized_logic_plus_the_sram_macros_of_each_depth():
    """16x16: the logic of the committed synthesis (memories as SRAM macros there) plus the macros of
    the array's own depths; a deeper partial-sum memory adds exactly its extra bits."""
    summary = json.loads((Path(__file__).resolve().parents[2] / "rtl" / "synth" / "capsacc_16x16.json").read_text())
    config = ArrayConfig(16, 16, 25)
    area = area_estimate(config)
    assert area["logic_um2"] == summary["logic_area_um2"]
    assert area["sram_um2"] == pytest.approx(sum(sram_area_um2(w, d) for d, w in memory_shapes(config).values()))
    assert area["sram_bits"] == 16384 * (3 * 128 + 16 * 25) + 1024 * 64  # 1,576 KiB
    smaller = area_estimate(ArrayConfig(16, 16, 25, psum_depth=8192))
    assert area["area_um2"] - smaller["area_um2"] == pytest.approx(8192 * 16 * 25 * 0.346 * 2.0)


def test_fit_recovers_known_coefficients_and_reports_held_out_errors():
    rng = np.random.default_rng(5)
    truth = {t: rng.uniform(0.5, 5.0, len(names)) for t, names in TARGET_FEATURES.items()}
    names = {n for ns in TARGET_FEATURES.values() for n in ns}
    points = []
    for i in range(60):
        features = {n: int(rng.integers(0, 1000)) for n in names}
        value = {t: float(np.dot(truth[t], [features[n] for n in ns])) for t, ns in TARGET_FEATURES.items()}
        events = {t: int(round(v)) for t, v in value.items() if t != "cycles"}
        points.append(Point("conv", Operation("conv", "conv", 4, 1, 1, 3, 1, 4, 8, 1), ArrayConfig(4, 4),
                            i % 4 == 3, int(round(value["cycles"])), events, features, 0, 0.0, 100))
    coefficients = fit(points)
    for target, values in coefficients.items():
        assert np.allclose(values, truth[target], rtol=1e-3), target
    for p in points:
        p.predicted = {"cycles": p.cycles + 1, **p.events}
    rows = error_rows(points)
    assert len(rows) == 1 and rows[0]["held_out_ops"] == 15
    assert rows[0]["calibrated_rel_error"] == pytest.approx(15 / sum(p.cycles for p in points if p.held_out))


def test_error_rows_and_table_carry_the_held_out_total_cycles():
    """Held-out points with their measured total cycles (data movement included): the table gives the
    RTL's and the model's sums and the largest error per operation; points without them (none
    measured) leave the columns out."""
    config = ArrayConfig(4, 4)
    points = []
    for kind, measured in (("conv", True), ("routing_update", False)):
        for i in range(4):
            points.append(Point(kind, Operation(kind, "conv", 4, 1, 1, 3, 1, 4, 8, 1), config, i == 3, 100,
                                {"mac": 1}, {}, 0, 0.0, 90, predicted={"cycles": 100, "mac": 1},
                                total_cycles=150 if measured and i == 3 else 0,
                                predicted_total_cycles=147 if measured and i == 3 else 0,
                                program_bytes=96 if measured and i == 3 else 0,
                                predicted_program_bytes=80 if measured and i == 3 else 0))
    rows = error_rows(points)
    assert (rows[0]["kind"], rows[0]["rtl_total_cycles"], rows[0]["calibrated_total_cycles"]) == ("conv", 150, 147)
    assert rows[0]["total_max_abs_rel_error"] == pytest.approx(3 / 150) and "rtl_total_cycles" not in rows[1]
    assert (rows[0]["rtl_program_bytes"], rows[0]["calibrated_program_bytes"]) == (96, 80)
    assert rows[0]["program_bytes_max_abs_error"] == 16 and "rtl_program_bytes" not in rows[1]
    table = summary_table(rows).splitlines()
    assert table[0].split()[-6:] == ["rtl_total", "cal_total", "tot_max_%", "rtl_prog_B", "cal_prog_B", "prog_max_B"]
    assert table[1].split()[-6:] == ["150", "147", "2.0000", "96", "80", "16"] and table[2].split()[-1] == "0.0000"
    # the columns stay aligned with the longest kind, "routing_first_update" (20 letters)
    table = summary_table(rows[:1] + [dict(rows[1], kind="routing_first_update")]).splitlines()
    assert len({table[0].index("ops") + 3} | {line.index(" 1 ") + 2 for line in table[1:]}) == 1


def test_calibrate_refuses_bad_arrays(tmp_path, capsys):
    unused = str(tmp_path / "unused")
    assert main(["calibrate", "--rows", "1", "--cols", "4", "--out", unused]) == 2
    assert "--rows 1" in capsys.readouterr().err
    assert main(["calibrate", "--rows", "4", "--cols", "4", "--buffer-depth", "100", "--out", unused]) == 2
    assert "power of two" in capsys.readouterr().err
    assert main(["calibrate", "--rows", "16", "--cols", "16", "--buffer-depth", "64", "--program-depth", "16",
                 "--out", unused]) == 2
    assert "raise --buffer-depth" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator not installed")
def test_calibrate_quick_on_a_small_array(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NASCAPS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert main(["calibrate", "--rows", "4", "--cols", "4", "--quick", "--buffer-depth", "256",
                 "--program-depth", "64", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "cal_err_%" in printed.out and "tot_max_%" in printed.out and "prog_max_B" in printed.out
    assert "bit-exact" not in printed.out
    assert "bit-exact" in printed.err and "cal_err_%" not in printed.err  # progress on stderr
    calibration = Calibration.load(out / "calibration.json")
    assert calibration.config == ArrayConfig(4, 4, ACC_BITS, **buffer_depths(256), program_depth=64)
    assert calibration.energies == EventEnergies.from_tables(calibration.config)  # the RTL's width prices them
    assert calibration.provenance["arrays"] == ["4x4", "2x3", "3x2"]
    with open(out / "errors.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["kind"] for row in rows} == {"conv", "convcaps", "convcaps3d", "classcaps", "routing_uniform",
                                             "routing_softmax", "routing_update", "routing_first_update"}
    for row in rows:
        assert abs(float(row["calibrated_rel_error"])) < 0.01, row
        assert int(row["rtl_cycles"]) > 0 and int(row["published_cycles"]) > 0
        # the held-out operations with the DMA: the model's total cycles and program bytes are the RTL's
        assert int(row["rtl_total_cycles"]) == int(row["calibrated_total_cycles"]) > int(row["rtl_cycles"]), row
        assert int(row["rtl_program_bytes"]) == int(row["calibrated_program_bytes"]), row
        assert int(row["program_bytes_max_abs_error"]) == 0, row
    assert (out / "errors.png").stat().st_size > 1000
    fitted = dict(zip(TARGET_FEATURES["cycles"], calibration.coefficients["cycles"]))
    # the fit recovers the RTL's timing: one cycle per cycle of MATMUL phase, 2 per run, per ACT
    # 23 + 4 ceil(log2 C) + 2 span + rows (row mode) or + 1 + elements (column mode)
    assert fitted["matmul_phase_cycles"] == pytest.approx(1.0, abs=1e-3)
    assert fitted["runs"] == pytest.approx(2.0, abs=1e-3)
    want = {"acts": 23, "acts_x_levels": 4, "acts_column": 1, "act_spans": 2, "act_rows_row": 1,
            "act_elements_column": 1}
    assert {name: round(fitted[name], 3) for name in want} == want
    assert json.loads((out / "calibration.json").read_text())["provenance"]["rtl_version"]


def test_the_shipped_calibration_describes_the_rtl_it_was_fitted_to():
    """The shipped calibration (the default accelerator's) has the RTL's partial-sum width, `rtl.widths.ACC_BITS`
    (`nascaps rtl run`, `nascaps deploy`), and prices events and memories at it: its sweep ran a 25-bit
    variant until session 15, so the model priced CapsNet's on-chip energy a third below the RTL's counters."""
    from capsacc import Accelerator

    calibration = Calibration.shipped()
    assert calibration.config.acc_bits == ACC_BITS
    assert calibration.energies == EventEnergies.from_tables(calibration.config)
    area = area_estimate(calibration.config)
    assert calibration.area_um2 == round(area["area_um2"], 3) and calibration.provenance["area"] == area
    accelerator = Accelerator.calibrated()
    assert accelerator.acc_bits == ACC_BITS and accelerator.calibration.config.acc_bits == ACC_BITS
