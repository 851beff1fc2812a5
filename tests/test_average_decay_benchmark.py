"""benchmarks/average_decay.py's handling of `minigan train` options (no training): what it passes on reaches the
run's config, and what it cannot honour is refused before anything trains, never dropped."""

import pytest

from helpers import load_benchmark

average_decay = load_benchmark("average_decay")


def test_model_options_and_rates_reach_the_run_config(tmp_path):
    extra = ["--model", "cdcgan", "--batch", "64", "--lr-G", "4e-4", "--option", "g_condition=batchnorm",
             "--option", "width=8", "--matching-aware", "joint"]
    config = average_decay.train_config(13, 10, tmp_path / "r", extra)
    assert (config.model, config.batch, config.lr_G, config.seed, config.epochs) == ("cdcgan", 64, 4e-4, 13, 10)
    assert config.matching_aware == "joint"
    assert config.model_options == {"g_condition": "batchnorm", "width": 8}
    assert config.ema == 0.0  # the script keeps its own averages
    assert average_decay.train_options(["--threads", "1"]) == ({}, 1)


@pytest.mark.parametrize("extra", [["--seed", "3"], ["--epochs", "2"], ["--ema", "0.9"], ["--steps", "5"],
                                   ["--out", "elsewhere"]])
def test_options_it_cannot_honour_are_refused(extra):
    with pytest.raises(SystemExit, match="cannot pass on --" + extra[0][2:]):
        average_decay.train_options(extra)


def test_the_samples_per_class_reach_the_scoring(monkeypatch):
    """--n-per-class is what evaluate_run draws per class (the worst class's reading depends on it, RESULTS.md)."""
    seen = {}

    def fake_evaluate_run(model, dataset, classifier=None, n_per_class=1000, log=None):
        seen["n_per_class"] = n_per_class
        real = {"fid_test": 2.0}
        samples = {"label_accuracy": {"overall": 0.99, "per_class": [0.98, 0.97]}, "fid_test": 5.0}
        return {"classifier": {"samples": samples, "real_valid": real}}

    class FakeTrainer:
        model, dataset = None, None

    monkeypatch.setattr(average_decay, "evaluate_run", fake_evaluate_run)
    assert average_decay.score(FakeTrainer(), classifier=None, n_per_class=5000) == {
        "accuracy": 0.99, "worst_class": 0.97, "fid": 5.0, "fid_ratio": 2.5}
    assert seen == {"n_per_class": 5000}


@pytest.mark.parametrize("bad", ["0", "-5", "ten"])
def test_a_sample_count_below_one_is_refused_before_anything_trains(bad, capsys):
    with pytest.raises(SystemExit):
        average_decay.main(["--seeds", "1", "--n-per-class", bad])
    assert "--n-per-class" in capsys.readouterr().err


def test_an_unconditional_model_is_scored_by_its_class_shares(monkeypatch):
    """Without labels there is no label accuracy: the row carries the histogram and the classes outside 7-13%."""
    counts = [1330, 586, 861, 1008, 575, 1070, 933, 1254, 830, 1553]  # dcgan seed 1's epoch-10 eval

    def fake_evaluate_run(model, dataset, classifier=None, n_per_class=1000, log=None):
        samples = {"label_accuracy": None, "histogram": counts, "fid_test": 32.0}
        return {"classifier": {"samples": samples, "real_valid": {"fid_test": 2.0}}}

    class FakeTrainer:
        model, dataset = None, None

    monkeypatch.setattr(average_decay, "evaluate_run", fake_evaluate_run)
    row = average_decay.score(FakeTrainer(), classifier=None)
    assert row == {"accuracy": None, "worst_class": None, "histogram": counts, "min_share": 0.0575,
                   "max_share": 0.1553, "outside_band": [0, 1, 4, 9], "fid": 32.0, "fid_ratio": 16.0}
    line = average_decay.row_line({**row, "seed": 1, "variant": "last weights"})
    assert line.split() == ["1", "last", "weights", "shares", "5.8%-15.5%,", "outside", "0,1,4,9", "FID", "x",
                            "real", "16.00"]
    balanced = average_decay.row_line({**row, "seed": 1, "variant": "ema 0.999", "outside_band": []})
    assert "outside none" in balanced
    conditional = average_decay.row_line({"seed": 3, "variant": "ema 0.99", "accuracy": 0.99123,
                                          "worst_class": 0.9712, "fid_ratio": 2.345})
    assert conditional.split() == ["3", "ema", "0.99", "0.9912", "0.9712", "FID", "x", "real", "2.35"]
