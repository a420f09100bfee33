"""The search journal: a SQLite database in the run folder that survives a kill at any moment.

Every evaluation is committed the moment it finishes (genotype, objectives, per-epoch validation
accuracies, status, seconds, worker, attempts); the random generator's state and the surviving
population are committed after every generation. `--resume` reads them back: evaluations are
looked up by genotype key instead of trained again, and the generator restarts where the last
finished generation left it, so a resumed run makes the same choices as an uninterrupted one.

Tables: `meta(name, value)` (schema version, the run's configuration as JSON),
`evaluations` (one row per distinct genotype) and `generations` (one row per finished generation).
The schema and the configuration are written in one transaction, so a journal either has both or
does not exist. Opening checks the file's integrity (`PRAGMA integrity_check`); reading checks
every value, so that a damaged row, genotype or generator state is an `InputError` naming the
file, the table, the row and the column, never a wrong resume.

`RunLock` keeps a second process off a run folder while one works in it.
"""

import datetime
import fcntl
import json
import math
import os
import socket
import sqlite3
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from capsacc.errors import InputError

from nas.genotype import Genotype

SCHEMA_VERSION = 1
RESUME_FREE_KEYS = ("generations", "workers", "scheduler")
"""Configuration entries a resumed run may change (it may run longer, or on other workers)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    genotype TEXT NOT NULL,
    generation INTEGER NOT NULL,
    status TEXT NOT NULL,
    accuracy_drop REAL NOT NULL,
    energy_mJ REAL NOT NULL,
    latency_ms REAL NOT NULL,
    memory_KiB REAL NOT NULL,
    violation REAL NOT NULL,
    val_accuracy TEXT NOT NULL,
    seconds REAL NOT NULL,
    worker TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    message TEXT NOT NULL,
    params INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY,
    population TEXT NOT NULL,
    rng_state TEXT NOT NULL
);
"""

OBJECTIVES = ("accuracy_drop", "energy_mJ", "latency_ms", "memory_KiB")
"""The four minimized objectives, in the order of objective vectors."""


@dataclass(frozen=True)
class Evaluation:
    """One evaluated genotype.

    `genotype`: the NASCaps list form; `key`: its identity; `generation`: where it was first
    asked for (0 = initial population); `status`: a training status (`ok`, `nan`, `timeout`,
    `oom`, `invalid`), `over_budget` (not trained: a hard budget is exceeded) or `lost` (its
    worker died twice); `accuracy_drop`: 1 - last validation accuracy (1 when not `ok`);
    `energy_mJ`, `latency_ms`, `memory_KiB`: from capsacc; `violation`: 0 when feasible, else
    the summed relative budget excess (failures: `FAILED_VIOLATION`); `val_accuracy`: per epoch;
    `seconds`: wall time of the evaluation; `worker`: where it ran; `attempts`: tries it took;
    `params`: trainable parameters of the classifier (0 when not built).
    """

    key: str
    genotype: list
    generation: int
    status: str
    accuracy_drop: float
    energy_mJ: float
    latency_ms: float
    memory_KiB: float
    violation: float
    val_accuracy: tuple[float, ...] = ()
    seconds: float = 0.0
    worker: str = ""
    attempts: int = 1
    message: str = ""
    params: int = 0

    @property
    def objectives(self) -> tuple[float, float, float, float]:
        """(accuracy_drop, energy_mJ, latency_ms, memory_KiB)."""
        return (self.accuracy_drop, self.energy_mJ, self.latency_ms, self.memory_KiB)

    @property
    def feasible(self) -> bool:
        return self.violation == 0


@dataclass(frozen=True)
class Checkpoint:
    """The state after a finished generation: the surviving population's keys and the generator state."""

    generation: int
    population: list[str] = field(default_factory=list)
    rng_state: dict = field(default_factory=dict)


