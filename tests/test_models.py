"""The papers' models: exact architectures, noise priors, sampling, and label checks."""

import math

import numpy as np
import pytest

from minigan import backend, families
from minigan.families import mlp
from minigan.nn import Dropout, Maxout


def test_cgan_architecture_is_the_papers():
    m = families.build("cgan", seed=0)
    shapes = {k: tuple(v.shape) for k, v in m.G.params.items()}
    assert shapes == {
        "in.z.0.W": (100, 200), "in.z.0.b": (200,),          # z -> 200 ReLU
        "in.y.0.W": (10, 1000), "in.y.0.b": (1000,),         # y -> 1000 ReLU
        "hidden.W": (1200, 1200), "hidden.b": (1200,),       # joined -> 1200 ReLU
        "out.W": (1200, 784), "out.b": (784,),               # -> 784 sigmoid
    }
    maxouts = {layer.path: (layer.in_features, layer.units, layer.pieces)
               for layer in m.D.walk() if isinstance(layer, Maxout)}
    assert maxouts == {"D.in.x.1": (784, 240, 5), "D.in.y.0": (10, 50, 5), "D.hidden": (290, 240, 4)}
    assert m.D.params["out.W"].shape == (240, 1)
    assert sorted(d.p for d in m.D.walk() if isinstance(d, Dropout)) == [0.2, 0.5, 0.5]
    assert (m.noise_low, m.noise_high, m.n_classes) == (0.0, 1.0, 10)
    assert np.abs(m.G.params["hidden.W"]).max() <= 0.05 and np.abs(m.D.params["hidden.W"]).max() <= 0.005


def test_gan_architecture_is_the_papers():
    m = families.build("gan", seed=0)
    assert {k: tuple(v.shape) for k, v in m.G.params.items() if k.endswith("W")} == {
        "h0.W": (100, 1200), "h1.W": (1200, 1200), "out.W": (1200, 784)}
    assert [(l.in_features, l.units, l.pieces) for l in m.D.walk() if isinstance(l, Maxout)] == [
        (784, 240, 5), (240, 240, 5)]
    assert m.noise_low == pytest.approx(-math.sqrt(3)) and m.noise_high == pytest.approx(math.sqrt(3))
    assert not m.conditional


def test_same_seed_same_model_and_seeds_differ():
    a, b, c = families.build("cgan", seed=3), families.build("cgan", seed=3), families.build("cgan", seed=4)
    for k in a.G.params:
        np.testing.assert_array_equal(a.G.params[k], b.G.params[k])
    assert not np.array_equal(a.G.params["hidden.W"], c.G.params["hidden.W"])


def test_sampling_shapes_ranges_and_labels(on_backend):
    m = families.build("cgan", seed=0)
    x, labels = m.sample(25, backend.Rng(0), label=7)
    x = backend.to_host(x)
    assert x.shape == (25, 784) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert (labels == 7).all()
    _, cycled = m.sample(12, backend.Rng(0))
    np.testing.assert_array_equal(cycled, np.arange(12) % 10)
    z = backend.to_host(m.sample_noise(1000, backend.Rng(1)))
    assert 0 <= z.min() and z.max() < 1


@pytest.mark.parametrize("bad", [10, -1, 99])
def test_label_outside_range_is_rejected_with_its_value(bad):
    m = families.build("cgan", seed=0)
    with pytest.raises(ValueError, match=rf"label {bad} is outside the range 0..9"):
        m.sample(3, backend.Rng(0), label=bad)
    with pytest.raises(ValueError, match="1-D integer"):
        m.one_hot(np.array([[1, 2]]))
    with pytest.raises(ValueError, match="unconditional"):
        families.build("gan", seed=0).sample(2, backend.Rng(0), label=1)
    with pytest.raises(ValueError, match="unknown model"):
        families.build("vae")


def test_output_bias_starts_at_the_pixel_marginals():
    x = np.zeros((4, 784), np.float32)
    x[:2, 0] = 1.0  # pixel 0 is on in half the images; every other pixel is always off
    m = families.build("cgan", seed=0)
    mlp.init_output_bias_from_data(m, x)
    b = m.G.params["out.b"]
    assert b[0] == pytest.approx(0.0, abs=1e-6)                        # logit(0.5)
    assert b[1] == pytest.approx(math.log(1e-3 / (1 - 1e-3)), rel=1e-5)  # clipped, finite
    with pytest.raises(ValueError, match="784"):
        mlp.marginal_logits(np.zeros((3, 5)))


