"""Fault injection: SIGKILL at random moments (also inside checkpoint writes), SIGINT/SIGTERM, NaN, disk errors.

Everything goes through the real command line (``python -m minigan train`` subprocesses, or ``minigan.cli.main``
in-process where the fault is a monkeypatched OS call). The data are four tiny IDX files (30 training images:
25 train + 5 validation; batch 5 -> 5 updates per epoch, so a checkpoint is written every 5 updates).

No test waits on the clock: a test acts when the child has printed a line or written a file (polled, with a
deadline that only guards against a hang), and ``MINIGAN_SLOW_CHECKPOINT=hold`` keeps a checkpoint write open
until the child is killed or signalled, so a kill "inside a write" lands there by construction.

Each test appends what it injected to ``FAULTS`` and prints a one-line tally (``pytest -s`` shows it);
docs/RELIABILITY.md quotes those figures, and tests/test_published_figures.py checks them.
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
from minigan.io import atomic
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
# Waiting for events (lines the child prints, files it writes), never for the clock
# --------------------------------------------------------------------------------------------------

HANG = 120.0  # seconds: only a guard against a hang; no assertion depends on how fast anything is


def _wait_for(condition, proc, log: Path, what: str, timeout: float = HANG):
    """Poll until ``condition()`` is true; fail if the child exits first or after ``timeout`` (a hang)."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert proc.poll() is None, f"the child exited before {what}:\n" + log.read_text(errors="replace")
        assert time.monotonic() < deadline, f"no {what} after {timeout} s:\n" + log.read_text(errors="replace")
        time.sleep(0.005)
    return result


def _wait_for_line(log: Path, proc, text: str, timeout: float = HANG) -> None:
    _wait_for(lambda: text in log.read_text(errors="replace"), proc, log, repr(text), timeout)


def _started_at(log: Path, proc) -> str:
    """Wait for the trainer's start line (printed after stale temporaries are removed); return the log so far."""
    _wait_for_line(log, proc, "; run dir ")
    return log.read_text(errors="replace")


# --------------------------------------------------------------------------------------------------
# SIGKILL: at start-up, inside checkpoint writes, and after a random number of epochs
# --------------------------------------------------------------------------------------------------

# What each kill waits for before it is sent. The first kill is always "startup"; the rest are shuffled (seeded).
#   startup       the trainer's start line; no checkpoint can exist yet (writes are held, see below)
#   temp_appears  a new .ckpt-*.tmp file: the kill lands while the checkpoint is being written or is complete
#   holding       MINIGAN_SLOW_CHECKPOINT=hold's line: the temp file is complete, the rename has not happened
#   epochs        1-3 (random) epoch lines of that process: the kill lands wherever the run is then
# Every kill but the "epochs" ones runs with MINIGAN_SLOW_CHECKPOINT=hold, so no checkpoint can be renamed into
# place before the kill: those 11 are inside a checkpoint write (or before any) by construction, not by timing.
KILL_PLAN = {"startup": 1, "temp_appears": 5, "holding": 5, "epochs": 9}
EPOCH_LINES = (1, 3)  # an "epochs" kill waits for this many epoch lines, drawn uniformly (inclusive)
N_KILLS = sum(KILL_PLAN.values())


