"""The command line's Keras backend default, TensorFlow's C++ log, and thread counts.

The library (`nas.layers`, `nas.builder`, `nas.train`) never chooses a backend: it uses the one
Keras resolves (`KERAS_BACKEND`, else the `backend` of `keras.json`, else Keras' own default).
The `nascaps` command calls `configure_environment` before anything imports Keras: it quietens
TensorFlow's C++ log and sets `DEFAULT_BACKEND` (measured fastest on CPU for capsule networks, see
docs/training.md) only when neither `KERAS_BACKEND` nor `keras.json` names a backend.
"""

import json
import os
import sys

DEFAULT_BACKEND = "tensorflow"
"""Backend the command line uses when neither `KERAS_BACKEND` nor `keras.json` names one."""

QUIET_TENSORFLOW = {"TF_CPP_MIN_LOG_LEVEL": "2"}
"""TensorFlow's C++ log drops INFO and WARNING lines at level 2 (the oneDNN and CPU-feature notices
among them). absl prints its 'before absl::InitializeLog()' warning only with the first line that
passes this filter, so it goes too; errors still show."""


def keras_json_backend(environ=os.environ) -> str | None:
    """The `backend` named by `keras.json` in Keras' configuration folder (`$KERAS_HOME`, else
    `~/.keras`), None when the file is missing, unreadable or names none."""
    folder = environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(folder, "keras.json"), encoding="utf-8") as file:
            config = json.load(file)
    except (OSError, ValueError):
        return None
    backend = config.get("backend") if isinstance(config, dict) else None
    return backend if isinstance(backend, str) and backend else None


def configure_environment(environ=os.environ) -> None:
    """Prepare `environ` for the command line, before Keras or TensorFlow is imported: the
    `QUIET_TENSORFLOW` settings (unless already set) and `KERAS_BACKEND=DEFAULT_BACKEND` when
    neither `KERAS_BACKEND` nor `keras.json` names a backend. Without effect on the backend once
    Keras is imported."""
    for name, value in QUIET_TENSORFLOW.items():
        environ.setdefault(name, value)
    if "keras" not in sys.modules and not environ.get("KERAS_BACKEND") and keras_json_backend(environ) is None:
        environ["KERAS_BACKEND"] = DEFAULT_BACKEND


def set_threads(threads: int | None) -> int | None:
    """Limit the backend's intra-op (and inter-op) threads to `threads` for this process.

    None leaves the backend's default (all cores). TensorFlow accepts the setting only before its
    runtime starts; a later different request is ignored and the threads already in force are
    returned (callers such as Dask workers should set it once per process). Returns the
    intra-op thread count in force, None when unknown.
    """
    import keras
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        if threads is not None:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:
                pass
        return tf.config.threading.get_intra_op_parallelism_threads() or None
    if backend == "torch":
        import torch
        if threads is not None:
            torch.set_num_threads(threads)
        return torch.get_num_threads()
    return threads
