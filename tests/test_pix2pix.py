"""pix2pix (issue 13): networks, objective gradients, paired data, resume, translate, a learning smoke test.

Everything runs on small generated data: A|B PNG folders written here, and tiny synthetic MNIST-like splits.
"""

import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigan import backend, io, paired
from minigan.cli import main
from minigan.config import ConfigError, TrainConfig
from minigan.data import DataError, Dataset, Split
from minigan.families.pix2pix import generator_step, patchgan, pix2pix, receptive_field, unet, unet_depth
from minigan.gradcheck import pix2pix_checks
from minigan.nn.losses import l1_loss
from minigan.train import Trainer, TrainingDiverged


def quiet(_msg):
    pass


def write_pair_folder(root: Path, size=(8, 8), n=(8, 3, 2), colour=True, seed=0) -> Path:
    """train/ val/ test/ of A|B PNGs: B is A mirrored top-bottom and inverted (a learnable map)."""
    rng = np.random.default_rng(seed)
    h, w = size
    for split, count in zip(("train", "val", "test"), n):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            a = rng.integers(0, 256, (h, w, 3) if colour else (h, w), dtype=np.uint8)
            b = 255 - a[::-1]
            io.write_png(root / split / f"{i:03d}.png", np.concatenate([a, b], axis=1))
    return root


@pytest.fixture
def folder(tmp_path):
    return write_pair_folder(tmp_path / "pairs")


def tiny_config(tmp_path, name="run", **kw):
    options = {"width": 2, **kw.pop("model_options", {})}
    defaults = dict(model="pix2pix", dataset=str(tmp_path / "pairs"), batch=2, seed=0, out=str(tmp_path / name),
                    progress=False, log_interval=2, model_options=options)
    return TrainConfig(**{**defaults, **kw})


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------


@settings(max_examples=8)
@given(h_exp=st.integers(2, 5), w_exp=st.integers(2, 5), odd=st.sampled_from([1, 3]),
       channels=st.sampled_from([(1, 1), (3, 1), (1, 3)]))
