"""Tests for the ``minigan`` command line: an end-to-end smoke run, signals, and every error path.

Data are small IDX files written into ``tmp_path`` and passed with ``--data``: no network, no real data.
Subprocesses run with one BLAS thread, which is faster for these tiny matrices on a busy machine.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minigan import backend, io, runs
from minigan.cli import main

from helpers import write_idx_dir

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, env_extra=None, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1", MINIGAN_DATA="/nonexistent-cache")
    env.pop("MINIGAN_INJECT_NAN_AT_STEP", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "minigan", *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=120, **kw)


@pytest.fixture
def idx(tmp_path):
    return write_idx_dir(tmp_path / "idx")


pytestmark = pytest.mark.usefixtures("isolated_run_env")


def assert_usage_error(code, capsys_or_stderr, match=None):
    err = capsys_or_stderr if isinstance(capsys_or_stderr, str) else capsys_or_stderr.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("minigan: error: ")
    assert "Traceback" not in err
    if match:
        assert match in lines[0], lines[0]


# --------------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------------


def test_smoke_train_then_sample(tmp_path, idx):
    run = tmp_path / "run"
    r = run_cli("train", "--model", "cgan", "--dataset", "mnist", "--preset", "modern", "--steps", "3",
                "--batch", "4", "--data", str(idx), "--out", str(run))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert (run / "checkpoint.npz").exists()
    assert (run / "samples" / "step_000003.png").exists()

    r = run_cli("sample", str(run), "--n", "20", "--label", "3", "--out", str(tmp_path / "x.npz"))
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "x.npz") as f:
        x, y = f["x"], f["y"]
    assert x.shape == (20, 784) and x.dtype == np.float32
    assert y.shape == (20,) and y.dtype == np.int64 and (y == 3).all()
    assert x.min() >= 0.0 and x.max() <= 1.0

    r = run_cli("sample", str(run), "--n", "20", "--out", str(tmp_path / "x.png"))
    assert r.returncode == 0, r.stderr
    assert io.read_png(tmp_path / "x.png").shape == (2 + 2 * 30, 2 + 10 * 30)


def test_help_for_each_verb(capsys):
    for verb in ("train", "sample", "gradcheck", "eval", "train-classifier"):
        assert main([verb, "--help"]) == 0
        out = capsys.readouterr().out
        assert "usage: minigan " + verb in out
        # Options resolved later (preset, checkpoint) say their real default in words, never "None".
        assert "(default: None)" not in " ".join(out.split())
        assert out.count("(default:") <= out.count("--")
    assert main(["--help"]) == 0


def test_real_sigint_writes_a_checkpoint_and_exits_130(tmp_path, idx):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("MINIGAN_INJECT_NAN_AT_STEP", None)
    log_out, log_err = tmp_path / "out.log", tmp_path / "err.log"
    with open(log_out, "wb") as fo, open(log_err, "wb") as fe:  # files, not pipes: nothing blocks on a read
        proc = subprocess.Popen([sys.executable, "-m", "minigan", "train", "--data", str(idx), "--batch", "4",
                                 "--epochs", "1000", "--out", str(run), "--no-progress"],
                                stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, env=env)
    try:
        # Wait for the first epoch line: the loop is running and handlers are installed. The deadline is checked
        # on every poll, so a child that prints nothing fails the test instead of hanging it.
        deadline = time.monotonic() + 120
        while "\nepoch " not in log_out.read_text():
            assert proc.poll() is None, log_err.read_text()
            assert time.monotonic() < deadline, "no epoch line after 120 s: " + log_err.read_text()
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    out, err = log_out.read_text(), log_err.read_text()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "SIGINT received" in out and f"--out {run} --resume" in out
    _, meta = io.load_checkpoint(run / "checkpoint.npz")
    assert meta["updates"] >= 6

    # The run continues from its checkpoint.
    r = run_cli("train", "--out", str(run), "--resume", "--steps", str(meta["updates"] + 1), "--data", str(idx))
    assert r.returncode == 0, r.stderr
    _, meta2 = io.load_checkpoint(run / "checkpoint.npz")
    assert meta2["updates"] == meta["updates"] + 1


def test_nan_exits_3_names_the_step_and_keeps_the_checkpoint(tmp_path, idx, capsys, monkeypatch):
    run = tmp_path / "run"
    # 30 IDX training images -> 25 train; batch 5 -> 5 updates per epoch.
    assert main(["train", "--data", str(idx), "--batch", "5", "--epochs", "1", "--out", str(run),
                 "--no-progress"]) == 0
    good = (run / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    monkeypatch.setenv("MINIGAN_INJECT_NAN_AT_STEP", "8")
    code = main(["train", "--out", str(run), "--resume", "--epochs", "2", "--data", str(idx), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "update 8" in err and "Traceback" not in err
    assert (run / "checkpoint.npz").read_bytes() == good


# --------------------------------------------------------------------------------------------------
# Errors: exit code 2, one line, no traceback
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv,match", [
    (["train", "--model", "vae"], "invalid choice"),
    (["train", "--dataset", "cifar"], "invalid choice"),
    (["train", "--preset", "fast"], "invalid choice"),
    (["train", "--batch", "0"], "positive integer"),
    (["train", "--epochs", "-1"], "positive integer"),
    (["train", "--k", "x"], "positive integer"),
    (["train", "--epochs", "2", "--steps", "3"], "not allowed"),
    (["sample"], "required"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments(capsys, argv, match):
    assert_usage_error(main(argv), capsys, match)


def test_missing_data_dir(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run"), "--steps", "1"])
    assert_usage_error(code, capsys, "nope")


def test_resume_without_checkpoint(tmp_path, idx, capsys):
    code = main(["train", "--resume", "--data", str(idx), "--out", str(tmp_path / "run")])
    assert_usage_error(code, capsys, "no checkpoint")


def test_corrupt_checkpoint_with_resume(tmp_path, idx, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    code = main(["train", "--resume", "--data", str(idx), "--out", str(run)])
    assert_usage_error(code, capsys, "checkpoint")


def test_sample_errors(tmp_path, idx, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(idx), "--batch", "5", "--steps", "1", "--out", str(run),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert_usage_error(main(["sample", str(run), "--label", "10", "--out", str(tmp_path / "x.npz")]), capsys,
                       "label 10")
    assert_usage_error(main(["sample", str(run), "--label", "-1", "--out", str(tmp_path / "x.npz")]), capsys,
                       "out of range")
    assert_usage_error(main(["sample", str(run), "--out", str(tmp_path / "x.txt")]), capsys, ".png")
    for psi in ("0", "1.5", "nan"):
        assert_usage_error(main(["sample", str(run), "--truncation", psi, "--out", str(tmp_path / "x.npz")]), capsys,
                           "(0, 1]")
    for psi in ("1", "0.5"):  # the noise from the central half of the prior: other samples than the whole prior's
        assert main(["sample", str(run), "--n", "4", "--truncation", psi, "--out", str(tmp_path / f"t{psi}.npz")]) == 0
    capsys.readouterr()
    with np.load(tmp_path / "t1.npz") as whole, np.load(tmp_path / "t0.5.npz") as central:
        assert whole["x"].shape == central["x"].shape == (4, 784) and not np.array_equal(whole["x"], central["x"])
    assert_usage_error(main(["sample", str(tmp_path / "empty"), "--out", str(tmp_path / "x.npz")]), capsys,
                       "no checkpoint")
    # A fresh run into a directory that holds a checkpoint must not overwrite it.
    assert_usage_error(main(["train", "--data", str(idx), "--steps", "1", "--out", str(run)]), capsys, "--resume")
    # Resuming with a different run definition is refused.
    assert_usage_error(main(["train", "--resume", "--model", "gan", "--data", str(idx), "--out", str(run)]), capsys,
                       "model")


# --------------------------------------------------------------------------------------------------
# --resume together with every other `train` option (issue 15: `--resume --dataset mnist` crashed)
# --------------------------------------------------------------------------------------------------

REFUSED, ACCEPTED = "refused", "accepted"
FLAG = "<flag>"  # an option that takes no value


def _gpu_outcome():
    try:
        backend.use("cupy")
    except backend.BackendError:
        return REFUSED, "--device cpu"  # no CuPy or no GPU here: one line saying so
    finally:
        backend.use("numpy")
    return ACCEPTED, None


# For every option of `minigan train`: a value equal to the checkpoint's (the run is made with every option given,
# see `resumable_run`), and different values with what must happen: REFUSED (one line naming the clash, exit 2,
# nothing in the run directory changed) or ACCEPTED (options that do not change what is computed: length,
# device, data location, read-back interval, selection, progress display). "{IDX}", "{IDX_COPY}",
# "{OTHER_DATA}", "{RUN}" and "{EMPTY}" are paths filled in by the test.
# A new option of `minigan train` must be added here: test_resume_option_table_covers_every_train_option fails
# until it is.
RESUME_OPTION_TABLE = {
    "--model": ("cgan", [("gan", REFUSED, "model='gan'")]),
    "--dataset": ("mnist", [("fashion-mnist", REFUSED, "dataset='fashion-mnist'")]),
    # The run is made under `paper`, the preset whose learning-rate schedule --lr-decay sets.
    "--preset": ("paper", [("modern", REFUSED, "preset='modern'")]),
    "--batch": ("5", [("4", REFUSED, "batch=4")]),
    "--k": ("1", [("2", REFUSED, "k=2")]),
    "--update": ("alternating", [("simultaneous", REFUSED, "update='simultaneous'")]),
    "--seed": ("0", [("1", REFUSED, "seed=1")]),
    "--epochs": ("1", [("2", ACCEPTED, None)]),
    "--steps": ("5", [("6", ACCEPTED, None)]),
    "--device": ("cpu", [("gpu", *_gpu_outcome())]),
    "--data": ("{IDX}", [("{IDX_COPY}", ACCEPTED, None),
                         ("{OTHER_DATA}", REFUSED, "trained on 25 examples")]),
    "--out": ("{RUN}", [("{EMPTY}", REFUSED, "no checkpoint")]),
    "--log-interval": ("5", [("1", ACCEPTED, None)]),
    "--no-progress": (FLAG, []),  # display only; leaving it out is the plain `--resume` case
    "--select-every": ("50", [("51", ACCEPTED, None)]),
    "--lr-G": ("0.002", [("0.001", REFUSED, "lr_G=0.001")]),
    "--lr-D": ("0.0004", [("0.0002", REFUSED, "lr_D=0.0002")]),
    "--lr-decay": ("1.00004", [("1.000004", REFUSED, "lr_decay=1.000004")]),
    "--ema": ("0.99", [("0.9", REFUSED, "ema=0.9"), ("0", REFUSED, "ema=0.0")]),
    "--d-update-clip": ("0", [("1", REFUSED, "d_update_clip=1.0")]),  # the run here is paper's SGD: no clip
    "--d-warmup": ("0", [("5", REFUSED, "d_warmup=5")]),
    # The paper preset has no matching-aware term; the run here is given one.
    "--matching-aware": ("step", [("none", REFUSED, "matching_aware='none'"),
                                  ("joint", REFUSED, "matching_aware='joint'")]),
    "--matching-aware-every": ("2", [("3", REFUSED, "matching_aware_every=3"),
                                     ("1", REFUSED, "matching_aware_every=1")]),
    "--matching-aware-epochs": ("2", [("3", REFUSED, "matching_aware_epochs=3"),
                                      ("0", REFUSED, "matching_aware_epochs=0")]),
    # A model option (pix2pix's are its main use; the cgan run here takes g_dropout): part of the model.
    "--option": ("g_dropout=0.0", [("g_dropout=0.5", REFUSED, "model_options={'g_dropout': 0.5}")]),
    # Given on resume only (the run below never had it): it changes when a run stops, not what it computes.
    "--stop-on-collapse": (FLAG, []),
    # Accepted: a run may move to another machine. The sums then round in another order (a note says so).
    "--threads": ("1", [("2", ACCEPTED, None)]),
}
RESUME_ITSELF = "--resume"


def _train_options():
    """The long option strings of `minigan train`, read from the parser itself."""
    from minigan.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    train = sub.choices["train"]
    return sorted(max(a.option_strings, key=len) for a in train._actions
                  if a.option_strings and a.dest != "help")


def test_resume_option_table_covers_every_train_option():
    options = set(_train_options())
    missing = options - set(RESUME_OPTION_TABLE) - {RESUME_ITSELF}
    assert not missing, (f"`minigan train` has option(s) {sorted(missing)} that RESUME_OPTION_TABLE in "
                         "tests/test_cli.py lacks: add each with a value equal to the checkpoint's and a different "
                         "value, and whether --resume must refuse or accept the different one")
    assert not set(RESUME_OPTION_TABLE) - options, "RESUME_OPTION_TABLE names options `minigan train` no longer has"


@pytest.fixture(scope="module")
def resumable_run(tmp_path_factory):
    """A one-epoch run (25 images, batch 5: 5 updates) made with every `train` option given explicitly."""
    root = tmp_path_factory.mktemp("resumable")
    idx = write_idx_dir(root / "idx")
    run = root / "run"
    argv = ["train", "--out", str(run)]
    for option, (equal, _) in RESUME_OPTION_TABLE.items():
        # --out is added above; --epochs excludes --steps (5 updates = 1 epoch); the health monitor may well flag
        # 25 random images, so --stop-on-collapse would end this run with exit 4.
        if option in ("--out", "--epochs", "--stop-on-collapse"):
            continue
        argv += [option] if equal == FLAG else [option, equal.format(IDX=idx)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIGAN_DATA", str(root / "cache"))
        mp.delenv("MINIGAN_INJECT_NAN_AT_STEP", raising=False)
        assert main(argv) == 0
    backend.use("numpy")
    return root, idx, run


def _resume_cases():
    for option, (equal, different) in RESUME_OPTION_TABLE.items():
        yield pytest.param(option, equal, ACCEPTED, None, id=f"{option}=equal")
        for i, (value, outcome, match) in enumerate(different):
            yield pytest.param(option, value, outcome, match, id=f"{option}=different{i or ''}")


@pytest.mark.parametrize("option,value,outcome,match", list(_resume_cases()))
def test_resume_with_each_train_option(resumable_run, tmp_path, capsys, option, value, outcome, match):
    root, idx, base = resumable_run
    run = tmp_path / "run"
    shutil.copytree(base, run)
    paths = {"IDX": idx, "RUN": run, "EMPTY": tmp_path / "empty",
             "IDX_COPY": shutil.copytree(idx, tmp_path / "idx-copy"),
             "OTHER_DATA": write_idx_dir(tmp_path / "other", n_train=40)}
    argv = ["train", "--resume"] + ([] if option == "--out" else ["--out", str(run)])
    argv += [option] if value == FLAG else [option, value.format(**paths)]
    before = snapshot(run)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    if outcome == REFUSED:
        assert_usage_error(code, err, match)
        assert snapshot(run) == before, "a refused --resume changed the run directory"
    else:
        assert code == 0, err
        assert "Traceback" not in err
        assert "resuming at update 5 " in out
        updates = io.load_checkpoint(run / "checkpoint.npz")[1]["updates"]
        assert updates == {"--epochs": {"2": 10}, "--steps": {"6": 6}}.get(option, {}).get(value, 5)


def test_paper_cgan_attempt_options(tmp_path, idx, capsys):
    """The options of the paper-CGAN attempt (issue 11): the original code's learning-rate divisor, a list-valued
    model option (the U(+-sqrt3) noise range), D's label-input dropout; bad values get one line."""
    run = tmp_path / "run"
    sqrt3 = "1.7320508075688772"
    argv = ["train", "--preset", "paper", "--data", str(idx), "--batch", "5", "--steps", "2", "--no-progress",
            "--lr-decay", "1.000004", "--option", f"noise=-{sqrt3},{sqrt3}", "--option", "d_y_dropout=0.5"]
    assert main(argv + ["--out", str(run)]) == 0
    meta = io.load_checkpoint(run / "checkpoint.npz")[1]
    assert meta["config"]["lr_decay"] == 1.000004
    assert meta["model_options"]["noise"] == [-float(sqrt3), float(sqrt3)]
    assert meta["model_options"]["d_y_dropout"] == 0.5
    model, _ = runs.load_model(run)
    assert (model.noise_low, model.noise_high) == (-float(sqrt3), float(sqrt3))
    capsys.readouterr()
    for bad, match in ((["--option", "noise=-1,one"], "comma-separated numbers"),
                       (["--option", "noise=-1,0,1"], "two numbers"),
                       (["--lr-decay", "0.99"], "must be a number >= 1")):
        # argparse keeps an option's last value (and dict() the last --option of a key): each case overrides one.
        assert_usage_error(main(argv + bad + ["--out", str(tmp_path / "bad")]), capsys, match)
        assert not (tmp_path / "bad" / "checkpoint.npz").exists()


