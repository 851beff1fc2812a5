"""Train the CGAN on the GPU (CuPy backend), or say clearly why that is not possible here.

Needs CuPy matching your CUDA (``pip install cupy-cuda12x``) and an NVIDIA GPU. Time: a few seconds per epoch on
a recent GPU; 5 epochs by default (the ``modern`` preset: Adam 2e-4, beta1 0.5).

Usage::

    python examples/gpu.py [EPOCHS] [RUN_DIR]

Equivalent to ``minigan train --device gpu --epochs 5 --out RUN_DIR``.
"""

import sys

from minigan import backend
from minigan.config import TrainConfig
from minigan.train import Trainer

try:
    backend.use("cupy")
except backend.BackendError as exc:  # no CuPy, or no usable GPU: one clear sentence, no traceback
    sys.exit(f"cannot use the GPU: {exc}")

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
out = sys.argv[2] if len(sys.argv) > 2 else "runs/cgan-mnist-modern-gpu"
trainer = Trainer(TrainConfig(model="cgan", dataset="mnist", preset="modern", epochs=epochs, device="gpu", out=out))
result = trainer.run()
print(f"{result.status}: {result.epoch} epochs in {result.seconds:.1f} s; samples in {out}/samples/")
