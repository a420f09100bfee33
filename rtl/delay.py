"""Delay lines: a value passed through a chain of registers in the `sync` domain."""

from amaranth import Signal


def delay_chain(m, value, stages: int, shape, name: str, *, first: int = 0, reset_less: bool = False,
                attrs: dict | None = None) -> list:
    """`stages` registers of `shape` behind `value`, added to module `m`: the i-th holds `value` as it
    was i + 1 cycles before, and is named `name` with "{}" replaced by `first` + i (`name` + the index
    where `name` has no "{}"), with the Signal attributes `attrs`. Empty for 0 stages."""
    pattern = name if "{}" in name else name + "{}"
    chain = [Signal(shape, name=pattern.format(first + i), reset_less=reset_less, attrs=attrs)
             for i in range(stages)]
    m.d.sync += [after.eq(before) for before, after in zip([value, *chain], chain)]
    return chain


def delayed(m, value, stages: int, shape, name: str, *, reset_less: bool = False, attrs: dict | None = None):
    """`value` `stages` cycles later: the last register of `delay_chain`, or `value` for 0 stages."""
    return ([value] + delay_chain(m, value, stages, shape, name, reset_less=reset_less, attrs=attrs))[-1]
