"""Tests for minigan.io: checkpoints, image grids, PNG codec and metric plots."""

from __future__ import annotations

import errno
import io as pyio
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minigan.io import atomic, checkpoint as mio_checkpoint, images as mio_images, plot as mio_plot
from minigan.io import CheckpointError, image_grid, load_checkpoint, plot_metrics, read_png, save_checkpoint, write_png

# Hypothesis tests create their own temp dirs (function-scoped fixtures are
# not reset between examples).
HSETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sample_state():
    rng = np.random.default_rng(0)
    return (
        {
            "G.fc1.W": rng.standard_normal((4, 3)).astype(np.float32),
            "G.fc1.b": np.zeros(3, dtype=np.float32),
            "optim.D.v.fc1.W": rng.standard_normal((2, 5)),
            "rng.G": rng.integers(0, 2**32, size=8, dtype=np.uint64).astype(np.uint32),
            "step": np.array(17, dtype=np.int64),
            "empty": np.zeros((0, 4), dtype=np.float64),
        },
        {"epoch": 3, "config": {"lr": 2e-4, "layers": [784, 256, 1]}, "history": [{"loss_D": 0.5}]},
    )


def _assert_same(arrays_a, arrays_b):
    assert set(arrays_a) == set(arrays_b)
    for k in arrays_a:
        a, b = arrays_a[k], arrays_b[k]
        assert a.dtype == b.dtype, k
        assert a.shape == b.shape, k
        assert a.tobytes() == b.tobytes(), k  # bitwise, so NaN payloads count too


@pytest.fixture
def ckpt(tmp_path):
    arrays, meta = _sample_state()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, arrays, meta)
    return path, arrays, meta


def _temp_leftovers(directory):
    return [n for n in os.listdir(directory) if n.endswith(".tmp")]


def _zip_bytes(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buf = pyio.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate-name warning in one test
        with zipfile.ZipFile(buf, "w", compression) as zf:
            for name, data in members.items() if isinstance(members, dict) else members:
                zf.writestr(name, data)
    return buf.getvalue()


def _npy_bytes(arr, allow_pickle=False) -> bytes:
    buf = pyio.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _meta_npy(meta=None) -> bytes:
    return _npy_bytes(np.frombuffer(json.dumps(meta or {}).encode(), dtype=np.uint8))


# ---------------------------------------------------------------------------
# checkpoint round trip
# ---------------------------------------------------------------------------

DTYPES = [np.float32, np.float64, np.int64, np.uint8, np.uint32, np.int8, np.float16, np.bool_, np.complex64]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=15,
)


@st.composite
def array_dicts(draw):
    keys = draw(
        st.lists(
            st.text(alphabet="abcDEF._-0123", min_size=1, max_size=12).filter(lambda k: k != "__meta__"),
            min_size=0,
            max_size=5,
            unique=True,
        )
    )
    out = {}
    for k in keys:
        dtype = draw(st.sampled_from(DTYPES))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
        arr = draw(hnp.arrays(dtype, shape))
        if draw(st.booleans()) and arr.ndim > 1:
            arr = np.asfortranarray(arr)
        out[k] = arr
    return out


@settings(max_examples=40, **HSETTINGS)
@given(arrays=array_dicts(), meta=st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_roundtrip_hypothesis(arrays, meta):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "c.npz")
        save_checkpoint(path, arrays, meta)
        got_arrays, got_meta = load_checkpoint(path)
        _assert_same(arrays, got_arrays)
        assert got_meta == meta
        assert _temp_leftovers(d) == []


def test_roundtrip_sample_and_numpy_interop(ckpt):
    path, arrays, meta = ckpt
    got, got_meta = load_checkpoint(path)
    _assert_same(arrays, got)
    assert got_meta == meta
    # It is a plain npz: numpy reads it without pickle.
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == set(arrays) | {"__meta__"}
        assert json.loads(npz["__meta__"].tobytes()) == meta


def test_meta_nan_and_pathlike(tmp_path):
    save_checkpoint(tmp_path / "x.npz", {}, {"loss": float("nan"), "inf": float("inf")})
    _, meta = load_checkpoint(str(tmp_path / "x.npz"))
    assert np.isnan(meta["loss"]) and meta["inf"] == float("inf")


