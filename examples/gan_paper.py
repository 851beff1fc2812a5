"""Train the unconditional GAN of Goodfellow et al. (2014) on MNIST with the paper's settings (``paper`` preset).

G: 100 -> 1200 ReLU -> 1200 ReLU -> 784 sigmoid; D: two maxout layers with dropout; SGD, lr 0.1 decayed by
1.000004 per update, momentum 0.5 -> 0.7 by epoch 250, batch 100, k = 1. Defaults to 20 epochs. Time: about
50 s per epoch on a 2-core CPU with one BLAS thread (the GAN's G is larger than the CGAN's), roughly 17 minutes.

Usage::

    python examples/gan_paper.py [EPOCHS] [RUN_DIR]

Ctrl-C writes a checkpoint; running the same command again continues the run.
"""

import sys
from pathlib import Path

from minigan.config import TrainConfig
from minigan.runs import CHECKPOINT_NAME
from minigan.train import Trainer

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
out = sys.argv[2] if len(sys.argv) > 2 else "runs/gan-mnist-paper"

if (Path(out) / CHECKPOINT_NAME).exists():
    trainer = Trainer.resume(out, epochs=epochs)
else:
    trainer = Trainer(TrainConfig(model="gan", dataset="mnist", preset="paper", epochs=epochs, out=out))
result = trainer.run()
print(f"{result.status}: {result.epoch} epochs; samples in {out}/samples/, losses in {out}/losses.png")
