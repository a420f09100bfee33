"""The calibrated cost model in capsacc: the preset, estimate/estimate_many dispatch, file forms."""

import dataclasses
import json

import numpy as np
import pytest

from capsacc import Accelerator, GenotypeBatch, Network, OperationBatch, estimate, estimate_many
from capsacc.array import ArrayConfig
from capsacc.calibrated import MODEL_VERSION, TARGET_FEATURES, Calibration, features
from capsacc.cli import main
from capsacc.energy import EventEnergies
from capsacc.errors import AcceleratorConfigError
from capsacc.mapping import operation_kinds
from capsacc.network import PRESETS
from capsacc.schedule import OPERAND_STAGES, REQUANT_STAGES, SCALE_STAGES

ISA = {"runs": 2, "matmul_phase_cycles": 1,
       "acts": 2 + REQUANT_STAGES + 2 + OPERAND_STAGES + SCALE_STAGES + 1, "acts_x_levels": 4, "acts_column": 1,
       "act_spans": 2, "act_rows_row": 1, "act_elements_column": 1}
"""Cycle coefficients as rtl/isa.py documents them: an ACT's constant is its issue and start cycles, the
activation unit's pipeline stages outside its two reductions' 2W + span (and their cross-row stages), and
the cycle after the last row (`capsacc.schedule.act_unit_cycles`)."""


def isa_calibration(config=ArrayConfig()) -> Calibration:
    coefficients = {t: tuple(1.0 for _ in names) for t, names in TARGET_FEATURES.items()}
    coefficients["cycles"] = tuple(float(ISA[n]) for n in TARGET_FEATURES["cycles"])
    return Calibration(config, coefficients, EventEnergies.from_tables(config), 1.0e6)


def test_shipped_preset_carries_provenance_and_measured_error():
    accelerator = Accelerator.calibrated()
    provenance = accelerator.calibration.provenance
    assert accelerator.name == "calibrated" and (accelerator.rows, accelerator.cols) == (16, 16)
    for key in ("rtl_version", "arrays", "sweep", "date", "errors", "area"):
        assert provenance[key], key
    assert all(abs(row["calibrated_rel_error"]) < 0.01 for row in provenance["errors"])
    assert accelerator.area_um2 == accelerator.calibration.area_um2 > 0


def test_estimate_uses_the_calibration():
    accelerator = dataclasses.replace(Accelerator.published(), name="isa", calibration=isa_calibration())
    network = Network.preset("capsnet")
    result = estimate(network, accelerator)
    assert result.model == MODEL_VERSION
    config = accelerator.calibration.config
    kinds = operation_kinds(network.operations)
    assert kinds[-5:] == ["routing_uniform", "routing_first_update", "routing_softmax", "routing_update",
                          "routing_softmax"]
    expected = sum(sum(ISA[n] * features(kind, op, config)[n] for n in ISA)
                   for op, kind in zip(network.operations, kinds))
    assert result.cycles == expected
    assert result.latency_ms == pytest.approx(expected * 3e-6)
    assert result.energy_mJ > 0 and len(result.operations) == len(network.operations)
    published = estimate(network, Accelerator.published())
    assert published.model == "nascaps2020" and published.cycles != result.cycles


def test_estimate_many_matches_estimate_for_networks_and_genotype_batches():
    accelerator = dataclasses.replace(Accelerator.published(), calibration=isa_calibration())
    networks = [Network.preset(name) for name in PRESETS]
    singles = [estimate(n, accelerator) for n in networks]
    many = estimate_many(networks, accelerator)
    assert list(many.cycles) == [s.cycles for s in singles]
    assert np.allclose(many.energy_mJ, [s.energy_mJ for s in singles], rtol=0, atol=0)
    descriptors = [d for name in PRESETS for d in PRESETS[name][:-2]]
    offsets = np.cumsum([0] + [len(PRESETS[name]) - 2 for name in PRESETS])
    batch = estimate_many(GenotypeBatch(np.array(descriptors), offsets), accelerator)
    assert list(batch.cycles) == list(many.cycles) and batch.model == MODEL_VERSION
    with pytest.raises(AcceleratorConfigError, match="OperationBatch"):
        estimate_many(OperationBatch.from_networks(networks), accelerator)


