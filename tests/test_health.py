"""The training-health monitor (minigan.health) and its wiring into the trainer and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import tiny_dataset, write_idx_dir
from minigan import cli, health, io
from minigan.config import ConfigError, TrainConfig
from minigan.runs import CHECKPOINT_NAME
from minigan.train import Trainer, TrainingCollapsed

# --------------------------------------------------------------------------------------------------
# The measures, on grids whose answer is known by construction
# --------------------------------------------------------------------------------------------------


def grid_from(f, rows=10, cols=10, d=12):
    """A (rows*cols, d) grid whose image at (row r, column c) is f(r, c) (row-major, like the trainer's)."""
    return np.array([f(r, c) for r in range(rows) for c in range(cols)], dtype=np.float64)


def test_label_share_is_zero_when_rows_repeat_and_one_when_columns_repeat():
    rng = np.random.default_rng(0)
    by_column = rng.random((10, 12))
    by_row = rng.random((10, 12))
    assert health.label_share(grid_from(lambda r, c: by_column[c])) == pytest.approx(0.0, abs=1e-15)  # ignores y
    assert health.label_share(grid_from(lambda r, c: by_row[r])) == pytest.approx(1.0)  # G ignores z exactly
    # Half of each image from the row, half from the column: the label share is the row part's share.
    both = grid_from(lambda r, c: np.concatenate([by_row[r][:6], by_column[c][6:]]))
    row_var = by_row[:, :6].var(axis=0).sum()
    col_var = by_column[:, 6:].var(axis=0).sum()
    assert health.label_share(both) == pytest.approx(row_var / (row_var + col_var))


@given(st.integers(0, 2**32 - 1), st.floats(-3, 3), st.floats(0.1, 10))
def test_label_share_is_a_fraction_unchanged_by_brightness_and_contrast(seed, shift, scale):
    x = np.random.default_rng(seed).random((100, 12))
    s = health.label_share(x)
    assert 0.0 <= s <= 1.0 + 1e-12
    assert health.label_share(scale * x + shift) == pytest.approx(s, rel=1e-9)


def test_diversity_is_the_variance_across_noise():
    rng = np.random.default_rng(1)
    by_row = rng.random((10, 12))
    assert health.diversity(grid_from(lambda r, c: by_row[r])) == pytest.approx(0.0, abs=1e-15)  # collapsed
    x = rng.random((100, 12))
    expected = x.reshape(10, 10, 12).var(axis=1).mean()
    assert health.diversity(x) == pytest.approx(expected)
    assert health.diversity(x, conditional=False) == pytest.approx(x.var(axis=0).mean())


def test_real_diversity_is_within_class_variance():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(10), 30)
    centres = rng.random((10, 12))
    x = centres[y]                      # every class one image: no variation within a class
    assert health.real_diversity(x, y) == pytest.approx(0.0, abs=1e-15)
    assert health.real_diversity(x, None) > 0  # but plenty across classes


def test_grid_shape_is_checked():
    with pytest.raises(ValueError, match="100 grid images"):
        health.label_share(np.zeros((99, 4)))


# --------------------------------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------------------------------


def test_each_failure_is_found_and_explained():
    monitor = health.HealthMonitor(conditional=True, reference_diversity=0.1)
    healthy = monitor.findings(3, {"D_G_z": 0.3}, {"label_share": 0.4, "diversity": 0.6})
    assert healthy == []
    found = monitor.findings(3, {"D_G_z": 0.01}, {"label_share": 0.001, "diversity": 0.02})
    assert [f["kind"] for f in found] == ["d_won", "ignores_label", "mode_collapse"]
    for f in found:
        assert f["epoch"] == 3 and f["message"] and f["cause"] and f["advice"]
    assert found[0]["value"] == 0.01
    json.dumps(found)  # metrics.jsonl must be able to hold them


