"""benchmarks/seeds.py's bookkeeping: seed ranges, the pass rule, the summary and the docs' table (no training)."""

import argparse

import pytest

from helpers import load_benchmark

seeds = load_benchmark("seeds")


def test_parse_seeds():
    assert seeds.parse_seeds("0-3,11, 2") == [0, 1, 2, 3, 11]
    assert seeds.parse_seeds("7") == [7]
    for bad in ("", "3-1", "-2"):
        with pytest.raises((argparse.ArgumentTypeError, ValueError)):
            seeds.parse_seeds(bad)


CRITERIA = argparse.Namespace(min_accuracy=0.97, min_class=0.90, max_fid_ratio=8.0, min_parzen=132.0, parzen=False)


def row(seed, acc, worst, ratio, **kw):
    return {"seed": seed, "accuracy": acc, "worst_class": worst, "fid": 1.7 * ratio, "fid_ratio": ratio,
            "D_G_z": 0.3, **kw}


@pytest.mark.parametrize("r,ok", [
    (row(0, 0.99, 0.95, 5.0), True),
    (row(1, 0.96, 0.95, 5.0), False),          # accuracy below 97%
    (row(2, 0.99, 0.89, 5.0), False),          # one class below 90%
    (row(3, 0.99, 0.95, 8.5), False),          # FID above 8x real
    (row(4, 0.99, 0.95, 5.0, error="boom"), False),
])
def test_pass_rule(r, ok):
    assert seeds.passes(r, CRITERIA) is ok


def test_summary_and_markdown():
    rows = [dict(row(0, 0.99, 0.95, 5.0), passed=True),
            dict(row(1, 0.10, 0.00, 60.0), passed=False, health=["ignores_label"], health_first_epoch=1, d_won=False),
            dict(row(2, 0.98, 0.93, 7.0), passed=True)]
    summ = seeds.summary(rows)
    assert (summ["passed"], summ["runs"], summ["flagged"]) == (2, 3, 1)
    assert summ["accuracy"] == {"median": 0.98, "worst": 0.10}
    assert summ["fid_ratio"] == {"median": 7.0, "worst": 60.0}
    text = seeds.markdown({"rows": rows, "summary": summ})
    assert "| 1 | 10.0% | 0.0% | 102.0 (60.0×) | 0.300 | ignores_label (from epoch 1) | no |" in text
    assert text.endswith("2 of 3 seeds pass; label accuracy median 98.0% (worst seed 10.0%), worst class median "
                         "93.0% (worst seed 0.0%), FID median 7.0× real (worst seed 60.0×); the monitor flagged 1, "
                         "D won in 0.")


def test_markdown_shows_parzen_when_the_run_scored_it():
    rows = [dict(row(0, 0.99, 0.95, 3.5), parzen=137.62, parzen_se=1.55, passed=True),
            dict(row(1, 0.99, 0.96, 3.8), parzen=131.04, parzen_se=1.6, passed=False)]
    summ = seeds.summary(rows)
    assert summ["parzen"] == {"median": pytest.approx(134.33), "worst": 131.04}
    text = seeds.markdown({"rows": rows, "summary": summ})
    assert text.splitlines()[0].count("|") == 9 and "Parzen LL" in text.splitlines()[0]
    assert "| 0 | 99.0% | 95.0% | 6.0 (3.5×) | 137.6 ± 1.6 | 0.300 | - | yes |" in text
    assert "FID median 3.6× real (worst seed 3.8×); Parzen LL median 134.3 (worst seed 131.0); the monitor" in text


def test_extend_resumes_a_run_found_in_out_and_otherwise_starts_afresh(tmp_path):
    args = seeds.argparse.Namespace(epochs=15, extend=True)
    run = tmp_path / "seed-3"
    run.mkdir()
    (run / "stale.txt").write_text("x")
    fresh = seeds.train_command(3, run, args, ["--threads", "1"])
    assert "--resume" not in fresh and not run.exists()  # nothing to continue: a fresh run
    assert fresh[fresh.index("--epochs") + 1] == "15" and fresh[-2:] == ["--threads", "1"]
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(b"")
    assert seeds.train_command(3, run, args, [])[-1] == "--resume" and (run / "checkpoint.npz").exists()
    args.extend = False
    assert "--resume" not in seeds.train_command(3, run, args, []) and not run.exists()


def test_the_bars_follow_the_dataset_in_the_train_options():
    assert seeds.dataset_of([]) == "mnist"
    assert seeds.dataset_of(["--model", "cdcgan", "--dataset", "fashion-mnist"]) == "fashion-mnist"
    assert seeds.dataset_of(["--dataset=fashion-mnist", "--dataset", "mnist"]) == "mnist"  # the last one, as argparse
    unset = dict(min_accuracy=None, min_class=None, max_fid_ratio=None, min_parzen=None, parzen=True)
    fashion = argparse.Namespace(**unset)
    seeds.apply_default_criteria(fashion, "fashion-mnist")
    assert (fashion.min_accuracy, fashion.min_class, fashion.max_fid_ratio, fashion.min_parzen) == (0.95, None, None,
                                                                                                   None)
    # A shirt read as a shirt 70% of the time and a large FID multiple pass on Fashion; 94% accuracy does not.
    assert seeds.passes(row(0, 0.96, 0.70, 30.0, parzen=50.0), fashion)
    assert not seeds.passes(row(1, 0.94, 0.90, 5.0, parzen=300.0), fashion)
    mnist = argparse.Namespace(**dict(unset, min_class=0.5))  # a bar given on the command line stays
    seeds.apply_default_criteria(mnist, "mnist")
    assert (mnist.min_accuracy, mnist.min_class, mnist.max_fid_ratio, mnist.min_parzen) == (0.97, 0.5, 8.0, 132.0)
    assert seeds.dataset_of(["--datas", "fashion-mnist"]) == "fashion-mnist"  # argparse's abbreviations count
    assert seeds.dataset_of(["--data-dir", "D"]) == "mnist"
    # An unconditional model on Fashion-MNIST has no label accuracy, and no other bar applies there: unjudged.
    unconditional = {k: v for k, v in row(3, 0.99, 0.99, 40.0).items() if k not in ("accuracy", "worst_class")}
    fashion.parzen = False
    assert not seeds.judged(unconditional, fashion) and seeds.judged(row(4, 0.99, 0.9, 1.0), fashion)
    rows = [dict(unconditional, passed=None), dict(row(4, 0.99, 0.9, 1.0), passed=True)]
    summ = seeds.summary(rows)
    assert (summ["passed"], summ["judged"], summ["runs"]) == (1, 1, 2)
    text = seeds.markdown({"rows": rows, "summary": summ})
    assert "| 3 | - | - | 68.0 (40.0×) | 0.300 | - | - |" in text and "1 of 1 judged seeds pass;" in text
    assert seeds.table(rows, False).splitlines()[1].endswith(" -")


def test_seeds_names_the_datasets_classifier_when_it_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIGAN_DATA", str(tmp_path))
    assert seeds.main(["--seeds", "0", "--", "--dataset", "fashion-mnist"]) == 2
    assert "minigan train-classifier --dataset fashion-mnist" in capsys.readouterr().err
    assert seeds.main(["--seeds", "0", "--", "--dataset", "fashion-edges"]) == 2  # no classifier for it at all
    assert "--dataset fashion-edges has none" in capsys.readouterr().err
