"""Fault injection: SIGKILL at random moments (also inside checkpoint writes), SIGINT/SIGTERM, NaN, disk errors.

Everything goes through the real command line (``python -m minigan train`` subprocesses, or ``minigan.cli.main``
in-process where the fault is a monkeypatched OS call). The data are four tiny IDX files (30 training images:
25 train + 5 validation; batch 5 -> 5 updates per epoch, so a checkpoint is written every 5 updates).

Each test appends what it injected to ``FAULTS`` and prints a one-line tally (``pytest -s`` shows it);
docs/RELIABILITY.md quotes those figures.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from minigan import io
from minigan.cli import main

from helpers import write_idx_dir

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("isolated_run_env")]

REPO = Path(__file__).resolve().parents[1]
BATCH = 5
FAULTS: Counter = Counter()


@pytest.fixture(scope="module")
def idx(tmp_path_factory):
    return write_idx_dir(tmp_path_factory.mktemp("idx"))


def env(**extra) -> dict:
    e = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
             PYTHONUNBUFFERED="1")
    e.pop("MINIGAN_INJECT_NAN_AT_STEP", None)
    e.pop("MINIGAN_SLOW_CHECKPOINT", None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def spawn(args, log: Path, **env_extra) -> subprocess.Popen:
    """``python -m minigan train ARGS`` with stdout+stderr going to ``log`` (no pipe to fill up)."""
    f = open(log, "wb")
    try:
        return subprocess.Popen([sys.executable, "-m", "minigan", "train", *map(str, args)], stdout=f,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env(**env_extra))
    finally:
        f.close()


def train_args(idx, run, steps, resume=False):
    args = ["--data", idx, "--batch", BATCH, "--steps", steps, "--out", run, "--log-interval", 1, "--no-progress"]
    return args + (["--resume"] if resume else [])


def tmp_files(run: Path) -> set[str]:
    return {p.name for p in run.glob(".ckpt-*.tmp")} if run.exists() else set()


def weights(path: Path) -> dict[str, np.ndarray]:
    arrays, _ = io.load_checkpoint(path)
    return {k: v for k, v in arrays.items() if k.startswith(("G.", "D."))}


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), f"{k} differs"


_REFERENCE: dict[int, dict] = {}


def reference(idx, tmp_root: Path, steps: int) -> dict[str, np.ndarray]:
    """Final weights of an uninterrupted run of ``steps`` updates (in-process; cached per step count)."""
    if steps not in _REFERENCE:
        run = tmp_root / f"reference-{steps}"
        assert main(["train", *map(str, train_args(idx, run, steps))]) == 0
        _REFERENCE[steps] = weights(run / "checkpoint.npz")
    return _REFERENCE[steps]


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("minigan: error: "), err
    assert "Traceback" not in err
    return lines[0]


def report(name: str, **counts) -> None:
    FAULTS.update({f"{name}.{k}": v for k, v in counts.items()})
    print(f"\n[faults] {name}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


# --------------------------------------------------------------------------------------------------
# SIGKILL at random moments, some inside checkpoint writes
# --------------------------------------------------------------------------------------------------

N_KILLS = 20
N_KILLS_IN_WRITE = 7
SLOW = 0.05  # MINIGAN_SLOW_CHECKPOINT: seconds between the complete temp file and the rename


def _wait_for_temp(proc, run: Path, stale: set[str], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if tmp_files(run) - stale:
            return True
        time.sleep(0.002)
    return False


def test_sigkill_at_random_moments_always_leaves_a_resumable_run(idx, tmp_path):
    rng = np.random.default_rng(6)
    run = tmp_path / "run"
    plan = ["write"] * N_KILLS_IN_WRITE + ["random"] * (N_KILLS - N_KILLS_IN_WRITE)
    rng.shuffle(plan)
    plan[0] = "early"  # the first kill lands during start-up, before any checkpoint exists
    big = 10 ** 6
    last_updates = -1
    stats = Counter()
    for i, when in enumerate(plan):
        ckpt = run / "checkpoint.npz"
        resume = ckpt.exists()
        expected_start = io.load_checkpoint(ckpt)[1]["updates"] if resume else 0
        stale = tmp_files(run)
        log = tmp_path / f"kill{i}.log"
        proc = spawn(train_args(idx, run, big, resume), log, MINIGAN_SLOW_CHECKPOINT=SLOW)
        try:
            if when == "early":
                time.sleep(0.2)
            elif when == "write":
                assert _wait_for_temp(proc, run, stale), log.read_text()
                time.sleep(rng.uniform(0.0, SLOW))
            else:
                time.sleep(rng.uniform(0.2, 1.4))
            assert proc.poll() is None, log.read_text()
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        stats["kills"] += 1
        out = log.read_text()
        if f"at update {expected_start} " in out:
            stats["resumes_started" if resume else "fresh_starts"] += 1
        left = tmp_files(run) - stale
        if left:
            stats["kills_inside_checkpoint_write"] += 1
        # The run directory holds a complete checkpoint, or none yet; never a half-written one.
        if ckpt.exists():
            arrays, meta = io.load_checkpoint(ckpt)
            assert meta["updates"] >= max(last_updates, 0)
            assert meta["updates"] % 5 == 0 or meta["updates"] == expected_start  # epoch ends only
            last_updates = meta["updates"]
            stats["loadable_after_kill"] += 1
        else:
            assert last_updates == -1, "a checkpoint disappeared"
            stats["no_checkpoint_yet"] += 1
    # Finish: resume from the last complete checkpoint and run to a target a few epochs on.
    final = max(last_updates, 0) + 7
    r = subprocess.run([sys.executable, "-m", "minigan", "train",
                        *map(str, train_args(idx, run, final, resume=last_updates >= 0))],
                       capture_output=True, text=True, env=env(), stdin=subprocess.DEVNULL, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"at update {max(last_updates, 0)} " in r.stdout
    stats["resumes_finished"] += 1
    _, meta = io.load_checkpoint(run / "checkpoint.npz")
    assert meta["updates"] == final
    # Bit for bit what an uninterrupted run of the same length ends with.
    assert_bit_identical(weights(run / "checkpoint.npz"), reference(idx, tmp_path, final))
    stats["final_updates"] = final
    # Killed saves leave temporaries behind; the resumed trainer removes them when it starts.
    assert not tmp_files(run) and not list(run.rglob(".png-*.tmp"))
    assert stats["kills"] == N_KILLS
    assert stats["kills_inside_checkpoint_write"] >= N_KILLS_IN_WRITE - 1
    assert stats["loadable_after_kill"] + stats["no_checkpoint_yet"] == N_KILLS
    report("sigkill", **stats)


# --------------------------------------------------------------------------------------------------
# SIGINT / SIGTERM through the real command line: checkpoint, exit 130/143, bit-identical resume
# --------------------------------------------------------------------------------------------------

SIGNAL_STEPS = 15


def _wait_for_line(log: Path, proc, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.005)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_exits_and_resumes_bit_identically(idx, tmp_path, sig, code):
    run = tmp_path / "run"
    log = tmp_path / "first.log"
    proc = spawn(train_args(idx, run, SIGNAL_STEPS), log)
    try:
        _wait_for_line(log, proc, "epoch   1 ")
        deadline = time.monotonic() + 30  # epoch 1's checkpoint is written after its line: wait for it
        while not (run / "checkpoint.npz").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.3)  # land inside epoch 2 (after the epoch-end plot)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    assert proc.returncode == code, out
    assert "Traceback" not in out
    assert f"{signal.Signals(sig).name} received: stopped after update" in out and "--resume" in out
    _, meta = io.load_checkpoint(run / "checkpoint.npz")
    stopped = meta["updates"]
    assert 5 <= stopped < SIGNAL_STEPS and f"stopped after update {stopped} " in out
    assert not tmp_files(run)

    r = subprocess.run([sys.executable, "-m", "minigan", "train",
                        *map(str, train_args(idx, run, SIGNAL_STEPS, resume=True))],
                       capture_output=True, text=True, env=env(), stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"resuming at update {stopped} " in r.stdout
    assert_bit_identical(weights(run / "checkpoint.npz"), reference(idx, tmp_path, SIGNAL_STEPS))
    report(signal.Signals(sig).name, injected=1, survived=1, stopped_at=stopped, mid_epoch=int(stopped % 5 != 0))


def test_second_sigint_during_checkpoint_write_keeps_the_previous_checkpoint(idx, tmp_path):
    """Ctrl-C twice, the second one while the first's checkpoint is being written: exit 130 at once, the
    epoch-1 checkpoint stays as it was, the temp file is cleaned up, and the run resumes from epoch 1."""
    run = tmp_path / "run"
    log = tmp_path / "first.log"
    proc = spawn(train_args(idx, run, 100), log, MINIGAN_SLOW_CHECKPOINT=1.0)
    try:
        _wait_for_line(log, proc, "epoch   2 ")  # epoch 1's checkpoint is complete, epoch 2's is starting
        good = (run / "checkpoint.npz").read_bytes()
        assert _wait_for_temp(proc, run, set())
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "second signal" in out
    assert (run / "checkpoint.npz").read_bytes() == good
    assert not tmp_files(run)
    assert io.load_checkpoint(run / "checkpoint.npz")[1]["updates"] == 5
    report("double_sigint_in_write", injected=1, survived=1)


# --------------------------------------------------------------------------------------------------
# NaN
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first_epochs,nan_at,log_interval", [
    (1, 7, 1),    # noticed at once
    (1, 8, 50),   # noticed at the epoch end read-back, before that epoch's checkpoint
    (2, 12, 3),   # later in the run
    (0, 3, 1),    # before any checkpoint exists
])
def test_nan_exits_3_names_the_update_and_leaves_the_checkpoint(idx, tmp_path, capsys, monkeypatch, first_epochs,
                                                                nan_at, log_interval):
    run = tmp_path / "run"
    ckpt = run / "checkpoint.npz"
    if first_epochs:
        assert main(["train", *map(str, train_args(idx, run, 5 * first_epochs))]) == 0
    before = ckpt.read_bytes() if first_epochs else None
    capsys.readouterr()
    monkeypatch.setenv("MINIGAN_INJECT_NAN_AT_STEP", str(nan_at))
    args = train_args(idx, run, 40, resume=bool(first_epochs))
    args[args.index("--log-interval") + 1] = log_interval
    code = main(["train", *map(str, args)])
    line = one_error_line(capsys.readouterr().err)
    assert code == 3
    assert f"update {nan_at} " in line and "diverged" in line
    if before is None:
        assert not ckpt.exists() and "no checkpoint had been written yet" in line
    else:
        assert ckpt.read_bytes() == before and "left untouched" in line
    assert not tmp_files(run)
    report("nan", injected=1, survived=1)


# --------------------------------------------------------------------------------------------------
# Disk errors: full disk, read-only directory, file size limit
# --------------------------------------------------------------------------------------------------


def _first_epoch(idx, run):
    assert main(["train", *map(str, train_args(idx, run, 5))]) == 0
    return (run / "checkpoint.npz").read_bytes()


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_disk_full_while_writing_the_checkpoint(idx, tmp_path, capsys, monkeypatch):
    """ENOSPC after 1 MB of the checkpoint's temp file: one clear line, exit 2, old checkpoint intact."""
    run = tmp_path / "run"
    good = _first_epoch(idx, run)
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f, budget):
            self._f, self._budget = f, budget

        def write(self, b):
            if len(b) > self._budget:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._budget -= len(b)
            return self._f.write(b)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

    def fdopen(fd, *a, **k):
        f = real_fdopen(fd, *a, **k)
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        return FullDisk(f, 1 << 20) if ".ckpt-" in os.path.basename(name) else f

    monkeypatch.setattr(io.os, "fdopen", fdopen)
    capsys.readouterr()
    code = main(["train", *map(str, train_args(idx, run, 10, resume=True))])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert "No space left on device" in line and "previous checkpoint" in line and "intact" in line
    assert (run / "checkpoint.npz").read_bytes() == good
    assert not tmp_files(run)
    report("disk_full", injected=1, survived=1)