def test_collapse_is_not_judged_at_the_first_epoch():
    """A one-epoch-old G that varies little is not yet a collapse (healthy Fashion runs and the paper GAN did);
    D winning and a G that ignores its label are judged from epoch 1."""
    monitor = health.HealthMonitor(conditional=True, reference_diversity=0.1)
    low = {"label_share": 0.4, "diversity": 0.02}
    assert monitor.findings(1, {"D_G_z": 0.3}, low) == []
    assert [f["kind"] for f in monitor.findings(2, {"D_G_z": 0.3}, low)] == ["mode_collapse"]
    broken = monitor.findings(1, {"D_G_z": 0.01}, {"label_share": 0.001, "diversity": 0.0})
    assert [f["kind"] for f in broken] == ["d_won", "ignores_label"]
    eager = health.HealthMonitor(True, 0.1, health.Thresholds(collapse_from_epoch=1))
    assert [f["kind"] for f in eager.findings(1, {"D_G_z": 0.3}, low)] == ["mode_collapse"]


def test_unconditional_model_has_no_label_check():
    monitor = health.HealthMonitor(conditional=False, reference_diversity=0.1)
    measures = monitor.measure(np.random.default_rng(3).random((100, 12)))
    assert "label_share" not in measures
    assert measures["diversity"] > 0


def test_thresholds_are_what_the_findings_use():
    monitor = health.HealthMonitor(True, 0.1, health.Thresholds(d_won_below=0.5))
    assert [f["kind"] for f in monitor.findings(1, {"D_G_z": 0.4}, {})] == ["d_won"]


# --------------------------------------------------------------------------------------------------
# The trainer: measures in metrics.jsonl, warnings on the console, --stop-on-collapse
# --------------------------------------------------------------------------------------------------


def make_config(tmp_path, **kw):
    options = dict(model="cgan", preset="modern", batch=4, epochs=2, out=str(tmp_path / "run"), progress=False)
    options.update(kw)
    return TrainConfig(**options)


