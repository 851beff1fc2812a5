"""Shared fixtures: every backend-sensitive test runs on NumPy, the strict CPU backend, and CuPy if present.

BLAS threads
------------
Float results depend on the number of BLAS threads (a different count rounds differently), so a test that
compares an in-process run with a subprocess run needs both at the same count. The suite pins it to one thread,
whatever the environment says, in this process and (through ``os.environ``) in every subprocess it starts:
one thread is also the fastest for the suite's tiny matrices on a busy 2-core machine. This process is pinned
with threadpoolctl (a test extra), which works even if NumPy was loaded before this file; without it, the
environment variables do the same as long as NumPy is not loaded yet. ``ENV_BLAS_THREADS`` keeps the value the
environment had; tests/test_threads.py checks bit-identical resume at the machine's default thread count.

Tests that must not skip in CI
------------------------------
Tests marked ``required_in_ci`` are independent references or checks that need something optional (SciPy,
Pillow, matplotlib, threadpoolctl, the real MNIST wheel, an unprivileged user). Elsewhere they may skip, with a
reason; with ``MINIGAN_REQUIRE_ALL_TESTS=1`` (set by .ci/run) a skip of one of them is reported as a failure.
"""

import os
import sys

BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
ENV_BLAS_THREADS = {name: os.environ.get(name) for name in BLAS_VARIABLES}
for _name in BLAS_VARIABLES:
    os.environ[_name] = "1"
_NUMPY_WAS_LOADED = "numpy" in sys.modules

import numpy  # noqa: E402,F401  (loaded here, after the variables, so that OpenBLAS reads them)
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # not installed: only the environment variables pin the threads
    threadpool_limits = None

if threadpool_limits is not None:
    threadpool_limits(1, user_api="blas")  # stays in force for the whole session
elif _NUMPY_WAS_LOADED and any(ENV_BLAS_THREADS[name] not in (None, "1") for name in BLAS_VARIABLES):
    raise pytest.UsageError("NumPy was loaded before tests/conftest.py could pin BLAS to one thread, and "
                            "threadpoolctl is not installed to do it now: pip install -e '.[test]'")

from minigan import backend, parallel, threads  # noqa: E402


@pytest.fixture(autouse=True)
def _one_blas_thread_after_each_test():
    """A test that runs `minigan train --threads N` in this process changes its thread counts: put them back."""
    yield
    if threads.blas_threads() not in (None, 1):
        for lib in threads.blas_libraries():
            lib.set(1)
    if parallel._workers is not None:
        parallel.set_workers(None)


def _test_backends() -> list:
    """The backends of the ``on_backend`` tests: numpy, strict and CuPy when usable, or ``MINIGAN_TEST_BACKENDS``.

    ``MINIGAN_TEST_BACKENDS=cupy`` (what benchmarks/gpu_check.sh sets) runs those tests on CuPy alone, and a
    CuPy that cannot be used is then an error of the whole session, never a silent fall-back to the CPU.
    """
    wanted = [b.strip() for b in os.environ.get("MINIGAN_TEST_BACKENDS", "").split(",") if b.strip()]
    if not wanted:
        return ["numpy", "strict"] + (["cupy"] if backend.gpu_available() else [])
    unknown = [b for b in wanted if b not in backend.BACKENDS]
    if unknown:
        raise pytest.UsageError(f"MINIGAN_TEST_BACKENDS names unknown backend(s) {unknown}; "
                                f"choose from {', '.join(backend.BACKENDS)}")
    if "cupy" in wanted:
        try:
            backend.use("cupy")
        except backend.BackendError as exc:
            raise pytest.UsageError(f"MINIGAN_TEST_BACKENDS asks for cupy, but it cannot be used: {exc}") from None
        finally:
            backend.use("numpy")
    return wanted


BACKENDS = _test_backends()
REQUIRE_ALL = os.environ.get("MINIGAN_REQUIRE_ALL_TESTS", "") == "1"

# Backend fixtures only select a namespace, so sharing one across hypothesis examples is safe.
# The suite draws the same hypothesis examples on every run (derandomize): CI's verdict on a commit cannot
# change between two runs of it, and a failure reproduces. MINIGAN_HYPOTHESIS_SEARCH=N explores N fresh random
# examples per test instead (a search for new failures; hypothesis prints the seed that reproduces one).
_SEARCH = os.environ.get("MINIGAN_HYPOTHESIS_SEARCH", "").strip()
if _SEARCH and not (_SEARCH.isdigit() and int(_SEARCH) > 0):
    raise pytest.UsageError(f"MINIGAN_HYPOTHESIS_SEARCH must be a positive number of examples, got {_SEARCH!r}")
settings.register_profile(
    "minigan", deadline=None, max_examples=int(_SEARCH) if _SEARCH else 25, derandomize=not _SEARCH,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile("minigan")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under MINIGAN_REQUIRE_ALL_TESTS=1, a skipped ``required_in_ci`` test is a failure, with its reason."""
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and item.get_closest_marker("required_in_ci") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} skipped ({reason}), but MINIGAN_REQUIRE_ALL_TESTS=1 requires it to run: "
                           "install the test extra (pip install -e '.[test]') and what .ci/run provides")


@pytest.fixture(params=BACKENDS)
def on_backend(request):
    """Make the parametrized backend active for the test, and NumPy again afterwards."""
    backend.use(request.param)
    try:
        yield request.param
    finally:
        backend.use("numpy")


@pytest.fixture
def isolated_run_env(monkeypatch, tmp_path):
    """A run that touches nothing of the user's: its own data cache, no fault-injection variables, NumPy."""
    monkeypatch.setenv("MINIGAN_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIGAN_INJECT_NAN_AT_STEP", raising=False)
    monkeypatch.delenv("MINIGAN_SLOW_CHECKPOINT", raising=False)
    backend.use("numpy")
    yield
    backend.use("numpy")
