"""The released NASCaps 45 nm synthesis tables (see data/ATTRIBUTION.md).

`pe_figures` and `register_figures` look a configuration up and raise
`AcceleratorConfigError` for a combination the tables lack; they never fall back to a default.
"""

import functools
import gzip
import json
import math
from importlib import resources

from capsacc.errors import AcceleratorConfigError


@functools.cache
def _load(name: str) -> dict:
    with resources.files("capsacc").joinpath("data").joinpath(name).open("rb") as raw:
        return json.loads(gzip.decompress(raw.read()))


@functools.cache
def _pe_index() -> dict[tuple[float, int, int, int], tuple[float, float]]:
    index = {}
    for record in _load("pe.json.gz").values():
        power, area = record["pdk45_pwr"], record["pdk45_area"]
        if math.isnan(power) or math.isnan(area):
            continue
        key = (float(record["period"]), record["nout"], record["ninputs"], record["stages"])
        index[key] = (power, area)
    return index


@functools.cache
def _register_index() -> dict[tuple[float, int], tuple[float, float]]:
    return {
        (float(r["period"]), r["bw"]): (r["pdk45_pwr"], r["pdk45_area"])
        for r in _load("mem.json.gz").values()
    }


def pe_figures(period_ns: float, acc_bits: int, inputs_per_pe: int, pe_stages: int) -> tuple[float, float]:
    """Power (mW) and area (um²) of one PE with 8-bit inputs, from the 45 nm table."""
    key = (float(period_ns), acc_bits, inputs_per_pe, pe_stages)
    try:
        return _pe_index()[key]
    except KeyError:
        near = sorted(k for k in _pe_index() if k[0] == key[0] and k[1] == key[1] and k[3] == key[3])
        inputs = [k[2] for k in near]
        hint = f"inputs_per_pe available at this period and depth: {inputs[0]}..{inputs[-1]}" if inputs else (
            "periods available: " + ", ".join(str(p) for p in sorted({k[0] for k in _pe_index()})) + " ns; "
            "pe_stages: 1 or 2; acc_bits: 25")
        raise AcceleratorConfigError(
            f"pe.json.gz has no synthesized PE for period_ns={period_ns}, acc_bits={acc_bits}, "
            f"inputs_per_pe={inputs_per_pe}, pe_stages={pe_stages} ({hint})") from None


def register_figures(period_ns: float, bits: int) -> tuple[float, float]:
    """Power (mW) and area (um²) of one `bits`-wide register, from the 45 nm table."""
    try:
        return _register_index()[(float(period_ns), bits)]
    except KeyError:
        raise AcceleratorConfigError(
            f"mem.json.gz has no {bits}-bit register at period_ns={period_ns} "
            f"(widths 8, 16, 25, 32; periods 1, 2, 3, 4, 5, 10 ns)") from None