def records(tmp_path):
    return [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def test_every_epoch_records_the_measures(tmp_path, isolated_run_env):
    lines = []
    Trainer(make_config(tmp_path), dataset=tiny_dataset(), log=lines.append).run(handle_signals=False)
    recs = records(tmp_path)
    assert [r["epoch"] for r in recs] == [1, 2]
    for r in recs:
        assert 0 <= r["label_share"] <= 1 and r["diversity"] >= 0
        # A finding is in the record exactly when a warning was printed for that epoch.
        warned = [line for line in lines if line.startswith(f"health WARNING (epoch {r['epoch']})")]
        assert len(warned) == len(r.get("health", []))


def flag_from_epoch(monkeypatch, epoch):
    """Make the monitor find D won from ``epoch`` on, whatever the run does."""
    original = health.HealthMonitor.findings

    def findings(self, e, record, measures):
        forced = dict(record, D_G_z=0.0) if e >= epoch else dict(record, D_G_z=1.0)
        return original(self, e, forced, {})

    monkeypatch.setattr(health.HealthMonitor, "findings", findings)


def test_warning_only_by_default(tmp_path, isolated_run_env, monkeypatch):
    flag_from_epoch(monkeypatch, 1)
    lines = []
    result = Trainer(make_config(tmp_path), dataset=tiny_dataset(), log=lines.append).run(handle_signals=False)
    assert result.status == "done" and result.epoch == 2
    assert sum("health WARNING" in line and "D has won" in line for line in lines) == 2
    assert all("Likely cause" in line and "Try:" in line for line in lines if "health WARNING" in line)
    assert [f["kind"] for r in records(tmp_path) for f in r["health"]] == ["d_won", "d_won"]


def test_stop_on_collapse_keeps_the_last_good_checkpoint(tmp_path, isolated_run_env, monkeypatch):
    flag_from_epoch(monkeypatch, 2)
    cfg = make_config(tmp_path, epochs=4, stop_on_collapse=True)
    with pytest.raises(TrainingCollapsed, match="epoch 2.*d_won.*epoch 1") as info:
        Trainer(cfg, dataset=tiny_dataset(), log=lambda m: None).run(handle_signals=False)
    assert info.value.epoch == 2 and info.value.findings[0]["kind"] == "d_won"
    # The checkpoint is epoch 1's (the last without a finding); the failed epoch is in the log and the grid.
    resumed = Trainer.resume(tmp_path / "run", dataset=tiny_dataset(), log=lambda m: None)
    assert resumed.epoch == 1 and resumed.config.stop_on_collapse
    assert (tmp_path / "run" / "samples" / "epoch_002.png").exists()
    # Resuming (with the stop turned off: 20 random images do not make a healthy GAN) replays epoch 2 and keeps
    # one line per epoch in metrics.jsonl.
    resumed = Trainer.resume(tmp_path / "run", dataset=tiny_dataset(), log=lambda m: None, stop_on_collapse=False)
    resumed.run(handle_signals=False)
    assert [r["epoch"] for r in records(tmp_path)] == [1, 2, 3, 4]


def test_cli_exit_code_4_on_collapse(tmp_path, isolated_run_env, monkeypatch, capsys):
    idx = write_idx_dir(tmp_path / "idx", n_train=30)
    args = ["train", "--data", str(idx), "--batch", "4", "--epochs", "3", "--out", str(tmp_path / "run"),
            "--no-progress"]
    flag_from_epoch(monkeypatch, 2)
    assert cli.main(args + ["--stop-on-collapse"]) == cli.EXIT_COLLAPSED == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("minigan: error: training failed the health check at epoch 2")
    # Without the flag the same run warns and finishes.
    assert cli.main(args[:-3] + ["--out", str(tmp_path / "run2"), "--no-progress"]) == 0
    assert "health WARNING (epoch 2)" in capsys.readouterr().out


def test_learning_rate_overrides(tmp_path, isolated_run_env):
    t = Trainer(make_config(tmp_path, lr_G=1e-3, lr_D=5e-5), dataset=tiny_dataset(), log=lambda m: None)
    assert (t.opt_G.lr, t.opt_D.lr) == (1e-3, 5e-5)
    paper = Trainer(make_config(tmp_path, preset="paper", lr_D=0.01, out=str(tmp_path / "p")),
                    dataset=tiny_dataset(), log=lambda m: None)
    paper.run(handle_signals=False)
    rec = json.loads((tmp_path / "p" / "metrics.jsonl").read_text().splitlines()[-1])
    # The paper schedule decays each network's own rate, 0.1 and 0.01, by 1.00004 per update before the last.
    assert rec["lr"] == pytest.approx(0.1 / 1.00004 ** (rec["updates"] - 1))
    assert rec["lr_D"] == pytest.approx(0.01 / 1.00004 ** (rec["updates"] - 1))


def test_learning_rate_decay_override(tmp_path, isolated_run_env):
    """--lr-decay replaces the paper schedule's divisor (the original GAN code's 1.000004 for the CGAN), and is
    part of the run: a resume with another divisor is refused, one with the divisor it ran with is not."""
    out = tmp_path / "d"
    Trainer(make_config(tmp_path, preset="paper", lr_decay=1.01, out=str(out)), dataset=tiny_dataset(),
            log=lambda m: None).run(handle_signals=False)
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["updates"] > 1
    assert rec["lr"] == pytest.approx(0.1 / 1.01 ** (rec["updates"] - 1))  # not 1.00004's 0.1 * (1 - 4e-5 ...)
    with pytest.raises(ConfigError, match="lr_decay=1.00004"):
        Trainer.resume(out, dataset=tiny_dataset(), log=lambda m: None, lr_decay=1.00004)
    assert Trainer.resume(out, dataset=tiny_dataset(), log=lambda m: None, lr_decay=1.01).config.lr_divisor == 1.01
    # A run without the option has the preset's divisor, so naming that same divisor on resume is accepted.
    plain = tmp_path / "plain"
    Trainer(make_config(tmp_path, preset="paper", out=str(plain)), dataset=tiny_dataset(),
            log=lambda m: None).run(handle_signals=False)
    assert Trainer.resume(plain, dataset=tiny_dataset(), log=lambda m: None, lr_decay=1.00004).config.lr_divisor \
        == 1.00004
    for bad in (0.5, float("inf"), "1.1", True):
        with pytest.raises(ConfigError, match="lr_decay must be"):
            make_config(tmp_path, preset="paper", lr_decay=bad)
    modern = tmp_path / "modern"
    Trainer(make_config(tmp_path, out=str(modern), epochs=1), dataset=tiny_dataset(),
            log=lambda m: None).run(handle_signals=False)
    with pytest.raises(ConfigError, match="lr_decay=1.00004"):  # a run made with constant rates keeps them
        Trainer.resume(modern, dataset=tiny_dataset(), log=lambda m: None, lr_decay=1.00004)


def test_learning_rate_decay_under_adam(tmp_path, isolated_run_env):
    """--lr-decay under ``modern`` decays each Adam rate from the preset's, and a resumed run continues the
    schedule exactly: interrupted at update 7 and resumed, it ends bit-identical to the run made in one go."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    cfg = dict(lr_decay=1.05, lr_G=0.002, lr_D=0.004, steps=12, d_warmup=0)  # the decay alone (no warm-up)
    Trainer(make_config(tmp_path, out=str(whole), **cfg), dataset=tiny_dataset(),
            log=lambda m: None).run(handle_signals=False)
    rec = json.loads((whole / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["lr"] == pytest.approx(0.002 / 1.05 ** (rec["updates"] - 1))
    assert rec["lr_D"] == pytest.approx(0.004 / 1.05 ** (rec["updates"] - 1))
    assert "momentum" not in rec  # Adam has no momentum schedule
    Trainer(make_config(tmp_path, out=str(split), **dict(cfg, steps=7)), dataset=tiny_dataset(),
            log=lambda m: None).run(handle_signals=False)
    Trainer.resume(split, dataset=tiny_dataset(), log=lambda m: None, steps=12).run(handle_signals=False)
    a, b = (io.load_checkpoint(d / "checkpoint.npz")[0] for d in (whole, split))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_modern_cgan_decays_its_rates_and_runs_record_the_schedule(tmp_path, isolated_run_env):
    """The modern preset divides the CGAN's rates by 1.00015 per update and writes the divisor into the checkpoint
    (1.0 for a model whose rates stay constant), so a later change of the preset cannot change a run on resume."""
    cgan, gan = tmp_path / "cgan", tmp_path / "gan"
    Trainer(make_config(tmp_path, out=str(cgan), steps=6, epochs=None), dataset=tiny_dataset(),
            log=lambda m: None).run(handle_signals=False)
    Trainer(make_config(tmp_path, model="gan", out=str(gan), steps=6, epochs=None), dataset=tiny_dataset(),
            log=lambda m: None).run(handle_signals=False)
    assert io.load_checkpoint(cgan / CHECKPOINT_NAME)[1]["config"]["lr_decay"] == 1.00015
    assert io.load_checkpoint(gan / CHECKPOINT_NAME)[1]["config"]["lr_decay"] == 1.0
    rec = json.loads((cgan / "metrics.jsonl").read_text().splitlines()[-1])
    t = rec["updates"] - 1  # the rates were set before the last update
    lr_G, lr_D = 2e-3 / 1.00015 ** t, 4e-3 / 1.00015 ** t
    assert rec["lr"] == pytest.approx(lr_G)
    assert rec["lr_D"] == pytest.approx(lr_G + (t + 1) / 500 * (lr_D - lr_G))  # D's rate warms up from G's
    assert io.load_checkpoint(cgan / CHECKPOINT_NAME)[1]["config"]["d_warmup"] == 500
    rec = json.loads((gan / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["lr"] == 2e-4 and rec["lr_D"] == 2e-4


@pytest.mark.parametrize("preset, resolved", [("modern", 1.0), ("paper", 1.00004)])
def test_a_checkpoint_from_before_the_recorded_schedule_resumes_as_it_trained(tmp_path, isolated_run_env, preset,
                                                                               resolved):
    """A checkpoint without the divisor (written before runs recorded it) trained with its preset's schedule of
    that time: the modern preset's constant rates, the paper preset's decay. It resumes with exactly that."""
    run = tmp_path / "old"  # trained as then (modern: constant rates), then its record of the divisor removed
    Trainer(make_config(tmp_path, preset=preset, out=str(run), steps=3, epochs=None, lr_decay=resolved),
            dataset=tiny_dataset(), log=lambda m: None).run(handle_signals=False)
    arrays, meta = io.load_checkpoint(run / CHECKPOINT_NAME)
    meta["config"]["lr_decay"] = None
    io.save_checkpoint(run / CHECKPOINT_NAME, arrays, meta)
    resumed = Trainer.resume(run, dataset=tiny_dataset(), log=lambda m: None, steps=6)
    assert resumed.config.lr_decay == resolved
    # The same when the checkpoint is handed to the constructor with a config that names no divisor.
    direct = Trainer(make_config(tmp_path, preset=preset, out=str(run), steps=6, epochs=None),
                     dataset=tiny_dataset(), log=lambda m: None, checkpoint=(arrays, meta))
    assert direct.config.lr_decay == resolved
    with pytest.raises(ConfigError, match="lr_decay=1.5"):
        Trainer.resume(run, dataset=tiny_dataset(), log=lambda m: None, lr_decay=1.5)
    resumed.run(handle_signals=False)
    first_lr = {"modern": 2e-3, "paper": 0.1}[preset]
    assert resumed.updates == 6
    assert resumed.optimizers["G"].lr == pytest.approx(first_lr / resolved ** 5)  # set before the 6th update


def test_speckle_does_not_count_as_diversity():
    # One digit-like blob for every z, each under its own salt-and-pepper speckle (a saturated G): per pixel it
    # varies as much as real digits, but averaged over 4x4 blocks it is the same image every time.
    rng = np.random.default_rng(4)
    blob = np.zeros((28, 28))
    blob[6:22, 10:18] = 0.5
    speckled = np.array([(rng.random((28, 28)) < blob).astype(float).ravel() for _ in range(100)])
    per_pixel = speckled.reshape(10, 10, -1).var(axis=1).mean()
    assert per_pixel > 0.03
    assert health.diversity(speckled) < 0.1 * per_pixel
    # Real variation survives the pooling: shifted blobs differ block by block.
    shifted = np.array([np.roll(blob, s, axis=1).ravel() for s in range(-5, 5)] * 10)
    assert health.diversity(shifted, conditional=False) > 0.005
    assert health.pooled(np.zeros((3, 784))).shape == (3, 49)
    assert health.pooled(np.zeros((3, 10))).shape == (3, 10)


def test_extreme_verdicts_flag_the_broken_runs_and_none_of_the_healthy_ones():
    """d_extreme: G's non-saturating loss far above -log mean D(G(z)). Judged against the committed seed benchmark:
    no healthy run's last epoch comes near the threshold; the runs with D's rate x10 (which the clip and warm-up
    keep from winning outright) are flagged."""
    seeds_dir = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "seeds"
    monitor = health.HealthMonitor(True, 0.1, non_saturating=True)
    benchmarks = ("modern-clip-warmup-5ep-seeds90-109.json", "modern-clip-warmup-5ep-seeds90-99-1thread.json")
    healthy = [row for name in benchmarks for row in json.loads((seeds_dir / name).read_text())["rows"]]
    assert len(healthy) == 30
    for row in healthy:
        assert monitor.findings(5, {"D_G_z": row["D_G_z"], "loss_G": row["loss_G"]}, {}) == []
    broken = json.loads((seeds_dir / "broken-clip-warmup-lrD4e-2-2ep-seeds40-42-1thread.json").read_text())["rows"]
    for row in broken:
        found = monitor.findings(2, {"D_G_z": row["D_G_z"], "loss_G": row["loss_G"]}, {})
        assert [f["kind"] for f in found] == ["d_extreme"] and found[0]["value"] > 5
        assert "learning rate" in found[0]["cause"]
    record = {"D_G_z": 0.27, "loss_G": 15.5}  # seed 40's first epoch
    assert [f["kind"] for f in monitor.findings(1, record, {})] == ["d_extreme"]
    assert health.HealthMonitor(True, 0.1).findings(1, record, {}) == []  # minimax's loss_G means something else
    assert monitor.findings(1, {"D_G_z": 0.27, "loss_G": 1.4}, {}) == []
