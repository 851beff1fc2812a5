"""benchmarks/time_to_quality.py: the first-crossing rule, and one real (tiny) run of the script end to end."""

import json

import pytest

from helpers import load_benchmark, write_idx_dir
from minigan.cli import main as minigan_main



ttq = load_benchmark("time_to_quality")


def test_first_reaching_is_the_first_epoch_at_or_above_the_target():
    epochs = [{"epoch": 1, "p": None}, {"epoch": 2, "p": 120.0}, {"epoch": 3, "p": 132.0}, {"epoch": 4, "p": 131.0},
              {"epoch": 5, "p": 140.0}]
    assert ttq.first_reaching(epochs, "p", 132.0)["epoch"] == 3  # exactly the target counts; later dips do not
    assert ttq.first_reaching(epochs, "p", 150.0) is None
    assert ttq.first_reaching([], "p", 0.0) is None


def test_script_trains_epoch_by_epoch_and_times_each_target(tmp_path, isolated_run_env, monkeypatch, capsys):
    idx = write_idx_dir(tmp_path / "idx", n_train=20, n_test=6)
    assert minigan_main(["train-classifier", "--data", str(idx), "--epochs", "1"]) == 0
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    out, report = tmp_path / "runs", tmp_path / "ttq.json"
    # An unreachable Parzen target: the seed trains to --max-epochs, resuming once, and the exit code says so.
    code = ttq.main(["--seeds", "0", "--max-epochs", "2", "--parzen-target", "1e9", "--accuracy-target", "0",
                     "--out", str(out), "--json", str(report), "--", "--data", str(idx), "--batch", "5"])
    assert code == 1
    doc = json.loads(report.read_text())
    row = doc["rows"][0]
    assert [e["epoch"] for e in row["epochs"]] == [1, 2] and "error" not in row
    metrics = [json.loads(line) for line in (out / "seed-0" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]  # one run, continued: not two fresh ones
    assert row["epochs"][1]["train_seconds"] == pytest.approx(sum(m["seconds"] for m in metrics))
    assert [e["parzen_valid"] for e in row["epochs"]] == [m["parzen_valid"] for m in metrics]
    assert row["to_parzen"] is None
    assert row["to_accuracy"]["epoch"] == 1  # accuracy >= 0 holds at once
    assert row["to_accuracy"]["process_seconds"] >= row["to_accuracy"]["train_seconds"] > 0
    assert doc["targets"] == {"parzen_valid": 1e9, "accuracy": 0.0} and doc["command"].endswith("--batch 5")
    # Both targets met at epoch 1: the seed stops there.
    assert ttq.main(["--seeds", "1", "--max-epochs", "3", "--parzen-target=-1e9", "--accuracy-target", "0",
                     "--out", str(out), "--", "--data", str(idx), "--batch", "5"]) == 0
    assert len((out / "seed-1" / "metrics.jsonl").read_text().splitlines()) == 1
    assert "to Parzen -1e+09: epoch 1" in capsys.readouterr().out
