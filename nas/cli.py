"""The `nascaps` subcommands of nas."""


def register(subparsers) -> None:
    """Add nas's subcommands."""
