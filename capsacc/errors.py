"""Errors raised for bad user input.

Every message names where the problem is (file, descriptor index, field or key) and why,
so that the CLI can print it on one line and exit with code 2.
"""


class InputError(ValueError):
    """Input that nascaps cannot use; the message names the place and the reason."""


class GenotypeFormatError(InputError):
    """A genotype list that is not well formed (length, types, sizes, skip/resize entries)."""

    def __init__(self, reason: str, index: int | None = None, field: str | None = None):
        self.index = index
        self.field = field
        self.reason = reason
        where = []
        if index is not None:
            where.append(f"descriptor {index}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)


class AcceleratorConfigError(InputError):
    """An accelerator configuration with an unknown key, a bad value or no table entry."""
