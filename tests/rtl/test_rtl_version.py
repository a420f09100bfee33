"""`rtl.version.rtl_version`: the RTL a result records (calibrate, rtl run, rtl synth, rtl fpga)."""

import re
import subprocess
from pathlib import Path

from rtl import version


def test_a_git_checkout_gives_the_commit_of_rtl():
    """In a git checkout (CI's clean clone): the last commit that touched rtl/, and "+local-changes"
    only where rtl/ differs from it."""
    root = Path(version.__file__).resolve().parents[1]
    log = subprocess.run(["git", "log", "-1", "--format=%H", "--", "rtl"], cwd=root, capture_output=True, text=True)
    found = version.rtl_version()
    if log.returncode == 0 and log.stdout.strip():
        assert re.fullmatch(r"[0-9a-f]{40}(\+local-changes)?", found) and found.startswith(log.stdout.strip())
    else:  # an export of the sources without git
        assert re.fullmatch(r"sha256:[0-9a-f]{16}", found)


def test_without_git_the_sources_are_hashed(monkeypatch):
    def no_git(*args, **kwargs):
        raise OSError("git: not found")

    monkeypatch.setattr(subprocess, "run", no_git)
    first = version.rtl_version()
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", first) and version.rtl_version() == first
