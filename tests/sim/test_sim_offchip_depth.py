"""The simulated off-chip memory's depth (`OperationDriver.offchip_depth`): every image fits, a Verilator
build's memory is at least `OFFCHIP_VERILATOR_BYTES`, and a session whose image outgrows the build's
memory gets a build with a larger one (an address past the memory would wrap onto other data)."""

import dataclasses

import numpy as np
import pytest

import sim.driver
from sim.driver import OFFCHIP_VERILATOR_BYTES, OperationDriver, rtl_source_key
from test_sim_driver import CONFIG, OPS, kind_of

WIDE = dataclasses.replace(CONFIG, offchip_bytes_per_cycle=16)


def test_the_memory_holds_every_image():
    verilator = OperationDriver(WIDE, "verilator", offchip=True)
    least = OFFCHIP_VERILATOR_BYTES // 16
    assert [verilator.offchip_depth(beats) for beats in (0, 1, least, least + 1, 3 * least)] == \
        [least, least, least, 2 * least, 4 * least]
    amaranth = OperationDriver(WIDE, "amaranth", offchip=True)
    assert [amaranth.offchip_depth(beats) for beats in (0, 1, 2, 3, 152, 256, 257)] == [2, 2, 2, 4, 256, 256, 512]
    assert OperationDriver(WIDE, "verilator").offchip_depth() == 2


def test_each_memory_size_names_its_own_build():
    keys = {rtl_source_key(WIDE, size) for size in (0, OFFCHIP_VERILATOR_BYTES, 2 * OFFCHIP_VERILATOR_BYTES)}
    assert len(keys) == 3 and f"system {OFFCHIP_VERILATOR_BYTES} " in rtl_source_key(WIDE, OFFCHIP_VERILATOR_BYTES)
    assert "system" not in rtl_source_key(WIDE)


@pytest.mark.slow
@pytest.mark.verilator
def test_an_image_larger_than_the_build_memory_gets_a_larger_build(monkeypatch, tmp_path):
    monkeypatch.setattr(sim.driver, "OFFCHIP_VERILATOR_BYTES", 64 * 16)  # 64 beats: tocaps' image fits, conv's not
    driver = OperationDriver(WIDE, "verilator", cache_dir=tmp_path, offchip=True)
    for name, builds in (("tocaps", 1), ("conv", 2)):
        run = driver.run(kind_of(name), OPS[name], seed=3)  # MismatchError if an address wrapped
        assert all(np.array_equal(run.outputs[key], want) for key, want in run.golden.items())
        assert len(list((tmp_path / "by-source").iterdir())) == builds


@pytest.mark.verilator
def test_a_cached_build_is_reused_without_building_the_system(tmp_path):
    """A second driver on the same array finds the first one's Verilator build by its source key
    (`VerilatorModel.cached`, the ports from `rtl.offchip.HOST_SIGNATURE`): the same results and cycles,
    and no system object created and left unelaborated (Amaranth's UnusedElaboratable warning, printed
    some 300 times in a test-suite run before)."""
    import gc
    import warnings

    from amaranth.hdl import UnusedElaboratable

    runs = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            runs.append(OperationDriver(WIDE, "verilator", cache_dir=tmp_path, offchip=True).run(
                kind_of("conv"), OPS["conv"], seed=3))
            gc.collect()
    assert runs[0].total_cycles == runs[1].total_cycles and runs[0].counters == runs[1].counters
    assert all(np.array_equal(runs[1].outputs[key], want) for key, want in runs[1].golden.items())
    assert len(list((tmp_path / "by-source").iterdir())) == 1
    assert not [w for w in caught if issubclass(w.category, UnusedElaboratable)]
