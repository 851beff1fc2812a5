"""``python -m minigan ...`` runs the command line (see :mod:`minigan.cli`)."""

import os
import sys


def _blas_threads_from_argv(argv) -> None:
    """``train --threads N``: put N in the BLAS variables before NumPy loads (OpenBLAS reads them only then).

    With threadpoolctl installed, :func:`minigan.backend.set_threads` sets the count at run time anyway; without
    it, this is the only way ``python -m minigan`` reaches this process's BLAS.
    """
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--threads" and i + 1 < len(argv) else (
            arg.partition("=")[2] if arg.startswith("--threads=") else None)
        if value is not None and value.isdigit() and int(value) > 0:
            for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = value
            return


if "numpy" not in sys.modules:
    _blas_threads_from_argv(sys.argv[1:])

from .cli import main  # noqa: E402

sys.exit(main())
