"""Append-only JSON Lines logs (`final.jsonl`, `pcc.jsonl`): one JSON object per line, each
appended and flushed to disk as a piece of work finishes.

A kill during an append can leave the last line cut short. Reading reports such a line on stderr
and skips it; the next append first cuts the file back to its last complete line, so the new
record starts on a line of its own (the file is never rewritten as a whole). A damaged line that
is not the last one is an `InputError` naming the file and the line.
"""

import json
import math
import os
import sys
from pathlib import Path

from capsacc.errors import InputError


def read_records(path: str | Path) -> list[dict]:
    """The JSON objects of the log at `path` ([] when there is none), a torn last line skipped and
    reported on stderr."""
    path = Path(path)
    if not path.exists():
        return []
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    lines = data.split(b"\n")
    torn = lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError) as error:
            raise InputError(f"{path}: line {number} is not JSON ({_reason(error)})") from None
        if not isinstance(record, dict):
            raise InputError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    if torn:
        if _is_object(torn):
            records.append(json.loads(torn.decode("utf-8")))
        else:
            print(f"nascaps: warning: {path}: line {len(lines) + 1} is cut short (an interrupted write); skipped",
                  file=sys.stderr)
    return records


def append_record(path: str | Path, record: dict) -> None:
    """Append `record` as one line to the log at `path` (created when missing), after cutting a torn
    last line off, and flush it to disk."""
    path = Path(path)
    line = json.dumps(record, allow_nan=False).encode("utf-8") + b"\n"
    try:
        with open(path, "a+b") as handle:
            handle.seek(0)
            data = handle.read()
            cut = data.rfind(b"\n") + 1
            if cut != len(data):
                if _is_object(data[cut:]):
                    line = b"\n" + line
                else:
                    handle.truncate(cut)
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise InputError(f"{path}: cannot append ({error.strerror})") from None


def _is_object(line: bytes) -> bool:
    """True when `line` holds one JSON object (a record whose newline was not written)."""
    try:
        return isinstance(json.loads(line.decode("utf-8"), parse_constant=_refuse_constant), dict)
    except (UnicodeDecodeError, ValueError):
        return False


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _reason(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"column {error.colno}: {error.msg}"
    return str(error)


def finite_number(value, low: float = -math.inf, high: float = math.inf) -> bool:
    """True for an int or float (not bool) in [low, high]."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and low <= value <= high)