def test_unet_and_patchgan_shapes(on_backend, h_exp, w_exp, odd, channels):
    h, w = odd * 2 ** h_exp, 2 ** w_exp
    c_in, c_out = channels
    depth = unet_depth(h, w)
    assert depth == min(h_exp, w_exp)
    G = unet(c_in, c_out, depth, width=2, seed=0)
    a = backend.to_device(np.random.default_rng(0).uniform(-1, 1, (2, c_in, h, w)).astype(np.float32))
    y = G.forward(a, train=True)
    assert y.shape == (2, c_out, h, w)
    assert float(backend.to_host(abs(y).max())) <= 1.0  # Tanh
    if min(h, w) >= 8:
        D = patchgan(c_in + c_out, width=2, n_layers=1)
        logits = D.forward((y, a), train=True)
        assert logits.shape == (2 * (h // 2 - 2) * (w // 2 - 2), 1)  # 14x14 patches at 32 px


def test_depth_follows_the_image_size():
    assert [unet_depth(s, s) for s in (4, 28, 32, 256, 512)] == [2, 2, 5, 8, 8]
    with pytest.raises(ValueError, match="divisible by 4"):
        unet_depth(30, 32)


def test_receptive_fields_and_summary():
    assert [receptive_field(patchgan(2, 2, n)) for n in (1, 2, 3)] == [16, 34, 70]  # 70 is the paper's
    m = pix2pix(0, width=2)
    text = m.summary()
    assert "receptive field 16x16 px" in text and "14x14 patches" in text and "5 levels" in text


def test_dropout_in_the_inner_decoder_blocks_only():
    G = pix2pix(0, width=2).G  # 32 px: 5 levels, dropout in the 3 innermost decoders
    paths = [layer.path for layer in G.walk() if type(layer).__name__ == "Dropout"]
    assert sorted(paths) == ["G.level1.inner.inner.inner.up.dropout", "G.level1.inner.inner.up.dropout",
                             "G.level1.inner.up.dropout"]  # levels 4, 3, 2 of 0..4
    with pytest.raises(ValueError, match="norm"):
        pix2pix(0, norm="group")
    with pytest.raises(ValueError, match="objective"):
        pix2pix(0, objective="l2")


# --------------------------------------------------------------------------------------------------
# Objective
# --------------------------------------------------------------------------------------------------


def test_l1_loss_value_and_gradient(on_backend):
    x = backend.to_device(np.array([[1.0, -2.0], [0.5, 3.0]]))
    t = backend.to_device(np.array([[0.0, 0.0], [0.5, 4.0]]))
    loss, dx = l1_loss(x, t)
    assert float(backend.to_host(loss)) == pytest.approx((1 + 2 + 0 + 1) / 4)
    np.testing.assert_array_equal(backend.to_host(dx), [[0.25, -0.25], [0.0, -0.25]])
    with pytest.raises(ValueError, match="same shape"):
        l1_loss(x, t[:1])


def test_whole_objective_is_exact(on_backend):
    reports = pix2pix_checks(n_samples=4)
    assert len(reports) == 4 and all(r.passed for r in reports), "\n".join(r.table() for r in reports)
    assert max(r.max_rel_error for r in reports) <= 1e-7


@pytest.mark.parametrize("objective", ["l1", "gan"])
def test_ablation_variants_are_exact(objective):
    reports = pix2pix_checks(n_samples=3, model_options={"objective": objective})
    assert all(r.passed for r in reports)


def test_objective_variants_drop_their_term():
    m = pix2pix(0, width=2, image_height=8, image_width=8, dropout_levels=0)
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(-1, 1, (2, 1, 8, 8)).astype(np.float32) for _ in range(2))
    both = float(generator_step(m.G, m.D, a, b, "l1+gan", 100.0, train=False, backward=False)[0])
    l1 = float(generator_step(m.G, m.D, a, b, "l1", 100.0, train=False, backward=False)[0])
    gan = float(generator_step(m.G, m.D, a, b, "gan", 100.0, train=False, backward=False)[0])
    assert both == pytest.approx(l1 + gan, rel=1e-5)
    assert l1 == pytest.approx(100 * float(np.abs(m.G.forward(a, train=False) - b).mean()), rel=1e-5)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def test_folder_loader_splits_pairs_by_direction(folder):
    ds = paired.load_folder(folder)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (8, 3, 2)
    assert ds.train.a.shape == (8, 3, 8, 8) and ds.train.a.dtype == np.float32
    np.testing.assert_allclose(ds.train.b, 1 - ds.train.a[:, :, ::-1], atol=1e-6)
    back = paired.load_folder(folder, direction="BtoA")
    np.testing.assert_array_equal(back.train.a, ds.train.b)
    assert ds.train.names[0] == "000.png"
    resized = paired.load_folder(folder, load_size=12, crop_size=8)
    assert resized.train.a.shape[2:] == (12, 12) and resized.valid.a.shape[2:] == (8, 8)


def test_grey_and_colour_files_mix_into_rgb(tmp_path):
    root = write_pair_folder(tmp_path / "mix", colour=True, n=(2, 0, 0))
    io.write_png(root / "train" / "grey.png", np.zeros((8, 16), np.uint8))
    ds = paired.load_folder(root)
    assert ds.train.a.shape == (3, 3, 8, 8) and len(ds.valid) == 0


@pytest.mark.parametrize("problem,match", [
    ("missing", "no such folder"), ("no_train", "no train/"), ("empty", "no PNG or JPEG"), ("odd", "is odd"),
    ("sizes", "same size"), ("corrupt", r"b\.png: .*(CRC|chunk|PNG|truncated)"), ("jpeg", "Pillow|JPEG"),
])
def test_folder_loader_bad_inputs(tmp_path, problem, match):
    root = tmp_path / "bad"
    if problem != "missing":
        (root / ("val" if problem == "no_train" else "train")).mkdir(parents=True)
    train = root / "train"
    if problem in ("odd", "sizes", "corrupt", "jpeg"):
        io.write_png(train / "a.png", np.zeros((8, 16), np.uint8))
    if problem == "odd":
        io.write_png(train / "b.png", np.zeros((8, 15), np.uint8))
    elif problem == "sizes":
        io.write_png(train / "b.png", np.zeros((8, 20), np.uint8))
    elif problem == "corrupt":
        blob = bytearray((train / "a.png").read_bytes())
        blob[40] ^= 0xFF
        (train / "b.png").write_bytes(bytes(blob))
    elif problem == "jpeg":
        (train / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=match):
        paired.load_folder(root)


def test_missing_pillow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now fails, as without the extra
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(DataError, match=r"minigan\[images\]"):
        paired.read_image(tmp_path / "x.jpg")


def test_jpeg_pairs_load_and_translate(tmp_path):
    """A folder of real JPEG A|B files (written by Pillow, the optional reader) trains and translates like PNGs:
    grey and colour files, the halves split by direction, pixels within JPEG's loss of the originals."""
    Image = pytest.importorskip("PIL.Image", reason="Pillow (in the test extra) reads JPEG pix2pix folders")
    rng = np.random.default_rng(3)
    root = tmp_path / "jpegs"
    (root / "train").mkdir(parents=True)
    smooth = np.kron(rng.integers(0, 256, (2, 4)), np.ones((8, 8))).astype(np.uint8)  # 16x32: JPEG keeps it
    for i in range(4):
        image = np.roll(smooth, 8 * i, axis=1)
        Image.fromarray(image, mode="L").save(root / "train" / f"{i}.jpg", quality=95)
    Image.fromarray(np.stack([smooth] * 3, axis=-1), mode="RGB").save(root / "train" / "rgb.jpeg", quality=95)
    ds = paired.load_folder(root)
    assert ds.train.a.shape == (5, 3, 16, 16)  # one colour file makes every pair RGB
    first = paired.read_image(root / "train" / "0.jpg")
    assert first.shape == (16, 32) and first.dtype == np.uint8
    assert np.abs(first.astype(int) - smooth).max() <= 8  # lossy, but the blocks survive
    a, b = paired.split_pair(first, "BtoA")
    np.testing.assert_array_equal(a[0], first[:, 16:])
    np.testing.assert_array_equal(b[0], first[:, :16])
    run = tmp_path / "run"
    assert main(["train", "--model", "pix2pix", "--dataset", str(root), "--batch", "2", "--steps", "2",
                 "--option", "width=2", "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "translated"
    assert main(["translate", str(run), str(root / "train" / "0.jpg"), "--paired", "--out", str(out)]) == 0
    written = io.read_png(out / "0.png")
    assert written.shape[:2] == (16, 16)


def _fake_split(n, seed):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), np.float32)
    x[:, 8:20, 10:18] = rng.uniform(0.5, 1.0, (n, 1, 1))  # a bright rectangle
    return Split(x.reshape(n, 784), rng.integers(0, 10, n).astype(np.int64))


def test_builtin_tasks_are_deterministic_and_padded():
    split = _fake_split(3, 0)
    edges = paired.fashion_edges(split)
    assert edges.a.shape == edges.b.shape == (3, 1, 32, 32)
    assert set(np.unique(edges.a)) <= {0.0, 1.0}
    assert edges.a[0, 0, 10:22, 12:20].sum() > 0 and edges.a[0, 0, 14:18, 15:17].sum() == 0  # outline, not inside
    np.testing.assert_array_equal(paired.fashion_edges(split).a, edges.a)
    inpaint = paired.mnist_inpaint(split)
    assert (inpaint.a[:, :, 16:] == 0.5).all()
    np.testing.assert_array_equal(inpaint.a[:, :, :16], inpaint.b[:, :, :16])
    np.testing.assert_array_equal(inpaint.y, split.y)


def test_dataset_names_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="paired images"):
        TrainConfig(model="pix2pix", dataset="mnist")
    with pytest.raises(ConfigError, match="unknown dataset"):
        TrainConfig(model="cgan", dataset="fashion-edges")
    with pytest.raises(ConfigError, match="select-every"):
        TrainConfig(model="pix2pix", dataset="fashion-edges", select_every=1)


