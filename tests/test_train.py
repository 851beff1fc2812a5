"""Tests for minigan.train: checkpoints, bit-identical resume, signals, divergence, the strict backend.

Everything runs on tiny synthetic datasets (no network, no real data) with batches of 4 and a handful of
updates, so the whole file takes seconds. The models are the papers' full-size ones: what is tested is the
trainer, on the real architecture.
"""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from helpers import tiny_dataset
from minigan import backend, io
from minigan.config import PRESETS, ConfigError, TrainConfig, learning_rates
from minigan.runs import CHECKPOINT_NAME, load_model, sample, write_samples
from minigan.train import Trainer, TrainingDiverged


def config(tmp_path, name="run", **kw) -> TrainConfig:
    options = dict(model="cgan", preset="modern", batch=4, epochs=2, out=str(tmp_path / name), progress=False,
                   log_interval=50)
    options.update(kw)
    return TrainConfig(**options)


def quiet(msg):
    pass


def params(trainer):
    return {f"{net}.{k}": backend.to_host(v) for net, layer in (("G", trainer.model.G), ("D", trainer.model.D))
            for k, v in layer.params.items()}


def assert_same_params(a, b):
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), f"{k} differs"


@pytest.fixture
def numpy_backend():
    backend.use("numpy")
    yield
    backend.use("numpy")


@pytest.fixture
def strict_backend():
    backend.use("strict")
    yield
    backend.use("numpy")


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [dict(batch=0), dict(k=-1), dict(epochs=0), dict(model="vae"), dict(preset="x"),
                                 dict(dataset="cifar"), dict(seed=-3), dict(device="tpu")])
def test_config_rejects_bad_values(tmp_path, bad):
    with pytest.raises(ConfigError):
        config(tmp_path, **bad)


def test_batch_larger_than_dataset_is_a_config_error(tmp_path, numpy_backend):
    with pytest.raises(ConfigError, match="training examples"):
        Trainer(config(tmp_path, batch=32), dataset=tiny_dataset(20), log=quiet)


def test_fresh_run_refuses_to_overwrite_a_checkpoint(tmp_path, numpy_backend):
    ds = tiny_dataset()
    Trainer(config(tmp_path, steps=1), dataset=ds, log=quiet).run()
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(config(tmp_path, steps=1), dataset=ds, log=quiet)


# --------------------------------------------------------------------------------------------------
# Checkpoints and resume
# --------------------------------------------------------------------------------------------------


def test_checkpoint_round_trip_restores_every_array_and_state(tmp_path, numpy_backend):
    ds = tiny_dataset()
    t = Trainer(config(tmp_path, preset="paper", steps=2), dataset=ds, log=quiet)
    t.run()
    arrays, meta = io.load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    # Every parameter, every optimizer slot, the grid noise.
    assert {k for k in arrays if k.startswith(("G.", "D."))} == set(params(t))
    assert any(k.startswith("optim.G.v.") for k in arrays) and any(k.startswith("optim.D.v.") for k in arrays)
    assert meta["updates"] == 2 and meta["step_in_epoch"] == 2 and meta["epoch"] == 0
    dropout_keys = {f"{n}.{k}" for n, layer in (("G", t.model.G), ("D", t.model.D)) for k in layer.rngs()}
    assert dropout_keys and dropout_keys <= set(meta["rngs"])
    assert meta["config"]["preset"] == "paper"

    r = Trainer.resume(tmp_path / "run", dataset=ds, log=quiet)
    assert_same_params(t, r)
    for opt_t, opt_r in ((t.opt_G, r.opt_G), (t.opt_D, r.opt_D)):
        at, st = opt_t.state_dict()
        ar, sr = opt_r.state_dict()
        assert st == sr and at.keys() == ar.keys()
        assert all(np.array_equal(at[k], ar[k]) for k in at)
    assert r.noise_rng.get_state() == t.noise_rng.get_state()
    for net in ("G", "D"):
        lt, lr = getattr(t.model, net).rngs(), getattr(r.model, net).rngs()
        assert {k: v.get_state() for k, v in lt.items()} == {k: v.get_state() for k, v in lr.items()}
    assert (r.epoch, r.step_in_epoch, r.updates) == (t.epoch, t.step_in_epoch, t.updates)
    assert np.array_equal(r.grid_z, t.grid_z)
    # The data generator is restored to the start of the interrupted epoch (its permutation is re-drawn).
    assert r.data_rng.get_state() == t._epoch_start_state


