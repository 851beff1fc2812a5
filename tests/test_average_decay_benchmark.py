"""benchmarks/average_decay.py's handling of `minigan train` options (no training): what it passes on reaches the
run's config, and what it cannot honour is refused before anything trains, never dropped."""

import pytest

from helpers import load_benchmark

average_decay = load_benchmark("average_decay")


def test_model_options_and_rates_reach_the_run_config(tmp_path):
    extra = ["--model", "cdcgan", "--batch", "64", "--lr-G", "4e-4", "--option", "g_condition=batchnorm",
             "--option", "width=8"]
    config = average_decay.train_config(13, 10, tmp_path / "r", extra)
    assert (config.model, config.batch, config.lr_G, config.seed, config.epochs) == ("cdcgan", 64, 4e-4, 13, 10)
    assert config.model_options == {"g_condition": "batchnorm", "width": 8}
    assert config.ema == 0.0  # the script keeps its own averages
    assert average_decay.train_options(["--threads", "1"]) == ({}, 1)


@pytest.mark.parametrize("extra", [["--seed", "3"], ["--epochs", "2"], ["--ema", "0.9"], ["--steps", "5"],
                                   ["--out", "elsewhere"]])
def test_options_it_cannot_honour_are_refused(extra):
    with pytest.raises(SystemExit, match="cannot pass on --" + extra[0][2:]):
        average_decay.train_options(extra)
