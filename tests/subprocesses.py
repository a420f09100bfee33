"""What tests that signal a `nascaps` child process share."""

import signal


def default_sigint():
    """In the child before exec: SIGINT to its default action. A test run started in the background
    (a non-interactive shell's `&`) inherits SIGINT ignored, and the command would then never see the
    test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
