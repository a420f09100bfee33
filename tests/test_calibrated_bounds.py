"""The calibrated model's inputs: tiling counts in closed form (nothing grows with the operation),
operations that do not fit the array, and malformed calibrations, each a located one-line error."""

import copy
import json
import time
from importlib import resources

import pytest

from capsacc.array import ArrayConfig, buffer_depths
from capsacc.calibrated import Calibration
from capsacc.cli import main
from capsacc.errors import AcceleratorConfigError
from capsacc.mapping import (MappingError, act_lanes, classcaps_per_run, matmul_blocks, matmul_chunk_rows,
                             matmul_shape, plan_counts)
from capsacc.network import Operation

SHIPPED = json.loads(resources.files("capsacc").joinpath("data/calibrated.json").read_text())


def conv(ch_out: int, caps_out: int, kind: str = "conv") -> Operation:
    return Operation("op", kind, 8, 4, 2, 3, 1, 8, ch_out, caps_out)


@pytest.mark.parametrize("ch_out, caps_out, kind", [(5, 1, "conv"), (40, 1, "conv"), (3, 4, "convcaps"),
                                                    (7, 3, "convcaps"), (2, 16, "convcaps")])
def test_act_counts_in_closed_form_equal_the_block_list(ch_out, caps_out, kind):
    config = ArrayConfig(rows=4, cols=16, **buffer_depths(4096), program_depth=256)
    counts = plan_counts(kind, conv(ch_out, caps_out, kind), config)
    shape = matmul_shape(kind, conv(ch_out, caps_out, kind), config)
    blocks = matmul_blocks(shape)
    nc = matmul_chunk_rows(shape, config)
    chunks = shape.n // nc + (shape.n % nc > 0)
    assert counts["acts"] == chunks * len(blocks)
    assert counts["act_rows"] == shape.n * len(blocks)
    assert counts["act_elements"] == shape.n * sum(act_lanes(16, shape.func, shape.act_length(width))[1]
                                                   for _, width in blocks)
    assert counts["act_rows_row"] == counts["act_rows"] and counts["act_spans"] == counts["acts"]

def test_a_very_wide_layer_is_counted_without_memory_or_time():
    config = ArrayConfig(rows=16, cols=16, **buffer_depths(2 ** 30), program_depth=2 ** 30)
    start = time.perf_counter()
    counts = plan_counts("conv", conv(2 ** 28, 1), config)
    assert time.perf_counter() - start < 0.1
    assert counts["act_elements"] == 64 * 2 ** 28


def test_a_large_batch_is_counted_without_memory_or_time_and_limited_by_the_buffers():
    """The closed form scales with the batch without growing: a convolution's rows stack (B times the
    elements), a routing runs B times; ClassCaps runs a capsule group over all its mb column tiles while
    mb·(kc·R + B·k) weight-buffer rows fit, over tile groups beyond, and needs one tile's kc·R + B·k rows:
    CapsNet's (k = 2, mb = 10) runs all 10 tiles at once up to B = 811 at 16,384 rows, one tile per run
    at B = 812, and at 4,096 rows maps up to B = 2,040 and is refused above."""
    import dataclasses
    from capsacc.network import Network
    config = ArrayConfig(rows=16, cols=16, **buffer_depths(2 ** 30), program_depth=2 ** 30, batch=4096)
    start = time.perf_counter()
    counts = plan_counts("conv", conv(2 ** 20, 1), config)
    assert time.perf_counter() - start < 0.1
    assert counts["act_elements"] == 4096 * plan_counts("conv", conv(2 ** 20, 1), dataclasses.replace(
        config, batch=1))["act_elements"]
    classcaps = next(op for op in Network.preset("capsnet").operations if op.kind == "classcaps")
    assert classcaps_per_run(8, 160, ArrayConfig(batch=811)) == (2, 10)
    assert classcaps_per_run(8, 160, ArrayConfig(batch=812)) == (2, 1)
    assert (plan_counts("classcaps", classcaps, ArrayConfig(batch=812))["runs"]
            == 10 * plan_counts("classcaps", classcaps, ArrayConfig(batch=811))["runs"])
    plan_counts("classcaps", classcaps, ArrayConfig(**buffer_depths(4096), batch=2040))
    with pytest.raises(MappingError, match="for a batch of 2041 image"):
        plan_counts("classcaps", classcaps, ArrayConfig(**buffer_depths(4096), batch=2041))
    routing = next(op for op in Network.preset("capsnet").operations if op.kind == "routing")
    single = plan_counts("routing", routing, ArrayConfig())
    assert plan_counts("routing", routing, ArrayConfig(batch=8)) == {k: 8 * v for k, v in single.items()}