def test_calibration_round_trips_through_json_and_toml(tmp_path):
    accelerator = dataclasses.replace(Accelerator.published(), name="isa", calibration=isa_calibration())
    again = Calibration.from_dict(json.loads(json.dumps(accelerator.calibration.to_dict())))
    assert again == accelerator.calibration
    accelerator.to_toml(tmp_path / "acc.toml")
    loaded = Accelerator.from_toml(tmp_path / "acc.toml")
    assert loaded == accelerator
    deepcaps = Network.preset("deepcaps")
    assert estimate(deepcaps, loaded).cycles == estimate(deepcaps, accelerator).cycles


def test_a_mismatched_or_malformed_calibration_is_refused(tmp_path):
    with pytest.raises(AcceleratorConfigError, match="8x16"):
        dataclasses.replace(Accelerator.published(), calibration=isa_calibration(ArrayConfig(rows=8)))
    bad = isa_calibration().to_dict()
    bad["features"]["cycles"] = ["runs"]
    with pytest.raises(AcceleratorConfigError, match="features of 'cycles'"):
        Calibration.from_dict(bad)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(AcceleratorConfigError, match="not JSON"):
        Accelerator.calibrated(tmp_path / "broken.json")


def test_cli_estimate_with_the_calibrated_preset(capsys):
    assert main(["estimate", "capsnet", "--accelerator", "calibrated", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == MODEL_VERSION and result["accelerator"]["name"] == "calibrated"
    assert result["cycles"] == estimate(Network.preset("capsnet"), Accelerator.calibrated()).cycles


def test_the_calibrated_preset_runs_batches_and_reports_per_image():
    """The shipped calibration (no batch in its file: 1) runs batches of `DEFAULT_BATCH` = 8 images as
    the preset; per image an operation costs ceil(batch cycles / B) cycles and the batch's energy / B.
    ClassCaps per image shrinks with the batch, routing does not."""
    from capsacc.calibrated import DEFAULT_BATCH, network_costs
    assert Calibration.shipped().config.batch == 1 and DEFAULT_BATCH == 8
    assert Accelerator.calibrated().calibration.config.batch == DEFAULT_BATCH
    network = Network.preset("capsnet")
    kinds = operation_kinds(network.operations)
    by_batch = {}
    for batch in (1, 3, 8):
        calibration = isa_calibration(ArrayConfig(batch=batch))
        cycles, energy = network_costs(network, calibration)[1], network_costs(network, calibration)[4]
        for i, (op, kind) in enumerate(zip(network.operations, kinds)):
            predicted = calibration.predict(kind, op)
            assert cycles[i] == -(-predicted["cycles"] // batch)
            assert energy[i] == pytest.approx(calibration.energy_mJ(predicted) / batch, rel=1e-12)
        by_batch[batch] = cycles
    classcaps = kinds.index("classcaps")
    assert by_batch[8][classcaps] < by_batch[3][classcaps] < by_batch[1][classcaps]
    for i, kind in enumerate(kinds):
        if kind.startswith("routing"):
            assert by_batch[8][i] == by_batch[3][i] == by_batch[1][i]
    accelerator = dataclasses.replace(Accelerator.published(), calibration=isa_calibration(ArrayConfig(batch=8)))
    assert estimate(network, accelerator).cycles == int(by_batch[8].sum())


def test_estimate_batch_option(capsys):
    assert main(["estimate", "capsnet", "--accelerator", "calibrated", "--json"]) == 0
    preset = json.loads(capsys.readouterr().out)
    assert main(["estimate", "capsnet", "--accelerator", "calibrated", "--batch", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cycles"] == preset["cycles"]
    assert preset["accelerator"]["calibration"]["config"]["batch"] == 8
    assert main(["estimate", "capsnet", "--accelerator", "calibrated", "--batch", "1"]) == 0
    out = capsys.readouterr().out
    assert "batch of 1 image(s)" in out and int(out.splitlines()[-3].split()[0]) > preset["cycles"]
    for argv, message in [(["--accelerator", "calibrated", "--batch", "0"], "--batch 0: must be in 1..4096"),
                          (["--accelerator", "published", "--batch", "2"],
                           "--batch 2: only a calibrated accelerator runs batches")]:
        assert main(["estimate", "capsnet", *argv]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith(f"nascaps estimate: error: {message}") and len(err.splitlines()) == 1