# --------------------------------------------------------------------------------------------------
# Training, resume, signals, NaN
# --------------------------------------------------------------------------------------------------


def _weights(trainer):
    return {f"{net}.{k}": backend.to_host(p).copy() for net, layer in trainer.networks.items()
            for k, p in layer.params.items()}


@pytest.mark.parametrize("options", [{"crop_size": 8, "flip": True}, {"norm": "instance", "load_size": 8}],
                         ids=["crop-flip", "instance-resize"])
def test_resume_is_bit_identical(on_backend, tmp_path, options):
    write_pair_folder(tmp_path / "pairs", size=(12, 12))  # 12 px pairs: random 8 px crops, or resized to 8 px
    straight = Trainer(tiny_config(tmp_path, "straight", epochs=2, model_options=options), log=quiet)
    straight.run(handle_signals=False)

    def stop_mid_epoch(t):
        if t.updates == 5:  # epoch 2, step 1 of 4
            t.request_stop(signal.SIGINT)

    first = Trainer(tiny_config(tmp_path, "split", epochs=2, model_options=options), log=quiet)
    assert first.run(handle_signals=False, on_step=stop_mid_epoch).status == "interrupted"
    second = Trainer.resume(tmp_path / "split", log=quiet)
    second.run(handle_signals=False)
    a, b = _weights(straight), _weights(second)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert (tmp_path / "straight" / "samples" / "epoch_002.png").exists()  # the uninterrupted run's grids


