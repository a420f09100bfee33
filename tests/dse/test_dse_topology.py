"""SCALE-Sim topology CSVs: shipped tables, output sizes, malformed files."""

import pytest

from capsacc.cli import main
from capsacc.dse.topology import BUILTIN_TOPOLOGIES, builtin_topology, parse_topology, read_topology
from capsacc.errors import InputError

HEADER = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n"


def test_builtin_topologies_have_the_published_output_sides():
    outputs = {name: [(layer.ofmap_h, layer.num_filter) for layer in builtin_topology(name)]
               for name in BUILTIN_TOPOLOGIES}
    assert outputs["alexnet"][:5] == [(55, 96), (27, 256), (13, 384), (13, 384), (13, 256)]
    assert outputs["alexnet"][5:] == [(1, 4096), (1, 4096), (1, 1000)]
    assert [h for h, _ in outputs["vgg16"][:13]] == [224] * 2 + [112] * 2 + [56] * 3 + [28] * 3 + [14] * 3
    assert [h for h, _ in outputs["resnet18"]] == [112] + [56] * 4 + [28] * 5 + [14] * 5 + [7] * 5 + [1]
    assert outputs["lenet"] == [(28, 6), (10, 16), (1, 120), (1, 84), (1, 10)]


def test_scalesim_output_convention_and_footprint():
    layer = parse_topology(HEADER + "a, 12, 12, 5, 5, 3, 20, 2,\n", "t.csv")[0]
    # ceil((12 - 5 + 2) / 2) = 5 (floor would give 4): the last window reaches past the edge.
    assert (layer.ofmap_h, layer.ofmap_w, layer.gemm_mkn) == (5, 5, (25, 75, 20))
    assert layer.ifmap_footprint == 12 * 12 * 3
    strided = parse_topology(HEADER + "c, 10, 7, 2, 2, 1, 1, 3,\n", "t.csv")[0]
    assert (strided.ofmap_h, strided.ofmap_w) == (4, 3)


def test_rows_without_trailing_comma_sparsity_and_depthwise():
    layers = parse_topology(HEADER + "x, 8, 8, 3, 3, 2, 4, 1\n\ny, 8, 8, 3, 3, 2, 4, 1, 1:1,\n"
                            "DP1, 8, 8, 3, 3, 3, 1, 1,\n", "t.csv")
    assert [l.name for l in layers] == ["x", "y", "DP1Channel_0", "DP1Channel_1", "DP1Channel_2"]
    assert all(l.channels == 1 for l in layers[2:])


@pytest.mark.parametrize("row, line, message", [
    ("a, 8, 8, 3, 3, 2, 4,\n", 3, "expected 8 fields"),
    ("a, 8, 8, three, 3, 2, 4, 1,\n", 3, "Filter Height must be an integer, got 'three'"),
    ("a, 8, 8, 3, 3, 0, 4, 1,\n", 3, "Channels must be in 1..2147483647, got 0"),
    ("a, 2, 8, 3, 3, 1, 4, 1,\n", 3, "larger than the IFMAP"),
    ("a, 8, 8, 3, 3, 1, 4, 1, 2:4,\n", 3, "sparsity ratio '2:4' is not modelled"),
    (", 8, 8, 3, 3, 1, 4, 1,\n", 3, "layer name is empty"),
])
def test_malformed_rows_name_the_line(tmp_path, row, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "ok, 8, 8, 3, 3, 2, 4, 1,\n" + row)
    with pytest.raises(InputError) as error:
        read_topology(path)
    assert f"{path}: line {line}: " in str(error.value)
    assert message in str(error.value)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text(HEADER)
    with pytest.raises(InputError, match="no layers"):
        read_topology(empty)
    with pytest.raises(InputError, match="cannot read"):
        read_topology(tmp_path / "missing.csv")


def test_cli_reports_the_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "conv1, 8, 8, 3, 3, 2, 4, 1,\nconv2, 8, 8, 3, x, 2, 4, 1,\n")
    assert main(["systolic", "--topology", str(path), "--rows", "4", "--cols", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"nascaps systolic: error: {path}: line 3: Filter Width must be an integer, got 'x'"
    assert main(["dse", "--network", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "line 3" in capsys.readouterr().err


def test_gemm_format_rows():
    layers = parse_topology("Layer, M, N, K,\ng1, 100, 16, 150,\ng2, 1, 84, 120, 1:1,\n", "g.csv")
    assert [(l.name, l.gemm_mkn) for l in layers] == [("g1", (100, 150, 16)), ("g2", (1, 120, 84))]
    with pytest.raises(InputError, match=r"g.csv: line 2: K must be an integer, got 'k'"):
        parse_topology("Layer, M, N, K,\ng1, 100, 16, k,\n", "g.csv")
