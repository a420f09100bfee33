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

Every source is checked before use (`InputError` naming the file and the array otherwise): four
non-empty arrays, images `(n, h, w[, c])` square uint8 with 1 or 3 channels, labels whole numbers
in 0..9, one per image, at least two classes among the training labels. The CIFAR-10 batches are
pickles; they are read by `_ArrayUnpickler`, which builds numpy arrays and plain Python values
only, so that a crafted batch cannot run code.
"""

import codecs
import io
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from capsacc.errors import InputError

DATASETS = ("mnist", "fashion_mnist", "svhn", "cifar10")
CLASSES = 10
"""Classes of each dataset (labels 0..9)."""
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
    """The dataset, after checking every array (see the module docstring)."""
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise InputError(f"{source}: '{key}' is not an array ({type(value).__name__})")
        if value.size == 0:
            raise InputError(f"{source}: '{key}' is empty (shape {value.shape})")
    for key in ("x_train", "x_test"):
        images = arrays[key]
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] not in (1, 3):
            raise InputError(f"{source}: '{key}' must hold square images (n, h, w[, c]) with 1 or 3 channels, "
                             f"got shape {arrays[key].shape}")
        if images.dtype != np.uint8:
            raise InputError(f"{source}: '{key}' must be uint8 pixels, got {images.dtype}")
        arrays[key] = images
    for key in ("y_train", "y_test"):
        arrays[key] = _labels(source, key, arrays[key], len(arrays["x" + key[1:]]))
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise InputError(f"{source}: training images {arrays['x_train'].shape[1:]} and test images "
                         f"{arrays['x_test'].shape[1:]} differ in shape")
    if len(np.unique(arrays["y_train"])) < 2:
        raise InputError(f"{source}: 'y_train' holds a single class ({arrays['y_train'][0]}); "
                         "classification needs at least 2")
    return Dataset(name, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], source)


def _labels(source: str, key: str, labels: np.ndarray, images: int) -> np.ndarray:
    """Labels `(n,)` or `(n, 1)` of whole numbers in 0..CLASSES-1 as int64; `InputError` otherwise."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise InputError(f"{source}: '{key}' must be a vector of labels, got shape {labels.shape}")
    if len(labels) != images:
        raise InputError(f"{source}: {len(labels)} labels in '{key}' for {images} images")
    if len(labels) == 0:
        raise InputError(f"{source}: '{key}' is empty (no images)")
    if labels.dtype.kind not in "iuf":
        raise InputError(f"{source}: '{key}' must hold whole-number labels, got dtype {labels.dtype}")
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            index = int(np.argmax(bad))
            raise InputError(f"{source}: '{key}' label {index} is {labels[index]}, not a whole number")
    if labels.min() < 0 or labels.max() > CLASSES - 1:
        raise InputError(f"{source}: '{key}' labels must be 0..{CLASSES - 1}, got {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def _from_npz(name: str, file: Path, source: str) -> Dataset:
    keys = ("x_train", "y_train", "x_test", "y_test")
    if not file.is_file():
        raise InputError(f"{file}: not a file (dataset {name} needs a .npz file)")
    try:
        data = np.load(file)
    except OSError as error:
        raise InputError(f"{file}: cannot read ({error.strerror or error})") from None
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise InputError(f"{file}: not a readable .npz file ({error})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError(f"{file}: not a .npz archive (a single array)")
    with data:
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise InputError(f"{file}: not the keras .npz layout, missing {', '.join(missing)}")
        arrays = []
        for key in keys:
            try:
                arrays.append(data[key])
            except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as error:
                raise InputError(f"{file}: array '{key}' cannot be read ({error})") from None
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


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays, dtypes and scalars and plain Python values
    (dicts, lists, tuples, strings, bytes, numbers): `find_class` refuses every other global, so a
    crafted pickle cannot call anything else (`os.system` and the like)."""

    ALLOWED = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): codecs.encode}
    """Globals a pickled array needs (numpy 1 and 2 module names are both accepted)."""
    for module in ("numpy.core", "numpy._core"):
        ALLOWED[(f"{module}.multiarray", "_reconstruct")] = np._core.multiarray._reconstruct
        ALLOWED[(f"{module}.multiarray", "scalar")] = np._core.multiarray.scalar
        ALLOWED[(f"{module}.numeric", "_frombuffer")] = np._core.numeric._frombuffer
    del module

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (only numpy arrays are loaded)") from None


def load_array_pickle(data: bytes):
    """Unpickle `data` (Python 2 byte strings kept as bytes) with `_ArrayUnpickler`."""
    return _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()


def _from_cifar(path: Path) -> Dataset:
    folder = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
    parts = {}
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        file = folder / batch
        try:
            content = load_array_pickle(read_bytes(file))
        except OSError as error:
            raise InputError(f"{file}: cannot read ({error.strerror or error}); CIFAR-10 needs data_batch_1..5 "
                             f"and test_batch (python version)") from None
        except (pickle.UnpicklingError, ValueError, TypeError, EOFError, IndexError, KeyError, AttributeError,
                RecursionError, MemoryError) as error:
            raise InputError(f"{file}: not a CIFAR-10 python batch ({type(error).__name__}: {error})") from None
        if not isinstance(content, dict) or b"data" not in content or b"labels" not in content:
            raise InputError(f"{file}: not a CIFAR-10 python batch (needs a dict with b'data' and b'labels')")
        data, labels = content[b"data"], content[b"labels"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise InputError(f"{file}: 'data' must be a uint8 array (n, 3072), got "
                             f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
        try:
            labels = np.asarray(labels)
        except (ValueError, TypeError) as error:
            raise InputError(f"{file}: 'labels' is not a list of numbers ({error})") from None
        labels = _labels(str(file), "labels", labels, len(data))
        parts[batch] = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels)
    train = [parts[f"data_batch_{i}"] for i in range(1, 6)]
    return _checked("cifar10", str(folder), np.concatenate([p[0] for p in train]),
                    np.concatenate([p[1] for p in train]), *parts["test_batch"])


def read_bytes(file: Path, limit: int = 1 << 30) -> bytes:
    """The bytes of the regular file `file` (at most `limit`); `InputError` for anything else."""
    if not file.is_file():
        if file.exists():
            raise InputError(f"{file}: not a regular file")
        raise FileNotFoundError(2, "No such file or directory")
    if file.stat().st_size > limit:
        raise InputError(f"{file}: larger than {limit} bytes")
    return file.read_bytes()


def _from_svhn(path: Path) -> Dataset:
    from scipy.io import loadmat
    arrays = []
    for split in ("train", "test"):
        file = path / f"{split}_32x32.mat" if path.is_dir() else path
        if not file.is_file():
            raise InputError(f"{file}: cannot read (no such file); SVHN needs train_32x32.mat and "
                             f"test_32x32.mat in a folder")
        try:
            content = loadmat(file)
        except OSError as error:
            raise InputError(f"{file}: cannot read ({error.strerror or error})") from None
        except Exception as error:  # noqa: BLE001 - scipy's .mat reader raises many types on a damaged file
            raise InputError(f"{file}: not a readable .mat file ({type(error).__name__}: {error})") from None
        for key in ("X", "y"):
            if not isinstance(content.get(key), np.ndarray):
                raise InputError(f"{file}: not an SVHN .mat file (no array '{key}')")
        images, labels = content["X"], content["y"]
        if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.dtype != np.uint8:
            raise InputError(f"{file}: 'X' must be uint8 (32, 32, 3, n), got {images.dtype} {images.shape}")
        if labels.dtype.kind in "iuf":
            labels = np.where(labels == 10, 0, labels)  # SVHN writes the digit 0 as 10
        labels = _labels(str(file), "y", labels, images.shape[3])
        arrays += [np.ascontiguousarray(images.transpose(3, 0, 1, 2)), labels]
    return _checked("svhn", str(path), *arrays)
