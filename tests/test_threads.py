"""Bit-identical resume at the machine's default BLAS thread count, in one process and across processes.

The rest of the suite runs at one BLAS thread (tests/conftest.py). Float results depend on the thread count
(another split of a product rounds differently: a 12-update run differs in every weight between 1 and 2
threads), so the promise is: *at the same thread count*, a resumed run ends bit-identical to one that was never
interrupted. These tests check it at the count OpenBLAS picks when nothing is set (the machine's default) and,
when the environment the suite started in set one, at that count too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigan import backend, io, parallel, threads
from minigan.cli import main

import conftest
from helpers import write_idx_dir

pytestmark = pytest.mark.usefixtures("isolated_run_env")

REPO = Path(__file__).resolve().parents[1]
STEPS, STOP = 7, 3  # 25 training images, batch 5: 5 updates per epoch; stop mid-epoch 1, resume across its end

_PROBE = ("import sys, threadpoolctl, numpy; "
          "print(max(i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'))")
# `python -m minigan`, after printing the BLAS thread count the child really runs at.
_TRAIN = ("import sys, threadpoolctl, numpy; "
          "print('blas threads', max(i['num_threads'] for i in threadpoolctl.threadpool_info() "
          "if i['user_api'] == 'blas'), flush=True); "
          "from minigan.cli import main; sys.exit(main(sys.argv[1:]))")


def _env(threads: int | None) -> dict:
    """The suite's environment with the BLAS variables removed (None: the default) or set to ``threads``."""
    env = {k: v for k, v in os.environ.items() if k not in conftest.BLAS_VARIABLES}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    if threads is not None:
        env.update({k: str(threads) for k in conftest.BLAS_VARIABLES})
    return env


def _needs_threadpoolctl():
    if conftest.threadpool_limits is None:
        pytest.skip("threadpoolctl (test extra) is not installed: it sets and reads this process's BLAS threads")


def _default_threads() -> int:
    _needs_threadpoolctl()
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=_env(None),
                         stdin=subprocess.DEVNULL, timeout=120, check=True).stdout
    return int(out)


def _thread_cases():
    cases = [pytest.param("default", id="default", marks=pytest.mark.required_in_ci)]
    given = conftest.ENV_BLAS_THREADS["OPENBLAS_NUM_THREADS"]
    if given and given.isdigit() and int(given) > 1:
        cases.append(pytest.param(int(given), id=f"env-{given}"))
    return cases


def _resolve(threads) -> int:
    default = _default_threads()
    if threads == "default":
        return default
    if threads == default:
        pytest.skip(f"the environment's {threads} BLAS threads are the default count, tested in the 'default' case")
    return threads


def _args(idx, run, steps, resume=False):
    return (["train", "--data", str(idx), "--batch", "5", "--steps", str(steps), "--out", str(run),
             "--log-interval", "1", "--no-progress"] + (["--resume"] if resume else []))


def _weights(run: Path) -> dict[str, np.ndarray]:
    arrays, _ = io.load_checkpoint(run / "checkpoint.npz")
    return {k: v for k, v in arrays.items() if k.startswith(("G.", "D."))}


def _assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), f"{k} differs"


@pytest.fixture(scope="module")
def idx(tmp_path_factory):
    return write_idx_dir(tmp_path_factory.mktemp("idx"))


@pytest.mark.parametrize("threads", _thread_cases())
def test_resume_in_one_process_is_bit_identical_at_the_default_thread_count(idx, tmp_path, capsys, threads):
    n = _resolve(threads)
    from threadpoolctl import threadpool_info

    with conftest.threadpool_limits(n, user_api="blas"):
        assert max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas") == n
        assert main(_args(idx, tmp_path / "straight", STEPS)) == 0
        assert main(_args(idx, tmp_path / "split", STOP)) == 0  # stops mid-epoch: the exact mid-epoch state
        assert main(_args(idx, tmp_path / "split", STEPS, resume=True)) == 0
    backend.use("numpy")
    assert f"resuming at update {STOP} " in capsys.readouterr().out
    _assert_bit_identical(_weights(tmp_path / "straight"), _weights(tmp_path / "split"))