def test_label_branch_bias_option():
    m = families.build("cgan", seed=0, g_y_bias=0.5)
    np.testing.assert_array_equal(m.G.params["in.y.0.b"], np.full(1000, 0.5, np.float32))
    assert np.all(families.build("cgan", seed=0).G.params["in.y.0.b"] == 0)  # the paper's default


# --------------------------------------------------------------------------------------------------
# The other CGAN designs (model options; measured in docs/RESULTS.md, not yet a preset's default)
# --------------------------------------------------------------------------------------------------

DESIGNS = {
    "paper-leaky-sn": {"g_label": "leaky", "spectral_norm": True, "d_irange": "glorot"},
    "projection-sn": {"design": "projection", "spectral_norm": True},
    "bn": {"design": "bn"},
}


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_design_objective_gradients_are_exact(name):
    from minigan.gradcheck import gan_checks

    reports = gan_checks("cgan", batch=3, seed=1, model_options=DESIGNS[name], n_samples=4)
    assert len(reports) == 5  # D's loss, G's loss, the one-pass update's two, and the matching-aware term
    for r in reports:
        assert r.passed, "\n" + r.table()


def test_design_architectures():
    bn = families.build("cgan", 0, design="bn")
    assert {k: tuple(v.shape) for k, v in bn.G.params.items() if k.endswith("W")} == {
        "in.y.W": (10, 10), "h0.W": (110, 256), "h1.W": (256, 512), "h2.W": (512, 1024), "out.W": (1024, 784)}
    assert sorted(bn.G.buffers) == ["bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"]
    assert {k: tuple(v.shape) for k, v in bn.D.params.items() if k.endswith("W")} == {
        "in.y.W": (10, 10), "h0.W": (794, 512), "h1.W": (512, 512), "h2.W": (512, 512), "out.W": (512, 1)}
    proj = families.build("cgan", 0, design="projection", spectral_norm=True)
    assert tuple(proj.D.params["out.E"].shape) == (10, 240)
    assert sorted(proj.D.buffers) == ["in.x.h0.u", "in.x.h0.v", "in.x.h1.u", "in.x.h1.v", "out.u", "out.v"]
    leaky = families.build("cgan", 0, g_label="leaky")
    assert type(leaky.G.layers[0].children()["y"].layers[1]).__name__ == "LeakyReLU"
    # The paper design's names and initial weights do not depend on the new options' existence.
    assert np.array_equal(leaky.G.params["hidden.W"], families.build("cgan", 0).G.params["hidden.W"])
    with pytest.raises(TypeError, match="design"):
        families.build("cgan", 0, design="nope")


@pytest.mark.parametrize("name", ["bn", "projection-sn"])
def test_design_resumes_bit_identically_with_its_buffers(tmp_path, name):
    """Running statistics and power-iteration vectors are state: a resumed run must continue from them."""
    import json

    from helpers import tiny_dataset
    from minigan.config import TrainConfig
    from minigan.train import Trainer

    ds = tiny_dataset(12)

    def cfg(out, epochs):
        return TrainConfig(model="cgan", preset="modern", batch=4, epochs=epochs, out=str(tmp_path / out),
                           progress=False, model_options=DESIGNS[name])

    straight = Trainer(cfg("a", 2), dataset=ds, log=lambda m: None)
    straight.run(handle_signals=False)
    Trainer(cfg("b", 1), dataset=ds, log=lambda m: None).run(handle_signals=False)
    resumed = Trainer.resume(tmp_path / "b", dataset=ds, log=lambda m: None, epochs=2)
    resumed.run(handle_signals=False)
    for net in ("G", "D"):
        a, b = getattr(straight.model, net), getattr(resumed.model, net)
        assert a.buffers.keys() == b.buffers.keys()
        for store in ("params", "buffers"):
            for k, v in getattr(a, store).items():
                assert np.array_equal(v, getattr(b, store)[k]), f"{net}.{k}"
    assert any(getattr(straight.model, net).buffers for net in ("G", "D"))
    # The checkpoint stores the options it was built with (since format 2; format 3 adds G's weight average).
    from minigan import io
    from minigan.runs import CHECKPOINT_FORMAT
    _, meta = io.load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert meta["format"] == CHECKPOINT_FORMAT == 3 and {k: meta["model_options"][k] for k in DESIGNS[name]} == DESIGNS[name]
    json.dumps(meta["model_options"])
