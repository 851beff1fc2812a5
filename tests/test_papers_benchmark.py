"""benchmarks/papers.py: one real (tiny) row end to end, stages and best-checkpoint scoring included, and the
table it renders."""

import dataclasses
import json

import pytest

from helpers import load_benchmark, write_idx_dir
from minigan import io
from minigan.cli import main as minigan_main



papers = load_benchmark("papers")


def test_a_row_trains_in_stages_and_scores_each_stage_best_checkpoint(tmp_path, isolated_run_env, monkeypatch):
    idx = write_idx_dir(tmp_path / "idx", n_train=20, n_test=6)
    assert minigan_main(["train-classifier", "--data", str(idx), "--epochs", "1"]) == 0
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    row = papers.Row("GAN", "test", ("--model", "gan", "--preset", "paper", "--data", str(idx), "--batch", "5"),
                     (2, 4), select_every=1)
    results = papers.run_row("gan-test", row, seed=3, out=tmp_path / "runs", reuse=False)
    run_dir = tmp_path / "runs" / "gan-test"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]  # one run, resumed: not two fresh ones
    assert [r["trained_epochs"] for r in results] == [2, 4]
    for r, upto in zip(results, (2, 4)):
        valid = {m["epoch"]: m["parzen_valid"] for m in metrics if m["epoch"] <= upto}
        best = max(valid, key=valid.get)
        assert r["scored_epoch"] == best and r["selected"]  # the best by validation Parzen, as of that stage
        assert {int(k): v for k, v in r["parzen_valid"].items()} == valid
        assert r["train_seconds"] == pytest.approx(sum(m["seconds"] for m in metrics if m["epoch"] <= upto))
        assert r["accuracy"] is None and sum(r["histogram"]) == 10000 and r["fid_ratio"] > 0
        assert (run_dir / f"best-epoch{upto}.npz").exists()
    assert io.load_checkpoint(run_dir / "checkpoint.npz")[1]["config"]["seed"] == 3  # the seed reached the run
    table = papers.markdown([{"results": results}])
    assert table.count("| GAN | test | ") == 2 and f"| 4 (best: {results[1]['scored_epoch']}) |" in table
    # A row without selection is scored on its last weights; --reuse continues its run instead of restarting.
    plain = papers.Row("CGAN", "plain", ("--model", "cgan", "--preset", "paper", "--data", str(idx), "--batch", "5"),
                       (1,))
    first = papers.run_row("cgan-test", plain, seed=0, out=tmp_path / "runs", reuse=False)[0]
    assert first["scored_epoch"] == 1 and not first["selected"] and len(first["per_class"]) == 10
    again = papers.run_row("cgan-test", dataclasses.replace(plain, stages=(2,)), seed=0, out=tmp_path / "runs", reuse=True)[0]
    records = (tmp_path / "runs" / "cgan-test" / "metrics.jsonl").read_text().splitlines()
    assert again["scored_epoch"] == 2 and len(records) == 2


def test_histogram_cell_names_a_collapse_and_the_smallest_and_largest_class():
    assert papers._histogram_cell({"histogram": [0, 9500, 0, 0, 0, 500, 0, 0, 0, 0]}) == "95% class 1: collapsed"
    cell = papers._histogram_cell({"histogram": [1000, 1430, 790, 1000, 1000, 1000, 1000, 1000, 780, 1000]})
    assert cell == "all 10 classes; smallest 8: 7.8%, largest 1: 14.3%"
    cell = papers._histogram_cell({"histogram": [0, 1000, 2500, 1000, 1000, 1000, 1000, 1000, 500, 1000]})
    assert cell == "9 classes; smallest 0: 0.0%, largest 2: 25.0%"


def test_unknown_rows_are_refused(capsys):
    with pytest.raises(SystemExit):
        papers.main(["--rows", "gan-paper,nonsense"])
    assert "nonsense" in capsys.readouterr().err