@pytest.mark.parametrize("threads", _thread_cases())
def test_resume_across_processes_is_bit_identical_at_the_default_thread_count(idx, tmp_path, threads):
    """Three processes at the machine's default count (no BLAS variable set): an uninterrupted run, a run that
    stops mid-epoch, and its resume; plus the same uninterrupted run in this process at that count."""
    n = _resolve(threads)
    env = _env(None if threads == "default" else n)

    def child(args):
        r = subprocess.run([sys.executable, "-c", _TRAIN, *args], capture_output=True, text=True, env=env,
                           stdin=subprocess.DEVNULL, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"blas threads {n}\n" in r.stdout, r.stdout  # the child really ran at that count
        return r.stdout

    child(_args(idx, tmp_path / "straight", STEPS))
    child(_args(idx, tmp_path / "split", STOP))
    assert f"resuming at update {STOP} " in child(_args(idx, tmp_path / "split", STEPS, resume=True))
    _assert_bit_identical(_weights(tmp_path / "straight"), _weights(tmp_path / "split"))

    with conftest.threadpool_limits(n, user_api="blas"):
        assert main(_args(idx, tmp_path / "here", STEPS)) == 0
    backend.use("numpy")
    _assert_bit_identical(_weights(tmp_path / "straight"), _weights(tmp_path / "here"))


def test_threads_option_sets_blas_and_the_pool_like_the_environment(idx, tmp_path, capsys):
    """`--threads 2` sets the BLAS library and the pool in this process, says so in the run's first line, and the
    run is bit-identical to one started with OPENBLAS_NUM_THREADS=2 (conftest puts one thread back afterwards)."""
    if not threads.blas_libraries():
        pytest.skip("no BLAS library with a thread setting is loaded")
    assert main(_args(idx, tmp_path / "here", STEPS) + ["--threads", "2"]) == 0
    assert threads.blas_threads() == 2 and parallel.workers() == 2
    assert "backend numpy (2 threads)" in capsys.readouterr().out
    r = subprocess.run([sys.executable, "-m", "minigan", *_args(idx, tmp_path / "env", STEPS)], capture_output=True,
                       text=True, env=_env(2), stdin=subprocess.DEVNULL, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "backend numpy (2 threads)" in r.stdout
    _assert_bit_identical(_weights(tmp_path / "env"), _weights(tmp_path / "here"))
    assert main(_args(idx, tmp_path / "one", 2) + ["--threads", "1"]) == 0
    assert threads.blas_threads() == 1 and parallel.workers() == 1
    assert "backend numpy (1 thread)" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [0, -1, True, "2", 1.5])
def test_set_threads_refuses_what_is_not_a_count(bad):
    with pytest.raises(ValueError, match="positive integer"):
        threads.set_threads(bad)


def test_threads_option_without_a_known_blas_is_a_clear_error(idx, tmp_path, capsys, monkeypatch):
    """No BLAS library whose thread count can be set: the run does not start at another count than asked."""
    monkeypatch.setattr(threads, "blas_libraries", lambda: [])
    assert main(_args(idx, tmp_path / "r", STEPS) + ["--threads", "2"]) == 2
    err = capsys.readouterr().err
    assert "--threads 2: cannot set the BLAS thread count" in err and "OPENBLAS_NUM_THREADS" in err
    assert not (tmp_path / "r").exists()
    assert main(["train", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_threads_option_reports_a_count_the_library_caps(idx, tmp_path, capsys, monkeypatch):
    """A BLAS library that stays below the count asked (a sequential build, a compiled maximum): the run says
    so, and the pool takes the count in force, not the one asked."""
    asked = []
    capped = threads.BlasLibrary("/fake/libcapped.so", get=lambda: 1, set=asked.append)
    monkeypatch.setattr(threads, "blas_libraries", lambda: [capped])
    assert threads.set_threads(4) == 1 and asked == [4] and parallel.workers() == 1
    assert main(_args(idx, tmp_path / "r", 2) + ["--threads", "4"]) == 0
    err = capsys.readouterr().err
    assert "--threads 4: the BLAS library runs 1 thread(s)" in err
