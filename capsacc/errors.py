"""Errors raised for bad user input.

Every message names where the problem is (file, descriptor index, field or key) and why,
so that the CLI can print it on one line and exit with code 2.
"""


class InputError(ValueError):
    """Input that nascaps cannot use; the message names the place and the reason."""


class GenotypeFormatError(InputError):
    """A genotype that is not well formed or breaks a rule of `capsacc.network.check_genotype`.

    `.source` (the file, if any), `.index` (descriptor, from 0), `.field` and `.reason` say where
    and why; the message is `source: descriptor index, field 'field': reason` (parts left out when
    unknown). Both `nascaps estimate` and `nascaps train` raise it, with the same message.
    """

    def __init__(self, reason: str, index: int | None = None, field: str | None = None,
                 source: str | None = None):
        self.index = index
        self.field = field
        self.reason = reason
        self.source = source
        where = []
        if index is not None:
            where.append(f"descriptor {index}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        message = f"{prefix}: {reason}" if prefix else reason
        super().__init__(f"{source}: {message}" if source is not None else message)

    def in_file(self, source) -> "GenotypeFormatError":
        """The same error located in the file `source`."""
        return type(self)(self.reason, self.index, self.field, str(source))


class AcceleratorConfigError(InputError):
    """An accelerator configuration with an unknown key, a bad value or no table entry."""


SEED_LIMIT = 2 ** 32
"""Seeds of the commands are below this: NumPy's legacy generator, which Keras seeds, takes 32 bits."""


def check_seed(seed: int, option: str = "--seed", limit: int = SEED_LIMIT) -> None:
    """Refuse a `seed` outside 0 .. `limit` - 1 (a power of two), naming the command-line `option`."""
    if not 0 <= seed < limit:
        raise InputError(f"{option} {seed}: must be in 0..2^{limit.bit_length() - 1}-1")
