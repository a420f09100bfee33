"""Fuzzing the `nascaps` entry point in-process (capsacc.cli.main) with generated input files.

Genotype JSON (`estimate`, `dse`), accelerator TOML (`estimate --accelerator`) and topology CSVs
(`systolic`, `dse`), valid and broken: wrong types, huge integers, NaN and infinities, missing keys,
bad UTF-8, deep nesting. Every case must end in one of two ways: exit 0 with a result on stdout and
nothing on stderr, or exit 2 with exactly one stderr line `nascaps CMD: error: ...`. An exception, a
second line or another exit code fails. Bounded: about 150 examples in all, under a minute.
"""

import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from capsacc.cli import main
from genotype_strategies import cost_genotypes

FUZZ = settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])

HUGE = st.sampled_from([2 ** 63, 2 ** 64 + 1, -2 ** 63 - 1, 10 ** 30, 2 ** 31, 4097, 65537, 0, -1])
ODD_SCALARS = st.one_of(HUGE, st.sampled_from([None, True, "8", "", 1.5, [], {}, [[]]]))


def run(capsys, argv: list[str], command: str) -> tuple[int, str]:
    """`main(argv)` -> (exit code, stdout); asserts the outcome is a result (exit 0) or one error line
    (exit 2)."""
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    if currently_in_test_context():
        event(f"{command}: exit {code}")  # shown by --hypothesis-show-statistics
    if code == 0:
        assert captured.out.strip(), f"{argv}: exit 0 without a result"
        assert captured.err == "", f"{argv}: exit 0 with stderr {captured.err!r}"
    else:
        assert code == 2, f"{argv}: exit {code}, stderr {captured.err!r}"
        lines = captured.err.splitlines()
        assert len(lines) == 1, f"{argv}: {len(lines)} stderr lines: {captured.err!r}"
        assert lines[0].startswith(f"nascaps {command}: error: "), lines[0]
    return code, captured.out


def check_estimate(out: str) -> None:
    """A `--json` estimate with sane totals: no wrapped (negative) count, no NaN or infinity."""
    result = json.loads(out)
    assert result["cycles"] >= 0 and result["weights"] >= 0
    assert all(math.isfinite(result[key]) and result[key] >= 0 for key in ("energy_mJ", "latency_ms", "memory_KiB"))


@st.composite
def broken_genotypes(draw):
    """A valid genotype, or one changed in one place (bytes to write as the file)."""
    genotype = draw(cost_genotypes(max_layers=6))
    change = draw(st.sampled_from(["none", "field", "descriptor", "drop", "truncate", "nan", "utf8", "nest",
                                   "tail", "empty", "object"]))
    index = draw(st.integers(0, len(genotype) - 3))
    if change == "field":
        genotype[index][draw(st.integers(0, 8))] = draw(ODD_SCALARS)
    elif change == "descriptor":
        genotype[index] = draw(st.sampled_from([[], [1] * 8, [1] * 10, "x", 3, None]))
    elif change == "drop":
        del genotype[draw(st.integers(0, len(genotype) - 1))]
    elif change == "tail":
        genotype[-draw(st.integers(1, 2))] = draw(st.sampled_from([[], [-2], [7], ["x"], [1, 2], None]))
    text = json.dumps(genotype)
    if change == "truncate":
        text = text[:draw(st.integers(0, len(text) - 1))]
    elif change == "nan":
        text = text.replace(str(genotype[index][1]), draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"])),
                            1)
    elif change == "nest":
        depth = draw(st.sampled_from([70, 3000, 100000]))
        text = "[" * depth + "]" * depth
    elif change == "empty":
        text = draw(st.sampled_from(["", " ", "[]", "null", "{}", "\"capsnet\""]))
    elif change == "object":
        text = json.dumps({"genotype": genotype})
    data = text.encode()
    if change == "utf8":
        data = draw(st.sampled_from([b"\xff\xfe", b"\x80", data[:5] + b"\xc3"]))
    return data


@FUZZ
@given(data=broken_genotypes(), dse=st.booleans())
def test_genotype_files(data, dse, capsys):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "g.json"
        path.write_bytes(data)
        if dse:
            argv = ["dse", "--network", str(path), "--rows", "4,16", "--cols", "8", "--dataflow", "ws",
                    "--sram-kB", "64", "--period-ns", "3", "--out", str(Path(folder) / "d")]
            if run(capsys, argv, "dse")[0] == 0:
                assert (Path(folder) / "d" / "designs.csv").is_file()
        else:
            code, out = run(capsys, ["estimate", str(path), "--json"], "estimate")
            if code == 0:
                check_estimate(out)