@pytest.mark.parametrize("model,preset", [("cgan", "modern"), ("gan", "paper")])
def test_resume_at_epoch_boundary_is_bit_identical(tmp_path, numpy_backend, model, preset):
    ds = tiny_dataset(12)  # 3 updates per epoch
    straight = Trainer(config(tmp_path, "straight", model=model, preset=preset, epochs=2), dataset=ds, log=quiet)
    straight.run()
    first = Trainer(config(tmp_path, "split", model=model, preset=preset, epochs=1), dataset=ds, log=quiet)
    first.run()
    second = Trainer.resume(tmp_path / "split", dataset=ds, log=quiet, epochs=2)
    result = second.run()
    assert result.status == "done" and result.epoch == 2 and result.updates == 6
    assert_same_params(straight, second)
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_resume_mid_epoch_after_simulated_sigint_is_bit_identical(tmp_path, numpy_backend):
    ds = tiny_dataset(20)  # 5 updates per epoch
    straight = Trainer(config(tmp_path, "straight", epochs=2), dataset=ds, log=quiet)
    straight.run()

    def interrupt(trainer):
        if trainer.updates == 3:
            trainer._handler(signal.SIGINT, None)  # exactly what the installed handler does

    messages = []
    first = Trainer(config(tmp_path, "split", epochs=2), dataset=ds, log=messages.append)
    result = first.run(on_step=interrupt)
    assert result.status == "interrupted" and result.signal == signal.SIGINT and result.updates == 3
    assert any("--resume" in m for m in messages)
    _, meta = io.load_checkpoint(tmp_path / "split" / CHECKPOINT_NAME)
    assert (meta["epoch"], meta["step_in_epoch"], meta["updates"]) == (0, 3, 3)

    second = Trainer.resume(tmp_path / "split", dataset=ds, log=quiet)
    assert second.run().updates == 10
    assert_same_params(straight, second)
    # The epoch's statistics survive the interruption: epoch 1's record averages all 5 updates.
    rec_split = json.loads((tmp_path / "split" / "metrics.jsonl").read_text().splitlines()[0])
    rec_straight = json.loads((tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("loss_D", "loss_G", "D_x", "D_G_z"):
        assert rec_split[key] == pytest.approx(rec_straight[key], rel=1e-12)


def test_resume_removes_temporaries_of_killed_saves_and_keeps_everything_else(tmp_path, numpy_backend):
    ds = tiny_dataset(12)
    Trainer(config(tmp_path, epochs=1), dataset=ds, log=quiet).run()
    run = tmp_path / "run"
    # What a SIGKILL during a checkpoint or grid save leaves behind (io._atomic_write's temp names).
    stale = [run / ".ckpt-abc123.tmp", run / "samples" / ".png-def456.tmp", run / ".png-0.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    keep = run / "notes.tmp"  # not ours: a user's file with a similar suffix stays
    keep.write_text("mine")
    before = set(p.name for p in run.rglob("*") if p.is_file()) - {p.name for p in stale}
    messages = []
    Trainer.resume(run, dataset=ds, log=messages.append, epochs=2).run()
    assert not any(path.exists() for path in stale) and keep.read_text() == "mine"
    assert before <= set(p.name for p in run.rglob("*") if p.is_file())
    assert any("removed 3 temporary file(s)" in m for m in messages)


def test_signal_handlers_are_restored_after_run(tmp_path, numpy_backend):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    Trainer(config(tmp_path, steps=1), dataset=tiny_dataset(), log=quiet).run()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_resume_rejects_a_changed_run_definition(tmp_path, numpy_backend):
    ds = tiny_dataset()
    Trainer(config(tmp_path, steps=1), dataset=ds, log=quiet).run()
    with pytest.raises(ConfigError, match="preset"):
        Trainer.resume(tmp_path / "run", dataset=ds, log=quiet, preset="paper")
    with pytest.raises(ConfigError, match="no checkpoint"):
        Trainer.resume(tmp_path / "elsewhere", dataset=ds, log=quiet)


def test_resume_takes_a_dataset_name_and_the_update_rule_the_run_used(tmp_path, numpy_backend, monkeypatch):
    """`Trainer.resume(run, dataset="mnist")` (what `--resume --dataset mnist` passes) checks the name like any
    other option; `update` equal to the rule the run used is accepted even when the run took its preset's."""
    from helpers import write_idx_dir

    monkeypatch.setenv("MINIGAN_DATA", str(tmp_path / "cache"))
    idx = write_idx_dir(tmp_path / "idx")  # 25 training images
    Trainer(config(tmp_path, steps=1, batch=5, data_dir=str(idx)), log=quiet).run()
    assert io.load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)[1]["config"]["update"] is None
    resumed = Trainer.resume(tmp_path / "run", dataset="mnist", update="alternating", steps=2, log=quiet)
    assert resumed.dataset.name == "mnist" and resumed.run().updates == 2
    with pytest.raises(ConfigError, match="dataset='fashion-mnist'"):
        Trainer.resume(tmp_path / "run", dataset="fashion-mnist", log=quiet)
    with pytest.raises(ConfigError, match="update='simultaneous'.*update='alternating'"):
        Trainer.resume(tmp_path / "run", dataset="mnist", update="simultaneous", log=quiet)


# --------------------------------------------------------------------------------------------------
# Divergence
# --------------------------------------------------------------------------------------------------


def test_nan_stops_names_the_update_and_keeps_the_last_good_checkpoint(tmp_path, numpy_backend, monkeypatch):
    ds = tiny_dataset(20)  # 5 updates per epoch
    Trainer(config(tmp_path, epochs=1), dataset=ds, log=quiet).run()
    ckpt = tmp_path / "run" / CHECKPOINT_NAME
    good = ckpt.read_bytes()
    monkeypatch.setenv("MINIGAN_INJECT_NAN_AT_STEP", "7")  # epoch 2, step 2
    trainer = Trainer.resume(tmp_path / "run", dataset=ds, log=quiet, epochs=3)
    with pytest.raises(TrainingDiverged) as info:
        trainer.run()
    assert info.value.update == 7
    assert "update 7" in str(info.value) and "epoch 2, step 2/5" in str(info.value)
    assert ckpt.read_bytes() == good
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_nan_is_caught_before_a_mid_epoch_checkpoint(tmp_path, numpy_backend, monkeypatch):
    monkeypatch.setenv("MINIGAN_INJECT_NAN_AT_STEP", "2")
    with pytest.raises(TrainingDiverged, match="update 2"):
        Trainer(config(tmp_path, steps=3), dataset=tiny_dataset(), log=quiet).run()
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


# --------------------------------------------------------------------------------------------------
# Outputs, sampling, strict backend
# --------------------------------------------------------------------------------------------------


def test_epoch_outputs_and_sampling(tmp_path, numpy_backend):
    ds = tiny_dataset(8)  # 2 updates per epoch
    Trainer(config(tmp_path, epochs=1), dataset=ds, log=quiet).run()
    run = tmp_path / "run"
    record = json.loads((run / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and record["updates"] == 2
    assert 0 <= record["D_x"] <= 1 and 0 <= record["D_G_z"] <= 1
    grid = io.read_png(run / "samples" / "epoch_001.png")
    assert grid.shape == (2 + 10 * 30, 2 + 10 * 30)
    assert io.read_png(run / "losses.png").ndim in (2, 3)

    x, y = sample(run, 7, label=3, seed=1)
    assert x.shape == (7, 784) and x.dtype == np.float32 and y.dtype == np.int64
    assert (y == 3).all() and x.min() >= 0 and x.max() <= 1
    x2, _ = sample(run, 7, label=3, seed=1)
    assert np.array_equal(x, x2)
    with pytest.raises(ConfigError, match="out of range"):
        sample(run, 2, label=10)
    write_samples(tmp_path / "s.png", x, y)
    assert io.read_png(tmp_path / "s.png").shape == (2 + 30, 2 + 7 * 30)
    with pytest.raises(ConfigError, match="npz or .png"):
        write_samples(tmp_path / "s.txt", x, y)


def test_unconditional_model_samples_without_labels(tmp_path, numpy_backend):
    Trainer(config(tmp_path, model="gan", steps=1), dataset=tiny_dataset(), log=quiet).run()
    x, y = sample(tmp_path / "run", 5)
    assert x.shape == (5, 784) and (y == -1).all()
    with pytest.raises(ConfigError, match="unconditional"):
        sample(tmp_path / "run", 5, label=1)


@pytest.mark.parametrize("preset", ["modern", "paper"])
def test_strict_backend_trains_without_host_syncs(tmp_path, strict_backend, preset):
    """The strict backend rejects np.* on device arrays and implicit float() pulls, as CuPy would."""
    ds = tiny_dataset(12)
    trainer = Trainer(config(tmp_path, preset=preset, epochs=1, log_interval=2, k=1), dataset=ds, log=quiet)
    assert backend.is_device_array(trainer.x_train)
    result = trainer.run()
    assert result.updates == 3 and (tmp_path / "run" / CHECKPOINT_NAME).exists()
    model, _ = load_model(tmp_path / "run")
    assert backend.is_device_array(model.G.params["hidden.W"])
    x, y = sample(tmp_path / "run", 3, label=2)
    assert x.shape == (3, 784)


@pytest.mark.parametrize("model,preset,d_steps", [
    ("cgan", "modern", 8),  # 2 updates x k=2 D steps, each followed by a matching-aware D step (wrong labels)
    ("gan", "modern", 4),   # no labels, so no matching-aware step
    ("cgan", "paper", 4),   # the papers' D has no matching-aware step
])
def test_k_discriminator_steps_per_update(tmp_path, numpy_backend, model, preset, d_steps):
    ds = tiny_dataset(16)  # 4 batches of 4, k=2: 2 updates per epoch
    t = Trainer(config(tmp_path, model=model, preset=preset, epochs=1, k=2, update="alternating"), dataset=ds,
                log=quiet)
    assert t.steps_per_epoch == 2
    assert t.run().updates == 2
    assert t.opt_D.steps == d_steps and t.opt_G.steps == 2


@pytest.mark.parametrize("model", ["cgan", "gan"])
def test_simultaneous_update_steps_both_networks_once_per_update(tmp_path, numpy_backend, model):
    ds = tiny_dataset(12)
    t = Trainer(config(tmp_path, model=model, preset="paper", epochs=1), dataset=ds, log=quiet)
    assert t.config.update_rule == "simultaneous"
    before = params(t)
    assert t.run().updates == 3
    assert t.opt_D.steps == 3 and t.opt_G.steps == 3
    after = params(t)
    assert all(not np.array_equal(before[k], after[k]) for k in before if k.endswith(".W"))


def test_update_rule_changes_training_and_is_part_of_the_run_definition(tmp_path, numpy_backend):
    ds = tiny_dataset(12)
    one_pass = Trainer(config(tmp_path, "a", preset="paper", epochs=1), dataset=ds, log=quiet)
    alternating = Trainer(config(tmp_path, "b", preset="paper", epochs=1, update="alternating"), dataset=ds,
                          log=quiet)
    one_pass.run()
    alternating.run()
    assert not np.array_equal(params(one_pass)["G.out.W"], params(alternating)["G.out.W"])
    with pytest.raises(ConfigError, match="update"):
        Trainer.resume(tmp_path / "b", dataset=ds, log=quiet, update="simultaneous")


@pytest.mark.parametrize("bad,match", [(dict(update="both"), "unknown update rule"),
                                       (dict(preset="paper", k=2), "simultaneous"),
                                       (dict(update="simultaneous", k=3), "simultaneous")])
def test_update_rule_config_errors(tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match):
        config(tmp_path, **bad)


def test_model_selection_keeps_the_best_and_does_not_perturb_training(tmp_path, numpy_backend):
    ds = tiny_dataset(24)
    plain = Trainer(config(tmp_path / "plain", epochs=2), dataset=ds, log=quiet)
    plain.run()
    t = Trainer(config(tmp_path / "sel", epochs=2, select_every=1), dataset=ds, log=quiet)
    t.run()
    # Scoring draws its samples from its own stream: the trained weights are exactly those of a plain run.
    for name, p in plain.model.G.params.items():
        np.testing.assert_array_equal(p, t.model.G.params[name])
    records = [json.loads(line) for line in (t.config.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["parzen_valid"]) for r in records)
    best_epoch = max(records, key=lambda r: r["parzen_valid"])["epoch"]
    assert t._best["epoch"] == best_epoch
    model, meta = load_model(t.config.run_dir / "best.npz")
    assert meta["epoch"] == best_epoch and meta["best"]["epoch"] == best_epoch
    resumed = Trainer.resume(t.config.run_dir, dataset=ds, log=quiet, epochs=3)
    assert resumed._best == t._best


def test_layer_buffers_go_into_checkpoints_and_come_back(tmp_path, numpy_backend, monkeypatch):
    # The MLP models have no buffers: give the GAN's D a BatchNorm on its input, whose running statistics must
    # be saved, restored by resume and by load_model, and refused when the checkpoint's buffers do not match.
    from minigan.families import IMAGE_SIZE, mlp
    from minigan.nn import BatchNorm, Sequential

    def with_batchnorm(seed=0, **options):
        m = mlp.gan(seed, **options)
        m.D = Sequential(BatchNorm(IMAGE_SIZE, name="bn"), *m.D.layers, name="D")
        return m

    monkeypatch.setattr(mlp.GAN, "build", staticmethod(with_batchnorm))
    ds = tiny_dataset()
    t = Trainer(config(tmp_path, model="gan", preset="paper", steps=2), dataset=ds, log=quiet)
    t.run()
    path = tmp_path / "run" / CHECKPOINT_NAME
    arrays, meta = io.load_checkpoint(path)
    assert {k for k in arrays if k.startswith("buffers.")} == {"buffers.D.bn.running_mean", "buffers.D.bn.running_var"}
    trained = {k: backend.to_host(v) for k, v in t.model.D.buffers.items()}
    assert not np.array_equal(trained["bn.running_var"], np.ones(IMAGE_SIZE, np.float32))  # it was updated
    r = Trainer.resume(tmp_path / "run", dataset=ds, log=quiet)
    for k, v in trained.items():
        assert np.array_equal(backend.to_host(r.model.D.buffers[k]), v), k
    model, _ = load_model(tmp_path / "run")
    for k, v in trained.items():
        assert np.array_equal(backend.to_host(model.D.buffers[k]), v), k
    del arrays["buffers.D.bn.running_var"]
    io.save_checkpoint(path, arrays, meta)
    with pytest.raises(io.CheckpointError, match="buffers of D do not match.*missing \\['bn.running_var'\\]"):
        Trainer.resume(tmp_path / "run", dataset=ds, log=quiet)


def test_joint_matching_aware_step_is_one_d_step_on_three_kinds_of_rows(tmp_path, numpy_backend, monkeypatch):
    """``"matching_aware": "joint"``: the wrong-label rows join D's own step, so D takes one step per update."""
    from minigan import config as config_module
    from minigan import objective

    monkeypatch.setitem(config_module.PRESETS, "modern", {**config_module.PRESETS["modern"], "matching_aware": {"cgan": "joint"}})
    seen = []
    original = objective.discriminator_step

    def spy(D, x_real, x_fake, y_real=None, y_fake=None, **kw):
        b = x_real.shape[0]
        seen.append((b, x_fake.shape[0], x_fake[b:].copy(), y_fake.argmax(axis=1)[b:].copy()))
        return original(D, x_real, x_fake, y_real, y_fake, **kw)

    monkeypatch.setattr(objective, "discriminator_step", spy)
    ds = tiny_dataset(12)
    t = Trainer(config(tmp_path, epochs=1), dataset=ds, log=quiet)
    assert t.run().updates == 3
    assert t.opt_D.steps == 3 and t.opt_G.steps == 3
    assert len(seen) == 3
    for n_real, n_rows, images, labels in seen:
        # B real rows, then B fakes and B training images paired with a label that is not their own.
        assert (n_real, n_rows) == (4, 8)
        for image, label in zip(images, labels):
            index = int(np.flatnonzero((ds.train.x == image).all(axis=1))[0])
            assert label != ds.train.y[index]


def test_after_step_hooks_and_state_parts_ride_in_checkpoints(tmp_path, numpy_backend):
    """The shared trainer's extension points: a hook after each G step, and extra arrays in checkpoints."""

    class Counter:
        def __init__(self):
            self.n, self.total = 0, np.zeros(3)

        def after_g(self):
            self.n += 1
            self.total += 1

        def state(self):
            return {"total": self.total.copy()}, {"n": self.n}

        def load_state(self, arrays, meta):
            self.total[...] = arrays["total"]
            self.n = meta["n"]

    ds = tiny_dataset(12)
    t = Trainer(config(tmp_path, steps=4), dataset=ds, log=quiet)
    c = Counter()
    t.after_step["G"].append(c.after_g)
    t.add_state_part("counter", c)
    t.run(handle_signals=False)
    assert c.n == 4 == t.opt_G.steps
    arrays, meta = io.load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    assert np.array_equal(arrays["counter.total"], np.full(3, 4.0)) and meta["parts"]["counter"] == {"n": 4}
    r = Trainer.resume(tmp_path / "run", dataset=ds, log=quiet)
    c2 = Counter()
    r.add_state_part("counter", c2)
    assert c2.n == 4 and np.array_equal(c2.total, np.full(3, 4.0))
    with pytest.raises(ValueError, match="taken"):
        r.add_state_part("G", Counter())


# --------------------------------------------------------------------------------------------------
# G's weight average
# --------------------------------------------------------------------------------------------------


def _averaged(trainer):
    return {k: backend.to_host(v) for k, v in trainer.average_G.averaged().items()}


def test_weight_average_resumes_bit_identically_and_is_what_sampling_uses(tmp_path, numpy_backend):
    ds = tiny_dataset(12)  # 3 updates per epoch
    straight = Trainer(config(tmp_path, "straight", ema=0.9), dataset=ds, log=quiet)
    straight.run()
    assert straight.average_G.steps == 6 and straight.config.ema == 0.9
    first = Trainer(config(tmp_path, "split", ema=0.9, epochs=1), dataset=ds, log=quiet)
    first.run()
    second = Trainer.resume(tmp_path / "split", dataset=ds, log=quiet, epochs=2)
    second.run()
    assert_same_params(straight, second)
    expected = _averaged(straight)
    assert all(np.array_equal(expected[k], v) for k, v in _averaged(second).items())
    # The average is not the live G, and it is the G that load_model (sample, eval) returns.
    live = {k: backend.to_host(v) for k, v in straight.model.G.params.items()}
    assert any(not np.array_equal(live[k], expected[k]) for k in live)
    model, meta = load_model(tmp_path / "straight")
    assert meta["parts"]["ema"] == {"beta": 0.9, "steps": 6} and meta["format"] == 3
    for k, p in model.G.params.items():
        assert np.array_equal(backend.to_host(p), expected[k]), k
    # ... and the grid of the last epoch was drawn from it, leaving the live weights untouched.
    with straight.sampling_G():
        grid = straight._grid_images()
    assert np.array_equal(grid, straight._grid_images())  # sampling_G nests: the grid always uses the average
    assert all(np.array_equal(backend.to_host(p), live[k]) for k, p in straight.model.G.params.items())


def test_weight_average_decay_is_part_of_the_run_definition(tmp_path, numpy_backend):
    ds = tiny_dataset(8)
    Trainer(config(tmp_path, epochs=1, ema=0.9), dataset=ds, log=quiet).run()
    with pytest.raises(ConfigError, match="ema=0.5"):
        Trainer.resume(tmp_path / "run", dataset=ds, log=quiet, ema=0.5, epochs=2)
    assert Trainer.resume(tmp_path / "run", dataset=ds, log=quiet, ema=0.9, epochs=2).average_G.beta == 0.9
    for bad in (1.0, -0.1, "0.9", float("nan")):
        with pytest.raises(ConfigError, match="ema must be"):
            config(tmp_path, ema=bad)
    assert config(tmp_path).ema_beta == 0.99 and config(tmp_path, model="gan", preset="paper").ema_beta == 0.0


def test_checkpoint_from_before_weight_averages_resumes_without_one(tmp_path, numpy_backend):
    """A format-2 checkpoint (no "ema" in its config or state) continues exactly as it was trained: no average."""
    ds = tiny_dataset(8)
    straight = Trainer(config(tmp_path, "straight", ema=0), dataset=ds, log=quiet)
    straight.run()
    Trainer(config(tmp_path, "old", ema=0, epochs=1), dataset=ds, log=quiet).run()
    path = tmp_path / "old" / CHECKPOINT_NAME
    arrays, meta = io.load_checkpoint(path)
    del meta["config"]["ema"]
    assert "parts" not in meta  # ema 0: no average was kept
    meta["format"] = 2
    io.save_checkpoint(path, arrays, meta)
    resumed = Trainer.resume(tmp_path / "old", dataset=ds, log=quiet, epochs=2)
    assert resumed.average_G is None and resumed.config.ema == 0.0
    resumed.run()
    assert_same_params(straight, resumed)
    model, _ = load_model(tmp_path / "old")
    for k, p in model.G.params.items():
        assert np.array_equal(backend.to_host(p), backend.to_host(straight.model.G.params[k]))


def test_health_monitor_reads_the_live_G_and_the_grid_shows_the_average(tmp_path, numpy_backend):
    ds = tiny_dataset(8)
    t = Trainer(config(tmp_path, epochs=1, ema=0.9), dataset=ds, log=quiet)
    seen = []
    measure = t.monitor.measure
    t.monitor.measure = lambda grid: (seen.append(grid.copy()), measure(grid))[1]
    t.run(handle_signals=False)
    live = t.family.grid_images(t.grid_z, t.grid_labels)
    assert len(seen) == 1 and np.array_equal(seen[0], live)
    averaged = t._grid_images()
    assert not np.array_equal(averaged, live)
    io.write_png(tmp_path / "averaged.png", t.family.grid_picture(averaged))
    assert np.array_equal(io.read_png(tmp_path / "run" / "samples" / "epoch_001.png"),
                          io.read_png(tmp_path / "averaged.png"))


def test_learning_rates_by_model_and_dataset(tmp_path):
    """The modern CGAN's D runs at 4e-3 on MNIST and 4e-4 on Fashion-MNIST (docs/RESULTS.md); a given rate wins."""
    assert learning_rates(config(tmp_path)) == (2e-3, 4e-3)
    assert learning_rates(config(tmp_path, dataset="fashion-mnist")) == (2e-3, 4e-4)
    assert learning_rates(config(tmp_path, dataset="fashion-mnist", lr_D=1e-3)) == (2e-3, 1e-3)
    assert learning_rates(config(tmp_path, model="gan")) == (2e-4, 2e-4)
    assert learning_rates(config(tmp_path, model="gan", preset="paper", dataset="fashion-mnist")) == (0.1, 0.1)


def test_ds_learning_rate_warms_up_from_gs_and_a_run_resumes_exactly_mid_warm_up(tmp_path, numpy_backend):
    """--d-warmup N: D's rate follows LinearWarmup(G's schedule, D's schedule, N) update by update, is stored in
    the checkpoint, and a run stopped inside the warm-up resumes bit-identically; a checkpoint from before the
    option resumes without it; bad values and a different value on resume are refused."""
    ds = tiny_dataset(20)  # 5 updates an epoch at batch 4
    t = Trainer(config(tmp_path, "warm", epochs=1, d_warmup=8), dataset=ds, log=quiet)
    lr_G, lr_D = learning_rates(t.config)
    seen = []
    t.run(handle_signals=False, on_step=lambda tr: seen.append((tr.optimizers["G"].lr, tr.optimizers["D"].lr)))
    decay, floor = t.config.lr_decay, PRESETS["modern"]["lr_floor"]
    for step, (g, d) in enumerate(seen):
        a, b = max(lr_G / decay ** step, floor), max(lr_D / decay ** step, floor)
        assert g == a and d == pytest.approx(a + (step + 1) / 8 * (b - a), rel=1e-12)
    _, meta = io.load_checkpoint(tmp_path / "warm" / CHECKPOINT_NAME)
    assert meta["config"]["d_warmup"] == 8

    straight = Trainer(config(tmp_path, "straight", epochs=3, d_warmup=8), dataset=ds, log=quiet)
    straight.run()
    resumed = Trainer.resume(tmp_path / "warm", dataset=ds, log=quiet, epochs=3)  # from update 5 of 8
    resumed.run()
    assert_same_params(straight, resumed)
    assert straight.optimizers["D"].lr == pytest.approx(max(lr_D / decay ** 14, floor), rel=1e-15)

    with pytest.raises(ConfigError, match="d_warmup=3"):
        Trainer.resume(tmp_path / "warm", dataset=ds, log=quiet, epochs=4, d_warmup=3)
    Trainer(config(tmp_path, "old", epochs=1, d_warmup=0), dataset=ds, log=quiet).run()
    path = tmp_path / "old" / CHECKPOINT_NAME
    arrays, meta = io.load_checkpoint(path)
    del meta["config"]["d_warmup"]  # as written before the option existed
    io.save_checkpoint(path, arrays, meta)
    assert Trainer.resume(tmp_path / "old", dataset=ds, log=quiet, epochs=2).config.d_warmup == 0
    assert config(tmp_path, preset="paper").d_warmup_updates == 0  # the paper's SGD: no warm-up
    for bad in (-1, 2.5, "8", True):
        with pytest.raises(ConfigError, match="d_warmup must be"):
            config(tmp_path, d_warmup=bad)


def test_modern_cgan_clips_ds_adam_steps_and_an_unclipped_checkpoint_resumes_unclipped(tmp_path, numpy_backend):
    """The modern CGAN on MNIST clips D's Adam steps by default (StableAdamW, c = 1), G's not, and warms D's rate
    up over 500 updates; the checkpoint says so; a checkpoint saved without the clip (before it existed) continues
    exactly as an unclipped run; bad values are refused."""
    ds = tiny_dataset(8)
    t = Trainer(config(tmp_path, "clipped", epochs=1), dataset=ds, log=quiet)
    assert (t.optimizers["G"].update_clip, t.optimizers["D"].update_clip) == (None, 1.0)
    t.run()
    _, meta = io.load_checkpoint(tmp_path / "clipped" / CHECKPOINT_NAME)
    assert meta["optim"]["D"]["update_clip"] == 1.0 and "update_clip" not in meta["optim"]["G"]
    assert (meta["config"]["d_update_clip"], meta["config"]["d_warmup"]) == (1.0, 500)
    assert Trainer(config(tmp_path, "c2", d_update_clip=2.5), dataset=ds, log=quiet).optimizers["D"].update_clip == 2.5
    for unclipped in ({"model": "dcgan"}, {"dataset": "fashion-mnist"}):  # no seed benchmark with either there
        assert (config(tmp_path, **unclipped).d_clip, config(tmp_path, **unclipped).d_warmup_updates) == (0.0, 0)
    assert Trainer(config(tmp_path, "dc", model="dcgan"), log=quiet,
                   dataset=tiny_dataset(8)).optimizers["D"].update_clip is None

    straight = Trainer(config(tmp_path, "straight", d_update_clip=0), dataset=ds, log=quiet)
    straight.run()
    Trainer(config(tmp_path, "old", epochs=1, d_update_clip=0), dataset=ds, log=quiet).run()
    path = tmp_path / "old" / CHECKPOINT_NAME
    arrays, meta = io.load_checkpoint(path)
    assert all("update_clip" not in meta["optim"][net] for net in ("G", "D"))
    del meta["config"]["d_update_clip"]  # as written before the option existed: resumes unclipped, not as the preset
    io.save_checkpoint(path, arrays, meta)
    resumed = Trainer.resume(tmp_path / "old", dataset=ds, log=quiet, epochs=2)
    assert [opt.update_clip for opt in resumed.optimizers.values()] == [None, None]
    assert resumed.config.d_update_clip == 0.0
    resumed.run()
    assert_same_params(straight, resumed)

    for off in (Trainer(config(tmp_path, "off", d_update_clip=0), dataset=ds, log=quiet),
                Trainer(config(tmp_path, "plain", model="gan"), dataset=ds, log=quiet)):
        assert [opt.update_clip for opt in off.optimizers.values()] == [None, None]
        assert off.config.d_update_clip == 0.0
    for bad in (-1, float("inf"), "1", True):
        with pytest.raises(ConfigError, match="d_update_clip must be"):
            config(tmp_path, d_update_clip=bad)
    with pytest.raises(ConfigError, match="SGD"):
        config(tmp_path, preset="paper", d_update_clip=1.0)
    arrays, meta = io.load_checkpoint(path)
    with pytest.raises(ConfigError, match="d_update_clip=1.0"):  # the old run trained without the clip
        Trainer.resume(tmp_path / "old", dataset=ds, log=quiet, epochs=3, d_update_clip=1.0)

    meta["optim"]["D"]["update_clip"] = -1.0
    io.save_checkpoint(path, arrays, meta)
    with pytest.raises(io.CheckpointError, match="update_clip"):
        Trainer.resume(tmp_path / "old", dataset=ds, log=quiet, epochs=3)


@pytest.mark.parametrize("update", ["alternating", "simultaneous"])
def test_the_cgans_matching_aware_step_every_n_updates(tmp_path, numpy_backend, update):
    """The MLP CGAN's second D step on updates 0, 3, ... only with --matching-aware-every 3, under either update rule
    (the one-pass update takes it after both optimizer steps)."""
    t = Trainer(config(tmp_path, steps=7, epochs=None, update=update, matching_aware_every=3),
                dataset=tiny_dataset(40), log=quiet)
    assert t.run(handle_signals=False).updates == 7
    assert t.opt_G.steps == 7 and t.opt_D.steps == 7 + 3  # updates 0, 3 and 6


@pytest.mark.parametrize("update", ["alternating", "simultaneous"])
def test_the_cgans_matching_aware_step_in_the_first_epoch_only(tmp_path, numpy_backend, update):
    """The MLP CGAN's second D step in the first epoch only with --matching-aware-epochs 1, under either update
    rule."""
    t = Trainer(config(tmp_path, epochs=2, update=update, matching_aware_epochs=1), dataset=tiny_dataset(40),
                log=quiet)
    assert t.run(handle_signals=False).updates == 2 * t.steps_per_epoch
    assert t.opt_G.steps == 2 * t.steps_per_epoch and t.opt_D.steps == 2 * t.steps_per_epoch + t.steps_per_epoch