def test_save_is_deterministic_and_overwrites(tmp_path):
    arrays, meta = _sample_state()
    p1, p2 = tmp_path / "a.npz", tmp_path / "b.npz"
    save_checkpoint(p1, arrays, meta)
    save_checkpoint(p2, arrays, meta)
    assert p1.read_bytes() == p2.read_bytes()
    save_checkpoint(p1, {"w": np.ones(2)}, {"epoch": 9})
    got, meta = load_checkpoint(p1)
    assert list(got) == ["w"] and meta == {"epoch": 9}
    assert not p1.with_name("a.npz.npz").exists()  # path used verbatim


@pytest.mark.parametrize(
    "arrays, meta, fragment",
    [
        ({"w": [1.0, 2.0]}, {}, "not a host numpy.ndarray"),
        ({"w": np.float64(1.0)}, {}, "not a host numpy.ndarray"),
        ({"w": np.array([{}], dtype=object)}, {}, "object dtype"),
        ({"w": np.zeros(1, dtype=[("a", "O")])}, {}, "object dtype"),
        ({"__meta__": np.zeros(1)}, {}, "reserved"),
        ({"": np.zeros(1)}, {}, "non-empty string"),
        ({3: np.zeros(1)}, {}, "non-empty string"),
        ({"a/b": np.zeros(1)}, {}, "path separator"),
        ({}, {"s": {1, 2}}, "JSON"),
        ({}, [1, 2], "meta must be a dict"),
        ([("w", np.zeros(1))], {}, "arrays must be a dict"),
    ],
)
def test_save_rejects_bad_input_without_writing(tmp_path, arrays, meta, fragment):
    path = tmp_path / "c.npz"
    with pytest.raises(CheckpointError, match=fragment) as info:
        save_checkpoint(path, arrays, meta)
    assert str(path) in str(info.value)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------
# atomicity
# ---------------------------------------------------------------------------


def _assert_intact(path, old_bytes, info):
    assert path.read_bytes() == old_bytes
    assert _temp_leftovers(path.parent) == []
    msg = str(info.value)
    assert str(path) in msg and "previous checkpoint" in msg and "intact" in msg


def test_replace_failure_keeps_old(ckpt, monkeypatch):
    path, arrays, meta = ckpt
    old = path.read_bytes()

    def boom(src, dst):
        raise OSError(errno.EIO, "simulated I/O error")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, {"new": np.ones(3)}, {"epoch": 4})
    _assert_intact(path, old, info)


def test_failure_midway_through_writing_keeps_old(ckpt, monkeypatch):
    path, arrays, meta = ckpt
    old = path.read_bytes()
    real = np.lib.format.write_array
    calls = []

    def flaky(fp, array, *a, **kw):
        calls.append(1)
        if len(calls) == 3:  # after two members are already in the temp file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fp, array, *a, **kw)

    monkeypatch.setattr(np.lib.format, "write_array", flaky)
    with pytest.raises(CheckpointError, match="No space left") as info:
        save_checkpoint(path, arrays, {"epoch": 99})
    _assert_intact(path, old, info)


@pytest.mark.parametrize(
    "exc",
    [PermissionError(errno.EACCES, "Permission denied"), OSError(errno.ENOSPC, "No space left on device")],
)
def test_fsync_or_permission_errors(ckpt, monkeypatch, exc):
    path, arrays, meta = ckpt
    old = path.read_bytes()

    def fail(*a, **kw):
        raise exc

    monkeypatch.setattr(atomic.os, "fsync", fail)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, arrays, meta)
    _assert_intact(path, old, info)


