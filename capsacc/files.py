"""Reading user files and writing result files, with errors that name the file and the place.

Reading: `read_text` refuses what is not a regular file (a FIFO would block), is too large, or is
not UTF-8; `read_json` adds JSON errors (with line and column), nesting and number checks.

Writing: every result file is written atomically (`write_atomic`, `atomic_path`): into a temporary
file in the same folder, then `os.replace`d over the target, so a kill leaves the old file or the new
one, never half of one. `prepare_output_dir` checks an output folder before a long computation.
"""

import contextlib
import json
import math
import os
import stat
import tempfile
from pathlib import Path

from capsacc.errors import InputError

MAX_INPUT_BYTES = 64 * 2 ** 20
"""The largest user input file read into memory (genotypes, TOML, CSV), 64 MiB."""
MAX_JSON_DEPTH = 64
"""The deepest JSON nesting accepted; a genotype needs 3."""


def check_preset_or_file(spec: str, presets, kind: str) -> None:
    """Refuse `spec` that is neither one of the names `presets` (of a `kind`, e.g. "a network preset")
    nor an existing path, so that a mistyped name is not reported as a missing file only."""
    if spec not in presets and not os.path.lexists(spec):
        raise InputError(f"{spec}: neither {kind} ({', '.join(presets)}) nor an existing file")


def read_text(path: str | Path, error: type[InputError] = InputError, max_bytes: int = MAX_INPUT_BYTES) -> str:
    """The UTF-8 text of the regular file `path`; raises `error` naming the file otherwise."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as failure:
        raise error(f"{path}: cannot read ({failure.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: not a regular file")
    if info.st_size > max_bytes:
        raise error(f"{path}: {info.st_size} bytes, larger than the {max_bytes}-byte limit for an input file")
    try:
        data = path.read_bytes()
    except OSError as failure:
        raise error(f"{path}: cannot read ({failure.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as failure:
        raise error(f"{path}: not UTF-8 text (byte {failure.start}: 0x{data[failure.start]:02x})") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: str | Path, error: type[InputError] = InputError):
    """The JSON document in `path`; raises `error` naming the file when it cannot be read, is not
    strict JSON (NaN and Infinity are refused), nests deeper than `MAX_JSON_DEPTH`, or holds a
    non-finite number."""
    path = Path(path)
    text = read_text(path, error)
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{path}: JSON nested {depth} deep, more than the limit of {MAX_JSON_DEPTH}")
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as failure:
        raise error(f"{path}: not JSON (line {failure.lineno}, column {failure.colno}: {failure.msg})") from None
    except ValueError as failure:
        raise error(f"{path}: not JSON ({failure})") from None
    _check_finite(document, path, error)
    return document


def _json_depth(text: str) -> int:
    """The deepest bracket nesting of a JSON text, ignoring brackets inside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _check_finite(value, path: Path, error: type[InputError]) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise error(f"{path}: number {value} is out of range")
    if isinstance(value, list):
        for item in value:
            _check_finite(item, path, error)
    elif isinstance(value, dict):
        for item in value.values():
            _check_finite(item, path, error)


def prepare_output_dir(path: str | Path, error: type[InputError] = InputError, files: tuple[str, ...] = ()) -> Path:
    """Create the output folder `path` (and its parents) and check that it is writable, and that none
    of the `files` to be written in it is an existing folder, before any long computation; raises
    `error` naming the folder or file when it cannot be. An empty name (an unset shell variable) is
    refused, not taken for the current folder."""
    _refuse_empty(path, "output folder", error, " (give '.' for the current folder)")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{path}: output folder is an existing file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as failure:
        raise error(f"{path}: cannot create output folder ({failure.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise error(f"{path}: output folder is not writable")
    for name in files:
        _check_replaceable(path / name, error)
    return path


def prepare_output_file(path: str | Path, error: type[InputError] = InputError) -> Path:
    """Check that the file `path` can be written later (its folder is created), before any long
    computation; raises `error` naming the file when it cannot (or when its name is empty)."""
    _refuse_empty(path, "output file", error)
    path = Path(path)
    _check_replaceable(path, error)
    prepare_output_dir(path.parent, error)
    return path


def _refuse_empty(path: str | Path, what: str, error: type[InputError], hint: str = "") -> None:
    """Refuse the empty name, which `Path` reads as the current folder."""
    if str(path) == "":
        raise error(f"{what}: the name is empty{hint}")


def _check_replaceable(path: Path, error: type[InputError] = InputError) -> None:
    """Refuse an output path that exists and is not a regular file: a folder, or a device such as
    /dev/null that an atomic replace would overwrite (as root, it can)."""
    if path.is_dir():
        raise error(f"{path}: output file is an existing folder")
    if path.exists() and not path.is_file():
        raise error(f"{path}: output file exists and is not a regular file")


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """A temporary path beside `path` to write to; on leaving the block without an exception it
    replaces `path` (`os.replace`), otherwise it is removed; an existing `path` that is not a regular
    file is refused (`InputError`). For writers that take a file name
    (matplotlib, Keras, SQLite). The temporary name keeps the suffix of `path`."""
    path = Path(path)
    _check_replaceable(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8, or bytes) to `path` atomically, flushed to disk before the replace."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