TOML_KEYS = ("rows", "cols", "period_ns", "acc_bits", "inputs_per_pe", "pe_stages", "data_bits", "pe_power_mW",
             "pe_area_um2", "reg_power_mW", "reg_area_um2", "offchip_bytes_per_cycle", "offchip_latency_cycles",
             "offchip_pJ_per_byte", "name", "calibration", "unknown")
TOML_VALUES = st.one_of(st.sampled_from(["16", "8", "32", "3", "3.0", "2", "4", "25", "1", "0", "-1", "nan", "inf",
                                         "-inf", "1e400", "99999999999999999999", "9223372036854775808",
                                         "true", '"16"', '"x"', "[1, 2]", "{ a = 1 }", '"missing.json"',
                                         "0.5", "1e-300"]),
                        st.integers(-2 ** 70, 2 ** 70).map(str))


@st.composite
def accelerator_files(draw):
    """TOML text: key = value lines (some invalid TOML, some duplicated keys), or raw bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([b"\xff\xfe", b"rows = ", b"[[[", b"rows = 16\nrows = 8\n", b"= 3",
                                     b"rows = " + b"[" * 100000 + b"]" * 100000 + b"\n",
                                     b"x = " + b"{a=" * 50000 + b"1" + b"}" * 50000 + b"\n"]))
    lines = [f"{key} = {draw(TOML_VALUES)}"
             for key in draw(st.lists(st.sampled_from(TOML_KEYS), max_size=5, unique=True))]
    return ("\n".join(lines) + "\n").encode()


@FUZZ
@given(data=accelerator_files())
def test_accelerator_files(data, capsys):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.toml"
        path.write_bytes(data)
        code, out = run(capsys, ["estimate", "capsnet", "--accelerator", str(path), "--json"], "estimate")
        if code == 0:
            check_estimate(out)


TOPOLOGY_FIELDS = st.one_of(st.integers(1, 64).map(str), HUGE.map(str),
                            st.sampled_from(["", "x", "1.5", "nan", "inf", "1:1", "2:4", " 3 "]))


@st.composite
def topology_files(draw):
    """A SCALE-Sim CSV (conv rows of 8 fields, GEMM rows of 4, or other counts), or odd bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([b"", b"\xff\xfe\n", b"header only\n", b"h\n\n\n"]))
    rows = ["Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,"]
    for number in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "gemm", "odd"]))
        name = draw(st.sampled_from([f"layer{number}", f"DP{number}", ""]))
        if kind == "conv":
            side = draw(st.integers(1, 64))
            fields = [side, side, draw(st.integers(1, side)), draw(st.integers(1, side)), draw(st.integers(1, 64)),
                      draw(st.integers(1, 64)), draw(st.integers(1, 4))]
            fields = [str(v) for v in fields]
        else:
            fields = [draw(st.integers(1, 256)).__str__() for _ in range(3 if kind == "gemm" else
                                                                          draw(st.integers(0, 12)))]
        if fields and draw(st.booleans()):
            fields[draw(st.integers(0, len(fields) - 1))] = draw(TOPOLOGY_FIELDS)
        rows.append(",".join([name] + fields) + ",")
    return ("\n".join(rows) + "\n").encode()


@FUZZ
@given(data=topology_files(), command=st.sampled_from(["systolic", "dse"]))
def test_topology_files(data, command, capsys):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.csv"
        path.write_bytes(data)
        if command == "systolic":
            code, out = run(capsys, ["systolic", "--topology", str(path), "--rows", "8", "--cols", "8", "--json"],
                            "systolic")
            if code == 0:
                assert all(value >= 0 for layer in json.loads(out)["layers"] for key, value in layer.items()
                           if key != "layer")
        else:
            run(capsys, ["dse", "--network", str(path), "--rows", "4,8", "--cols", "8", "--dataflow", "ws,os",
                         "--sram-kB", "64", "--period-ns", "3", "--out", str(Path(folder) / "d")], "dse")


def test_the_fuzz_strategies_reach_both_outcomes(capsys):
    """The generators are not vacuous: a valid and an invalid file of each kind give 0 and 2."""
    with tempfile.TemporaryDirectory() as folder:
        good, bad = Path(folder) / "g.json", Path(folder) / "b.json"
        good.write_text(json.dumps([[0, 28, 1, 1, 9, 1, 28, 256, 1], [1, 28, 256, 1, 9, 2, 14, 32, 8],
                                    [1, 14, 32, 8, 14, 1, 1, 10, 16], [-1], [1]]))
        bad.write_bytes(b"[[0, 28, NaN]]")
        assert run(capsys, ["estimate", str(good), "--json"], "estimate")[0] == 0
        assert run(capsys, ["estimate", str(bad), "--json"], "estimate")[0] == 2
