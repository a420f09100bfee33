"""The Accelerator configuration: published preset, 45 nm tables, TOML round trip and errors."""

import json

import pytest

from capsacc import Accelerator, AcceleratorConfigError
from capsacc.array import ArrayConfig
from capsacc.energy import OFFCHIP_PJ_PER_BYTE


def test_published_is_the_nascaps_capsacc():
    acc = Accelerator.published()
    assert (acc.rows, acc.cols, acc.inputs_per_pe, acc.pe_stages, acc.period_ns) == (16, 16, 1, 1, 3.0)
    assert (acc.pe_power_mW, acc.reg_power_mW) == (0.4815, 0.2303)
    assert acc.pe_area_um2 == pytest.approx(1333.750616)
    assert acc.reg_area_um2 == pytest.approx(494.1729)


def test_other_configurations_come_from_the_tables():
    acc = Accelerator.from_tables(period_ns=3, inputs_per_pe=2, pe_stages=2)
    assert acc.pe_power_mW == 1.1552 and acc.pe_area_um2 == pytest.approx(3231.130529)
    slow = Accelerator.from_tables(period_ns=4)
    assert slow.reg_power_mW == 0.1737


@pytest.mark.parametrize("kwargs, words", [
    ({"period_ns": 7}, ["period_ns=7", "pe.json.gz"]),
    ({"pe_stages": 2, "inputs_per_pe": 200, "period_ns": 1}, ["inputs_per_pe=200"]),
    ({"acc_bits": 16}, ["acc_bits=16"]),
    ({"data_bits": 16}, ["data_bits"]),
])
def test_missing_table_combinations_are_errors(kwargs, words):
    with pytest.raises(AcceleratorConfigError) as raised:
        Accelerator.from_tables(**kwargs)
    for word in words:
        assert word in str(raised.value)


def test_toml_round_trip(tmp_path):
    path = tmp_path / "acc.toml"
    original = Accelerator.from_tables(rows=32, cols=8, period_ns=4, name="wide")
    original.to_toml(path)
    assert Accelerator.from_toml(path) == original


def test_offchip_port_defaults_to_the_rtl_and_dram_energy():
    acc = Accelerator.published()
    assert (acc.offchip_bytes_per_cycle, acc.offchip_latency_cycles) == (16, 64) == \
        (ArrayConfig().offchip_bytes_per_cycle, ArrayConfig().offchip_latency_cycles)
    assert acc.offchip_pJ_per_byte == OFFCHIP_PJ_PER_BYTE == 1300 / 8  # 1.3 nJ per 64-bit DRAM access
    calibrated = Accelerator.calibrated()
    port = calibrated.calibration.config
    assert (calibrated.offchip_bytes_per_cycle, calibrated.offchip_latency_cycles) == \
        (port.offchip_bytes_per_cycle, port.offchip_latency_cycles)


def test_toml_with_a_calibration_takes_its_partial_sum_width(tmp_path):
    """The calibration fixes rows, cols and acc_bits: a TOML may leave acc_bits out (the tables'
    PE figures stay those at 25 bits, as `Accelerator.calibrated`'s); a different one is refused."""
    shipped = Accelerator.calibrated()
    (tmp_path / "c.json").write_text(json.dumps(shipped.calibration.to_dict()))
    array = shipped.calibration.config
    assert array.acc_bits != Accelerator.acc_bits
    head = f'rows = {array.rows}\ncols = {array.cols}\ncalibration = "c.json"\n'
    (tmp_path / "a.toml").write_text(head)
    acc = Accelerator.from_toml(tmp_path / "a.toml")
    assert (acc.acc_bits, acc.pe_power_mW) == (array.acc_bits, shipped.pe_power_mW)
    (tmp_path / "b.toml").write_text(head + "acc_bits = 25\n")
    with pytest.raises(AcceleratorConfigError) as error:
        Accelerator.from_toml(tmp_path / "b.toml")
    assert str(error.value) == (f"{tmp_path / 'b.toml'}: 'calibration' describes a {array.rows}x{array.cols} array "
                                f"with {array.acc_bits}-bit sums, the accelerator is {array.rows}x{array.cols} with 25")
    shipped.to_toml(tmp_path / "round.toml")
    assert Accelerator.from_toml(tmp_path / "round.toml").acc_bits == array.acc_bits


def test_offchip_port_round_trips_and_from_toml(tmp_path):
    path = tmp_path / "port.toml"
    path.write_text("offchip_bytes_per_cycle = 4\noffchip_latency_cycles = 10\noffchip_pJ_per_byte = 20.0\n")
    acc = Accelerator.from_toml(path)
    assert (acc.offchip_bytes_per_cycle, acc.offchip_latency_cycles, acc.offchip_pJ_per_byte) == (4, 10, 20.0)
    assert acc.pe_power_mW == Accelerator.published().pe_power_mW
    acc.to_toml(path)
    assert Accelerator.from_toml(path) == acc


def test_toml_without_figures_takes_them_from_tables(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text("rows = 8\ncols = 8\nperiod_ns = 2\n")
    acc = Accelerator.from_toml(path)
    assert (acc.rows, acc.cols, acc.name) == (8, 8, "small")
    assert acc.pe_power_mW == Accelerator.from_tables(period_ns=2).pe_power_mW


@pytest.mark.parametrize("text, words", [
    ("rows = 16\ncolumns = 16\n", ["columns", "unknown key"]),
    ("rows = 0\n", ["rows", "0"]),
    ("rows = 16.5\n", ["rows"]),
    ("period_ns = -3\n", ["period_ns"]),
    ("pe_power_mW = 1.0\n", ["missing", "reg_power_mW"]),
    ("rows = [\n", ["not valid TOML"]),
    ("offchip_bytes_per_cycle = 0\n", ["offchip_bytes_per_cycle", "0"]),
    ("offchip_latency_cycles = 1.5\n", ["offchip_latency_cycles"]),
    ("offchip_pJ_per_byte = -1.0\n", ["offchip_pJ_per_byte", "-1.0"]),
    ("offchip_pJ_per_byte = inf\n", ["offchip_pJ_per_byte", "inf"]),
])
def test_bad_toml_names_file_and_key(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(AcceleratorConfigError) as raised:
        Accelerator.from_toml(path)
    assert str(path) in str(raised.value)
    for word in words:
        assert word in str(raised.value)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(AcceleratorConfigError, match="cannot read"):
        Accelerator.from_toml(tmp_path / "absent.toml")
