"""The published NASCaps model reproduces every figure the NASCaps authors published."""

import math

import pytest

from capsacc import Accelerator, Network, estimate


def test_every_published_record_reproduces(published_records):
    accelerator = Accelerator.published()
    assert len(published_records) == 34
    for record in published_records:
        result = estimate(Network.from_genotype(record["genotype"]), accelerator)
        exact = record["exact"]
        assert result.energy_mJ == pytest.approx(exact["energy_mJ"], rel=1e-9), record["name"]
        assert result.latency_ms == pytest.approx(exact["latency_ms"], rel=1e-9), record["name"]
        assert result.weights == exact["weights"], record["name"]
        assert len(result.operations) == exact["hw_layers"], record["name"]


def test_published_rounding_matches_printed_figures(published_records):
    """The `published` figures are the exact ones as the authors printed them (2-3 significant digits)."""
    accelerator = Accelerator.published()
    for record in published_records:
        result = estimate(Network.from_genotype(record["genotype"]), accelerator)
        printed = record["published"]
        assert result.latency_ms == pytest.approx(printed["latency_ms"], rel=0.01, abs=0.006), record["name"]
        assert result.energy_mJ == pytest.approx(printed["energy_mJ"], rel=0.01, abs=0.006), record["name"]
        assert math.floor(result.memory_KiB) == pytest.approx(printed["memory_KiB"], abs=1), record["name"]


def test_presets_are_the_published_reference_networks(published_records):
    by_name = {record["name"]: record for record in published_records}
    for preset, name in (("capsnet", "CapsNet"), ("deepcaps", "DeepCaps")):
        result = estimate(Network.preset(preset), Accelerator.published())
        assert result.energy_mJ == pytest.approx(by_name[name]["exact"]["energy_mJ"], rel=1e-12)
        assert result.cycles * 3e-6 == pytest.approx(by_name[name]["exact"]["latency_ms"], rel=1e-12)