def test_sigkill_at_random_moments_always_leaves_a_resumable_run(idx, tmp_path):
    rng = np.random.default_rng(6)
    rest = [kind for kind, n in KILL_PLAN.items() if kind != "startup" for _ in range(n)]
    rng.shuffle(rest)
    plan = ["startup"] + rest
    run = tmp_path / "run"
    ckpt = run / "checkpoint.npz"
    big = 10 ** 6
    last_updates = -1
    stats = Counter()
    for i, when in enumerate(plan):
        resume = ckpt.exists()
        before = ckpt.read_bytes() if resume else None
        start = io.load_checkpoint(ckpt)[1]["updates"] if resume else 0
        log = tmp_path / f"kill{i}.log"
        held = when != "epochs"
        proc = spawn(train_args(idx, run, big, resume), log, **({"MINIGAN_SLOW_CHECKPOINT": "hold"} if held else {}))
        epochs_seen = 0
        try:
            out = _started_at(log, proc)
            # Every restart continues at exactly the checkpoint's update (the fresh start at 0).
            assert f"{'resuming' if resume else 'starting'} at update {start} " in out, out
            stale = tmp_files(run)  # temporaries of earlier kills are gone by now: the trainer removed them
            assert not stale, f"{stale} survived the trainer's start"
            if when == "temp_appears":
                _wait_for(lambda: tmp_files(run), proc, log, "a checkpoint temp file")
            elif when == "holding":
                _wait_for_line(log, proc, "holding before the rename")
            elif when == "epochs":
                epochs_seen = int(rng.integers(EPOCH_LINES[0], EPOCH_LINES[1] + 1))
                _wait_for(lambda: log.read_text().count("\nepoch ") >= epochs_seen, proc, log,
                          f"{epochs_seen} epoch line(s)")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=HANG)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=HANG)
        assert proc.returncode == -signal.SIGKILL
        stats["kills"] += 1
        stats[f"kills_{when}"] += 1
        stats["restarts_at_the_checkpoint" if resume else "fresh_starts"] += 1
        left = tmp_files(run)
        if held:
            # Nothing could be renamed into place: the checkpoint is the previous one, byte for byte (or none).
            assert (ckpt.read_bytes() if ckpt.exists() else None) == before
        if when in ("temp_appears", "holding"):
            assert left, "the kill was aimed inside a checkpoint write, but no temp file was left"
            stats["kills_inside_checkpoint_write"] += 1
        if when == "startup":
            assert not ckpt.exists()
            stats["kills_before_any_checkpoint"] += 1
        # The run directory holds a complete checkpoint, or none yet; never a half-written one.
        if ckpt.exists():
            arrays, meta = io.load_checkpoint(ckpt)
            assert meta["updates"] >= max(last_updates, 0) and meta["updates"] % 5 == 0  # epoch ends only
            # n epoch lines seen: the checkpoints of the first n - 1 of those epochs are certainly on disk.
            assert meta["updates"] >= start + 5 * (epochs_seen - 1)
            last_updates = meta["updates"]
            stats["loadable_after_kill"] += 1
        else:
            assert last_updates == -1, "a checkpoint disappeared"
            stats["no_checkpoint_yet"] += 1
    # Finish: resume from the last complete checkpoint and run to a target a few updates on.
    final = max(last_updates, 0) + 7
    r = subprocess.run([sys.executable, "-m", "minigan", "train",
                        *map(str, train_args(idx, run, final, resume=last_updates >= 0))],
                       capture_output=True, text=True, env=env(), stdin=subprocess.DEVNULL, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"at update {max(last_updates, 0)} " in r.stdout
    _, meta = io.load_checkpoint(run / "checkpoint.npz")
    assert meta["updates"] == final
    # Bit for bit what an uninterrupted run of the same length ends with.
    assert_bit_identical(weights(run / "checkpoint.npz"), reference(idx, tmp_path, final))
    # Killed saves leave temporaries behind; the resumed trainer removes them when it starts.
    assert not tmp_files(run) and not list(run.rglob(".png-*.tmp"))
    assert stats["kills"] == N_KILLS == 20
    assert stats["kills_inside_checkpoint_write"] == KILL_PLAN["temp_appears"] + KILL_PLAN["holding"] == 10
    assert stats["kills_before_any_checkpoint"] == 1
    assert stats["restarts_at_the_checkpoint"] + stats["fresh_starts"] == N_KILLS
    assert stats["loadable_after_kill"] + stats["no_checkpoint_yet"] == N_KILLS
    report("sigkill", injected=N_KILLS, survived=N_KILLS, **{k: v for k, v in stats.items() if k != "kills"},
           final_updates=final)


# --------------------------------------------------------------------------------------------------
# SIGINT / SIGTERM through the real command line: checkpoint, exit 130/143, bit-identical resume
# --------------------------------------------------------------------------------------------------


SIGNALS = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]


@pytest.mark.parametrize("sig,code", SIGNALS)
def test_signal_checkpoints_exits_and_resumes_bit_identically(idx, tmp_path, sig, code):
    run = tmp_path / "run"
    log = tmp_path / "first.log"
    proc = spawn(train_args(idx, run, 10 ** 6), log)  # runs until signalled, however fast the machine
    try:
        _wait_for_line(log, proc, "epoch   1 ")  # handlers are installed; epoch 1's checkpoint follows its line
        _wait_for(lambda: (run / "checkpoint.npz").exists(), proc, log, "epoch 1's checkpoint")
        proc.send_signal(sig)
        proc.wait(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    assert proc.returncode == code, out
    assert "Traceback" not in out
    assert f"{signal.Signals(sig).name} received: stopped after update" in out and "--resume" in out
    _, meta = io.load_checkpoint(run / "checkpoint.npz")
    stopped = meta["updates"]
    assert stopped >= 5 and f"stopped after update {stopped} " in out
    assert not tmp_files(run)

    target = stopped + 7  # crosses an epoch end whether the stop was mid-epoch or at one
    r = subprocess.run([sys.executable, "-m", "minigan", "train",
                        *map(str, train_args(idx, run, target, resume=True))],
                       capture_output=True, text=True, env=env(), stdin=subprocess.DEVNULL, timeout=HANG)
    assert r.returncode == 0, r.stderr
    assert f"resuming at update {stopped} " in r.stdout
    assert_bit_identical(weights(run / "checkpoint.npz"), reference(idx, tmp_path, target))
    report(signal.Signals(sig).name, injected=1, survived=1, stopped_at=stopped, mid_epoch=int(stopped % 5 != 0))


def test_second_sigint_during_checkpoint_write_keeps_the_previous_checkpoint(idx, tmp_path):
    """Ctrl-C twice, the second one while the first's checkpoint is being written: exit 130 at once, the
    epoch-1 checkpoint stays as it was, the temp file is cleaned up, and the run resumes from epoch 1."""
    run = tmp_path / "run"
    good = _first_epoch(idx, run)
    log = tmp_path / "second.log"
    proc = spawn(train_args(idx, run, 100, resume=True), log, MINIGAN_SLOW_CHECKPOINT="hold")
    try:
        _wait_for_line(log, proc, "holding before the rename")  # epoch 2's checkpoint, complete in its temp file
        assert tmp_files(run) and (run / "checkpoint.npz").read_bytes() == good
        proc.send_signal(signal.SIGINT)
        _wait_for_line(log, proc, "SIGINT received; still holding")  # the first one was handled: stop after the save
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=HANG)
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


