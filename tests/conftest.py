"""Shared fixtures: every backend-sensitive test runs on NumPy, the strict CPU backend, and CuPy if present."""

import os

# The suite's matrices are tiny: one BLAS thread avoids thread spin-up costs and oversubscription on 2 cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from minigan import backend  # noqa: E402

BACKENDS = ["numpy", "strict"] + (["cupy"] if backend.gpu_available() else [])

# Backend fixtures only select a namespace, so sharing one across hypothesis examples is safe.
settings.register_profile(
    "minigan", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("minigan")


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