class Journal:
    """An open journal; use `Journal.open` (a context manager)."""

    def __init__(self, path: Path, connection: sqlite3.Connection):
        self.path = path
        self._db = connection

    @classmethod
    def open(cls, path: str | Path, config: dict, resume: bool) -> "Journal":
        """Open the journal at `path` for a run with `config` (JSON-ready).

        A new run refuses an existing journal; `resume` requires one written with the same
        configuration (except `RESUME_FREE_KEYS`). Every row is checked on opening: a file that is
        not a readable, intact journal raises `InputError` naming it (and the table, row and column
        at fault), and is left untouched.
        """
        path = Path(path)
        exists = path.exists()
        if exists and not resume:
            raise InputError(f"{path}: a journal already exists; pass --resume to continue that run "
                             "or choose another --out folder")
        if resume and not exists:
            raise InputError(f"{path}: no journal to resume")
        if not exists:
            _create(path, config)
        else:
            _check_header(path)
        try:
            connection = sqlite3.connect(path, isolation_level=None)
        except sqlite3.DatabaseError as error:
            raise InputError(f"{path}: not a readable nascaps journal ({error})") from None
        journal = cls(path, connection)
        try:
            connection.execute("PRAGMA busy_timeout = 10000")
            connection.execute("PRAGMA synchronous = FULL")
            journal._check_integrity()
            journal._check_config(config)
            journal.evaluations()
            journal.checkpoints()
            return journal
        except sqlite3.DatabaseError as error:
            connection.close()
            raise InputError(f"{path}: not a readable nascaps journal ({error})") from None
        except BaseException:
            connection.close()
            raise

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _query(self, sql: str, parameters=()) -> list:
        try:
            return self._db.execute(sql, parameters).fetchall()
        except sqlite3.DatabaseError as error:
            raise InputError(f"{self.path}: not a readable nascaps journal ({error})") from None

    def _check_integrity(self) -> None:
        problems = [row[0] for row in self._query("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise InputError(f"{self.path}: damaged database (integrity check: {'; '.join(problems[:3])})")
        tables = {row[0] for row in self._query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [t for t in ("meta", "evaluations", "generations") if t not in tables]
        if missing:
            raise InputError(f"{self.path}: not a nascaps journal (no table {', '.join(missing)})")

    def _check_config(self, config: dict) -> None:
        stored = self.stored_config
        differing = sorted(k for k in set(stored) | set(config)
                           if k not in RESUME_FREE_KEYS and stored.get(k) != config.get(k))
        if differing:
            details = ", ".join(f"{k}: journal {stored.get(k)!r}, now {config.get(k)!r}" for k in differing)
            raise InputError(f"{self.path}: --resume with a different configuration ({details})")

    @property
    def stored_config(self) -> dict:
        """The configuration the journal was created with."""
        rows = dict(self._query("SELECT name, value FROM meta"))
        if rows.get("schema_version") != str(SCHEMA_VERSION) or "config" not in rows:
            raise InputError(f"{self.path}: not a nascaps journal of schema version {SCHEMA_VERSION} "
                             "(table meta lacks 'schema_version' or 'config')")
        stored = _json(rows["config"], self.path, "meta", "name 'config'", "value")
        if not isinstance(stored, dict):
            raise InputError(f"{self.path}: table meta, name 'config', column value: not a JSON object")
        return stored

    def record(self, evaluation: Evaluation) -> None:
        """Commit one finished evaluation (a key already journaled is kept as it was)."""
        row = asdict(evaluation)
        row["genotype"] = json.dumps(evaluation.genotype)
        row["val_accuracy"] = json.dumps(list(evaluation.val_accuracy))
        names = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        self._write(f"INSERT OR IGNORE INTO evaluations ({names}) VALUES ({marks})", row)

    def _write(self, sql: str, parameters) -> None:
        """Commit one statement; a database that cannot be written (disk full, read-only, locked past
        the busy timeout) is an `InputError` naming the file."""
        try:
            with self._db:
                self._db.execute(sql, parameters)
        except sqlite3.Error as error:
            raise InputError(f"{self.path}: cannot write the journal ({error})") from None

    def lookup(self, key: str) -> Evaluation | None:
        """The journaled evaluation of a genotype key, if any."""
        rows = self._query(f"SELECT id, {_COLUMNS} FROM evaluations WHERE key = ?", (key,))
        return _evaluation(rows[0], self.path) if rows else None

    def evaluations(self) -> list[Evaluation]:
        """All journaled evaluations, in the order they finished."""
        return [_evaluation(row, self.path)
                for row in self._query(f"SELECT id, {_COLUMNS} FROM evaluations ORDER BY id")]

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Commit a finished generation's population and generator state."""
        self._write("INSERT OR REPLACE INTO generations VALUES (?, ?, ?)",
                    (checkpoint.generation, json.dumps(checkpoint.population), json.dumps(checkpoint.rng_state)))

    def last_checkpoint(self) -> Checkpoint | None:
        """The latest finished generation, None before the initial population is evaluated; each key
        of its population must be journaled."""
        rows = self._query("SELECT generation, population, rng_state FROM generations "
                           "ORDER BY generation DESC LIMIT 1")
        if not rows:
            return None
        checkpoint = _checkpoint(rows[0], self.path)
        for index, key in enumerate(checkpoint.population):
            if not self._query("SELECT 1 FROM evaluations WHERE key = ?", (key,)):
                raise InputError(f"{self.path}: table generations, generation {checkpoint.generation}, column "
                                 f"population: member {index} has no row in table evaluations")
        return checkpoint

    def checkpoints(self) -> list[Checkpoint]:
        """Every finished generation, in order."""
        return [_checkpoint(row, self.path) for row in
                self._query("SELECT generation, population, rng_state FROM generations ORDER BY generation")]


_FIELDS = ("key", "genotype", "generation", "status", "accuracy_drop", "energy_mJ", "latency_ms", "memory_KiB",
           "violation", "val_accuracy", "seconds", "worker", "attempts", "message", "params")
_COLUMNS = ", ".join(_FIELDS)
STATUSES = ("ok", "nan", "timeout", "oom", "invalid", "over_budget", "lost")
"""Statuses of a journaled evaluation (see `Evaluation`)."""


def _json(text, path: Path, table: str, row: str, column: str):
    """The JSON value in one cell, or an `InputError` naming the cell."""
    if not isinstance(text, str):
        raise InputError(f"{path}: table {table}, {row}, column {column}: not JSON text ({type(text).__name__})")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:
        raise InputError(f"{path}: table {table}, {row}, column {column}: not JSON ({error})") from None
    except RecursionError:
        raise InputError(f"{path}: table {table}, {row}, column {column}: JSON nested too deep") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _is_int(value, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_number(value, low: float = 0.0, high: float = math.inf) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and low <= value <= high)


def _evaluation(row, path: Path) -> Evaluation:
    """An `Evaluation` from a row (id first), every value checked."""
    row_id, values = row[0], dict(zip(_FIELDS, row[1:]))
    where = f"row id {row_id}"

    def bad(column: str, what: str):
        return InputError(f"{path}: table evaluations, {where}, column {column}: {what}")

    genotype = _json(values["genotype"], path, "evaluations", where, "genotype")
    try:
        parsed = Genotype.from_list(genotype)
    except InputError as error:
        raise bad("genotype", f"not a genotype ({error})") from None
    except (TypeError, ValueError, RecursionError) as error:
        raise bad("genotype", f"not a genotype ({type(error).__name__}: {error})") from None
    if values["key"] != parsed.key():
        raise bad("key", "does not match the row's genotype")
    accuracies = _json(values["val_accuracy"], path, "evaluations", where, "val_accuracy")
    if not isinstance(accuracies, list) or not all(_is_number(a, 0.0, 1.0) for a in accuracies):
        raise bad("val_accuracy", "not a list of accuracies between 0 and 1")
    checks = {"generation": _is_int(values["generation"]), "status": values["status"] in STATUSES,
              "accuracy_drop": _is_number(values["accuracy_drop"], 0.0, 1.0),
              "energy_mJ": _is_number(values["energy_mJ"]), "latency_ms": _is_number(values["latency_ms"]),
              "memory_KiB": _is_number(values["memory_KiB"]), "violation": _is_number(values["violation"]),
              "seconds": _is_number(values["seconds"]), "worker": isinstance(values["worker"], str),
              "attempts": _is_int(values["attempts"], 1), "message": isinstance(values["message"], str),
              "params": _is_int(values["params"])}
    for column, good in checks.items():
        if not good:
            raise bad(column, f"bad value {values[column]!r}")
    values["genotype"] = genotype
    values["val_accuracy"] = tuple(accuracies)
    return Evaluation(**values)


def _checkpoint(row, path: Path) -> Checkpoint:
    """A `Checkpoint` from a row of `generations`, its population and generator state checked."""
    generation, population, rng_state = row
    where = f"generation {generation!r}"
    if not _is_int(generation):
        raise InputError(f"{path}: table generations, {where}: not a generation number")
    population = _json(population, path, "generations", where, "population")
    if not isinstance(population, list) or not population or not all(isinstance(k, str) for k in population):
        raise InputError(f"{path}: table generations, {where}, column population: not a list of genotype keys")
    state = _json(rng_state, path, "generations", where, "rng_state")
    try:
        np.random.default_rng().bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as error:
        raise InputError(f"{path}: table generations, {where}, column rng_state: not a generator state "
                         f"({type(error).__name__}: {error})") from None
    return Checkpoint(generation, population, state)


def _create(path: Path, config: dict) -> None:
    """Create the journal at `path` whole: schema and configuration are written in one transaction
    into a temporary file beside it, which is then linked to `path` (refused if `path` appeared
    meanwhile), so that no reader and no kill ever sees a journal without its configuration."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        connection = sqlite3.connect(temporary, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute("INSERT INTO meta VALUES ('schema_version', ?), ('config', ?)",
                               (str(SCHEMA_VERSION), json.dumps(config, sort_keys=True)))
            connection.execute("COMMIT")
        finally:
            connection.close()
        os.link(temporary, path)
    except FileExistsError:
        raise InputError(f"{path}: a journal already exists; pass --resume to continue that run "
                         "or choose another --out folder") from None
    except (OSError, sqlite3.Error) as error:
        raise InputError(f"{path}: cannot create the journal ({error})") from None
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(temporary + suffix).unlink(missing_ok=True)


def _check_header(path: Path) -> None:
    """Refuse a file that is not SQLite before sqlite3 touches it."""
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as handle:
            header = handle.read(16)
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None
    if header != b"SQLite format 3\x00":
        raise InputError(f"{path}: not a nascaps journal (not an SQLite database)")


def read_journal(path: str | Path) -> tuple[dict, list[Evaluation], list[Checkpoint]]:
    """Configuration, evaluations and checkpoints of a journal, read-only (for reports and finalize)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no journal")
    _check_header(path)
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.DatabaseError as error:
        raise InputError(f"{path}: not a readable nascaps journal ({error})") from None
    with Journal(path, connection) as journal:
        journal._check_integrity()
        return journal.stored_config, journal.evaluations(), journal.checkpoints()


class RunLock:
    """An exclusive lock on a run folder, held while a command works in it (`with RunLock(...)`).

    The lock is an advisory `flock` on the file `path`, which records who holds it (pid, host, start
    time, command). The operating system releases it when its process ends, however it ends, so a
    lock left by a killed run is simply taken over; a second process on the same folder while the
    first runs is refused with an `InputError` naming the first.
    """

    def __init__(self, path: str | Path, command: str):
        self.path = Path(path)
        self.command = command
        self._handle = None

    def __enter__(self) -> "RunLock":
        try:
            handle = open(self.path, "a+")
        except OSError as error:
            raise InputError(f"{self.path}: cannot create the run lock ({error.strerror})") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read(1000).strip()
            handle.close()
            raise InputError(f"{self.path.parent}: another process is working in this folder ({_holder(holder)}); "
                             "wait for it to end or choose another folder") from None
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started,
                                 "command": self.command}) + "\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()
        self._handle = None


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return (f"{info['command']}, pid {info['pid']} on host {info['host']}, started {info['started']}")
    except (ValueError, KeyError, TypeError):
        return "its pid is not recorded yet"