NAN_CASES = [
    (1, 7, 1),    # noticed at once
    (1, 8, 50),   # noticed at the epoch end read-back, before that epoch's checkpoint
    (2, 12, 3),   # later in the run
    (0, 3, 1),    # before any checkpoint exists
]


@pytest.mark.parametrize("first_epochs,nan_at,log_interval", NAN_CASES)
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

    monkeypatch.setattr(atomic.os, "fdopen", fdopen)
    capsys.readouterr()
    code = main(["train", *map(str, train_args(idx, run, 10, resume=True))])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert "No space left on device" in line and "previous checkpoint" in line and "intact" in line
    assert (run / "checkpoint.npz").read_bytes() == good
    assert not tmp_files(run)
    report("disk_full", injected=1, survived=1)


UNWRITABLE_CASES = [
    ("mkstemp", errno.EACCES),   # read-only / no-permission run directory: no file can be created at all
    ("mkstemp", errno.EROFS),
    ("replace", errno.ENOSPC),   # the rename fails
    ("fsync", errno.EIO),        # the data cannot be made durable
]


@pytest.mark.parametrize("where,err", UNWRITABLE_CASES)
def test_unwritable_run_directory(idx, tmp_path, capsys, monkeypatch, where, err):
    run = tmp_path / "run"
    good = _first_epoch(idx, run)
    before = _snapshot(run)

    def fail(*a, **k):
        raise OSError(err, os.strerror(err))

    target = {"mkstemp": (atomic.tempfile, "mkstemp"), "replace": (atomic.os, "replace"), "fsync": (atomic.os, "fsync")}[where]
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


# The faults each test injects, every one asserted survived by its test: what docs/RELIABILITY.md and README.md
# quote (tests/test_published_figures.py checks them).
FAULT_COUNTS = {
    "sigkill": N_KILLS,
    "sigkill.startup": KILL_PLAN["startup"],
    "sigkill.inside_checkpoint_write": KILL_PLAN["temp_appears"] + KILL_PLAN["holding"],
    "sigkill.after_epochs": KILL_PLAN["epochs"],
    "SIGINT": 1,
    "SIGTERM": 1,
    "double_sigint_in_write": 1,
    "nan": len(NAN_CASES),
    "disk_full": 1,
    "unwritable_create": sum(where == "mkstemp" for where, _ in UNWRITABLE_CASES),
    "rename_or_fsync": sum(where != "mkstemp" for where, _ in UNWRITABLE_CASES),
    "efbig_real_process": 1,
}
FAULTS_TOTAL = sum(v for k, v in FAULT_COUNTS.items() if "." not in k)


def test_zz_fault_summary():
    """Print the totals (run with -s to see them); when every fault test ran, they equal FAULT_COUNTS."""
    print("\n[faults] totals: " + ", ".join(f"{k}={v}" for k, v in sorted(FAULTS.items())))
    injected = sum(v for k, v in FAULTS.items() if k.endswith(".injected"))
    survived = sum(v for k, v in FAULTS.items() if k.endswith(".survived"))
    if injected != FAULTS_TOTAL:
        pytest.skip(f"{injected} of the {FAULTS_TOTAL} faults were injected (a subset was selected)")
    assert survived == injected == FAULTS_TOTAL
    assert FAULTS["sigkill.kills_inside_checkpoint_write"] == FAULT_COUNTS["sigkill.inside_checkpoint_write"]
