"""The `nascaps` subcommands of sim."""


def register(subparsers) -> None:
    """Add sim's subcommands."""
