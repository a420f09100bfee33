"""Datasets: the embedded MNIST subset, local files in each layout, clear errors."""

import pickle

import numpy as np
import pytest

from capsacc.errors import InputError
from nas.datasets import load_dataset


def test_embedded_mnist_subset_is_the_default():
    data = load_dataset()
    assert data.name == "mnist" and "embedded" in data.source
    assert data.x_train.shape == (6000, 28, 28, 1) and data.x_test.shape == (1000, 28, 28, 1)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    assert data.n_classes == 10 and data.input_shape == (28, 28, 1)
    assert np.bincount(data.y_train).min() > 450
    assert data.x_train.max() == 255


def _write_npz(path, n_train=12, n_test=4, side=28, **override):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
              "y_train": np.arange(n_train) % 10, "x_test": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
              "y_test": np.arange(n_test) % 10}
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def test_npz_file_and_folder(tmp_path):
    arrays = _write_npz(tmp_path / "fashion_mnist.npz")
    for path in (tmp_path / "fashion_mnist.npz", tmp_path):
        data = load_dataset("fashion_mnist", path)
        np.testing.assert_array_equal(data.x_train[..., 0], arrays["x_train"])
        np.testing.assert_array_equal(data.y_test, arrays["y_test"])
        assert data.describe()["train_images"] == 12


def test_cifar10_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": data, b"labels": [1, 2, 3]}, handle)
    data = load_dataset("cifar10", tmp_path)
    assert data.x_train.shape == (15, 32, 32, 3) and data.x_test.shape == (3, 32, 32, 3)
    raw = pickle.load(open(folder / "test_batch", "rb"), encoding="bytes")[b"data"]
    assert data.x_test[0, 0, 1, 2] == raw[0, 2 * 1024 + 1]  # channel-major rows -> (h, w, c)


def test_svhn_mat_files(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    rng = np.random.default_rng(2)
    for split, n in (("train", 5), ("test", 2)):
        savemat(tmp_path / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                                  "y": np.array([[10], [1], [2], [3], [4]][:n])})
    data = load_dataset("svhn", tmp_path)
    assert data.x_train.shape == (5, 32, 32, 3) and list(data.y_train) == [0, 1, 2, 3, 4]


def test_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(InputError, match="nothere.npz: no such file"):
        load_dataset("mnist", tmp_path / "nothere.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz: not a readable"):
        load_dataset("mnist", bad)
    _write_npz(tmp_path / "partial.npz", y_test=None)
    with pytest.raises(InputError, match="partial.npz: not the keras .npz layout, missing y_test"):
        load_dataset("mnist", tmp_path / "partial.npz")
    _write_npz(tmp_path / "labels.npz", y_train=np.arange(12) + 5)
    with pytest.raises(InputError, match="labels.npz: 'y_train' labels must be 0..9"):
        load_dataset("mnist", tmp_path / "labels.npz")
    _write_npz(tmp_path / "floats.npz", x_train=np.zeros((12, 28, 28)))
    with pytest.raises(InputError, match="'x_train' must be uint8"):
        load_dataset("mnist", tmp_path / "floats.npz")
    with pytest.raises(InputError, match="data_batch_1: cannot read"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(InputError, match="train_32x32.mat: cannot read"):
        load_dataset("svhn", tmp_path)
    with pytest.raises(InputError, match="keras.datasets has no SVHN"):
        load_dataset("svhn")