def test_an_operation_that_does_not_fit_is_a_located_error(tmp_path, capsys):
    genotype = [[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 9, 2, 14, 32, 65],  # capsules of 65 atoms
                [1, 14, 32, 65, 14, 1, 1, 10, 16], [-1], [1]]
    path = tmp_path / "wide.json"
    path.write_text(json.dumps(genotype))
    assert main(["estimate", str(path), "--accelerator", "calibrated"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["nascaps estimate: error: operation convcaps1 (convcaps) on the calibrated 16x16 array: capsules "
                     "of 65 atoms: the activation unit takes 1..64"]
    with pytest.raises(MappingError, match="8 column blocks of 1 rows do not fit buffers of 16 rows and a "
                                           "program of 1024 words"):  # not one 16-row tile beside the 8 result rows
        plan_counts("conv", conv(128, 1, "conv"), ArrayConfig(**buffer_depths(16)))
    with pytest.raises(MappingError, match="capsules of 65 atoms: the activation unit takes 1..64"):
        plan_counts("convcaps", conv(2, 65, "convcaps"), ArrayConfig())


@pytest.mark.parametrize("field, value", [("rows", 0), ("cols", 10 ** 30), ("psum_depth", "16"),
                                          ("program_depth", 2), ("acc_bits", True), ("rows", 1.5)])
def test_array_config_fields_are_bounded(field, value):
    with pytest.raises(AcceleratorConfigError, match=f"array '{field}' must be an integer"):
        ArrayConfig(**{field: value})


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("area_um2"), "no 'area_um2'"),
    (lambda d: d.update(area_um2="x"), "'area_um2' must be a finite positive number"),
    (lambda d: d.update(period_ns=float("inf")), "'period_ns' must be a finite positive number"),
    (lambda d: d.update(provenance="x"), "'provenance' must be a table"),
    (lambda d: d.update(features=[]), "'features' must be a table"),
    (lambda d: d["coefficients"].update(cycles=["a"] * 14), "coefficients of 'cycles' must be a list of finite"),
    (lambda d: d["energies_pJ"].update(mac=None), "energies_pJ 'mac' must be a finite number"),
    (lambda d: d["config"].update(weight_depth=0), "array 'weight_depth' must be an integer"),
    (lambda d: d["provenance"].update(arrays=["16 by 16"]), "provenance 'arrays' must be a list of \"RxC\" names"),
    (lambda d: d["provenance"]["errors"][3].pop("energy_events_max_abs_rel_error"),
     "provenance 'errors' row 3: 'energy_events_max_abs_rel_error' must be a finite number >= 0, got None"),
    (lambda d: d["provenance"].update(errors={}), "provenance 'errors' must be a list"),
])
def test_a_malformed_calibration_names_the_key(change, message):
    values = copy.deepcopy(SHIPPED)
    change(values)
    with pytest.raises(AcceleratorConfigError, match=message):
        Calibration.from_dict(values, "c.json")


def test_a_calibration_predicting_past_int64_is_refused(tmp_path, capsys):
    values = copy.deepcopy(SHIPPED)
    values["coefficients"]["cycles"] = [1e308] * len(values["coefficients"]["cycles"])
    (tmp_path / "c.json").write_text(json.dumps(values))
    config = values["config"]
    (tmp_path / "a.toml").write_text(f'rows = {config["rows"]}\ncols = {config["cols"]}\ncalibration = "c.json"\n')
    assert main(["estimate", "capsnet", "--accelerator", str(tmp_path / "a.toml")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["nascaps estimate: error: the calibration predicts inf for 'cycles' of this conv "
                                "operation, outside the range of 64-bit integers"]


def test_the_held_out_error_is_the_worst_recorded_and_every_estimate_carries_it(tmp_path, capsys):
    """`calibration_error_pct`: the largest held-out error of cycles or event energy, in percent; a
    calibration recording none says so under the table and gives null."""
    values = copy.deepcopy(SHIPPED)
    values["provenance"]["errors"][2]["calibrated_max_abs_rel_error"] = 0.0125
    values["provenance"]["errors"][5]["energy_events_max_abs_rel_error"] = 0.003
    assert Calibration.from_dict(values).held_out_error_pct == pytest.approx(1.25)
    (tmp_path / "c.json").write_text(json.dumps(values))
    config = values["config"]
    (tmp_path / "a.toml").write_text(f'rows = {config["rows"]}\ncols = {config["cols"]}\ncalibration = "c.json"\n')
    assert main(["estimate", "capsnet", "--accelerator", str(tmp_path / "a.toml")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("calibration error: 1.2500 % (")
    del values["provenance"]["errors"]
    (tmp_path / "c.json").write_text(json.dumps(values))
    assert main(["estimate", "capsnet", "--accelerator", str(tmp_path / "a.toml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["calibration_error_pct"] is None
    assert main(["estimate", "capsnet", "--accelerator", str(tmp_path / "a.toml")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == ("calibration error: not recorded (the calibration's "
                                                        "provenance holds no held-out errors)")
