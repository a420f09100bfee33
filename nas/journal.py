"""The search journal: a SQLite database in the run folder that survives a kill at any moment.

Every evaluation is committed the moment it finishes (genotype, objectives, per-epoch validation
accuracies, status, seconds, worker, attempts); the random generator's state and the surviving
population are committed after every generation. `--resume` reads them back: evaluations are
looked up by genotype key instead of trained again, and the generator restarts where the last
finished generation left it, so a resumed run makes the same choices as an uninterrupted one.

Tables: `meta(name, value)` (schema version, the run's configuration as JSON),
`evaluations` (one row per distinct genotype) and `generations` (one row per finished generation).
"""

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

from capsacc.errors import InputError

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
        configuration (except `RESUME_FREE_KEYS`). A file that is not a readable journal raises
        `InputError` naming it, and is left untouched.
        """
        path = Path(path)
        exists = path.exists()
        if exists and not resume:
            raise InputError(f"{path}: a journal already exists; pass --resume to continue that run "
                             "or choose another --out folder")
        if resume and not exists:
            raise InputError(f"{path}: no journal to resume")
        try:
            if exists:
                _check_header(path)
            connection = sqlite3.connect(path, isolation_level=None)
            connection.execute("PRAGMA busy_timeout = 10000")
            if exists:
                journal = cls(path, connection)
                journal._check_config(config)
                return journal
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            with connection:
                connection.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
                connection.execute("INSERT INTO meta VALUES ('schema_version', ?), ('config', ?)",
                                   (str(SCHEMA_VERSION), json.dumps(config, sort_keys=True)))
            return cls(path, connection)
        except sqlite3.DatabaseError as error:
            raise InputError(f"{path}: not a readable nascaps journal ({error})") from None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _check_config(self, config: dict) -> None:
        rows = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        if rows.get("schema_version") != str(SCHEMA_VERSION) or "config" not in rows:
            raise InputError(f"{self.path}: not a nascaps journal of schema version {SCHEMA_VERSION}")
        try:
            stored = json.loads(rows["config"])
        except json.JSONDecodeError:
            raise InputError(f"{self.path}: the stored run configuration is not JSON") from None
        differing = sorted(k for k in set(stored) | set(config)
                           if k not in RESUME_FREE_KEYS and stored.get(k) != config.get(k))
        if differing:
            details = ", ".join(f"{k}: journal {stored.get(k)!r}, now {config.get(k)!r}" for k in differing)
            raise InputError(f"{self.path}: --resume with a different configuration ({details})")

    @property
    def stored_config(self) -> dict:
        """The configuration the journal was created with."""
        return json.loads(self._db.execute("SELECT value FROM meta WHERE name = 'config'").fetchone()[0])

    def record(self, evaluation: Evaluation) -> None:
        """Commit one finished evaluation (a key already journaled is kept as it was)."""
        row = asdict(evaluation)
        row["genotype"] = json.dumps(evaluation.genotype)
        row["val_accuracy"] = json.dumps(list(evaluation.val_accuracy))
        names = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        with self._db:
            self._db.execute(f"INSERT OR IGNORE INTO evaluations ({names}) VALUES ({marks})", row)

    def lookup(self, key: str) -> Evaluation | None:
        """The journaled evaluation of a genotype key, if any."""
        cursor = self._db.execute(f"SELECT {_COLUMNS} FROM evaluations WHERE key = ?", (key,))
        row = cursor.fetchone()
        return None if row is None else _evaluation(row)

    def evaluations(self) -> list[Evaluation]:
        """All journaled evaluations, in the order they finished."""
        return [_evaluation(row) for row in
                self._db.execute(f"SELECT {_COLUMNS} FROM evaluations ORDER BY id").fetchall()]

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Commit a finished generation's population and generator state."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO generations VALUES (?, ?, ?)",
                             (checkpoint.generation, json.dumps(checkpoint.population),
                              json.dumps(checkpoint.rng_state)))

    def last_checkpoint(self) -> Checkpoint | None:
        """The latest finished generation, None before the initial population is evaluated."""
        row = self._db.execute("SELECT generation, population, rng_state FROM generations "
                               "ORDER BY generation DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return Checkpoint(row[0], json.loads(row[1]), json.loads(row[2]))

    def checkpoints(self) -> list[Checkpoint]:
        """Every finished generation, in order."""
        rows = self._db.execute("SELECT generation, population, rng_state FROM generations "
                                "ORDER BY generation").fetchall()
        return [Checkpoint(g, json.loads(p), json.loads(s)) for g, p, s in rows]


_FIELDS = ("key", "genotype", "generation", "status", "accuracy_drop", "energy_mJ", "latency_ms", "memory_KiB",
           "violation", "val_accuracy", "seconds", "worker", "attempts", "message", "params")
_COLUMNS = ", ".join(_FIELDS)


def _evaluation(row) -> Evaluation:
    values = dict(zip(_FIELDS, row))
    values["genotype"] = json.loads(values["genotype"])
    values["val_accuracy"] = tuple(json.loads(values["val_accuracy"]))
    return Evaluation(**values)


def _check_header(path: Path) -> None:
    """Refuse a file that is not SQLite before sqlite3 touches it."""
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
        journal = Journal(path, connection)
        try:
            return journal.stored_config, journal.evaluations(), journal.checkpoints()
        finally:
            journal.close()
    except (sqlite3.DatabaseError, TypeError) as error:
        raise InputError(f"{path}: not a readable nascaps journal ({error})") from None