def test_cannot_create_temp_file(ckpt, monkeypatch):
    path, arrays, meta = ckpt
    old = path.read_bytes()

    def fail(*a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", fail)
    with pytest.raises(CheckpointError, match="Permission denied") as info:
        save_checkpoint(path, arrays, meta)
    _assert_intact(path, old, info)


def _unprivileged(fn):
    """Call ``fn()`` as an unprivileged user; return what it returned (a string).

    Root ignores directory permissions, and CI runs as root: there the call runs in a forked child that drops to
    the user 'nobody' first (everything it needs is already imported). Skips, saying why, where that is impossible.
    """
    if not hasattr(os, "geteuid"):
        pytest.skip("no POSIX user ids on this platform, so no read-only directory to test against")
    if os.geteuid() != 0:
        return fn()
    import pwd

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root, and there is no user 'nobody' to drop to (root ignores permissions)")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, run, report, and leave without running pytest's cleanup
        try:
            os.close(r)
            try:
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            except OSError as exc:
                result = f"SKIP cannot drop root privileges here ({exc})"
            else:
                result = "OK " + fn()
            os.write(w, result.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        result = f.read().decode()
    os.waitpid(pid, 0)
    if result.startswith("SKIP "):
        pytest.skip(f"running as root, which ignores directory permissions, and {result[5:]}")
    assert result.startswith("OK "), f"the unprivileged child failed: {result!r}"
    return result[3:]


@pytest.mark.required_in_ci
def test_read_only_directory():
    """A directory the process may not write to (as an unprivileged user, also when the suite runs as root)."""
    arrays, meta = _sample_state()
    top = tempfile.mkdtemp(prefix="minigan-readonly-")
    run = os.path.join(top, "run")
    os.mkdir(run)
    path = os.path.join(run, "ckpt.npz")
    save_checkpoint(path, arrays, meta)
    old = open(path, "rb").read()
    if os.geteuid() == 0:
        import pwd

        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            nobody = None
        for p in (top, run, path) if nobody else ():
            os.chown(p, nobody.pw_uid, nobody.pw_gid)
    os.chmod(run, 0o500)

    def save():
        try:
            save_checkpoint(path, arrays, {"epoch": 5})
        except CheckpointError as exc:
            return f"CheckpointError: {exc}"
        return "saved"

    try:
        outcome = _unprivileged(save)
    finally:
        os.chmod(run, 0o700)
    try:
        assert outcome.startswith("CheckpointError: "), outcome
        assert "Permission denied" in outcome and path in outcome and "intact" in outcome
        assert open(path, "rb").read() == old
        assert _temp_leftovers(run) == []
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="intact"):
        save_checkpoint(tmp_path / "nope" / "c.npz", {}, {})


def test_keeps_existing_file_mode(ckpt):
    path, arrays, meta = ckpt
    assert os.stat(path).st_mode & 0o777 == 0o644  # not mkstemp's 0600
    os.chmod(path, 0o640)
    save_checkpoint(path, arrays, meta)
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_slow_checkpoint_env_sleeps_before_rename(ckpt, monkeypatch):
    path, arrays, meta = ckpt
    old = path.read_bytes()
    seen = {}

    def fake_sleep(seconds):
        # At this moment the new data is complete in a temp file and the
        # target still holds the old checkpoint.
        seen["seconds"] = seconds
        seen["target"] = path.read_bytes()
        seen["temps"] = _temp_leftovers(path.parent)

    monkeypatch.setenv("MINIGAN_SLOW_CHECKPOINT", "0.25")
    monkeypatch.setattr(mio_checkpoint.time, "sleep", fake_sleep)
    save_checkpoint(path, {"w": np.ones(2)}, {"epoch": 7})
    assert seen["seconds"] == 0.25 and seen["target"] == old
    assert len(seen["temps"]) == 1 and seen["temps"][0].startswith(".ckpt-")
    assert load_checkpoint(path)[1] == {"epoch": 7}


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "Hold"])
def test_slow_checkpoint_env_invalid(ckpt, monkeypatch, value):
    path, arrays, meta = ckpt
    old = path.read_bytes()
    monkeypatch.setenv("MINIGAN_SLOW_CHECKPOINT", value)
    with pytest.raises(CheckpointError, match="MINIGAN_SLOW_CHECKPOINT"):
        save_checkpoint(path, arrays, meta)
    assert path.read_bytes() == old and _temp_leftovers(path.parent) == []


