"""The `nascaps dse` and `nascaps systolic` subcommands."""


def register(subparsers) -> None:
    """Add the design-space exploration subcommands."""
