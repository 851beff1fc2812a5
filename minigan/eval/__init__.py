"""Evaluating generators; nothing here imports the trainer.

* :mod:`minigan.eval.parzen` — the GAN papers' Parzen-window log-likelihood;
* :mod:`minigan.eval.classifier` — the fixed MNIST / Fashion-MNIST classifier, built from minigan's layers;
* :mod:`minigan.eval.metrics` — label accuracy, class histogram, classifier FID, and ``minigan eval`` on a run.
"""
