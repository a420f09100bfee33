"""The accelerator a network is costed on: array geometry, clock, widths and 45 nm figures."""

import dataclasses
import functools
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tomli_w

from capsacc.array import ARRAY_LIMITS, ArrayConfig
from capsacc.calibrated import DEFAULT_BATCH, Calibration
from capsacc.energy import OFFCHIP_PJ_PER_BYTE
from capsacc.errors import AcceleratorConfigError
from capsacc.files import read_text, write_atomic
from capsacc.kernels import PARAMS
from capsacc.tables import pe_figures, register_figures

# Bounds a configuration is checked against: (low, high), inclusive.
_INT_RANGES = {
    "rows": (1, 4096),
    "cols": (1, 4096),
    "inputs_per_pe": (1, 500),
    "pe_stages": (1, 2),
    "data_bits": (8, 8),
    "acc_bits": (8, ARRAY_LIMITS["acc_bits"][1]),
    "offchip_bytes_per_cycle": ARRAY_LIMITS["offchip_bytes_per_cycle"],
    "offchip_latency_cycles": ARRAY_LIMITS["offchip_latency_cycles"],
}
_FIGURES = ("pe_power_mW", "pe_area_um2", "reg_power_mW", "reg_area_um2")


@dataclass(frozen=True)
class Accelerator:
    """A CapsAcc-style accelerator as the NASCaps cost model sees it.

    The figures are per unit: one PE (8-bit inputs, `acc_bits`-bit output, `inputs_per_pe`
    multipliers, `pe_stages` pipeline stages) and one `acc_bits`-bit accumulator register, both at
    `period_ns`, from the released 45 nm syntheses unless given explicitly. Its off-chip memory port
    (`offchip_bytes_per_cycle`, `offchip_latency_cycles`, `offchip_pJ_per_byte`) is the DMA's of the
    RTL (`capsacc.array.ArrayConfig`, docs/rtl.md "Memory system"); the published model ignores it.
    """

    rows: int = 16
    """PE array rows R (terms summed down a column per weight load)."""
    cols: int = 16
    """PE array columns C (outputs computed side by side)."""
    inputs_per_pe: int = 1
    """Multipliers per PE."""
    pe_stages: int = 1
    """Pipeline stages per PE (1 or 2)."""
    period_ns: float = 3.0
    """Clock period in ns."""
    data_bits: int = 8
    """Width of data and weights in bits (the tables cover 8 only)."""
    acc_bits: int = 25
    """Width of partial sums and accumulator registers in bits."""
    pe_power_mW: float = 0.4815
    """Power of one PE in mW at `period_ns`."""
    pe_area_um2: float = 1333.750616
    """Area of one PE in um²."""
    reg_power_mW: float = 0.2303
    """Power of one accumulator register in mW at `period_ns`."""
    reg_area_um2: float = 494.1729
    """Area of one accumulator register in um²."""
    offchip_bytes_per_cycle: int = ArrayConfig.offchip_bytes_per_cycle
    """Bytes the off-chip memory port moves per cycle (one beat), as `ArrayConfig`'s."""
    offchip_latency_cycles: int = ArrayConfig.offchip_latency_cycles
    """Cycles from an off-chip read request to its first data, as `ArrayConfig`'s."""
    offchip_pJ_per_byte: float = OFFCHIP_PJ_PER_BYTE
    """Energy of one byte moved to or from off-chip memory, pJ (`capsacc.energy.OFFCHIP_PJ_PER_BYTE`:
    Horowitz, ISSCC 2014, DRAM at 45 nm)."""
    name: str = "published"
    """Label recorded in result files."""
    calibration: Calibration | None = None
    """When set, `capsacc.estimate` uses the calibrated model fitted to the RTL (`Calibration`)
    instead of the published formulas; see `Accelerator.calibrated`."""

    def __post_init__(self):
        for key, (low, high) in _INT_RANGES.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise AcceleratorConfigError(f"'{key}' must be an integer in {low}..{high}, got {value!r:.80}")
        if isinstance(self.period_ns, bool) or not isinstance(self.period_ns, (int, float)) \
                or not 0 < self.period_ns <= 1000 or math.isnan(self.period_ns):
            raise AcceleratorConfigError(f"'period_ns' must be a number in (0, 1000], got {self.period_ns!r:.80}")
        for key in _FIGURES:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                    or math.isinf(value):
                raise AcceleratorConfigError(f"'{key}' must be a positive number, got {value!r:.80}")
        if isinstance(self.offchip_pJ_per_byte, bool) or not isinstance(self.offchip_pJ_per_byte, (int, float)) \
                or not 0 <= self.offchip_pJ_per_byte < math.inf:
            raise AcceleratorConfigError(f"'offchip_pJ_per_byte' must be a finite number >= 0, "
                                         f"got {self.offchip_pJ_per_byte!r:.80}")
        if not isinstance(self.name, str):
            raise AcceleratorConfigError(f"'name' must be a string, got {self.name!r:.80}")
        if self.calibration is not None:
            if not isinstance(self.calibration, Calibration):
                raise AcceleratorConfigError(f"'calibration' must be a Calibration, got {self.calibration!r:.80}")
            array = self.calibration.config
            if (self.rows, self.cols, self.acc_bits) != (array.rows, array.cols, array.acc_bits):
                raise AcceleratorConfigError(
                    f"'calibration' describes a {array.rows}x{array.cols} array with {array.acc_bits}-bit sums, "
                    f"the accelerator is {self.rows}x{self.cols} with {self.acc_bits}")

    @classmethod
    def published(cls) -> "Accelerator":
        """The CapsAcc of NASCaps (ICCAD 2020): 16x16 PEs, one input and one stage each, 3 ns, 45 nm."""
        return cls.from_tables(rows=16, cols=16, name="published")

    @classmethod
    def calibrated(cls, path: str | Path | None = None, batch: int = DEFAULT_BATCH) -> "Accelerator":
        """CapsAcc as calibrated against nascaps' own RTL: the shipped calibration
        (capsacc/data/calibrated.json, written by `nascaps calibrate`) or the one at `path`, running
        batches of `batch` images (default `DEFAULT_BATCH`; costs are per image, see
        `capsacc.calibrated`). Its array, partial-sum width, clock and off-chip port; its PE and register
        figures are the published tables' at their one width (25-bit sums), which the calibrated model
        does not use (it prices the RTL's counted events at its own width: `Calibration.energies`)."""
        calibration = Calibration.shipped() if path is None else Calibration.load(path)
        return cls.from_calibration(calibration.with_batch(batch))

    @classmethod
    def from_calibration(cls, calibration: Calibration, name: str = "calibrated") -> "Accelerator":
        """The accelerator that `calibration` describes: its array, partial-sum width, batch, clock and
        off-chip port; PE and register figures from the tables at 25-bit sums (see `calibrated`)."""
        array = calibration.config
        accelerator = cls.from_tables(rows=array.rows, cols=array.cols, period_ns=calibration.period_ns,
                                      offchip_bytes_per_cycle=array.offchip_bytes_per_cycle,
                                      offchip_latency_cycles=array.offchip_latency_cycles, name=name)
        return dataclasses.replace(accelerator, acc_bits=array.acc_bits, calibration=calibration)

    @classmethod
    def from_tables(cls, rows: int = 16, cols: int = 16, inputs_per_pe: int = 1, pe_stages: int = 1,
                    period_ns: float = 3.0, acc_bits: int = 25, data_bits: int = 8,
                    offchip_bytes_per_cycle: int = ArrayConfig.offchip_bytes_per_cycle,
                    offchip_latency_cycles: int = ArrayConfig.offchip_latency_cycles,
                    offchip_pJ_per_byte: float = OFFCHIP_PJ_PER_BYTE, name: str = "custom") -> "Accelerator":
        """An accelerator whose PE and register figures come from the 45 nm tables.

        Raises `AcceleratorConfigError` when the tables lack the combination.
        """
        if isinstance(period_ns, bool) or not isinstance(period_ns, (int, float)):
            raise AcceleratorConfigError(f"'period_ns' must be a number, got {period_ns!r:.80}")
        if data_bits != 8:
            raise AcceleratorConfigError(f"'data_bits' must be 8 (the 45 nm tables cover 8-bit PEs), got {data_bits!r:.80}")
        pe_power, pe_area = pe_figures(period_ns, acc_bits, inputs_per_pe, pe_stages)
        reg_power, reg_area = register_figures(period_ns, acc_bits)
        return cls(rows=rows, cols=cols, inputs_per_pe=inputs_per_pe, pe_stages=pe_stages,
                   period_ns=float(period_ns), data_bits=data_bits, acc_bits=acc_bits,
                   pe_power_mW=pe_power, pe_area_um2=pe_area, reg_power_mW=reg_power,
                   reg_area_um2=reg_area, offchip_bytes_per_cycle=offchip_bytes_per_cycle,
                   offchip_latency_cycles=offchip_latency_cycles, offchip_pJ_per_byte=offchip_pJ_per_byte, name=name)

    @classmethod
    def from_dict(cls, values: dict, source: str = "accelerator") -> "Accelerator":
        """Build from a mapping of field names; figures left out come from the 45 nm tables.

        With a `calibration`, `acc_bits` defaults to the calibration's (the tables' PE and register
        figures stay those at 25-bit sums, as in `calibrated`); rows, cols and acc_bits must match it.

        `source` names the origin (a file path) in error messages.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in fields:
                raise AcceleratorConfigError(
                    f"{source}: unknown key '{key}' (known: {', '.join(sorted(fields))})")
        if "calibration" in values:
            values = dict(values)
            calibration = values.pop("calibration")
            if isinstance(calibration, dict):
                calibration = Calibration.from_dict(calibration, f"{source}: calibration")
            elif isinstance(calibration, str):
                calibration = Calibration.load(Path(source).parent / calibration)
            acc_bits = values.pop("acc_bits", calibration.config.acc_bits if isinstance(calibration, Calibration)
                                  else cls.acc_bits)
            accelerator = cls.from_dict(values, source)
            try:
                return dataclasses.replace(accelerator, acc_bits=acc_bits, calibration=calibration)
            except AcceleratorConfigError as error:
                raise AcceleratorConfigError(f"{source}: {error}") from None
        given = {k: v for k, v in values.items() if k not in _FIGURES}
        try:
            if all(k in values for k in _FIGURES):
                return cls(**values)
            if any(k in values for k in _FIGURES):
                missing = [k for k in _FIGURES if k not in values]
                raise AcceleratorConfigError(
                    f"give all four figures or none; missing: {', '.join(missing)}")
            given.setdefault("name", Path(source).stem)
            return cls.from_tables(**given)
        except AcceleratorConfigError as error:
            raise AcceleratorConfigError(f"{source}: {error}") from None
        except TypeError as error:
            raise AcceleratorConfigError(f"{source}: {error}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> "Accelerator":
        """Load a TOML file of field names (see `to_toml`)."""
        path = Path(path)
        text = read_text(path, AcceleratorConfigError)
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise AcceleratorConfigError(f"{path}: not valid TOML ({error})") from None
        except RecursionError:  # tomllib parses nested arrays and tables recursively
            raise AcceleratorConfigError(f"{path}: TOML nested too deep") from None
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict:
        """All fields, by name (`calibration` only when set, as `Calibration.to_dict`)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "calibration"}
        if self.calibration is not None:
            values["calibration"] = self.calibration.to_dict()
        return values

    def to_toml(self, path: str | Path) -> None:
        """Write every field to a TOML file that `from_toml` reads back unchanged (atomically)."""
        write_atomic(path, tomli_w.dumps(self.to_dict()))

    @functools.cached_property
    def kernel_params(self) -> np.ndarray:
        """The float64 parameter vector the numba kernels read, laid out as `capsacc.kernels.PARAMS`."""
        params = np.array([getattr(self, name) for name in PARAMS], dtype=np.float64)
        params.flags.writeable = False
        return params

    @property
    def area_um2(self) -> float:
        """Area in um²: the calibration's (from the RTL's synthesis) when calibrated, else the PE
        array and one accumulator register per column from the 45 nm tables."""
        if self.calibration is not None:
            return self.calibration.area_um2
        return self.rows * self.cols * self.pe_area_um2 + self.cols * self.reg_area_um2