def test_resume_with_dataset_name_as_in_the_issue(tmp_path, idx, capsys):
    """`minigan train --steps 5 --out R` then `... --steps 15 --out R --resume --dataset mnist` (it crashed)."""
    run = str(tmp_path / "R")
    assert main(["train", "--steps", "5", "--batch", "5", "--data", str(idx), "--out", run, "--no-progress"]) == 0
    assert main(["train", "--steps", "15", "--out", run, "--resume", "--dataset", "mnist", "--no-progress"]) == 0
    assert io.load_checkpoint(Path(run) / "checkpoint.npz")[1]["updates"] == 15
    capsys.readouterr()
    code = main(["train", "--steps", "20", "--out", run, "--resume", "--dataset", "fashion-mnist"])
    assert_usage_error(code, capsys, "dataset='fashion-mnist'")


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_gpu_without_cupy_is_one_line(tmp_path, idx, capsys):
    try:
        backend.use("cupy")
        pytest.skip("a GPU is available here, so --device gpu has no error to report")
    except backend.BackendError:
        pass
    code = main(["train", "--device", "gpu", "--data", str(idx), "--out", str(tmp_path / "run")])
    assert_usage_error(code, capsys)


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err


def test_classifier_then_eval_end_to_end(tmp_path, idx, capsys):
    run = tmp_path / "run"
    assert main(["train", "--steps", "2", "--batch", "4", "--data", str(idx), "--out", str(run), "--no-progress"]) == 0
    # Without a trained classifier, eval says how to get one, in one line.
    assert_usage_error(main(["eval", str(run), "--classifier"]), capsys, match="train-classifier")
    assert main(["train-classifier", "--data", str(idx), "--epochs", "1"]) == 0
    # Make the classifier's answer known in advance: zero weights and an output bias that picks class 3, so every
    # image is predicted 3 and every feature vector is the same.
    clf_path = Path(os.environ["MINIGAN_DATA"]) / "classifier-mnist.npz"
    arrays, meta = io.load_checkpoint(clf_path)
    arrays = {k: np.zeros_like(v) for k, v in arrays.items()}
    arrays["out.b"][3] = 10.0
    io.save_checkpoint(clf_path, arrays, meta)
    capsys.readouterr()
    assert main(["eval", str(run), "--classifier", "--n-per-class", "5"]) == 0
    results = json.loads((run / "eval.json").read_text())
    samples, valid = results["classifier"]["samples"], results["classifier"]["real_valid"]
    # 50 conditional samples, 5 per class: only the 5 asked for class 3 are right.
    assert samples["histogram"] == [0, 0, 0, 50, 0, 0, 0, 0, 0, 0]
    assert samples["label_accuracy"]["overall"] == pytest.approx(0.1)
    assert samples["label_accuracy"]["per_class"] == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    # The validation split is the last 30 // 6 = 5 of the IDX training labels, read here with gzip alone.
    labels = np.frombuffer(gzip.decompress((idx / "train-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8)[25:]
    assert valid["histogram"] == [0, 0, 0, 5, 0, 0, 0, 0, 0, 0]
    assert valid["label_accuracy"]["overall"] == pytest.approx(np.mean(labels == 3))
    # Identical features everywhere: the Frechet distances are 0.
    assert samples["fid_test"] == pytest.approx(0.0, abs=1e-9) and valid["fid_test"] == pytest.approx(0.0, abs=1e-9)
    assert_usage_error(main(["eval", str(tmp_path / "nowhere")]), capsys, match="no checkpoint")