def test_nan_is_detected(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGAN_INJECT_NAN_AT_STEP", "3")
    with pytest.raises(TrainingDiverged, match="update 3"):
        Trainer(tiny_config(tmp_path, epochs=2), log=quiet).run(handle_signals=False)


def test_l1_objective_logs_no_discriminator(folder, tmp_path):
    t = Trainer(tiny_config(tmp_path, steps=2, model_options={"objective": "l1"}), log=quiet)
    assert t.family.metric_names == ("loss_G", "loss_L1")
    t.run(handle_signals=False)


def test_learns_a_simple_map(tmp_path):
    """L1 + cGAN at width 4 learns "invert the image" on 8x8 binary pairs: the L1 error falls well below half-way."""
    rng = np.random.default_rng(1)
    a = (rng.random((64, 1, 8, 8)) > 0.5).astype(np.float32)
    split = paired.PairedSplit(a, 1 - a, np.full(64, -1, np.int64))
    ds = Dataset("invert", split, split, split, "synthetic")
    config = TrainConfig(model="pix2pix", dataset="fashion-edges", batch=8, steps=150, out=str(tmp_path / "r"),
                         progress=False, log_interval=8, lr_G=2e-3, model_options={"width": 4})
    t = Trainer(config, dataset=ds, log=quiet)
    before = float(np.abs(backend.to_host(t.model.translate(split.a[:16])) - split.b[:16]).mean())
    t.run(handle_signals=False)
    after = float(np.abs(backend.to_host(t.model.translate(split.a[:16])) - split.b[:16]).mean())
    assert after < 0.6 * before, (before, after)  # measured: 0.50 -> 0.22


# --------------------------------------------------------------------------------------------------
# Command line: train on a folder, translate, errors
# --------------------------------------------------------------------------------------------------


def test_train_and_translate_end_to_end(folder, tmp_path, capsys, isolated_run_env):
    run = tmp_path / "run"
    assert main(["train", "--model", "pix2pix", "--dataset", str(folder), "--batch", "4", "--epochs", "1",
                 "--option", "width=2", "--option", "norm=instance", "--out", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "receptive field 16x16 px" in out
    grid = io.read_png(run / "samples" / "epoch_001.png")
    assert grid.ndim == 3 and grid.shape[2] == 3  # RGB triplets
    # A|B files: the input side; and plain images of other sizes, a grey one included.
    assert main(["translate", str(run), str(folder / "test"), "--paired", "--out", str(tmp_path / "t1")]) == 0
    assert sorted(p.name for p in (tmp_path / "t1").iterdir()) == ["000.png", "001.png"]
    assert io.read_png(tmp_path / "t1" / "000.png").shape == (8, 8, 3)
    plain = tmp_path / "plain"
    plain.mkdir()
    io.write_png(plain / "odd size.png", np.zeros((13, 21, 3), np.uint8))
    io.write_png(plain / "grey.png", np.zeros((16, 8), np.uint8))
    assert main(["translate", str(run), str(plain / "odd size.png"), str(plain / "grey.png"),
                 "--out", str(tmp_path / "t2")]) == 0
    assert io.read_png(tmp_path / "t2" / "odd size.png").shape == (13, 21, 3)
    assert io.read_png(tmp_path / "t2" / "grey.png").shape == (16, 8, 3)
    capsys.readouterr()
    for argv, match in [
        (["translate", str(run), str(tmp_path / "nothing.png"), "--out", str(tmp_path / "t3")], "no such image"),
        (["sample", str(run), "--out", str(tmp_path / "s.png")], "minigan translate"),
        (["train", "--model", "pix2pix", "--dataset", "mnist", "--out", str(tmp_path / "x")], "paired images"),
        (["train", "--model", "pix2pix", "--dataset", str(tmp_path / "absent"), "--out", str(tmp_path / "y")],
         "no such folder"),
        (["train", "--out", str(run), "--resume", "--option", "norm=batch"], "model_options"),
        (["train", "--model", "pix2pix", "--dataset", str(folder), "--option", "norm=group", "--batch", "4",
          "--out", str(tmp_path / "z")], "norm must be"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, (argv, err)


def test_ablation_and_ceiling_scripts_parse_their_subsets():
    import argparse

    from helpers import load_benchmark

    ablation, ceiling = load_benchmark("pix2pix_ablation"), load_benchmark("inpaint_ceiling")
    assert ablation._objectives("l1+gan, l1") == ("l1", "l1+gan")  # the paper's order, whatever was typed
    assert ablation._objectives("gan") == ("gan",)
    for bad in ("l2", "", "l1,cgan"):
        with pytest.raises(argparse.ArgumentTypeError, match="objectives must be among"):
            ablation._objectives(bad)
    assert ceiling._widths("32,64") == (32, 64) and ceiling._widths("") == ()
    for bad in ("32,x", "0,8"):
        with pytest.raises(argparse.ArgumentTypeError):
            ceiling._widths(bad)