def _hold_child(path, log):
    # Python's own SIGINT handler, installed explicitly: a child of a background job starts with SIGINT ignored.
    code = (
        "import numpy as np, signal, sys; from minigan.io import save_checkpoint; "
        "signal.signal(signal.SIGINT, signal.default_int_handler); "
        "save_checkpoint(sys.argv[1], {'w': np.ones(1000)}, {'epoch': 100})"
    )
    env = dict(os.environ, MINIGAN_SLOW_CHECKPOINT="hold")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-c", code, str(path)], env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def _wait_for_text(log, proc, text, timeout=60.0):
    """Poll ``log`` until it holds ``text``; fail if the process ends first (the deadline only guards a hang)."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s: " + log.read_text(errors="replace")
        time.sleep(0.005)


def test_kill_during_save_leaves_old_checkpoint(ckpt, tmp_path):
    """SIGKILL a real process while its save holds the complete temp file before the rename."""
    path, arrays, meta = ckpt
    old = path.read_bytes()
    log = tmp_path / "child.log"
    proc = _hold_child(path, log)
    try:
        _wait_for_text(log, proc, "holding before the rename")
        assert len(_temp_leftovers(path.parent)) == 1  # the new data is complete in the temp file
    finally:
        proc.kill()
        proc.wait()
    assert path.read_bytes() == old
    _, got_meta = load_checkpoint(path)
    assert got_meta == meta


def test_hold_reports_signals_and_a_raising_handler_ends_the_save(ckpt, tmp_path):
    """MINIGAN_SLOW_CHECKPOINT=hold: SIGINT's default handler raises KeyboardInterrupt, which ends the held
    save with the temp file removed and the old checkpoint in place."""
    path, arrays, meta = ckpt
    old = path.read_bytes()
    log = tmp_path / "child.log"
    proc = _hold_child(path, log)
    try:
        _wait_for_text(log, proc, "holding before the rename")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in log.read_text()
    assert path.read_bytes() == old and _temp_leftovers(path.parent) == []


# ---------------------------------------------------------------------------
# loading hostile / corrupt files
# ---------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at") as info:
        load_checkpoint(tmp_path / "missing.npz")
    assert "missing.npz" in str(info.value)
    with pytest.raises(CheckpointError, match="directory"):
        load_checkpoint(tmp_path)


def _expect_corrupt(tmp_path, data: bytes, fragment=None, **kw):
    path = tmp_path / "bad.npz"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kw)
    assert str(path) in str(info.value)
    if fragment is not None:
        assert fragment in str(info.value)
    return str(info.value)


@pytest.mark.parametrize(
    "data",
    # Fixed bytes, not os.urandom: every pytest-xdist worker must collect the same test ids.
    [b"", b"hello world, not a zip", b"PK\x03\x04" + b"\0" * 40, np.random.default_rng(1000).bytes(1000)],
    ids=["empty", "text", "zip-magic-then-zeros", "random-1000-bytes"],
)
def test_not_a_zip(tmp_path, data):
    _expect_corrupt(tmp_path, data)


def test_bare_npy_and_prefixed_zip_rejected(tmp_path):
    npy = _npy_bytes(np.arange(3))
    _expect_corrupt(tmp_path, npy, "magic")
    # A valid zip appended to .npy bytes: zipfile would accept it, np.load
    # would read the .npy. Must be refused.
    zbytes = _zip_bytes({"__meta__.npy": _meta_npy()})
    _expect_corrupt(tmp_path, npy + zbytes, "magic")


@settings(max_examples=60, **HSETTINGS)
@given(data=st.data())
def test_truncated_hypothesis(data):
    arrays, meta = _sample_state()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "c.npz")
        save_checkpoint(path, arrays, meta)
        blob = open(path, "rb").read()
        n = data.draw(st.integers(0, len(blob) - 1))
        with open(path, "wb") as f:
            f.write(blob[:n])
        with pytest.raises(CheckpointError):
            load_checkpoint(path)


@settings(max_examples=150, **HSETTINGS)
@given(data=st.data())
def test_flipped_bytes_hypothesis(data):
    arrays, meta = _sample_state()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "c.npz")
        save_checkpoint(path, arrays, meta)
        blob = bytearray(open(path, "rb").read())
        for _ in range(data.draw(st.integers(1, 3))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] ^= data.draw(st.integers(1, 255))
        with open(path, "wb") as f:
            f.write(bytes(blob))
        try:
            got, got_meta = load_checkpoint(path)
        except CheckpointError:
            return
        _assert_same(arrays, got)  # a harmless flip (timestamp, attrs...)
        assert got_meta == meta


def test_member_not_npy(tmp_path):
    data = _zip_bytes({"__meta__.npy": _meta_npy(), "evil.pkl": b"cos\nsystem\n"})
    _expect_corrupt(tmp_path, data, "not a .npy")


def test_object_array_member(tmp_path):
    buf = pyio.BytesIO()
    meta = np.frombuffer(b"{}", dtype=np.uint8)
    np.savez(buf, evil=np.array([{}], dtype=object), __meta__=meta)  # pickles
    _expect_corrupt(tmp_path, buf.getvalue(), "object dtype")


def test_missing_meta(tmp_path):
    buf = pyio.BytesIO()
    np.savez(buf, w=np.ones(3))
    _expect_corrupt(tmp_path, buf.getvalue(), "__meta__")


@pytest.mark.parametrize(
    "meta_arr, fragment",
    [
        (np.frombuffer(b"{not json", dtype=np.uint8), "JSON"),
        (np.frombuffer(b"\xff\xfe{}", dtype=np.uint8), "JSON"),
        (np.frombuffer(b"[1, 2]", dtype=np.uint8), "not an object"),
        (np.frombuffer(b"[" * 100000, dtype=np.uint8), "JSON"),
        (np.zeros(4, dtype=np.float32), "uint8"),
        (np.zeros((2, 2), dtype=np.uint8), "1-D"),
    ],
)
def test_bad_meta(tmp_path, meta_arr, fragment):
    data = _zip_bytes({"__meta__.npy": _npy_bytes(meta_arr), "w.npy": _npy_bytes(np.ones(2))})
    _expect_corrupt(tmp_path, data, fragment)


def test_duplicate_members(tmp_path):
    data = _zip_bytes([("__meta__.npy", _meta_npy()), ("w.npy", _npy_bytes(np.ones(2))), ("w.npy", _npy_bytes(np.ones(3)))])
    _expect_corrupt(tmp_path, data, "duplicate")


def test_directory_omitting_a_member(tmp_path):
    """Central directory that lists only some members (all CRCs still fine)."""
    buf = pyio.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("w.npy", _npy_bytes(np.ones(3)))
        zf.writestr("v.npy", _npy_bytes(np.zeros(2)))
        zf.writestr("__meta__.npy", _meta_npy())
        hidden = zf.getinfo("v.npy")
        zf.filelist.remove(hidden)  # data stays in the file, entry vanishes
        del zf.NameToInfo["v.npy"]
    assert set(zipfile.ZipFile(pyio.BytesIO(buf.getvalue())).namelist()) == {"w.npy", "__meta__.npy"}
    _expect_corrupt(tmp_path, buf.getvalue(), "damaged zip directory")


def test_huge_shape_tiny_payload(tmp_path):
    # Valid .npy header for 10**12 float64 (8 TB) followed by 8 bytes.
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
    buf = pyio.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    member = buf.getvalue() + b"\0" * 8
    data = _zip_bytes({"__meta__.npy": _meta_npy(), "w.npy": member})
    _expect_corrupt(tmp_path, data, "header declares shape")


def test_small_shape_big_payload(tmp_path):
    member = _npy_bytes(np.ones(2)) + b"\0" * 64
    data = _zip_bytes({"__meta__.npy": _meta_npy(), "w.npy": member})
    _expect_corrupt(tmp_path, data, "header declares shape")


@pytest.mark.parametrize("member", [b"\x93NUMPY\x09\x00\x10\x00" + b"x" * 16, b"garbage", b"\x93NUMPY\x01\x00\x20\x00{'descr': os.system('x')}      \n"])
def test_bad_npy_header(tmp_path, member):
    data = _zip_bytes({"__meta__.npy": _meta_npy(), "w.npy": member})
    _expect_corrupt(tmp_path, data, "invalid .npy header")


def test_member_over_max_bytes(tmp_path, ckpt):
    path, arrays, meta = ckpt
    with pytest.raises(CheckpointError, match="limit"):
        load_checkpoint(path, max_bytes=64)
    # total (not just per member) is bounded too
    biggest = max(a.nbytes for a in arrays.values())
    with pytest.raises(CheckpointError, match="in total"):
        load_checkpoint(path, max_bytes=biggest + 200)


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory):
    """200 MB of zeros deflated to ~200 KB, with a valid .npy header."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.npz"
    n = 200 * 2**20
    header = pyio.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (n,)})
    chunk = bytes(4 * 2**20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("__meta__.npy", _meta_npy())
        with zf.open("bomb.npy", "w", force_zip64=True) as m:
            m.write(header.getvalue())
            for _ in range(n // len(chunk)):
                m.write(chunk)
    return path


def test_zip_bomb(zip_bomb):
    assert os.path.getsize(zip_bomb) < 2 * 2**20
    with pytest.raises(CheckpointError, match="zip bomb"):
        load_checkpoint(zip_bomb)  # default max_bytes (2 GiB) is not the guard
    with pytest.raises(CheckpointError, match="limit"):
        load_checkpoint(zip_bomb, max_bytes=100 * 2**20)


def test_compressed_npz_is_fine(tmp_path):
    rng = np.random.default_rng(1)
    buf = pyio.BytesIO()
    w = rng.standard_normal(1000)
    np.savez_compressed(buf, w=w, __meta__=np.frombuffer(b'{"a": 1}', dtype=np.uint8))
    path = tmp_path / "c.npz"
    path.write_bytes(buf.getvalue())
    arrays, meta = load_checkpoint(path)
    assert np.array_equal(arrays["w"], w) and meta == {"a": 1}


def test_bad_crc(tmp_path, ckpt):
    path, arrays, meta = ckpt
    blob = bytearray(path.read_bytes())
    # flip a byte inside the payload of G.fc1.W (its float data)
    target = arrays["G.fc1.W"].tobytes()
    i = bytes(blob).index(target) + 5
    blob[i] ^= 0xFF
    _expect_corrupt(tmp_path, bytes(blob), "CRC")


def test_no_pickle_in_source():
    for module in (atomic, mio_checkpoint, mio_images, mio_plot):
        src = open(module.__file__, encoding="utf-8").read()
        for bad in ("allow_pickle=True", "pickle.load", "import pickle"):
            assert bad not in src, module.__name__


# ---------------------------------------------------------------------------
# image_grid
# ---------------------------------------------------------------------------


def test_image_grid_layout():
    rows, cols, h, w, pad = 2, 3, 4, 5, 2
    n = rows * cols
    imgs = np.stack([np.full((h, w), i / 10) for i in range(n)])
    g = image_grid(imgs.reshape(n, -1), rows, cols, shape=(h, w), pad=pad, pad_value=1.0)
    assert g.dtype == np.uint8
    assert g.shape == (pad + rows * (h + pad), pad + cols * (w + pad))
    for i in range(n):
        r, c = divmod(i, cols)  # row-major
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        assert np.all(g[y : y + h, x : x + w] == np.rint(i / 10 * 255))
        assert np.all(g[y - 1, x : x + w] == 255) and np.all(g[y : y + h, x + w] == 255)
    # borders are padding
    assert np.all(g[:pad] == 255) and np.all(g[:, :pad] == 255) and np.all(g[-pad:] == 255)
    # 3-D input gives the same result (shape argument ignored)
    assert np.array_equal(image_grid(imgs, rows, cols, shape=(99, 99), pad=pad, pad_value=1.0), g)


def test_image_grid_pixel_order_within_image():
    img = np.arange(12, dtype=np.float64).reshape(3, 4) / 11
    g = image_grid(img.reshape(1, -1), 1, 1, shape=(3, 4), pad=0)
    assert np.array_equal(g, np.rint(img * 255).astype(np.uint8))


def test_image_grid_clip_round_nan():
    vals = np.array([[-1.0, 2.0, np.nan, 0.5, 0.2, 1 / 255 * 100.4, np.inf, -np.inf]])
    g = image_grid(vals, 1, 1, shape=(1, 8), pad=0)
    assert g.tolist() == [[0, 255, 0, 128, 51, 100, 255, 0]]


def test_image_grid_default_mnist():
    g = image_grid(np.random.default_rng(0).random((16, 784)), 4, 4)
    assert g.shape == (2 + 4 * 30, 2 + 4 * 30)


@pytest.mark.parametrize(
    "images, rows, cols, kw, fragment",
    [
        (np.zeros((5, 784)), 2, 3, {}, "needs 6 images"),
        (np.zeros((6, 100)), 2, 3, {}, "pixels"),
        (np.zeros(784), 1, 1, {}, "(N, H*W)"),
        (np.zeros((1, 1, 28, 28)), 1, 1, {}, "(N, H*W)"),
        (np.zeros((1, 784)), 0, 1, {}, "rows"),
        (np.zeros((1, 784)), 1, 1.5, {}, "cols"),
        (np.zeros((1, 784)), 1, 1, {"pad": -1}, "pad"),
        (np.zeros((1, 784)), 1, 1, {"shape": (28,)}, "shape"),
        (np.array([["a"] * 784]), 1, 1, {}, "numeric"),
    ],
)
def test_image_grid_errors(images, rows, cols, kw, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        image_grid(images, rows, cols, **kw)


# ---------------------------------------------------------------------------
# PNG
# ---------------------------------------------------------------------------


@st.composite
def png_images(draw):
    h = draw(st.integers(1, 12))
    w = draw(st.integers(1, 12))
    shape = (h, w) if draw(st.booleans()) else (h, w, 3)
    return draw(hnp.arrays(np.uint8, shape))


@settings(max_examples=60, **HSETTINGS)
@given(img=png_images())
def test_png_roundtrip(img):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.png")
        write_png(path, img)
        got = read_png(path)
        assert got.dtype == np.uint8 and got.shape == img.shape
        assert np.array_equal(got, img)
        assert _temp_leftovers(d) == []


@settings(max_examples=60, **HSETTINGS)
@given(img=png_images(), data=st.data())
def test_png_all_filter_types(img, data):
    filters = data.draw(st.lists(st.integers(0, 4), min_size=img.shape[0], max_size=img.shape[0]))
    blob = mio_images._encode_png(img, filter_type=filters)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.png")
        with open(path, "wb") as f:
            f.write(blob)
        assert np.array_equal(read_png(path), img)


def _png_from_scanlines(w, h, ctype, raw: bytes, depth=8, interlace=0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    return mio_images._PNG_SIGNATURE + mio_images._chunk(b"IHDR", ihdr) + mio_images._chunk(b"IDAT", zlib.compress(raw)) + mio_images._chunk(b"IEND", b"")


def test_png_decoder_hand_computed(tmp_path):
    # Image [[10, 20], [30, 25], [40, 50]] filtered by hand:
    # row 0 Sub: 10, 20-10;  row 1 Paeth: 30-pred(0,10,0)=20, 25-pred(30,20,10)=25-30;
    # row 2 Average: 40-(0+30)//2=25, 50-(40+25)//2=18.
    raw = bytes([1, 10, 10, 4, 20, (25 - 30) % 256, 3, 25, 18])
    path = tmp_path / "h.png"
    path.write_bytes(_png_from_scanlines(2, 3, 0, raw))
    assert read_png(path).tolist() == [[10, 20], [30, 25], [40, 50]]


def test_png_magic_and_file_command(tmp_path):
    path = tmp_path / "x.png"
    write_png(path, np.zeros((3, 5, 3), dtype=np.uint8))
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    assert blob[12:16] == b"IHDR" and struct.unpack(">II", blob[16:24]) == (5, 3)
    assert blob.endswith(b"IEND\xaeB`\x82")
    if shutil.which("file"):
        out = subprocess.run(["file", str(path)], capture_output=True, text=True).stdout
        assert "PNG image data, 5 x 3, 8-bit/color RGB" in out


def test_png_accepts_hw1_and_rejects_bad_images(tmp_path):
    write_png(tmp_path / "a.png", np.full((2, 2, 1), 7, dtype=np.uint8))
    assert read_png(tmp_path / "a.png").tolist() == [[7, 7], [7, 7]]
    for bad in (np.zeros((2, 2)), np.zeros((2, 2, 4), np.uint8), np.zeros((0, 3), np.uint8), np.zeros(4, np.uint8)):
        with pytest.raises(ValueError):
            write_png(tmp_path / "b.png", bad)
    assert not (tmp_path / "b.png").exists()


def test_read_png_rejects_corruption(tmp_path):
    path = tmp_path / "x.png"
    img = np.arange(60, dtype=np.uint8).reshape(5, 4, 3)
    write_png(path, img)
    good = path.read_bytes()

    def expect(blob, fragment):
        path.write_bytes(blob)
        with pytest.raises(ValueError, match=fragment):
            read_png(path)

    expect(b"GIF89a" + good[6:], "signature")
    flipped = bytearray(good)
    flipped[40] ^= 1  # inside IDAT data
    expect(bytes(flipped), "CRC")
    expect(good[:-12], "IEND")
    expect(good[:30], "truncated")
    expect(_png_from_scanlines(2, 1, 0, b"\0\0\0\0\0", depth=16), "bit depth")
    expect(_png_from_scanlines(1, 1, 3, b"\0\0"), "colour type")
    expect(_png_from_scanlines(1, 1, 0, b"\0\0", interlace=1), "interlaced")
    expect(_png_from_scanlines(2, 2, 0, b"\0\1\2"), "expected")
    expect(_png_from_scanlines(2, 1, 0, b"\7\1\2"), "filter type")
    expect(_png_from_scanlines(2, 1, 0, b"\0\1\2\3\4"), "more image data")
    expect(_png_from_scanlines(100000, 100000, 0, b"\0"), "too short")
    # unknown critical chunk
    blob = good[:33] + mio_images._chunk(b"ABCD", b"") + good[33:]
    expect(blob, "critical")
    # unknown ancillary chunk is fine
    path.write_bytes(good[:33] + mio_images._chunk(b"tEXt", b"k\0v") + good[33:])
    assert np.array_equal(read_png(path), img)


@settings(max_examples=80, **HSETTINGS)
@given(data=st.data())
def test_read_png_fuzz_only_valueerror(data):
    img = data.draw(png_images())
    blob = bytearray(mio_images._encode_png(img))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] ^= data.draw(st.integers(1, 255))
    blob = blob[: data.draw(st.integers(0, len(blob)))]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.png")
        with open(path, "wb") as f:
            f.write(bytes(blob))
        try:
            got = read_png(path)
        except ValueError:
            return
        assert np.array_equal(got, img)


@pytest.mark.required_in_ci
def test_png_matches_pil(tmp_path):
    """Pillow, an independent codec, decodes what write_png encodes; read_png decodes what Pillow encodes,
    including the alpha modes matplotlib writes."""
    Image = pytest.importorskip("PIL.Image", reason="Pillow (test extra) is the independent PNG reference")
    rng = np.random.default_rng(0)
    for shape in ((7, 9), (7, 9, 3)):
        img = rng.integers(0, 256, size=shape, dtype=np.uint8)
        path = tmp_path / "x.png"
        write_png(path, img)
        assert np.array_equal(np.asarray(Image.open(path)), img)
    for shape, mode in (((7, 9), "L"), ((7, 9, 2), "LA"), ((7, 9, 3), "RGB"), ((7, 9, 4), "RGBA"),
                        ((1, 1, 4), "RGBA"), ((300, 5, 4), "RGBA")):
        img = rng.integers(0, 256, size=shape, dtype=np.uint8)
        for optimize in (False, True):  # different filter choices
            Image.fromarray(img, mode).save(tmp_path / "pil.png", optimize=optimize)
            assert np.array_equal(read_png(tmp_path / "pil.png"), img), (mode, shape, optimize)


# ---------------------------------------------------------------------------
# plot_metrics
# ---------------------------------------------------------------------------


@pytest.fixture
def no_matplotlib(monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def _records(n=20):
    return [
        {"epoch": i, "loss_D": 0.7 - 0.01 * i, "loss_G": 0.9 + 0.05 * np.sin(i), "D_real": 0.6, "D_fake": 0.4}
        for i in range(1, n + 1)
    ]


def _colour_present(img, rgb):
    return bool(np.any(np.all(img == np.array(rgb, dtype=np.uint8), axis=-1)))


def test_plot_fallback_basic(tmp_path, no_matplotlib):
    path = tmp_path / "m.png"
    plot_metrics(_records(), path, keys=("loss_D", "loss_G", "D_real", "missing"))
    img = read_png(path)
    assert img.shape == (320, 480, 3)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 3
    for rgb in mio_plot._COLOURS[:3]:
        assert _colour_present(img, rgb)
    assert not _colour_present(img, mio_plot._COLOURS[3])  # "missing" not drawn
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _temp_leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "records",
    [
        [{"epoch": 1, "loss_D": 0.5, "loss_G": 0.7}],  # single point
        [{"epoch": 1, "loss_D": float("nan"), "loss_G": 1.0}, {"epoch": 2, "loss_D": 0.4, "loss_G": float("nan")},
         {"epoch": 3, "loss_D": float("inf"), "loss_G": 2.0}, {"epoch": 4, "loss_D": None, "loss_G": "x"}],
        [{"epoch": e, "loss_D": 0.3, "loss_G": 0.3} for e in range(5)],  # constant
        [{"step": s * 100, "loss_D": 1e6 * s, "loss_G": -1e-4 * s} for s in range(10)],  # step axis, extreme scales
        [{"loss_D": 0.5}, {"loss_D": 0.6}],  # no x key at all
        [{"epoch": 1, "loss_D": float("nan")}],  # nothing finite
        [],  # nothing at all
    ],
)
def test_plot_fallback_edge_cases(tmp_path, no_matplotlib, records):
    path = tmp_path / "m.png"
    plot_metrics(records, path, title="edge case")
    img = read_png(path)
    assert img.shape == (320, 480, 3)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 1


def test_plot_single_point_visible(tmp_path, no_matplotlib):
    path = tmp_path / "m.png"
    plot_metrics([{"epoch": 1, "loss_D": 0.5}], path, keys=("loss_D",))
    img = read_png(path)
    # a marker is drawn inside the axes, not only the legend swatch
    ys, xs = np.nonzero(np.all(img == np.array(mio_plot._COLOURS[0], dtype=np.uint8), axis=-1))
    assert (xs.max() - xs.min()) > 20 or (ys.max() - ys.min()) > 20


@pytest.mark.required_in_ci
def test_plot_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (test extra) draws the plot when it is installed")
    path = tmp_path / "m.png"
    plot_metrics(_records(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _temp_leftovers(tmp_path) == []
    img = read_png(path)  # matplotlib writes RGBA: 6.4 x 4.0 inches at 100 dpi
    assert img.shape == (400, 640, 4) and (img[..., 3] == 255).all()
    for rgb in ((31, 119, 180), (255, 127, 14)):  # matplotlib's first two line colours: loss_D and loss_G drawn
        assert _colour_present(img[..., :3], rgb)
