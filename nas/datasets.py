"""Image classification datasets: MNIST, Fashion-MNIST, SVHN and CIFAR-10.

Images are uint8 arrays `(n, height, width, channels)` (0-255), labels int64 `(n,)` in 0..9.
Sources, for `load_dataset(name, path)`:
- `path` None: `mnist` is the subset embedded in the package (6,000 training and 1,000 test images
  of the keras `mnist.npz`, see nas/data/ATTRIBUTION.md); the others come through
  `keras.datasets` (downloads; SVHN is not there and needs a path);
- `path` "keras": through `keras.datasets` (downloads), also for the full MNIST;
- a file or a folder: MNIST / Fashion-MNIST in the keras `.npz` layout (a folder must hold
  `mnist.npz` / `fashion_mnist.npz`), CIFAR-10 as the python batches (the `cifar-10-batches-py`
  folder or its parent), SVHN as `train_32x32.mat` and `test_32x32.mat` in a folder.
The resize flag of a genotype (x2) is applied inside the model (nas/builder.py), not to the data.
"""

import pickle
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from capsacc.errors import InputError

DATASETS = ("mnist", "fashion_mnist", "svhn", "cifar10")
EMBEDDED_MNIST = "mnist_subset.npz"
"""File in nas/data holding the embedded MNIST subset."""


@dataclass(frozen=True)
class Dataset:
    """Training and test images (uint8, `(n, h, w, c)`) and labels (int64, `(n,)`); `source` says where from."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one image."""
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        """Number of classes (labels are 0..n_classes-1)."""
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    def describe(self) -> dict:
        """Provenance for result files: name, source, sizes."""
        return {"name": self.name, "source": self.source, "train_images": len(self.x_train),
                "test_images": len(self.x_test), "input_shape": list(self.input_shape)}


def load_dataset(name: str = "mnist", path=None) -> Dataset:
    """Load `name` (one of `DATASETS`) from `path` (see the module docstring); bad input raises `InputError`."""
    if name not in DATASETS:
        raise InputError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)})")
    if path is None and name == "mnist":
        resource = files("nas") / "data" / EMBEDDED_MNIST
        return _from_npz(name, Path(str(resource)), "embedded MNIST subset (nas/data/mnist_subset.npz)")
    if path is None or str(path) == "keras":
        return _from_keras(name)
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder (dataset {name})")
    if name in ("mnist", "fashion_mnist"):
        file = path / f"{name}.npz" if path.is_dir() else path
        return _from_npz(name, file, str(file))
    if name == "cifar10":
        return _from_cifar(path)
    return _from_svhn(path)


def _checked(name: str, source: str, x_train, y_train, x_test, y_test) -> Dataset:
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for key in ("x_train", "x_test"):
        images = arrays[key]
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[1] != images.shape[2]:
            raise InputError(f"{source}: '{key}' must hold square images (n, h, w[, c]), got shape {images.shape}")
        if images.dtype != np.uint8:
            raise InputError(f"{source}: '{key}' must be uint8 pixels, got {images.dtype}")
        arrays[key] = images
    for key in ("y_train", "y_test"):
        labels = np.asarray(arrays[key]).reshape(-1)
        images = arrays["x" + key[1:]]
        if len(labels) != len(images):
            raise InputError(f"{source}: {len(labels)} labels in '{key}' for {len(images)} images")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise InputError(f"{source}: '{key}' labels must be 0..9, got {labels.min()}..{labels.max()}")
        arrays[key] = labels.astype(np.int64)
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise InputError(f"{source}: training images {arrays['x_train'].shape[1:]} and test images "
                         f"{arrays['x_test'].shape[1:]} differ in shape")
    return Dataset(name, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], source)


def _from_npz(name: str, file: Path, source: str) -> Dataset:
    try:
        with np.load(file) as data:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in data.files]
            if missing:
                raise InputError(f"{file}: not the keras .npz layout, missing {', '.join(missing)}")
            arrays = [data[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except OSError as error:
        raise InputError(f"{file}: cannot read ({error.strerror or error})") from None
    except (ValueError, EOFError) as error:
        raise InputError(f"{file}: not a readable .npz file ({error})") from None
    return _checked(name, source, *arrays)


def _from_keras(name: str) -> Dataset:
    if name == "svhn":
        raise InputError("dataset svhn: keras.datasets has no SVHN; give --data FOLDER with train_32x32.mat "
                         "and test_32x32.mat")
    import keras
    module = getattr(keras.datasets, name)
    try:
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as error:  # network or cache failures of the download
        raise InputError(f"dataset {name}: keras.datasets could not load it ({error}); give --data PATH") from None
    return _checked(name, f"keras.datasets.{name}", x_train, y_train, x_test, y_test)


def _from_cifar(path: Path) -> Dataset:
    folder = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
    parts = {}
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        file = folder / batch
        try:
            with open(file, "rb") as handle:
                content = pickle.load(handle, encoding="bytes")
            data, labels = content[b"data"], content[b"labels"]
        except OSError as error:
            raise InputError(f"{file}: cannot read ({error.strerror or error}); CIFAR-10 needs data_batch_1..5 "
                             f"and test_batch (python version)") from None
        except (pickle.UnpicklingError, KeyError, TypeError, EOFError) as error:
            raise InputError(f"{file}: not a CIFAR-10 python batch ({error!r})") from None
        images = np.asarray(data, dtype=np.uint8)
        if images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
            raise InputError(f"{file}: 'data' must be (n, 3072) pixels, got {images.shape}")
        parts[batch] = (images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(labels))
    train = [parts[f"data_batch_{i}"] for i in range(1, 6)]
    return _checked("cifar10", str(folder), np.concatenate([p[0] for p in train]),
                    np.concatenate([p[1] for p in train]), *parts["test_batch"])


def _from_svhn(path: Path) -> Dataset:
    from scipy.io import loadmat
    arrays = []
    for split in ("train", "test"):
        file = path / f"{split}_32x32.mat" if path.is_dir() else path
        try:
            content = loadmat(file)
            images, labels = content["X"], content["y"]
        except OSError as error:
            raise InputError(f"{file}: cannot read ({error.strerror or error}); SVHN needs train_32x32.mat and "
                             f"test_32x32.mat in a folder") from None
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(f"{file}: not an SVHN .mat file with X and y ({error!r})") from None
        if images.ndim != 4 or images.shape[:3] != (32, 32, 3):
            raise InputError(f"{file}: 'X' must be (32, 32, 3, n), got {images.shape}")
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        arrays += [np.ascontiguousarray(images.transpose(3, 0, 1, 2)), np.where(labels == 10, 0, labels)]
    return _checked("svhn", str(path), *arrays)
