"""Train the Conditional GAN of Mirza & Osindero (2014) on MNIST with the paper's optimisation settings.

SGD with momentum 0.5 -> 0.7 (ramped over 250 epochs), learning rate 0.1 decayed by 1.00004 per update to a floor
of 1e-6, batch 100, dropout 0.5 -- the ``paper`` preset. The paper trained for hundreds of epochs; this script
defaults to 20. Time: about 30 s per epoch on a 2-core CPU with one BLAS thread (``OPENBLAS_NUM_THREADS=1`` is
faster on a busy machine), about 10 minutes for the default; a few seconds per epoch on a GPU (``--device gpu``).

Expect it to fail: with the paper's stated settings (the CGAN code was never published) this model collapses
within 10 epochs -- every sample the same digit -- with either update rule; docs/RESULTS.md has the
measurements. It is here to reproduce that finding. For a conditional GAN that learns its classes use the
``modern`` preset (``minigan train``): Parzen 156.7, label accuracy 99.9% and FID 2.3x real data after 25 epochs.

Usage::

    python examples/cgan_paper.py [EPOCHS] [RUN_DIR]

Interrupt with Ctrl-C at any time: a checkpoint is written, and running the same command again continues the run.
"""

import sys
from pathlib import Path

from minigan.config import TrainConfig
from minigan.runs import CHECKPOINT_NAME
from minigan.train import Trainer

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
out = sys.argv[2] if len(sys.argv) > 2 else "runs/cgan-mnist-paper"

if (Path(out) / CHECKPOINT_NAME).exists():
    trainer = Trainer.resume(out, epochs=epochs)
else:
    trainer = Trainer(TrainConfig(model="cgan", dataset="mnist", preset="paper", epochs=epochs, out=out))
result = trainer.run()
print(f"{result.status}: {result.epoch} epochs; samples in {out}/samples/, losses in {out}/losses.png")
