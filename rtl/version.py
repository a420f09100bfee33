"""Which RTL produced a result: `rtl_version`, recorded by every result of a run, a synthesis or a
place and route of CapsAcc (`nascaps rtl run`, `rtl synth`, `rtl fpga`, `calibrate`, `deploy`'s RTL run)."""

import hashlib
import subprocess
from pathlib import Path


def rtl_version() -> str:
    """The git commit of rtl/ (and whether it has local changes), else a hash of its sources."""
    root = Path(__file__).resolve().parent.parent  # the folder holding rtl/
    try:
        commit = subprocess.run(["git", "log", "-1", "--format=%H", "--", "rtl"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "rtl"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
        if commit:
            return commit + ("+local-changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    digest = hashlib.sha256()
    for path in sorted((root / "rtl").glob("*.py")):
        digest.update(path.read_bytes())
    return "sha256:" + digest.hexdigest()[:16]
