"""The paper CGAN in PyTorch eager, for the step-time comparison only (minigan never imports torch).

The same architecture as :func:`minigan.families.mlp.cgan` (maxout as a Linear to units*pieces followed by a max
over adjacent columns, dropout 0.2 on D's image input and 0.5 on D's hidden layers and G's combined layer),
started from minigan's own initial weights, and the same schedule as minigan's trainer: D on one batch of
real+fake rows with loss 1/2[BCE(1, D(x)) + BCE(0, D(G(z)))], then G through a frozen D with the
non-saturating loss, SGD with momentum 0.5 and lr 0.1 (PyTorch's momentum form v = mu v + g, p -= lr v costs
the same as minigan's classical form).

Everything a fair eager implementation would do to avoid wasted work is done: G's forward for the D step runs
under ``no_grad``, D's parameters stop requiring gradients during the G step (no dW for D), and data inputs
never require gradients (no dx for first layers).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Maxout(nn.Module):
    def __init__(self, linear: nn.Linear, units: int, pieces: int):
        super().__init__()
        self.linear, self.units, self.pieces = linear, units, pieces

    def forward(self, x):
        return self.linear(x).view(x.shape[0], self.units, self.pieces).max(dim=2).values


def _linear_from(layer, device) -> nn.Linear:
    """An nn.Linear holding a minigan Linear/Maxout's weights (minigan's W is (in, out); torch's is (out, in))."""
    from minigan import backend

    W = backend.to_host(layer.params["W"])
    b = backend.to_host(layer.params["b"])
    lin = nn.Linear(W.shape[0], W.shape[1])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
        lin.bias.copy_(torch.from_numpy(b))
    return lin.to(device)


class Generator(nn.Module):
    def __init__(self, mg, device, p=0.5):
        super().__init__()
        c = mg.G.children()
        self.z = _linear_from(c["in"].children()["z"].layers[0], device)
        self.y = _linear_from(c["in"].children()["y"].layers[0], device)
        self.hidden = _linear_from(c["hidden"], device)
        self.out = _linear_from(c["out"], device)
        self.p = p

    def forward(self, z, y):
        h = torch.cat([F.relu(self.z(z)), F.relu(self.y(y))], dim=1)
        h = F.dropout(F.relu(self.hidden(h)), self.p, self.training)
        return torch.sigmoid(self.out(h))


class Discriminator(nn.Module):
    def __init__(self, mg, device, p_in=0.2, p=0.5):
        super().__init__()
        c = mg.D.children()
        mx = c["in"].children()["x"].layers[1]
        my = c["in"].children()["y"].layers[0]
        mh = c["hidden"]
        self.x = Maxout(_linear_from(mx, device), mx.units, mx.pieces)
        self.y = Maxout(_linear_from(my, device), my.units, my.pieces)
        self.hidden = Maxout(_linear_from(mh, device), mh.units, mh.pieces)
        self.out = _linear_from(c["out"], device)
        self.p_in, self.p = p_in, p

    def forward(self, x, y):
        x = F.dropout(x, self.p_in, self.training)
        h = torch.cat([self.x(x), self.y(y)], dim=1)
        h = F.dropout(h, self.p, self.training)
        h = F.dropout(self.hidden(h), self.p, self.training)
        return self.out(h)


class TorchCGANStep:
    """One training iteration of the CGAN in PyTorch eager; call it to run one."""

    def __init__(self, minigan_model, batch: int, x_pool: np.ndarray, labels: np.ndarray, device: str = "cpu",
                 seed: int = 0):
        torch.manual_seed(seed)
        self.device = torch.device("cuda" if device == "gpu" else "cpu")
        self.B = batch
        self.G = Generator(minigan_model, self.device).train()
        self.D = Discriminator(minigan_model, self.device).train()
        self.opt_G = torch.optim.SGD(self.G.parameters(), lr=0.1, momentum=0.5)
        self.opt_D = torch.optim.SGD(self.D.parameters(), lr=0.1, momentum=0.5)
        self.x_pool = torch.from_numpy(x_pool).to(self.device)
        self.y_pool = F.one_hot(torch.from_numpy(labels).long(), 10).float().to(self.device)
        self.n_pool = x_pool.shape[0]
        self.gen = torch.Generator().manual_seed(seed)
        self.ones = torch.ones(batch, 1, device=self.device)
        self.zeros = torch.zeros(batch, 1, device=self.device)
        self._new_epoch()

    def _new_epoch(self):
        self.perm = torch.randperm(self.n_pool, generator=self.gen).to(self.device)
        self.start = 0

    def __call__(self):
        B = self.B
        if self.start + B > self.n_pool:
            self._new_epoch()
        idx = self.perm[self.start:self.start + B]
        self.start += B
        x_real, y = self.x_pool[idx], self.y_pool[idx]
        # D step: one batch of real + fake rows
        z = torch.rand(B, 100, device=self.device)
        with torch.no_grad():
            x_fake = self.G(z, y)
        logits = self.D(torch.cat([x_real, x_fake]), torch.cat([y, y]))
        loss_D = 0.5 * (F.binary_cross_entropy_with_logits(logits[:B], self.ones)
                        + F.binary_cross_entropy_with_logits(logits[B:], self.zeros))
        self.opt_D.zero_grad()
        loss_D.backward()
        self.opt_D.step()
        # G step through a frozen D
        for p in self.D.parameters():
            p.requires_grad_(False)
        z = torch.rand(B, 100, device=self.device)
        loss_G = F.binary_cross_entropy_with_logits(self.D(self.G(z, y), y), self.ones)
        self.opt_G.zero_grad()
        loss_G.backward()
        self.opt_G.step()
        for p in self.D.parameters():
            p.requires_grad_(True)
        return loss_D, loss_G
