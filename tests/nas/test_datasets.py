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


@pytest.mark.parametrize("override,needle", [
    ({"x_train": np.zeros((0, 28, 28), np.uint8), "y_train": np.zeros(0, np.int64)}, "'x_train' is empty"),
    ({"y_train": np.array([0, 1, 2, np.nan, 4, 5, 6, 7, 8, 9, 0, 1])}, "'y_train' label 3 is nan"),
    ({"y_test": np.array([0.5, 1, 2, 3])}, "'y_test' label 0 is 0.5, not a whole number"),
    ({"y_train": np.full(12, 3)}, "'y_train' holds a single class (3)"),
    ({"y_train": np.array(["a"] * 12)}, "'y_train' must hold whole-number labels"),
    ({"y_train": np.zeros((12, 2), np.int64)}, "'y_train' must be a vector of labels"),
    ({"y_test": np.arange(5) % 10}, "5 labels in 'y_test' for 4 images"),
    ({"x_test": np.zeros((4, 28, 20), np.uint8)}, "'x_test' must hold square images"),
    ({"x_test": np.zeros((4, 28, 28, 2), np.uint8)}, "with 1 or 3 channels"),
    ({"x_test": np.zeros((4, 32, 32), np.uint8)}, "differ in shape"),
    ({"y_train": np.arange(12) - 1}, "'y_train' labels must be 0..9, got -1..10"),
])
def test_bad_npz_contents_name_the_file_and_the_array(tmp_path, override, needle):
    _write_npz(tmp_path / "d.npz", **override)
    with pytest.raises(InputError) as error:
        load_dataset("mnist", tmp_path / "d.npz")
    assert str(tmp_path / "d.npz") in str(error.value) and needle in str(error.value)


def test_truncated_and_foreign_npz_files_are_input_errors(tmp_path):
    _write_npz(tmp_path / "whole.npz", n_train=200)
    data = (tmp_path / "whole.npz").read_bytes()
    for cut in (len(data) // 3, len(data) - 30, 40):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        with pytest.raises(InputError, match="cut.npz"):
            load_dataset("mnist", tmp_path / "cut.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(InputError, match="single.npy: not a .npz archive"):
        load_dataset("mnist", tmp_path / "single.npy")
    np.savez(tmp_path / "objects.npz", x_train=np.array([object()] * 2), y_train=np.zeros(2), x_test=np.zeros(1),
             y_test=np.zeros(1))
    with pytest.raises(InputError, match="objects.npz: array 'x_train' cannot be read"):
        load_dataset("mnist", tmp_path / "objects.npz")


def _cifar_folder(tmp_path, protocol=pickle.DEFAULT_PROTOCOL, labels=(1, 2, 3)):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": b"x", b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
                 b"labels": list(labels), b"filenames": [b"a.png", b"b.png", b"c.png"]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    return folder


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_batches_of_every_pickle_protocol_load(tmp_path, protocol):
    _cifar_folder(tmp_path, protocol, labels=(np.int64(1), 2, 3))
    data = load_dataset("cifar10", tmp_path)
    assert data.x_train.shape == (15, 32, 32, 3) and list(data.y_test) == [1, 2, 3]


class _Payload:
    """Unpickling this object runs `os.system(command)`."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        import os
        return (os.system, (self.command,))


class _ExecPayload:
    """Unpickling this object runs `exec(source)` (a builtin, which the loader must refuse too)."""

    def __init__(self, source):
        self.source = source

    def __reduce__(self):
        return (exec, (self.source,))


@pytest.mark.parametrize("payload", ["system", "exec", "nested"])
def test_a_crafted_cifar_batch_cannot_run_code(tmp_path, payload):
    folder = _cifar_folder(tmp_path)
    marker = tmp_path / "marker"
    if payload == "system":
        evil = _Payload(f"touch {marker}")
    elif payload == "exec":
        evil = _ExecPayload(f"open({str(marker)!r}, 'w').close()")
    else:
        evil = {b"data": np.zeros((3, 3072), np.uint8), b"labels": [1, 2, _Payload(f"touch {marker}")]}
    (folder / "data_batch_1").write_bytes(pickle.dumps(evil))
    with pytest.raises(InputError, match="data_batch_1: not a CIFAR-10 python batch .*refused global"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


def test_bad_cifar_contents_name_the_file(tmp_path):
    folder = _cifar_folder(tmp_path, labels=(1, 2, 11))
    with pytest.raises(InputError, match="data_batch_1: 'labels' labels must be 0..9"):
        load_dataset("cifar10", tmp_path)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [1]}))
    with pytest.raises(InputError, match=r"data_batch_1: 'data' must be a uint8 array \(n, 3072\)"):
        load_dataset("cifar10", tmp_path)
    (folder / "data_batch_1").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(InputError, match="data_batch_1: not a CIFAR-10 python batch"):
        load_dataset("cifar10", tmp_path)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((3, 3072))})[:20])
    with pytest.raises(InputError, match="data_batch_1: not a CIFAR-10 python batch"):
        load_dataset("cifar10", tmp_path)


def test_bad_svhn_contents_name_the_file(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1.5], [2]])})
    savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 1), np.uint8), "y": np.array([[1]])})
    with pytest.raises(InputError, match="train_32x32.mat: 'y' label 0 is 1.5"):
        load_dataset("svhn", tmp_path)
    (tmp_path / "train_32x32.mat").write_bytes(b"MATLAB 5.0 garbage" * 10)
    with pytest.raises(InputError, match="train_32x32.mat: not a readable .mat file"):
        load_dataset("svhn", tmp_path)
