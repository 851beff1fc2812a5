"""Generate images of one class from a trained conditional run and save them as a PNG grid.

Takes well under a second on a CPU (one forward pass of G).

Usage::

    python examples/sample_class.py RUN_DIR LABEL [N] [OUT.png]

e.g. ``python examples/sample_class.py runs/cgan-mnist-modern 7 50 sevens.png``. The same thing from the shell:
``minigan sample RUN_DIR --label 7 --n 50 --out sevens.png``.
"""

import sys

from minigan.config import ConfigError
from minigan.runs import sample, write_samples

if len(sys.argv) < 3:
    sys.exit(__doc__)
run_dir, label = sys.argv[1], int(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 50
out = sys.argv[4] if len(sys.argv) > 4 else f"class_{label}.png"
try:
    x, y = sample(run_dir, n, label=label, seed=0)
except ConfigError as exc:  # e.g. label out of range, or no checkpoint in RUN_DIR
    sys.exit(f"error: {exc}")
write_samples(out, x, y)
print(f"wrote {n} samples of class {label} to {out}")
