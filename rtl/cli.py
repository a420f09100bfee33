"""The `nascaps` subcommands of rtl."""


def register(subparsers) -> None:
    """Add rtl's subcommands."""
