"""The one place that picks the Keras backend and sets thread counts.

nascaps trains with Keras 3 on TensorFlow by default (measured fastest on CPU for capsule
networks, see docs/training.md). `KERAS_BACKEND` set in the environment wins. Import this module
(or call `select_backend`) before anything imports keras.
"""

import os
import sys

DEFAULT_BACKEND = "tensorflow"
"""Backend used when `KERAS_BACKEND` is unset."""


def select_backend() -> str:
    """Set `KERAS_BACKEND` to `DEFAULT_BACKEND` when unset (and quieten TensorFlow's C++ log); return it.

    Once keras is imported its backend is fixed: then the backend keras already uses is returned.
    """
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return os.environ.setdefault("KERAS_BACKEND", DEFAULT_BACKEND)


def set_threads(threads: int | None) -> int | None:
    """Limit the backend's intra-op (and inter-op) threads to `threads` for this process.

    None leaves the backend's default (all cores). TensorFlow accepts the setting only before its
    runtime starts; a later different request is ignored and the threads already in force are
    returned (callers such as Dask workers should set it once per process). Returns the
    intra-op thread count in force, None when unknown.
    """
    backend = select_backend()
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
