"""Reading user files, with errors that name the file and the place."""

import json
from pathlib import Path

from capsacc.errors import InputError


def read_json(path: str | Path, error: type[InputError] = InputError):
    """The JSON document in `path`; raises `error` naming the file when it cannot be read or is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except OSError as failure:
        raise error(f"{path}: cannot read ({failure.strerror})") from None
    except json.JSONDecodeError as failure:
        raise error(f"{path}: not JSON (line {failure.lineno}, column {failure.colno}: {failure.msg})") from None