@pytest.mark.parametrize("where,err", [
    ("mkstemp", errno.EACCES),   # read-only / no-permission run directory: no file can be created at all
    ("mkstemp", errno.EROFS),
    ("replace", errno.ENOSPC),   # the rename fails
    ("fsync", errno.EIO),        # the data cannot be made durable
])
def test_unwritable_run_directory(idx, tmp_path, capsys, monkeypatch, where, err):
    run = tmp_path / "run"
    good = _first_epoch(idx, run)
    before = _snapshot(run)

    def fail(*a, **k):
        raise OSError(err, os.strerror(err))

    target = {"mkstemp": (io.tempfile, "mkstemp"), "replace": (io.os, "replace"), "fsync": (io.os, "fsync")}[where]
    monkeypatch.setattr(*target, fail)
    capsys.readouterr()
    code = main(["train", *map(str, train_args(idx, run, 10, resume=True))])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert os.strerror(err) in line
    assert (run / "checkpoint.npz").read_bytes() == good
    assert not tmp_files(run) and not list(run.rglob(".png-*.tmp"))
    after = _snapshot(run)
    assert after["checkpoint.npz"] == before["checkpoint.npz"]
    report(f"disk_{where}_{errno.errorcode[err]}", injected=1, survived=1)


def test_file_size_limit_in_a_real_process(idx, tmp_path):
    """A real OS-level write failure (RLIMIT_FSIZE -> EFBIG) in a `minigan train --resume` subprocess."""
    run = tmp_path / "run"
    good = _first_epoch(idx, run)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))  # checkpoints are ~40 MB

    r = subprocess.run([sys.executable, "-m", "minigan", "train", *map(str, train_args(idx, run, 10, resume=True))],
                       capture_output=True, text=True, env=env(), stdin=subprocess.DEVNULL, timeout=120,
                       preexec_fn=limit)
    assert r.returncode == 2, r.stdout + r.stderr
    line = one_error_line(r.stderr)
    assert "File too large" in line and "intact" in line
    assert (run / "checkpoint.npz").read_bytes() == good
    assert not tmp_files(run)
    # The run is still resumable (without the limit).
    r = subprocess.run([sys.executable, "-m", "minigan", "train", *map(str, train_args(idx, run, 10, resume=True))],
                       capture_output=True, text=True, env=env(), stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 0, r.stderr
    assert io.load_checkpoint(run / "checkpoint.npz")[1]["updates"] == 10
    report("efbig_real_process", injected=1, survived=1)


def test_zz_fault_summary():
    """Print the totals (run with -s to see them)."""
    print("\n[faults] totals: " + ", ".join(f"{k}={v}" for k, v in sorted(FAULTS.items())))
