"""Every figure README.md and docs/RELIABILITY.md publish about the fault and hostile-input suites, checked
against the suites' own tallies; every benchmark figure README.md quotes, checked against the committed JSON
it comes from (benchmarks/results/).

When a suite gains or loses a case, or a benchmark is rerun, this file fails until the prose says the same.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import test_faults as faults
from helpers import load_benchmark
import test_hostile_inputs as hostile

REPO = Path(__file__).resolve().parents[1]
WORDS = {n: w for n, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}


def prose(path: str) -> str:
    """The file with all whitespace runs made single spaces (Markdown wraps lines anywhere)."""
    return " ".join((REPO / path).read_text(encoding="utf-8").split())


def table(path: str, first_header: str) -> dict[str, list[str]]:
    """The Markdown table whose first header cell is ``first_header``: {first cell: the other cells}."""
    rows, inside = {}, False
    for line in (REPO / path).read_text(encoding="utf-8").splitlines():
        line = line.strip()  # a table may be indented inside a list item
        cells = [c.replace("&nbsp;", "").replace("**", "").strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_header:
            inside = True
        elif inside and not line.startswith("|"):
            break
        elif inside and not set(cells[0]) <= set("-: "):
            rows[cells[0]] = cells[1:]
    assert rows, f"no table headed {first_header!r} in {path}"
    return rows


def row(rows: dict, prefix: str) -> list[str]:
    hits = [cells for label, cells in rows.items() if label.startswith(prefix)]
    assert len(hits) == 1, f"expected one row starting {prefix!r}, found {len(hits)}"
    return hits[0]


F = faults.FAULT_COUNTS
DISK_ERRORS = F["disk_full"] + F["unwritable_create"] + F["rename_or_fsync"] + F["efbig_real_process"]
EPOCHS = f"{faults.EPOCH_LINES[0]} to {faults.EPOCH_LINES[1]} epochs"
H = hostile.CASE_COUNTS
GROUPS = hostile.counts_by_group()


def test_readme_reliability_figures():
    text = prose("README.md")
    total = faults.FAULTS_TOTAL
    for phrase in (
        f"**{total} faults injected, {total} survived**",
        f"{F['sigkill']} SIGKILLs: {F['sigkill.startup']} at start-up, {F['sigkill.inside_checkpoint_write']} "
        f"inside a checkpoint write, {F['sigkill.after_epochs']} after {EPOCHS};",
        f"NaN at {F['nan']} positions; {DISK_ERRORS} disk errors",
        f"**{sum(GROUPS.values())} bad inputs rejected cleanly** ({GROUPS['checkpoint']} checkpoints, "
        f"{GROUPS['idx']} IDX files, {GROUPS['pickle']} pickles, {GROUPS['argv']} command lines)",
    ):
        assert phrase in text, f"README.md should say {phrase!r} (the suites' counts)"
    assert F["SIGINT"] == F["SIGTERM"] == 1 and "real SIGINT/SIGTERM with bit-identical resume" in text


def test_readme_counts_the_bugs_docs_list():
    doc = (REPO / "docs/RELIABILITY.md").read_text(encoding="utf-8")
    section = doc.split("## Bugs these suites found (fixed)", 1)[1].split("\n## ", 1)[0]
    bugs = sum(1 for line in section.splitlines() if line.startswith("- "))
    assert f"{WORDS[bugs].capitalize()} bugs those tests found were fixed" in prose("README.md")


def test_reliability_faults_table():
    rows = table("docs/RELIABILITY.md", "Fault")
    expected = {
        "SIGKILL of `minigan train`": F["sigkill"],
        "of which at start-up": F["sigkill.startup"],
        "of which inside a checkpoint write": F["sigkill.inside_checkpoint_write"],
        f"of which after {EPOCHS}": F["sigkill.after_epochs"],
        "SIGINT, real signal": F["SIGINT"],
        "SIGTERM, same": F["SIGTERM"],
        "second SIGINT while": F["double_sigint_in_write"],
        f"NaN injected (`MINIGAN_INJECT_NAN_AT_STEP`), {F['nan']} positions": F["nan"],
        "ENOSPC after 1 MB": F["disk_full"],
        "EACCES / EROFS": F["unwritable_create"],
        "ENOSPC on the rename, EIO on fsync": F["rename_or_fsync"],
        "EFBIG in a real subprocess": F["efbig_real_process"],
        "Total": faults.FAULTS_TOTAL,
    }
    for prefix, n in expected.items():
        injected, survived = row(rows, prefix)
        assert injected == survived == str(n), f"docs/RELIABILITY.md row {prefix!r}: should be {n} / {n}"
    assert len(rows) == len(expected), "docs/RELIABILITY.md's fault table has rows this test does not know"
    text = prose("docs/RELIABILITY.md")
    assert (f"Ten wait for a new `.ckpt-*.tmp` file ({faults.KILL_PLAN['temp_appears']}) or for the hold line "
            f"({faults.KILL_PLAN['holding']})") in text and F["sigkill.inside_checkpoint_write"] == 10
    assert f"Nine wait for {faults.EPOCH_LINES[0]} to {faults.EPOCH_LINES[1]} epoch lines" in text
    assert F["sigkill.after_epochs"] == 9


def test_reliability_bad_inputs_table():
    rows = table("docs/RELIABILITY.md", "Category")
    expected = {
        "Checkpoints, damaged bytes": (H["checkpoint/truncated"] + H["checkpoint/flipped_bytes"],
                                       [f"{len(hostile.TRUNCATIONS)} truncations", f"{len(hostile.FLIPS)} byte flips"]),
        "Checkpoints, valid npz": (H["checkpoint/content"], []),
        "Checkpoints, attacks": (H["checkpoint/attack"], []),
        "IDX files": (H["idx/cases"], []),
        "MNIST pickle": (H["pickle/runs_code_or_wrong_hash"] + H["pickle/random_bytes"],
                         [f"{len(list(hostile._pickles(Path('m'))))} code-running pickles",
                          f"{len(hostile.RANDOM_BLOBS)} random byte strings"]),
        "CLI arguments": (H["argv/fixed"] + H["argv/label"] + H["argv/random_text"],
                          [f"{len(hostile.RANDOM_TEXTS)} random strings"]),
        "Total": (sum(H.values()), []),
    }
    for prefix, (n, phrases) in expected.items():
        cells = row(rows, prefix)
        assert cells[0] == str(n), f"docs/RELIABILITY.md row {prefix!r}: should count {n}, says {cells[0]}"
        for phrase in phrases:
            assert phrase in cells[1], f"docs/RELIABILITY.md row {prefix!r} should say {phrase!r}"
    assert len(rows) == len(expected), "docs/RELIABILITY.md's bad-input table has rows this test does not know"
    assert f"Not counted: {WORDS[hostile.HARMLESS_COUNT]} flips of zip timestamps" in prose("docs/RELIABILITY.md")


# --------------------------------------------------------------------------------------------------
# Benchmarks: README.md's figures come from the JSON committed in benchmarks/results/
# --------------------------------------------------------------------------------------------------

RESULTS = REPO / "benchmarks" / "results" / "2026-12-02"


def _runs(pattern: str) -> list[dict]:
    runs = [json.loads(p.read_text())["result"] for p in sorted(RESULTS.glob(pattern))]
    assert runs, f"no {pattern} in {RESULTS}"
    return runs


def _span(values, fmt="{:.2f}") -> str:
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}–{hi}"


def _less_time(ratio: float) -> float:
    """PyTorch takes ``ratio`` times minigan's time: minigan needs 1 - 1/ratio less time (in %)."""
    return 100 * (1 - 1 / ratio)


def perf_phrases() -> list[str]:
    b100, b1000 = _runs("cpu-batch100-run*.json"), _runs("cpu-batch1000-run*.json")
    mem = json.loads((RESULTS / "cpu-batch100-memory.json").read_text())["result"]["memory"]
    for r in b100 + b1000:
        assert r["threads"] == 1 and r["update"] == "alternating" and r["torch_s"] is not None
    loads = [json.loads(p.read_text())["load_average_1min_after"] for p in RESULTS.glob("*.json")]
    return [
        f"load average of {min(loads):.1f} to {max(loads):.1f}; 2026-12-02), {len(b100)} runs at batch 100 measured minigan at {_span([r['minigan_over_floor'] for r in b100])}× the "
        f"floor's time and PyTorch eager at {_span([r['torch_over_minigan'] for r in b100])}× minigan's (minigan "
        f"needs {_span([_less_time(r['torch_over_minigan']) for r in b100], '{:.0f}')}% less time)",
        f"{len(b1000)} runs at batch 1000 measured {_span([r['minigan_over_floor'] for r in b1000])}× the floor and "
        f"PyTorch at {_span([r['torch_over_minigan'] for r in b1000])}× minigan's time",
        f"RSS grew {mem['minigan']['growth_mib']:.2f} MiB from iteration 100 to 1,000 (PyTorch: "
        f"{mem['torch']['growth_mib']:.2f} MiB)",
    ]


def test_readme_benchmark_figures_come_from_committed_json():
    text = prose("README.md")
    for phrase in perf_phrases():
        assert phrase in text, f"README.md should say {phrase!r} (benchmarks/results/)"


def test_earlier_sweep_figures_come_from_its_json():
    sweep = {r["batch"]: r for r in json.loads((REPO / "benchmarks" / "sweep_cpu.json").read_text())}
    phrase = (f"measured {sweep[100]['minigan_over_floor']:.2f}× / {sweep[1000]['minigan_over_floor']:.2f}× the "
              f"floor at batch 100 / 1000, with PyTorch taking {sweep[100]['torch_over_minigan']:.2f}× / "
              f"{sweep[1000]['torch_over_minigan']:.2f}× minigan's time")
    assert phrase in prose("README.md")


def test_results_page_table_is_the_committed_json():
    rows = table("benchmarks/RESULTS.md", "file")
    files = sorted(RESULTS.glob("*.json"))
    assert sorted(rows) == sorted(f"`{p.name}`" for p in files if "memory" not in p.name)
    for p in files:
        doc = json.loads(p.read_text())
        r = doc["result"]
        if "memory" in p.name:
            continue
        less = _less_time(r["torch_over_minigan"])
        assert rows[f"`{p.name}`"] == [
            str(r["batch"]), f"{1e3 * r['minigan_s']:.1f}", f"{1e3 * r['floor_s']:.1f}", f"{1e3 * r['torch_s']:.1f}",
            f"{r['minigan_over_floor']:.2f}", f"{r['torch_over_minigan']:.2f}",
            f"{abs(less):.0f}% {'less' if less >= 0 else 'more'}", f"{r['floor_gflops']:.0f}",
            f"{doc['load_average_1min_after']:.2f}"], p.name


# --------------------------------------------------------------------------------------------------
# The main job's quality: README.md and docs/RESULTS.md quote benchmarks/seeds.py's committed JSON
# --------------------------------------------------------------------------------------------------

SEEDS = REPO / "benchmarks" / "results" / "seeds"


def _seeds_module():
    return load_benchmark("seeds")


def test_main_job_figures_come_from_the_seed_benchmark():
    seeds = _seeds_module()
    doc = json.loads((SEEDS / "modern-5ep-seeds20-29.json").read_text())
    assert doc["epochs"] == 5 and doc["threads"] == "default" and len(doc["rows"]) == 10
    rendered = seeds.markdown(doc)
    results = (REPO / "docs" / "RESULTS.md").read_text()
    assert rendered in results, "docs/RESULTS.md should hold `seeds.py --render` of the committed JSON verbatim"
    averaged = json.loads((SEEDS / "modern-ema-5ep-seeds40-59.json").read_text())
    assert averaged["epochs"] == 5 and averaged["threads"] == "default" and len(averaged["rows"]) == 20
    assert seeds.markdown(averaged) in results, "docs/RESULTS.md should hold `seeds.py --render` of each JSON"
    averaged_one = json.loads((SEEDS / "modern-ema-5ep-seeds60-69-1thread.json").read_text())
    assert averaged_one["threads"] == 1 and len(averaged_one["rows"]) == 10
    assert seeds.markdown(averaged_one) in results
    # The decaying rates alone, then D's steps clipped alone (both on the way to the current default).
    for name in ("modern-decay-5ep-seeds70-89.json", "modern-decay-5ep-seeds70-79-1thread.json",
                 "modern-decay-clip1-5ep-seeds90-99-1thread.json"):
        assert seeds.markdown(json.loads((SEEDS / name).read_text())) in results, name
    # The current default (decay, D's steps clipped, D's rate warmed up): twenty seeds at the default thread
    # count, ten at one.
    current = json.loads((SEEDS / "modern-clip-warmup-5ep-seeds90-109.json").read_text())
    assert current["epochs"] == 5 and current["threads"] == "default" and len(current["rows"]) == 20
    current_one = json.loads((SEEDS / "modern-clip-warmup-5ep-seeds90-99-1thread.json").read_text())
    assert current_one["epochs"] == 5 and current_one["threads"] == 1 and len(current_one["rows"]) == 10
    for doc in (current, current_one):
        assert doc["command"].endswith("-- --d-update-clip 1 --d-warmup 500")  # the preset's values since
        assert seeds.markdown(doc) in results
        summary_line = seeds.markdown(doc).splitlines()[-1]
        assert summary_line in prose("README.md"), "README.md should quote the current benchmark's summary lines"
    fid_real = {round(r["fid_real"], 2) for r in current["rows"]}
    assert len(fid_real) == 1 and f"real-data FID {fid_real.pop():.2f})" in prose("README.md")
    # The default run's time, in README's first lines: 2,500 updates at the quiet machine's time per update.
    log = (REPO / "benchmarks" / "results" / "2026-12-03-amd" / "cli-clip-warmup.log").read_text()
    cgan_ms = float(re.findall(r"\(([\d.]+) ms/update\)", log)[-1])
    minutes = f"{cgan_ms * 2500 / 60000:.1f}"
    assert f"(5 epochs, ~{minutes} min on 2 CPU cores)" in prose("README.md")
    assert f"(2,500 updates, {minutes} minutes at {cgan_ms:.1f} ms each" in prose("README.md")
    one_thread = json.loads((SEEDS / "modern-5ep-seeds30-39-1thread.json").read_text())
    assert one_thread["threads"] == 1 and len(one_thread["rows"]) == 10
    assert seeds.markdown(one_thread) in results
    # The broken run (D's learning rate x10): the monitor must flag every seed within two epochs.
    broken = json.loads((SEEDS / "broken-lrD4e-2-2ep-seeds40-42-1thread.json").read_text())
    assert broken["command"].endswith("-- --lr-D 4e-2") and broken["epochs"] == 2
    assert all(row["health"] and row["health_first_epoch"] <= 2 for row in broken["rows"])
    assert seeds.markdown(broken) in results
    before = json.loads((SEEDS / "modern-lrD4e-4-5ep-seed0.json").read_text())["rows"][0]
    phrase = f"label accuracy {100 * before['accuracy']:.1f}%, FID {before['fid']:.1f}"
    assert phrase in " ".join(results.split()), f"docs/RESULTS.md should say {phrase!r}"


def test_paper_cgan_attempt_figures_come_from_its_committed_outputs():
    out = REPO / "benchmarks" / "results" / "paper-cgan"
    results = " ".join((REPO / "docs" / "RESULTS.md").read_text().split())
    last, best = (json.loads((out / name).read_text()) for name in ("eval-epoch10.json", "eval-best.json"))
    assert (last["epoch"], best["epoch"]) == (10, 5)
    assert last["updates"] == 5276  # the Ctrl-C checkpoint, 276 updates into epoch 11, as RESULTS.md says
    for doc in (last, best):
        samples = doc["classifier"]["samples"]
        assert f"{100 * samples['label_accuracy']['overall']:.1f}%" in results
        assert f"FID {samples['fid_test']:.1f}" in results
        assert f"{doc['parzen']['mean']:.1f} ± {doc['parzen']['se']:.1f}".replace("-", "−") in results  # typographic
    ratio = last["classifier"]["samples"]["fid_test"] / last["classifier"]["real_valid"]["fid_test"]
    assert f"({ratio:.0f}× real)" in results
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 10 and all("ignores_label" in {f["kind"] for f in r["health"]} for r in records)


def test_cdcgan_figures_come_from_its_committed_outputs():
    out = REPO / "benchmarks" / "results" / "dcgan"
    rows = table("docs/RESULTS.md", "epochs")
    for epoch in (5, 10):
        doc = json.loads((out / f"cdcgan-seed0-eval-epoch{epoch}.json").read_text())
        assert doc["epoch"] == epoch
        samples, real = doc["classifier"]["samples"], doc["classifier"]["real_valid"]
        per_class = samples["label_accuracy"]["per_class"]
        worst = min(per_class)
        low, high = (round(doc["n_samples"] * samples["histogram_summary"][k]) for k in ("min_share", "max_share"))
        assert rows[str(epoch)] == [
            f"{100 * samples['label_accuracy']['overall']:.1f}%", f"{100 * worst:.1f}% (\"{per_class.index(worst)}\")",
            f"{samples['fid_test']:.1f} ({samples['fid_test'] / real['fid_test']:.1f}×)",
            f"{doc['parzen']['mean']:.1f} ± {doc['parzen']['se']:.1f}", f"{low:,}–{high:,} per 1,000"]
    records = [json.loads(line) for line in (out / "cdcgan-seed0-metrics.jsonl").read_text().splitlines()]
    seconds = [r["seconds"] for r in records]
    assert len(records) == 10 and not any(r.get("health") for r in records)
    assert f"Epoch time: {min(seconds):.0f}–{max(seconds):.0f} s" in prose("docs/RESULTS.md")


def test_unconditional_dcgan_ten_epoch_figures_come_from_its_committed_eval():
    out = REPO / "benchmarks" / "results" / "dcgan"
    doc = json.loads((out / "dcgan-seed0-10epochs-eval.json").read_text())
    samples = doc["classifier"]["samples"]
    shares = [count / doc["n_samples"] for count in samples["histogram"]]
    assert doc["epoch"] == 10 and min(shares) > 0  # every digit drawn
    outside = [d for d, share in enumerate(shares) if not 0.07 <= share <= 0.13]
    assert outside == [1, 4, 9]  # "three digits out of the band": not met
    text = prose("docs/RESULTS.md")
    assert f"the shares run from {100 * min(shares):.1f}% (\"{shares.index(min(shares))}\") to " \
           f"{100 * max(shares):.1f}% (\"{shares.index(max(shares))}\"), and \"1\" ({100 * shares[1]:.1f}%)" in text
    ratio = samples["fid_test"] / doc["classifier"]["real_valid"]["fid_test"]
    assert f"FID {samples['fid_test']:.1f} ({ratio:.1f}× real), Parzen {doc['parzen']['mean']:.1f} ± " \
           f"{doc['parzen']['se']:.1f}" in text
    records = [json.loads(line) for line in (out / "dcgan-seed0-10epochs-metrics.jsonl").read_text().splitlines()]
    assert len(records) == 10 and not any(r.get("health") for r in records)
    seconds = [r["seconds"] for r in records]
    assert f"Epochs took {min(seconds):.0f}–{max(seconds):.0f} s here" in text
    d_fake = [r["D_G_z"] for r in records[1:]]
    assert f"D(G(z)) {min(d_fake):.2f}–{max(d_fake):.2f} from epoch 2" in text


@pytest.mark.parametrize("name,header,epochs", [("fashion-edges-width32-1epoch.json", "objective", 1),
                                                 ("fashion-edges-width32-2epochs.json", "after 2 epochs", 2),
                                                 ("mnist-inpaint-width32-1epoch.json", "mnist-inpaint, 1 epoch", 1),
                                                 ("mnist-inpaint-width32-3epochs.json", "mnist-inpaint, 3 epochs", 3)])
def test_pix2pix_ablation_tables_are_the_committed_json(name, header, epochs):
    doc = json.loads((REPO / "benchmarks" / "results" / "pix2pix" / name).read_text())
    assert (doc["dataset"], doc["width"], doc["n_eval"]) == (name.split("-width")[0], 32, 10_000)
    rows = table("docs/RESULTS.md", header)
    for label, key in (("L1 only", "l1"), ("cGAN only", "gan"), ("L1 + cGAN", "l1+gan")):
        r = doc["results"][key]
        assert r["epochs"] == epochs
        assert rows[label] == [f"{r['l1']:.4f}", f"{r['sharpness']:.3f}", f"{100 * r['accuracy']:.1f}%",
                               f"{r['fid']:.2f}"]


def test_mnist_inpaint_claims_follow_from_the_json():
    doc = json.loads((REPO / "benchmarks" / "results" / "pix2pix" / "mnist-inpaint-width32-3epochs.json").read_text())
    one = json.loads((REPO / "benchmarks" / "results" / "pix2pix" / "mnist-inpaint-width32-1epoch.json").read_text())
    text = prose("docs/RESULTS.md")
    both, l1 = doc["results"]["l1+gan"], doc["results"]["l1"]
    real = doc["reference"]["accuracy_real_targets"]
    assert both["accuracy"] < 0.95  # the section says: not met
    assert (f"L1 + cGAN reaches {100 * both['accuracy']:.1f}% after 3 epochs "
            f"({100 * one['results']['l1+gan']['accuracy']:.1f}% after 1), "
            f"{100 * (real - both['accuracy']):.1f} points under the real digits' {100 * real:.1f}%") in text
    assert f"({both['fid']:.2f} against L1 only's {l1['fid']:.2f} after 3" in text
    seconds = [round(doc["results"][k]["train_seconds"]) for k in ("l1", "gan", "l1+gan")]
    assert "3 epochs of training took {} s (L1 only), {} s (cGAN) and {} s (L1 + cGAN)".format(*seconds) in text
    assert doc["commit"] == "7cbf355" and one["commit"] == "1284f33"


def test_inpaint_longer_training_table_is_its_committed_json():
    results = REPO / "benchmarks" / "results" / "pix2pix"
    rows = table("docs/RESULTS.md", "L1 + cGAN, epochs")
    three = json.loads((results / "mnist-inpaint-width32-3epochs.json").read_text())["results"]["l1+gan"]
    runs = [three] + [json.loads((results / f"mnist-inpaint-width32-l1gan-{n}epochs.json").read_text())
                      ["results"]["l1+gan"] for n in (8, 12)]
    for r, epochs in zip(runs, (3, 8, 12)):
        assert r["epochs"] == epochs
        assert rows[str(epochs)] == [f"{r['l1']:.4f}", f"{r['sharpness']:.3f}", f"{100 * r['accuracy']:.2f}%",
                                     f"{r['fid']:.2f}"]
    last = runs[-1]
    assert last["accuracy"] < 0.95  # README and docs say: not met
    for path in ("README.md", "docs/RESULTS.md"):
        assert f"{100 * last['accuracy']:.2f}% after 12" in prose(path)
    assert f"(`train_seconds` {round(last['train_seconds']):,} in all)" in prose("docs/RESULTS.md")


def test_inpaint_ceiling_table_is_its_committed_json():
    results = REPO / "benchmarks" / "results" / "pix2pix"
    mlp = json.loads((results / "inpaint-ceiling.json").read_text())
    conv = json.loads((results / "inpaint-ceiling-conv.json").read_text())
    assert conv["architecture"]["conv"] == [32, 64] and conv["architecture"]["hidden"] == [512]
    rows = table("docs/RESULTS.md", "classifier trained and tested on")
    for label, key in (("whole digits", "whole_digits"), ("mnist-inpaint's input: the top half only", "input_only")):
        assert rows[label] == [f"{100 * mlp[key]['test_accuracy']:.2f}%", f"{100 * conv[key]['test_accuracy']:.2f}%"]
    top = conv["input_only"]
    assert (f"The convolutional reader gets {100 * top['test_accuracy']:.2f}% of the test inputs right "
            f"({100 * top['valid_accuracy']:.2f}% of the validation inputs)") in prose("docs/RESULTS.md")


def test_pix2pix_ablation_figures_come_from_its_committed_json():
    doc = json.loads((REPO / "benchmarks" / "results" / "pix2pix" / "fashion-edges-width32-1epoch.json").read_text())
    rows = table("docs/RESULTS.md", "objective")
    ref = doc["reference"]
    assert rows["real targets"][2:] == [f"{100 * ref['accuracy_real_targets']:.1f}%",
                                        f"{ref['fid_valid_vs_test_targets']:.2f} (validation vs test targets)"]
    seconds = [round(doc["results"][k]["train_seconds"]) for k in ("l1", "gan", "l1+gan")]
    assert "an epoch took {} s (L1 only: no D), {} s (cGAN) and {} s (L1 + cGAN)".format(*seconds) \
        in prose("docs/RESULTS.md")
    l1, both = doc["results"]["l1"], doc["results"]["l1+gan"]
    assert f"halves the FID ({l1['fid']:.2f} → {both['fid']:.2f})" in prose("README.md")
    assert f"classifier accuracy ({100 * both['accuracy']:.1f}%)" in prose("README.md")


def test_cdcgan_weight_average_table_is_its_committed_jsonl():
    path = REPO / "benchmarks" / "results" / "average_decay" / "2026-12-02-cdcgan-seed1.jsonl"
    rows = table("docs/RESULTS.md", "seed 1, 5 epochs")
    for line in path.read_text().splitlines():
        r = json.loads(line)
        label = "last weights" if r["variant"] == "last weights" else r["variant"].replace("ema", "β")
        assert rows[label] == [f"{100 * r['accuracy']:.1f}%", f"{100 * r['worst_class']:.1f}%", f"{r['fid_ratio']:.2f}"]


def test_standing_statistics_table_is_its_committed_jsonl():
    path = REPO / "benchmarks" / "results" / "average_decay" / "2026-12-02-cdcgan-seed1-standing.jsonl"
    runs = {r["variant"]: r for r in map(json.loads, path.read_text().splitlines())}
    before = {json.loads(line)["variant"]: json.loads(line) for line in
              (path.parent / "2026-12-02-cdcgan-seed1.jsonl").read_text().splitlines()}
    rows = table("docs/RESULTS.md", "seed 1, 5 epochs, FID × real")
    for beta in ("0.99", "0.995", "0.999"):
        live, standing = runs[f"ema {beta} live BN"], runs[f"ema {beta}"]
        assert live["fid_ratio"] == before[f"ema {beta}"]["fid_ratio"]  # the same run, bit for bit
        assert rows[f"β {beta}"] == [f"{live['fid_ratio']:.2f}", f"{standing['fid_ratio']:.2f}"]


def test_unconditional_dcgan_figures_come_from_its_committed_eval():
    doc = json.loads((REPO / "benchmarks" / "results" / "dcgan" / "dcgan-seed0-eval-epoch3.json").read_text())
    samples = doc["classifier"]["samples"]
    shares = [count / doc["n_samples"] for count in samples["histogram"]]
    text = prose("docs/RESULTS.md")
    assert doc["epoch"] == 3 and len(shares) == 10 and min(shares) > 0  # every digit drawn
    assert f"the shares were {100 * min(shares):.1f}% (\"{shares.index(min(shares))}\") to " \
           f"{100 * max(shares):.1f}% (\"{shares.index(max(shares))}\")" in text
    over = [str(d) for d, share in enumerate(shares) if share > 0.13 and share != max(shares)]
    assert over == ["3", "9"] and 'with "3" and "9" also above 13%' in text
    ratio = samples["fid_test"] / doc["classifier"]["real_valid"]["fid_test"]
    assert f"FID {samples['fid_test']:.1f} ({ratio:.0f}× real), Parzen {doc['parzen']['mean']:.1f} ± " \
           f"{doc['parzen']['se']:.1f}" in text


@pytest.mark.parametrize("name,current", [("modern-clip-warmup-15ep-seeds90-99-1thread.json", True),
                                          ("modern-ema-15ep-seeds60-69-1thread.json", False)])
def test_fifteen_epoch_benchmarks_are_the_committed_json(name, current):
    seeds = _seeds_module()
    doc = json.loads((SEEDS / name).read_text())
    assert doc["epochs"] == 15 and doc["threads"] == 1 and len(doc["rows"]) == 10
    assert doc["criteria"]["min_parzen"] == 132.0 and all(r["parzen"] >= 132 for r in doc["rows"])
    assert seeds.markdown(doc) in (REPO / "docs" / "RESULTS.md").read_text()
    low, high = min(r["parzen"] for r in doc["rows"]), max(r["parzen"] for r in doc["rows"])
    assert f"{low:.1f}–{high:.1f}" in prose("docs/RESULTS.md")
    # README quotes the current default's summary line, and no longer the earlier default's.
    assert (seeds.markdown(doc).splitlines()[-1] in prose("README.md")) == current
    if current:
        assert "--extend" in doc["command"] and doc["command"].endswith("-- --d-update-clip 1 --d-warmup 500")
        assert f"(the MLP CGAN after 15 epochs: {low:.1f}–{high:.1f} on ten seeds)" in prose("README.md")


def test_epoch_times_and_time_to_quality_come_from_committed_outputs():
    import re

    results = (REPO / "benchmarks" / "RESULTS.md").read_text()
    rows = table("benchmarks/RESULTS.md", "run")
    log = (REPO / "benchmarks" / "results" / "2026-12-02-quiet-step-times.log").read_text()
    per_update = [float(v) for v in re.findall(r"\(([\d.]+) ms/update\)", log)]
    assert len(per_update) == 5
    cdcgan, cgan, p2p32, p2p64 = per_update[:2], per_update[2], per_update[3], per_update[4]
    assert row(rows, "default CGAN")[1:4] == [f"{cgan:.1f}", "500", f"{cgan * 500 / 1000:.0f} s"]
    assert row(rows, "conditional DCGAN")[1] == f"{min(cdcgan):.1f}, {max(cdcgan):.1f}"
    assert row(rows, "conditional DCGAN")[3] == f"{max(cdcgan) * 781 / 60000:.1f} min"
    assert row(rows, "pix2pix fashion-edges")[1:4] == [f"{p2p32:.1f}", "781", f"{p2p32 * 781 / 60000:.1f} min"]
    amd = (REPO / "benchmarks" / "results" / "2026-12-02-amd" / "before-after.log").read_text()
    after = [float(v) for v in re.findall(r"commit e6e510d pix2pix-w32: .*\(([\d.]+) ms/update\)", amd)]
    minutes = f"{sum(after) / len(after) * 781 / 60000:.1f}"
    assert len(after) == 2 and f"# ~{minutes} min/epoch (benchmarks/RESULTS.md)" in prose("README.md")
    assert f"An epoch of 781 updates takes about {minutes} minutes at width 32" in prose("README.md")
    assert row(rows, "pix2pix, width 64")[1:4] == [f"{p2p64:.1f}", "781", f"{p2p64 * 781 / 60000:.1f} min"]
    current_cdcgan = [float(v) for v in re.findall(r"\(([\d.]+) ms/update\)", (
        REPO / "benchmarks" / "results" / "2026-12-03-amd" / "cdcgan-epoch-time.log").read_text())]
    assert len(current_cdcgan) == 2
    minutes = f"{max(current_cdcgan) * 781 / 60000:.1f}"
    assert f"An epoch of the conditional DCGAN takes {minutes} minutes" in prose("README.md")
    assert (f"{current_cdcgan[0]:.1f} and {current_cdcgan[1]:.1f} ms per update, so 781 updates take {minutes} minutes"
            in prose("benchmarks/RESULTS.md"))
    doc = json.loads((REPO / "benchmarks" / "results" / "time_to_quality-seeds0-2.json").read_text())
    ttq = table("benchmarks/RESULTS.md", "seed")
    for r in doc["rows"]:
        cells = ttq[str(r["seed"])]
        for cell, hit in zip(cells, (r["to_parzen"], r["to_accuracy"])):
            assert cell.startswith(f"epoch {hit['epoch']}: {hit['train_seconds'] / 60:.1f} min")
            assert f"({hit['process_seconds'] / 60:.1f} min wall)" in cell
    current = json.loads((REPO / "benchmarks" / "results" / "time_to_quality-clip-warmup-seeds0-2.json").read_text())
    assert current["command"].startswith("python benchmarks/time_to_quality.py --seeds 0-2")
    ttq_current = table("benchmarks/RESULTS.md", "seed (current default)")
    for r in current["rows"]:
        cells = ttq_current[str(r["seed"])]
        for cell, hit in zip(cells, (r["to_parzen"], r["to_accuracy"])):
            assert cell == (f"epoch {hit['epoch']}: {hit['train_seconds'] / 60:.1f} min "
                            f"({hit['process_seconds'] / 60:.1f} min wall)")
        assert cells[2] == ", ".join(f"{e['epoch_seconds']:.0f}" for e in r["epochs"]) + " s"
        assert cells[3] == f"{100 * r['epochs'][0]['accuracy']:.1f}%"
        assert r["to_parzen"]["train_seconds"] / 60 <= 5 and r["to_accuracy"]["train_seconds"] / 60 <= 2  # the targets
    test_parzen = json.loads((REPO / "benchmarks" / "results" /
                              "time_to_quality-seed0-epoch3-test-parzen.json").read_text())
    assert test_parzen["epoch"] == 3
    assert f"{test_parzen['parzen']['mean']:.1f} ± {test_parzen['parzen']['se']:.1f}" in " ".join(results.split())


def test_pix2pix_two_epoch_claims_follow_from_the_json():
    doc = json.loads((REPO / "benchmarks" / "results" / "pix2pix" / "fashion-edges-width32-2epochs.json").read_text())
    l1, both = doc["results"]["l1"], doc["results"]["l1+gan"]
    points = 100 * (doc["reference"]["accuracy_real_targets"] - both["accuracy"])
    for path in ("README.md", "docs/RESULTS.md"):
        text = prose(path)
        assert f"FID {l1['fid'] / both['fid']:.1f}× lower" in text
        assert f"{points:.2f} points under" in text
    assert f"({l1['fid']:.2f} → {both['fid']:.2f})" in prose("README.md")
    assert f"sharpness {100 * (1 - both['sharpness']):.0f}% under" in prose("README.md").replace("the data's", "")
    assert points < 3 and l1["fid"] / both["fid"] >= 2 and abs(1 - both["sharpness"]) <= 0.15


def test_seed57_rerun_figures_come_from_its_jsonl():
    path = REPO / "benchmarks" / "results" / "average_decay" / "2026-12-02-seed57-default-threads.jsonl"
    rows = {r["variant"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert {r["seed"] for r in rows.values()} == {57} and {r["threads"] for r in rows.values()} == {"default"}
    text = prose("docs/RESULTS.md")
    a = rows["ema 0.99"]
    assert (f"its β 0.99 average reads {100 * a['accuracy']:.1f}% with worst class {100 * a['worst_class']:.1f}%, "
            f"FID {a['fid_ratio']:.1f}×") in text
    for beta in ("0.995", "0.998"):
        r = rows[f"ema {beta}"]
        assert f"β {beta}: {100 * r['worst_class']:.1f}%, {r['fid_ratio']:.1f}×" in text


def test_conv_layer_table_is_its_committed_json():
    doc = json.loads((REPO / "benchmarks" / "results" / "conv" / "2026-12-02-conv_time-1thread.json").read_text())
    assert doc["threads"] == 1 and doc["batch"] == 64 and doc["iters"] == 100
    rows = table("benchmarks/RESULTS.md", "case")
    for case, c in doc["cases"].items():
        cells = row(rows, "BatchNorm" if case == "bn" else case)
        q = c["quartiles_s"]["minigan"]
        assert cells[1] == f"{1000 * c['minigan_s']:.2f} [{1000 * q[0]:.2f}–{1000 * q[1]:.2f}]"
        assert cells[2].split(" ")[0] == f"{1000 * c['floor_s']:.2f}"
        assert cells[3].split(" ")[0] == f"{c['minigan_over_floor']:.2f}"
    convs = [c["minigan_over_floor"] for k, c in doc["cases"].items() if k != "bn"]
    assert f"minigan runs at {min(convs):.1f}–{max(convs):.1f}× its GEMM floor" in prose("benchmarks/RESULTS.md").replace("**", "")


def test_fashion_learning_rate_table_is_its_committed_json():
    text = (REPO / "docs" / "RESULTS.md").read_text()
    for name, rate in (("fashion-modern-lrD4e-3-5ep-seeds1-2-1thread.json", "4e-3"),
                       ("fashion-lrD4e-4-5ep-seeds0-1-1thread.json", "4e-4"),
                       ("fashion-lrD4e-4-5ep-seeds2-5-1thread.json", "4e-4")):
        doc = json.loads((REPO / "benchmarks" / "results" / "seeds" / name).read_text())
        assert doc["threads"] == 1 and "--dataset fashion-mnist" in doc["command"]
        assert ("--lr-D 0.0004" in doc["command"]) == (rate == "4e-4")
        for r in doc["rows"]:
            flags = ", ".join(r["health"]) or "-"
            if r.get("health_first_epoch"):
                flags += f" (from epoch {r['health_first_epoch']})"
            line = (f"| {r['seed']} | {rate} | {100 * r['accuracy']:.1f}% | {100 * r['worst_class']:.1f}% | "
                    f"{r['fid']:.1f} ({r['fid_ratio']:.1f}×) | {r['D_G_z']:.3f} | {flags} |")
            assert line in text, line
    old = json.loads((REPO / "benchmarks" / "results" / "papers-superseded" /
                      "cgan-fashion-lrD4e-3-seed0.json").read_text())["results"][0]
    assert f"seed 0 drew one class (label accuracy {100 * old['accuracy']:.1f}%" in prose("docs/RESULTS.md")
    assert max(old["histogram"]) >= 0.9 * sum(old["histogram"])


def test_fashion_with_the_mnist_guards_is_its_committed_json():
    doc = json.loads((SEEDS / "fashion-lrD4e-3-clip-warmup-5ep-seeds10-19-1thread.json").read_text())
    assert doc["command"].endswith("-- --dataset fashion-mnist --lr-D 4e-3 --d-update-clip 1 --d-warmup 500")
    assert doc["threads"] == 1 and doc["epochs"] == 5 and len(doc["rows"]) == 10
    assert _seeds_module().markdown(doc) in (REPO / "docs" / "RESULTS.md").read_text()
    rows = doc["rows"]
    # "No collapse on any of ten seeds": every run reads its labels, draws every class, raises no flag.
    assert all(r["accuracy"] > 0.95 and r["min_share"] > 0.08 and not r["health"] and not r["d_won"] for r in rows)
    text = prose("docs/RESULTS.md")
    accuracy = sorted(r["accuracy"] for r in rows)
    shares = sorted(r["min_share"] for r in rows)
    ratios = sorted(r["fid_ratio"] for r in rows)
    assert f"every run learns its labels ({100 * accuracy[0]:.1f}–{100 * accuracy[-1]:.1f}%)" in text
    assert f"(the smallest share {100 * shares[0]:.1f}–{100 * shares[-1]:.1f}%)" in text
    assert f"against {ratios[0]:.1f}–{ratios[-1]:.1f}× real" in text


def _papers_module():
    return load_benchmark("papers")


def test_papers_table_is_the_committed_json():
    papers = _papers_module()
    docs = papers.load_results()
    assert {d["results"][0]["row"] for d in docs} == {*papers.ROWS, papers.REFERENCE}
    assert all(d["threads"] == "1" and d["seed"] == 0 for d in docs)
    results = (REPO / "docs" / "RESULTS.md").read_text()
    assert papers.markdown(docs) in results, "docs/RESULTS.md should hold `papers.py --render` verbatim"
    gan = next(d for d in docs if d["results"][0]["row"] == "gan-paper")["results"][-1]
    text = prose("docs/RESULTS.md")
    assert (f"**missed**: {gan['parzen']:.1f} ± {gan['parzen_se']:.1f} after {gan['trained_epochs']} epochs "
            f"(best checkpoint: epoch {gan['scored_epoch']})") in text
    assert f"the paper GAN reaches {gan['parzen']:.1f} after {gan['trained_epochs']} epochs" in text
    real = next(d for d in docs if d["results"][0]["row"] == "real-digits")["results"][0]
    assert f"Real training digits score {real['parzen']:.1f} ± {real['parzen_se']:.1f}" in prose("README.md")


def test_cdcgan_fashion_figures_come_from_its_committed_eval():
    ev = json.loads((REPO / "benchmarks" / "results" / "dcgan" / "cdcgan-fashion-seed0-eval-epoch5.json").read_text())
    assert ev["dataset"] == "fashion-mnist" and ev["epoch"] == 5
    s, r = ev["classifier"]["samples"], ev["classifier"]["real_valid"]
    text = prose("docs/RESULTS.md")
    assert (f"label accuracy {100 * s['label_accuracy']['overall']:.1f}% (worst class "
            f"{100 * min(s['label_accuracy']['per_class']):.1f}%), FID {s['fid_test']:.1f} "
            f"({s['fid_test'] / r['fid_test']:.0f}× real)") in text
    assert f"real validation garments ({100 * r['label_accuracy']['overall']:.1f}%)" in text
    records = [json.loads(line) for line in
               (REPO / "benchmarks" / "results" / "dcgan" / "cdcgan-fashion-seed0-metrics.jsonl").read_text().splitlines()]
    assert f"D(G(z)) {records[0]['D_G_z']:.2f} → {records[-1]['D_G_z']:.2f}" in text


def test_the_amd_session_tables_are_rendered_from_the_committed_outputs():
    from helpers import load_benchmark

    tables = load_benchmark("session_tables").markdown()
    results = (REPO / "benchmarks" / "RESULTS.md").read_text()
    assert all(t in results for t in tables.split("\n\n")) and len(tables.split("\n\n")) == 3
    assert "| pix2pix-w32 |" in tables and tables.count("\n| D.conv2 |") == 2
    ratios = [json.loads((REPO / "benchmarks" / "results" / "2026-12-02-amd" / f"pix2pix-w{w}.json").read_text())
              ["torch_over_minigan"] for w in (32, 64)]
    assert "PyTorch takes {:.2f}× minigan's time at width 32, {:.2f}× at 64".format(*ratios) in prose("README.md")


def test_random_split_figures_come_from_their_committed_runs():
    """The parallel draw's before/after figures in benchmarks/RESULTS.md are the committed step_time JSONs'."""
    results = " ".join((REPO / "benchmarks" / "RESULTS.md").read_text().split())
    out = REPO / "benchmarks" / "results" / "2026-12-03-amd"

    def runs(pattern, key):
        docs = [json.loads(p.read_text()) for p in sorted(out.glob(pattern))]
        assert len(docs) == 2, pattern
        return [key(d) for d in docs]
    for code in ("main", "dev"):
        ratios = runs(f"random-split-b1000-{code}-*.json", lambda d: d["minigan_over_floor"])
        times = runs(f"random-split-b1000-{code}-*.json", lambda d: d["minigan_s"] * 1e3)
        assert f"{ratios[0]:.3f} and {ratios[1]:.3f}" in results
        assert f"{times[0]:.1f} and {times[1]:.1f}" in results
        ratios = runs(f"random-split-b100-{code}-*.json", lambda d: d["minigan_over_floor"])
        assert f"{ratios[0]:.3f} and {ratios[1]:.3f}" in results
        cli = runs(f"random-split-e2e-{code}-*.json", lambda d: d["cli"]["cli_over_floor"])
        assert f"{cli[0]:.3f} and {cli[1]:.3f}" in results
    torch = runs("random-split-b1000-dev-*.json", lambda d: d["torch_over_minigan"])
    assert f"PyTorch now takes {sum(torch) / 2:.2f}× minigan's" in results


def test_cdcgan_lr_decay_table_comes_from_its_committed_runs():
    results = " ".join((REPO / "docs" / "RESULTS.md").read_text().split())
    out = REPO / "benchmarks" / "results"
    for factor in ("1.0002", "1.0004"):
        rows = [json.loads(line) for line in
                (out / "average_decay" / f"2026-12-03-cdcgan-lr-decay{factor}-seed0.jsonl").read_text().splitlines()]
        last = next(r for r in rows if r["variant"] == "last weights")
        assert last["epochs"] == 10 and last["extra"][-4:] == ["--lr-decay", factor, "--threads", "1"]
        row = (f"| `--lr-decay {factor}` | {1 / float(factor) ** 7810:.2g} × 2e-4 | **{100 * last['accuracy']:.1f}%** | "
               f"**{100 * last['worst_class']:.1f}%** | {last['fid_ratio']:.1f} |")
        assert row in results, row
    evaluated = json.loads((out / "dcgan" / "cdcgan-lr-decay1.0002-seed0-eval-epoch10.json").read_text())
    assert f"{evaluated['parzen']['mean']:.1f} ± {evaluated['parzen']['se']:.1f}" in results
    metrics = [json.loads(line) for line in
               (out / "dcgan" / "cdcgan-lr-decay1.0002-seed0-metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 10 and f"{metrics[-1]['diversity']:.2f} of real digits' with decay 1.0002" in results


@pytest.mark.parametrize("seed, rates, name", [(0, "G 4e-4, D 4e-4", "lr4e-4"), (0, "G 4e-4, D 2e-4", "lrG4e-4"),
                                               (1, "G 4e-4, D 2e-4", "lrG4e-4"), (2, "G 4e-4, D 2e-4", "lrG4e-4"),
                                               (3, "G 4e-4, D 2e-4", "lrG4e-4"), (4, "G 4e-4, D 2e-4", "lrG4e-4"),
                                               (5, "G 4e-4, D 2e-4", "lrG4e-4"), (0, "G 8e-4, D 2e-4", "lrG8e-4"),
                                               (1, "G 2e-4, D 2e-4 (the default)", "default"),
                                               (2, "G 2e-4, D 2e-4 (the default)", "default")])
def test_cdcgan_learning_rate_rows_come_from_their_committed_runs(seed, rates, name):
    results = " ".join((REPO / "docs" / "RESULTS.md").read_text().split())
    out = REPO / "benchmarks" / "results"
    day = "2026-12-04" if seed >= 4 or name == "default" else "2026-12-03"
    rows = {r["variant"]: r for r in map(json.loads, (out / "average_decay" / f"{day}-cdcgan-{name}-seed{seed}.jsonl")
                                         .read_text().splitlines())}
    last, average = rows["last weights"], rows["ema 0.99"]
    assert last["epochs"] == 10 and last["seed"] == seed
    if name == "default":
        assert last["extra"] == ["--model", "cdcgan", "--batch", "64", "--threads", "1"]
    else:
        assert " ".join(last["extra"]).endswith(f"--lr-G {rates[2:6]}" + ("" if rates.endswith("2e-4") else " --lr-D 4e-4")
                                                + " --threads 1")
    evaluated = json.loads((out / "dcgan" / f"cdcgan-{name}-seed{seed}-eval-epoch10.json").read_text())
    samples = evaluated["classifier"]["samples"]["label_accuracy"]
    assert (samples["overall"], min(samples["per_class"])) == (last["accuracy"], last["worst_class"])  # same G

    def percent(fraction, bar=None):
        text = f"{100 * fraction:.1f}%"
        return f"**{text}**" if bar is not None and 100 * fraction >= bar else text
    row = (f"| seed {seed}, {rates} | {percent(last['accuracy'], 99)} | {percent(last['worst_class'], 97)} | "
           f"{last['fid_ratio']:.1f} | {evaluated['parzen']['mean']:.1f} ± {evaluated['parzen']['se']:.1f} | "
           f"{average['fid_ratio']:.1f} ({percent(average['accuracy'])}, {percent(average['worst_class'])}) |")
    assert row in results, row


def test_gpu_table_comes_from_the_committed_h200_runs():
    """benchmarks/RESULTS.md's first GPU section: every step-time row, the kernel-profile and test figures, from
    the files of benchmarks/results/2026-12-04-h200."""
    results = " ".join((REPO / "benchmarks" / "RESULTS.md").read_text().split())
    out = REPO / "benchmarks" / "results" / "2026-12-04-h200"

    def last_json(path):
        return json.loads(next(ln for ln in reversed(path.read_text().splitlines()) if ln.startswith("{")))

    def step_times(run):
        if run == 3:
            return {b: last_json(out / f"run3-step_time-b{b}.txt") for b in (100, 8192)}
        stages = json.loads((out / f"run{run}-gpu_check.json").read_text())["stages"]
        return {r["details"]["batch"]: r["details"] for r in stages
                if r["kind"] == "step_time" and r["details"]["update"] == "alternating"}

    commits = {1: "1235461", 2: "c274e65", 3: "3361187", 4: "2bb6c60", 5: "e3d5953", 8: "5c67e06"}
    for run, commit in commits.items():
        small, large = (step_times(run)[b] for b in (100, 8192))
        ms = lambda s: f"{1e3 * s:.2f}"  # noqa: E731
        cells = [ms(small["minigan_s"]), ms(small["torch_s"]), f"{small['torch_over_minigan']:.3f}",
                 ms(large["minigan_s"]), ms(large["floor_s"]), ms(large["torch_s"]), f"{large['minigan_over_sgemm']:.3f}"]
        start = results.index(f"| {run} ({commit}) |")
        row = results[start:start + 200].replace("**", "")
        assert " | ".join(cells) + " |" in row, (row, cells)
    final = json.loads((out / "run4-gpu_check.json").read_text())
    cupy = next(r for r in final["stages"] if r["kind"] == "tests")["details"]["cupy"]
    assert cupy == {"passed": 140, "failed": 0, "skipped": 0} and "140 passed, 0 failed, 0 skipped" in results
    before, after = (json.loads((out / f"run{r}-profile-kernels-b8192.json").read_text())["kernels"] for r in (3, 4))
    sums = sum(k["gpu_s"] for k in before["kernels"] if k["kernel"] == "cupy_sum")
    assert f"took {1e3 * sums:.2f} of {1e3 * before['gpu_busy_s']:.2f} ms of GPU time" in results
    assert f"GPU time fell to {1e3 * after['gpu_busy_s']:.2f} ms" in results
    small = json.loads((out / "run3-profile-b100.json").read_text())["kernels"]
    assert f"busy {1e3 * small['gpu_busy_s']:.2f} ms of a" in results
    assert f"`run3-profile-b100.json`: {small['launches_per_iter']:.0f} launches" in results
    unaligned = [k for k in after["kernels"] if "align1" in k["kernel"]]
    assert f"{sum(k['gpu_s'] for k in unaligned) * 1e3:.1f} ms are cuBLAS" in results
    assert f"{sum(k['calls_per_iter'] for k in unaligned):.0f} calls" in results
    # the second session: the padding measured and reverted, the launches, the CuPy suite
    products = json.loads((out / "run6-products-b8192.json").read_text())["products"]["products"]
    wide = [r for r in products if 290 in (r["m"], r["k"], r["n"])]
    for kind in ("plain", "layers"):
        rates = [r[f"{kind}_tflops"] for r in wide]
        assert f"{min(rates):.1f}–{max(rates):.1f}" in results, kind
    big = next(r for r in products if (r["m"], r["k"], r["n"]) == (16384, 784, 1200))
    assert "align1" in big["plain_kernels"][0] and f"at {big['plain_tflops']:.1f} TFLOP/s" in results
    run8 = json.loads((out / "run8-profile-kernels-b8192.json").read_text())["kernels"]
    assert f"issues {run8['launches_per_iter']:.0f} kernels where run 4 issued {after['launches_per_iter']:.0f}" \
        in results
    assert f"busy {1e3 * run8['gpu_busy_s']:.2f} ms where it was {1e3 * after['gpu_busy_s']:.2f}" in results
    second = json.loads((out / "run8-gpu_check.json").read_text())
    cupy = next(r for r in second["stages"] if r["kind"] == "tests")["details"]["cupy"]
    assert cupy == {"passed": 146, "failed": 0, "skipped": 0} and "146 CuPy cases passed, 0 failed, 0 skipped" in results
    assert [round(v, 3) for v in second["targets"]["minigan_over_sgemm_at_8192"]["values"]] == [0.599, 0.575, 0.596]


def test_cdcgan_average_table_comes_from_the_committed_runs():
    """docs/RESULTS.md's table of the default conditional DCGAN on seeds 6-10 (last weights against G's average),
    and the counts said beside it, from benchmarks/results/average_decay."""
    results = (REPO / "docs" / "RESULTS.md").read_text()
    results = results[results.index("The default rate with G's average as the sampler, on five untuned seeds"):]
    passes = {"last weights": 0, "ema 0.99": 0}
    for seed in (6, 7, 8, 9, 10):
        path = REPO / "benchmarks" / "results" / "average_decay" / f"2026-12-04-cdcgan-default-seed{seed}.jsonl"
        runs = {r["variant"]: r for r in map(json.loads, path.read_text().splitlines())}
        cells = []
        for variant in ("last weights", "ema 0.99"):
            r = runs[variant]
            cells.append(f"{100 * r['accuracy']:.1f}%, {100 * r['worst_class']:.1f}%, {r['fid_ratio']:.2f}")
            passes[variant] += r["accuracy"] >= 0.99 and r["worst_class"] >= 0.97
        row = next(line for line in results.splitlines() if line.strip().startswith(f"| {seed} | "))
        assert row.replace("**", "").strip() == f"| {seed} | {cells[0]} | {cells[1]} |"
    assert passes == {"last weights": 3, "ema 0.99": 4}
    assert "The average meets the label targets on 4 of the 5 seeds" in " ".join(results.split())


def _average_decay_rows(name: str, seed: int, date: str = "2026-12-04") -> dict:
    path = REPO / "benchmarks" / "results" / "average_decay" / f"{date}-cdcgan-{name}-seed{seed}.jsonl"
    return {r["variant"]: r for r in map(json.loads, path.read_text().splitlines())}


def _scores(r: dict) -> str:
    return f"{100 * r['accuracy']:.1f}%, {100 * r['worst_class']:.1f}%, {r['fid_ratio']:.2f}"


def _meets_labels(r: dict) -> bool:
    return r["accuracy"] >= 0.99 and r["worst_class"] >= 0.97


def _eval_scores(ev: dict) -> dict:
    """A `minigan eval --classifier` JSON's samples as average_decay.py rows score them (accuracy, worst class,
    FID as a multiple of the real data's)."""
    s, real = ev["classifier"]["samples"], ev["classifier"]["real_valid"]
    return {"accuracy": s["label_accuracy"]["overall"], "worst_class": min(s["label_accuracy"]["per_class"]),
            "fid_ratio": s["fid_test"] / real["fid_test"]}


def _table_row(text: str, seed: int | str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(f"| {seed} | ")).strip()


def test_cdcgan_three_averages_table_comes_from_the_committed_runs():
    """docs/RESULTS.md's table of the default conditional DCGAN on seeds 13-15 (last weights and three averages)
    from benchmarks/results/average_decay, and the pass counts said beside it."""
    results = (REPO / "docs" / "RESULTS.md").read_text()
    results = results[results.index("Three more untuned seeds, three averages"):]
    passes = {"last weights": 0, "ema 0.99": 0}
    for seed in (13, 14, 15):
        runs = _average_decay_rows("default", seed)
        cells = [_scores(runs[v]) for v in ("last weights", "ema 0.99", "ema 0.995", "ema 0.999")]
        assert _table_row(results, seed) == f"| {seed} | {' | '.join(cells)} |"
        for variant in passes:
            passes[variant] += _meets_labels(runs[variant])
    assert passes == {"last weights": 2, "ema 0.99": 3}  # "on all three ... the last weights on two"


def test_cdcgan_conditional_batchnorm_table_comes_from_the_committed_runs():
    """docs/RESULTS.md's default-against-CBN table (seeds 13-15) from the committed runs and evaluations, the
    runs' options as said, and the counts beside it."""
    results = (REPO / "docs" / "RESULTS.md").read_text()
    results = results[results.index("Class-conditional BatchNorm in G does not help"):]
    out = REPO / "benchmarks" / "results" / "dcgan"
    passes = {"default": 0, "cbn": 0}
    for seed in (13, 14, 15):
        default, cbn = _average_decay_rows("default", seed), _average_decay_rows("cbn", seed)
        assert all(r["extra"][-2:] == ["--option", "g_condition=batchnorm"] for r in cbn.values())
        assert not any("--option" in r["extra"] for r in default.values())
        parzen = [json.loads((out / f"cdcgan-{name}-seed{seed}-eval-epoch10.json").read_text()) for name in
                  ("default", "cbn")]
        for name, ev, rows in zip(("default", "cbn"), parzen, (default, cbn)):
            # the evaluation read each run's last weights: its scores are average_decay's last-weights ones
            acc = ev["classifier"]["samples"]["label_accuracy"]["overall"]
            assert acc == rows["last weights"]["accuracy"], (name, seed)
            passes[name] += _meets_labels(rows["ema 0.99"])
        cells = [_scores(default["last weights"]), _scores(cbn["last weights"]), _scores(default["ema 0.99"]),
                 _scores(cbn["ema 0.99"]), f"{parzen[0]['parzen']['mean']:.1f} / {parzen[1]['parzen']['mean']:.1f}"]
        assert _table_row(results, seed) == f"| {seed} | {' | '.join(cells)} |"
    assert passes == {"default": 3, "cbn": 2}


def test_cdcgan_minibatch_spread_table_comes_from_the_committed_runs():
    """docs/RESULTS.md's default-against-minibatch-spread table (seeds 13-15) from the committed runs and
    evaluations, the runs' options as said, the counts and the unconditional run's shares beside it."""
    results = (REPO / "docs" / "RESULTS.md").read_text()
    results = results[results.index("D seeing its batch's spread does not help either"):]
    out = REPO / "benchmarks" / "results" / "dcgan"
    passes = {"default": 0, "mbs": 0}
    for seed in (13, 14, 15):
        default = _average_decay_rows("default", seed)
        path = REPO / "benchmarks" / "results" / "average_decay" / f"2026-12-05-cdcgan-mbs-seed{seed}.jsonl"
        spread = {r["variant"]: r for r in map(json.loads, path.read_text().splitlines())}
        assert all(r["extra"][-2:] == ["--option", "d_minibatch_std=4"] for r in spread.values())
        parzen = [json.loads((out / f"cdcgan-{name}-seed{seed}-eval-epoch10.json").read_text()) for name in
                  ("default", "mbs")]
        for name, ev, rows in zip(("default", "mbs"), parzen, (default, spread)):
            assert ev["classifier"]["samples"]["label_accuracy"]["overall"] == rows["last weights"]["accuracy"]
            passes[name] += _meets_labels(rows["ema 0.99"])
        cells = [_scores(default["last weights"]), _scores(spread["last weights"]), _scores(default["ema 0.99"]),
                 _scores(spread["ema 0.99"]), f"{parzen[0]['parzen']['mean']:.1f} / {parzen[1]['parzen']['mean']:.1f}"]
        assert _table_row(results, seed) == f"| {seed} | {' | '.join(cells)} |"
    assert passes == {"default": 3, "mbs": 2}
    unconditional = json.loads((out / "dcgan-mbs-seed0-10epochs-eval.json").read_text())
    histogram = unconditional["classifier"]["samples"]["histogram"]
    outside = [k for k, n in enumerate(histogram) if not 700 <= n <= 1300]
    assert outside == [0, 1, 4, 9] and (min(histogram), max(histogram)) == (474, 1518)
    assert f"Parzen {unconditional['parzen']['mean']:.1f} against 117.2" in " ".join(results.split())


def test_unconditional_dcgan_three_seed_table_comes_from_its_committed_evals():
    """docs/RESULTS.md's per-seed table of the unconditional DCGAN's digit shares: counts, the digits outside
    7-13%, the FID multiple and Parzen from each committed evaluation; the claim about which digits miss."""
    results = (REPO / "docs" / "RESULTS.md").read_text()
    results = results[results.index("Two more seeds of the unconditional DCGAN"):]
    outside_on_every_seed = set(range(10))
    for seed in (0, 1, 2):
        ev = json.loads((REPO / "benchmarks" / "results" / "dcgan" / f"dcgan-seed{seed}-10epochs-eval.json")
                        .read_text())
        c = ev["classifier"]
        h = c["samples"]["histogram"]
        outside = [k for k, n in enumerate(h) if not 700 <= n <= 1300]
        outside_on_every_seed &= set(outside) | {0}
        cells = [f"{h[k]:,}" for k in (0, 1, 4, 9)] + [", ".join(map(str, outside)),
                                                      f"{c['samples']['fid_test'] / c['real_valid']['fid_test']:.1f}",
                                                      f"{ev['parzen']['mean']:.1f}"]
        row = next(line for line in results.splitlines() if line.strip().startswith(f"| {seed} "))
        assert row.strip().endswith(" | " + " | ".join(cells) + " |"), (row, cells)
        assert h[1] < 700 and h[4] < 700 and h[9] > 1300  # too few 1s and 4s, too many 9s, on every seed
    assert outside_on_every_seed == {0, 1, 4, 9}


def test_cdcgan_faster_g_longer_average_screen_comes_from_the_committed_runs():
    """docs/RESULTS.md's screen of --lr-G 4e-4 with three averages (seeds 3 and 5), its options, the claim that
    the 0.999 average meets the label targets on both, and the earlier run it did not reproduce."""
    results = (REPO / "docs" / "RESULTS.md").read_text()
    results = results[results.index("A screen for next time: G at twice D's rate"):]
    runs = REPO / "benchmarks" / "results" / "average_decay"
    for seed in (3, 5):
        rows = {r["variant"]: r for r in map(json.loads, (runs / f"2026-12-05-cdcgan-lrG4e-4-seed{seed}.jsonl")
                                             .read_text().splitlines())}
        assert all(r["extra"] == ["--model", "cdcgan", "--batch", "64", "--lr-G", "4e-4", "--threads", "1"]
                   for r in rows.values())
        cells = [_scores(rows[v]) for v in ("last weights", "ema 0.99", "ema 0.995", "ema 0.999")]
        assert _table_row(results, seed) == f"| {seed} | {' | '.join(cells)} |"
        assert _meets_labels(rows["ema 0.999"]) and rows["ema 0.999"]["fid_ratio"] < 2.45
    for seed in (16, 17):  # untuned: two averages only
        rows = {r["variant"]: r for r in map(json.loads, (runs / f"2026-12-05-cdcgan-lrG4e-4-seed{seed}.jsonl")
                                             .read_text().splitlines())}
        cells = [_scores(rows["last weights"]), _scores(rows["ema 0.99"]), "not measured", _scores(rows["ema 0.999"])]
        assert _table_row(results, f"{seed} (untuned)") == f"| {seed} (untuned) | {' | '.join(cells)} |"
        assert _meets_labels(rows["ema 0.999"]) and _meets_labels(rows["ema 0.99"]) == (seed == 16)
        assert rows["ema 0.999"]["fid_ratio"] < 2.35
    earlier = json.loads((runs / "2026-12-03-cdcgan-lrG4e-4-seed3.jsonl").read_text().splitlines()[0])
    assert earlier["variant"] == "last weights"
    assert f"{_scores(earlier)} on 2026-12-03" in " ".join(results.split())


def test_cdcgan_fashion_table_comes_from_the_committed_runs():
    """docs/RESULTS.md's 10-epoch Fashion-MNIST table of the conditional DCGAN (last weights, G's averages), from
    benchmarks/results/average_decay, and the claim that the average (0.99) reads the labels better on every seed."""
    results = (REPO / "docs" / "RESULTS.md").read_text()
    results = results[results.index("The conditional DCGAN on Fashion-MNIST, 10 epochs, three seeds"):]
    for seed in (0, 1, 2):
        path = REPO / "benchmarks" / "results" / "average_decay" / f"2026-12-04-cdcgan-fashion-seed{seed}.jsonl"
        runs = {r["variant"]: r for r in map(json.loads, path.read_text().splitlines())}
        cells = [f"{100 * r['accuracy']:.1f}%, {100 * r['worst_class']:.1f}%, {r['fid_ratio']:.2f}"
                 if r is not None else "not measured" for r in (runs["last weights"], runs["ema 0.99"],
                                                                 runs.get("ema 0.999"))]
        row = next(line for line in results.splitlines() if line.strip().startswith(f"| {seed} | "))
        assert row.strip() == f"| {seed} | {' | '.join(cells)} |"
        assert runs["ema 0.99"]["accuracy"] > runs["last weights"]["accuracy"]
        assert runs["ema 0.99"]["fid_ratio"] < runs["last weights"]["fid_ratio"]
        assert all(r["accuracy"] < 0.95 for r in runs.values())  # the target is not met


def test_dcgan_ab_table_comes_from_the_committed_runs():
    """benchmarks/RESULTS.md's dev / main table (ab_checkouts.py, both orders) from benchmarks/results/2026-12-04-amd."""
    results = (REPO / "benchmarks" / "RESULTS.md").read_text()
    out = REPO / "benchmarks" / "results" / "2026-12-04-amd"
    labels = {"dcgan": "DCGAN, batch 64", "cdcgan": "conditional DCGAN, batch 64",
              "cgan": "paper CGAN, batch 100 (no convolutions)", "pix2pix": "pix2pix, width 32, batch 64 (12 pairs)"}
    medians = []
    for model, threads in (("dcgan", 2), ("cdcgan", 2), ("dcgan", 1), ("cdcgan", 1), ("cgan", 2), ("pix2pix", 2)):
        forward = json.loads((out / f"ab-{model}-{threads}t-main-dev.json").read_text())
        swapped = json.loads((out / f"ab-{model}-{threads}t-dev-main.json").read_text())
        assert forward["A"]["commit"].startswith("690410e") and swapped["B"]["commit"].startswith("690410e")
        cells = (forward["pair_ratio_median"], 1 / swapped["pair_ratio_median"])
        row = f"  | {labels[model]} | {threads} | {cells[0]:.3f} | {cells[1]:.3f} |"
        assert row in results.splitlines(), row
        if model.endswith("dcgan"):
            medians += cells
    assert f"(the eight medians {min(medians):.3f}–{max(medians):.3f})" in results


def test_cdcgan_fashion_truncation_table_comes_from_the_committed_evals():
    """docs/RESULTS.md's truncation table (minigan eval --truncation on the three Fashion runs) from the eval.json
    files, which record the PSI they used; PSI 1 agrees with average_decay.py's last-weights scores."""
    results = (REPO / "docs" / "RESULTS.md").read_text()
    results = results[results.index("Sampling nearer the prior's centre buys the labels with the variety"):]
    out = REPO / "benchmarks" / "results"
    shares = []
    for seed in (0, 1, 2):
        cells = []
        for psi in ("1", "0.75", "0.5"):
            r = json.loads((out / "dcgan" / f"cdcgan-fashion-10ep-seed{seed}-eval-truncation{psi}.json").read_text())
            assert r["truncation"] == float(psi) and r["epoch"] == 10 and r["dataset"] == "fashion-mnist"
            c = r["classifier"]
            acc = c["samples"]["label_accuracy"]
            ratio = c["samples"]["fid_test"] / c["real_valid"]["fid_test"]
            cells.append(f"{100 * acc['overall']:.1f}%, {100 * min(acc['per_class']):.1f}%, {ratio:.2f}")
            shares.append(c["samples"]["histogram_summary"]["min_share"])
        row = next(line for line in results.splitlines() if line.strip().startswith(f"| {seed} | "))
        assert row.strip() == f"| {seed} | {' | '.join(cells)} |"
        last = next(r for r in map(json.loads, (out / "average_decay" / f"2026-12-04-cdcgan-fashion-seed{seed}.jsonl")
                                   .read_text().splitlines()) if r["variant"] == "last weights")
        assert cells[0] == f"{100 * last['accuracy']:.1f}%, {100 * last['worst_class']:.1f}%, {last['fid_ratio']:.2f}"
    assert f"{100 * min(shares):.1f}–{100 * max(shares):.1f}% of the samples each" in " ".join(results.split())


def test_one_channel_conv_table_comes_from_the_committed_runs():
    """benchmarks/RESULTS.md's one-channel layers, main against the per-image route (conv_time.py JSON), and the
    DCGAN A/B beside it."""
    results = (REPO / "benchmarks" / "RESULTS.md").read_text()
    out = REPO / "benchmarks" / "results" / "2026-12-04-amd"
    for case, label in (("D.conv1", "D's first layer, Conv2d 1 → 64"), ("G.convT2", "G's last layer, ConvT 64 → 1")):
        for threads in (2, 1):
            cells = []
            for side in ("main", "dev"):
                r = json.loads((out / f"conv1ch-{threads}t-{side}.json").read_text())["cases"][case]
                cells.append(f"{1e3 * r['minigan_s']:.2f} ({r['minigan_over_floor']:.2f}×)")
            assert f"  | {label} | {threads} | {cells[0]} | {cells[1]} |" in results.splitlines()
    a = json.loads((out / "ab2-dcgan-2t-main-dev.json").read_text())
    b = json.loads((out / "ab2-dcgan-2t-dev-main.json").read_text())
    assert f"**{a['pair_ratio_median']:.3f} and {1 / b['pair_ratio_median']:.3f}** at two threads" in results


def test_cdcgan_new_default_five_untuned_seeds_come_from_the_committed_runs():
    """docs/RESULTS.md's five untuned seeds of G at 4e-4 (16-20), the pass counts and comparisons said beside
    them, and that the preset now is what those runs trained (G 4e-4, D 2e-4, sampled from the 0.999 average)."""
    from minigan.config import TrainConfig, learning_rates

    results = (REPO / "docs" / "RESULTS.md").read_text()
    results = results[results.index("### G at twice D's rate, sampled from the 0.999 average"):]
    variants = ("last weights", "ema 0.99", "ema 0.999")
    passes = dict.fromkeys(variants, 0)
    fids = []
    for seed in (16, 17, 18, 19, 20):
        rows = _average_decay_rows("lrG4e-4", seed, date=f"2026-12-0{5 if seed < 18 else 6}")
        assert all(r["extra"] == ["--model", "cdcgan", "--batch", "64", "--lr-G", "4e-4", "--threads", "1"]
                   for r in rows.values())
        assert _table_row(results, seed) == f"| {seed} | {' | '.join(_scores(rows[v]) for v in variants)} |"
        for v in variants:
            passes[v] += _meets_labels(rows[v])
        assert rows["ema 0.999"]["accuracy"] == max(rows[v]["accuracy"] for v in variants)
        assert rows["ema 0.999"]["fid_ratio"] <= 1.07 * rows["ema 0.99"]["fid_ratio"]
        fids.append(rows["ema 0.999"]["fid_ratio"])
    assert passes == {"last weights": 1, "ema 0.99": 3, "ema 0.999": 4}
    text = " ".join(results.split())
    assert ("meets the label targets on 4 of the 5 untuned seeds** (seed 19's worst class, the digit 5, reads 96.8%), "
            "the 0.99 average on 3 and the last weights on 1") in text
    screened = [_average_decay_rows("lrG4e-4", k, date="2026-12-05")["ema 0.999"] for k in (3, 5)]
    assert sum(map(_meets_labels, screened)) + passes["ema 0.999"] == 6 and "on 6 of 7 runs" in text
    old_default = [_average_decay_rows("default", s)["ema 0.99"] for s in range(6, 11)]
    assert sum(map(_meets_labels, old_default)) == 4
    assert max(fids) < min(r["fid_ratio"] for r in old_default)
    assert f"({min(fids):.2f}–{max(fids):.2f}× against 2.66–3.28×" in text
    config = TrainConfig(model="cdcgan", batch=64)
    assert learning_rates(config) == (4e-4, 2e-4) and config.ema_beta == 0.999


def test_worst_class_draws_table_comes_from_the_committed_eval_output():
    """docs/RESULTS.md's table of one G's worst class over four draws of 1,000 per class and one of 10,000, parsed
    from the committed `minigan eval` output, and the spread and real-digit readings said beside it."""
    import re

    results = (REPO / "docs" / "RESULTS.md").read_text()
    results = results[results.index("#### How much of the worst-class bar is the draw of the samples"):]
    draws = REPO / "benchmarks" / "results" / "dcgan" / "cdcgan-lrG4e-4-2026-12-06-seed19-last-eval-draws.txt"
    text = draws.read_text()
    class5 = []
    for block in text.split("== ")[1:]:
        head = block.splitlines()[0]
        value = {k: float(re.search(rf"{k}\s+([\d.]+)\s+([\d.]+)", block).group(1))
                 for k in ("label accuracy", "class 5", "class 3")}
        noise, per_class = (head.split()[1], "1,000") if head.startswith("seed") else ("0", "10,000")
        assert f"samples ({per_class.replace(',', '')} per class), seed {noise}" in block
        cells = [f"{100 * value[k]:.2f}%" for k in ("label accuracy", "class 5", "class 3")]
        assert _table_row(results, noise + f" | {per_class}") == f"| {noise} | {per_class} | {' | '.join(cells)} |"
        class5.append(value["class 5"])
    small = class5[:4]
    prose_text = " ".join(results.split())
    assert f"read {100 * min(small):.1f}% to {100 * max(small):.1f}% on their worst class" in prose_text
    assert sum(v >= 0.97 for v in small) == 3 and "on three draws of four" in prose_text
    assert f"100,000 samples put it at {100 * class5[4]:.1f}%" in prose_text
    fids = [float(v) for v in re.findall(r"FID vs test \(classifier features\)\s+([\d.]+)", text)]
    assert (f"{fids[4]:.2f} from 100,000 samples against {min(fids[:4]):.2f}–{max(fids[:4]):.2f} from 10,000"
            in prose_text)
    real5 = float(re.search(r"class 5\s+[\d.]+\s+([\d.]+)", text).group(1))
    assert f"real validation 5s at {100 * real5:.1f}%" in prose_text


def test_cdcgan_new_default_on_fashion_comes_from_the_committed_runs():
    """docs/RESULTS.md's Fashion-MNIST table of G at 4e-4 beside the old default's average (same seeds), and the
    gains said beside it."""
    results = (REPO / "docs" / "RESULTS.md").read_text()
    results = results[results.index("**Fashion-MNIST with it**"):]
    gains, fid_cuts, averages = [], [], []
    for seed in (0, 1):
        new = _average_decay_rows("fashion-lrG4e-4", seed, date="2026-12-06")
        old = _average_decay_rows("fashion", seed)["ema 0.99"]
        averages.append((new["ema 0.999"], old))
        assert all(r["extra"] == ["--model", "cdcgan", "--dataset", "fashion-mnist", "--batch", "64", "--lr-G", "4e-4",
                                  "--threads", "1"] for r in new.values())
        cells = [_scores(new[v]) for v in ("last weights", "ema 0.99", "ema 0.999")] + [_scores(old)]
        assert _table_row(results, seed) == f"| {seed} | {' | '.join(cells)} |"
        gains.append(round(100 * (new["ema 0.999"]["accuracy"] - old["accuracy"]), 1))
        fid_cuts.append(round(100 * (1 - new["ema 0.999"]["fid_ratio"] / old["fid_ratio"])))
        assert new["ema 0.999"]["accuracy"] < 0.95  # issue 12's Fashion target stays unmet
    text = " ".join(results.split())
    new0, old0 = averages[0]
    assert gains == [0.1, 0.6]
    assert (f"(+{100 * (new0['accuracy'] - old0['accuracy']):.2f} points, {100 * new0['accuracy']:.2f}% against "
            f"{100 * old0['accuracy']:.2f}%) and 0.6 points better on seed 1") in text
    assert f"at a {min(fid_cuts)}–{max(fid_cuts)}% lower FID" in text


def test_readme_cdcgan_default_figures_come_from_the_committed_runs():
    """README.md's conditional DCGAN paragraph and grid caption: the runs of G at 4e-4 with its 0.999 average (seeds
    16-22) against the default before (6-10, 13-15), seed 22's scores in docs/RESULTS.md, and the grid of today's
    default (seed 35)."""
    text = prose("README.md")
    out = REPO / "benchmarks" / "results" / "dcgan"
    ev = json.loads((out / "cdcgan-default-2026-12-06-seed21-eval-epoch10.json").read_text())
    seed21 = _eval_scores(ev)
    assert (ev["epoch"], ev["n_per_class"], ev["seed"]) == (10, 1000, 0)
    # The grid is the default's since D has the matching-aware step in the first seven epochs: seed 35.
    ev_grid = json.loads((out / "cdcgan-mafirst7-2t-2026-12-06-seed35-eval-epoch10.json").read_text())
    grid, per_class_grid = _eval_scores(ev_grid), ev_grid["classifier"]["samples"]["label_accuracy"]["per_class"]
    assert (f"Label accuracy {100 * grid['accuracy']:.1f}%, worst class {100 * grid['worst_class']:.1f}% "
            f"(the {per_class_grid.index(grid['worst_class'])}s), FID {grid['fid_ratio']:.2f}× real, Parzen "
            f"{ev_grid['parzen']['mean']:.1f}") in text
    new = [_average_decay_rows("lrG4e-4", k, date=f"2026-12-0{5 if k < 18 else 6}")["ema 0.999"] for k in range(16, 21)]
    new.append(seed21)
    ev22 = json.loads((out / "cdcgan-default-2t-2026-12-06-seed22-eval-epoch10.json").read_text())
    new.append(_eval_scores(ev22))
    assert f"Parzen {ev['parzen']['mean']:.1f}–{ev22['parzen']['mean']:.1f} from the average" in text
    per_class = ev22["classifier"]["samples"]["label_accuracy"]["per_class"]
    assert [k for k, v in enumerate(per_class) if v == min(per_class)] == [3, 5]
    assert (f"label accuracy {100 * new[-1]['accuracy']:.1f}%, worst class {100 * new[-1]['worst_class']:.1f}% (the "
            f"digits 3 and 5), FID {new[-1]['fid_ratio']:.2f}× real, Parzen {ev22['parzen']['mean']:.1f} ± "
            f"{ev22['parzen']['se']:.1f}") in prose("docs/RESULTS.md")
    old = [_average_decay_rows("default", k)["ema 0.99"] for k in (6, 7, 8, 9, 10, 13, 14, 15)]
    assert sum(map(_meets_labels, new)) == 5 and sum(map(_meets_labels, old)) == 7
    fid_new, fid_old = [r["fid_ratio"] for r in new], [r["fid_ratio"] for r in old]
    assert max(fid_new) < min(fid_old)
    worst = [r["worst_class"] for r in new]
    accuracy = [r["accuracy"] for r in new]
    assert (f"it reads {100 * min(accuracy):.1f}–{100 * max(accuracy):.1f}% with a worst class of "
            f"{100 * min(worst):.1f}–{100 * max(worst):.1f}% and meets the label targets on five, where the previous "
            f"default met them on seven of eight, but at FID {min(fid_new):.2f}–{max(fid_new):.2f}× real against "
            f"{min(fid_old):.2f}–{max(fid_old):.2f}×") in text


def test_ten_thousand_per_class_readings_come_from_the_committed_evals():
    """docs/RESULTS.md's re-reading of the two CLI runs of the new default with 10,000 samples per class."""
    out = REPO / "benchmarks" / "results" / "dcgan"
    text = prose("docs/RESULTS.md")
    for name, seed, usual in (("default", 21, "96.5%"), ("default-2t", 22, "97.4%")):
        ev = json.loads((out / f"cdcgan-{name}-2026-12-06-seed{seed}-eval-epoch10-n10000.json").read_text())
        scores = _eval_scores(ev)
        assert (ev["n_per_class"], ev["epoch"]) == (10000, 10)
        assert _meets_labels(scores)  # both meet the targets read this way
        assert (f"seed {seed} at {100 * scores['accuracy']:.2f}% with {'a worst class of ' if seed == 21 else ''}"
                f"{100 * scores['worst_class']:.2f}%") in text
        assert usual in text


def _outside_band(counts) -> list[int]:
    """The digits whose share of the samples is outside issue 12's 7-13%."""
    return [k for k, n in enumerate(counts) if not 0.07 <= n / sum(counts) <= 0.13]


def _balance_cell(counts, fid_ratio: float) -> str:
    return f"{', '.join(map(str, _outside_band(counts)))} ({fid_ratio:.1f})"


def test_unconditional_dcgan_rate_and_d_norm_screen_comes_from_the_committed_runs():
    """docs/RESULTS.md's table of the unconditional DCGAN with G at 4e-4 (seeds 1-3) beside the default's evals, the
    8e-4 line, the ranges quoted, and the epoch-5 comparison with D without BatchNorm."""
    results = (REPO / "docs" / "RESULTS.md").read_text()
    results = results[results.index("### The unconditional DCGAN's digit balance"):]
    results = results[:results.index("\n## ")]
    flat = " ".join(results.split())
    runs, dcgan = REPO / "benchmarks" / "results" / "average_decay", REPO / "benchmarks" / "results" / "dcgan"

    def rows(rate, seed):
        found = {r["variant"]: r for r in map(json.loads, (runs / f"2026-12-06-dcgan-lrG{rate}-seed{seed}.jsonl")
                                              .read_text().splitlines())}
        for r in found.values():
            assert r["extra"] == ["--model", "dcgan", "--batch", "64", "--lr-G", rate, "--threads", "1"]
            assert r["outside_band"] == _outside_band(r["histogram"]) and r["epochs"] == 10
        return found

    def cells(found):
        return [_balance_cell(found[v]["histogram"], found[v]["fid_ratio"])
                for v in ("last weights", "ema 0.99", "ema 0.999")]

    default = {}
    for seed in (0, 1, 2):
        ev = json.loads((dcgan / f"dcgan-seed{seed}-10epochs-eval.json").read_text())
        default[seed] = _eval_scores_unconditional(ev)
    last_fids = []
    for seed in (1, 2, 3):
        found = rows("4e-4", seed)
        first = _balance_cell(*default[seed]) if seed in default else "-"
        assert _table_row(results, seed) == f"| {seed} | {first} | {' | '.join(cells(found))} |"
        last = found["last weights"]
        last_fids.append(last["fid_ratio"])
        assert 1 <= len(last["outside_band"]) <= 3 and 9 in last["outside_band"]
    default_fids = [f for _, f in default.values()]
    assert "13.6–14.7× from the last weights, against the default's 15.8–18.2×" in flat
    assert (f"{min(last_fids):.1f}", f"{max(last_fids):.1f}") == ("13.6", "14.7")
    assert (f"{min(default_fids):.1f}", f"{max(default_fids):.1f}") == ("15.8", "18.2")
    assert max(last_fids) < min(default_fids)  # "a faster G lowers the FID on every seed"
    readme = " ".join((REPO / "README.md").read_text().split())
    assert ("G at 4e-4 (`--option d_norm=batchnorm --lr-G 4e-4`) lowers its FID on three seeds (13.6–14.7× real "
            "against 15.8–18.2×)"
            in readme)
    fast = cells(rows("8e-4", 1))
    assert f"G at 8e-4 on seed 1: {fast[0]} from the last weights, {fast[1]} and {fast[2]} from the averages" in flat
    epoch5 = {}
    for name in ("nobn-lrG2e-4", "nobn-lrG4e-4", "lrG4e-4", "lrG8e-4"):
        ev = json.loads((dcgan / f"dcgan-{name}-2026-12-06-seed1-eval-epoch5.json").read_text())
        assert ev["epoch"] == 5 and ev["n_samples"] == 10_000
        epoch5[name] = _eval_scores_unconditional(ev)
    assert [f"{epoch5[n][1]:.1f}" for n in epoch5] == ["22.4", "23.1", "18.9", "16.8"]
    assert [_outside_band(epoch5[n][0]) for n in epoch5] == [[1, 2, 6, 9], [1], [1, 4, 9], [1, 4]]
    assert "the FID was 22.4× (2e-4) and 23.1× (4e-4), against 18.9× (4e-4) and 16.8× (8e-4)" in flat
    assert ("digits outside the band 1, 2, 6, 9 (2e-4) and 1 alone (4e-4), against 1, 4, 9 (4e-4) and 1, 4 (8e-4)"
            in flat)
    # D without BatchNorm after 10 epochs (resumed from those epoch-5 checkpoints).
    tenth = {}
    for rate, suffix in (("2e-4", ""), ("4e-4", ""), ("4e-4", "-draw1"), ("4e-4", "-n10000")):
        ev = json.loads((dcgan / f"dcgan-nobn-lrG{rate}-2026-12-06-seed1-eval-epoch10{suffix}.json").read_text())
        assert ev["epoch"] == 10 and ev["updates"] == 7810
        tenth[rate + suffix] = (*_eval_scores_unconditional(ev), ev["seed"], ev["n_samples"])
    slow, fast, draw1, big = tenth.values()
    assert _outside_band(slow[0]) == [1, 4] and f"{slow[1]:.1f}" == "17.8"
    assert "two digits stay out (\"1\" 6.2%, \"4\" 6.1%; FID 17.8×)" in flat
    assert [round(100 * n / sum(slow[0]), 1) for n in (slow[0][1], slow[0][4])] == [6.2, 6.1]
    assert _outside_band(fast[0]) == [] and _outside_band(draw1[0]) == [] and fast[0][9] == 1299
    assert (fast[2], fast[3], draw1[2], big[3]) == (0, 10_000, 1, 100_000)
    assert f"{fast[1]:.1f}" == "14.6" and 'to 12.99% ("9", 1,299 of 10,000) at FID 14.6×' in flat
    shares = lambda h: [100 * n / sum(h) for n in h]  # noqa: E731
    assert f"{min(shares(fast[0])):.1f}" == "7.2"
    assert f"{min(shares(draw1[0])):.1f}–{max(shares(draw1[0])):.1f}%" in flat
    assert _outside_band(big[0]) == [9] and f"{shares(big[0])[9]:.1f}" == "13.2"
    others = shares(big[0])[:9]
    assert f"every other digit {min(others):.1f}–{max(others):.1f}%" in flat
    assert 'at 13.2% from 100,000' in readme
    # The same setting through the command line at the default threads, untuned seed 4.
    for suffix, n, low, high in (("", 10_000, "7.7", "12.8"), ("-n10000", 100_000, "7.7", "12.6")):
        ev = json.loads((dcgan / f"dcgan-nobn-lrG4e-4-cli-2026-12-06-seed4-eval-epoch10{suffix}.json").read_text())
        counts, fid_ratio = _eval_scores_unconditional(ev)
        assert (ev["epoch"], ev["n_samples"], _outside_band(counts)) == (10, n, [])
        assert (f"{min(shares(counts)):.1f}", f"{max(shares(counts)):.1f}") == (low, high)
        assert f"{low}–{high}% from {n:,} samples" in flat
        if not suffix:
            assert f"FID {fid_ratio:.1f}× real" in flat and f"{fid_ratio:.1f}" == "14.3"
    record = [json.loads(line) for line in (dcgan / "dcgan-nobn-lrG4e-4-cli-2026-12-06-seed4-metrics.jsonl")
              .read_text().splitlines()]
    assert [r["epoch"] for r in record] == list(range(1, 11)) and all(r["lr"] == 4e-4 for r in record)
    assert "every digit read 7–13% on six from 10,000 samples and on six from 100,000 (on both, five)" in readme


#: The unconditional DCGAN with D without BatchNorm and G at 4e-4 (the default since): seed, its run's file prefix in
#: benchmarks/results/dcgan, and how it ran as the table says.
_NO_BN_RUNS = ((1, "dcgan-nobn-lrG4e-4-2026-12-06-seed1", "one thread, 5 epochs then resumed to 10"),
               (4, "dcgan-nobn-lrG4e-4-cli-2026-12-06-seed4", "the command line, default threads (2)"),
               *((s, f"dcgan-nobn-lrG4e-4-1t-2026-12-06-seed{s}", "the command line, one thread") for s in (5, 6, 7, 8)),
               (9, "dcgan-default-2t-2026-12-06-seed9", "the new default exactly as a user runs it, default threads (2)"))


def _share_cell(counts) -> str:
    """A table cell: the smallest and largest share of the samples, and the digits outside 7-13%."""
    shares = [100 * n / sum(counts) for n in counts]
    out = _outside_band(counts)
    return f"{min(shares):.2f}–{max(shares):.2f}%" + (f", out: {', '.join(map(str, out))}" if out else "")


def test_unconditional_dcgan_default_seed_table_comes_from_the_committed_runs():
    """docs/RESULTS.md's table of D without BatchNorm with G at 4e-4 on seeds 1 and 4-9, its pass counts and FID
    range, the D(G(z)) comparison with the seven BatchNorm runs, and the preset it made."""
    from minigan.config import TrainConfig, learning_rates, model_options

    results = (REPO / "docs" / "RESULTS.md").read_text()
    results = results[results.index("### The unconditional DCGAN's default: D without BatchNorm"):]
    results = results[:results.index("\n## ")]
    flat = " ".join(results.split())
    dcgan = REPO / "benchmarks" / "results" / "dcgan"
    passed, both = {10_000: 0, 100_000: 0}, 0
    fids, misses, fakes_scored = [], [], []
    for seed, prefix, how in _NO_BN_RUNS:
        cells = []
        for suffix, n in (("", 10_000), ("-n10000", 100_000)):
            ev = json.loads((dcgan / f"{prefix}-eval-epoch10{suffix}.json").read_text())
            counts, fid_ratio = _eval_scores_unconditional(ev)
            assert (ev["model"], ev["epoch"], ev["updates"], ev["n_samples"]) == ("dcgan", 10, 7810, n)
            cells.append(_share_cell(counts))
            passed[n] += not _outside_band(counts)
            misses += [abs(100 * counts[k] / n - (7 if counts[k] / n < 0.07 else 13)) for k in _outside_band(counts)]
            if not suffix:
                fids.append(fid_ratio)
                first_fid = f"{fid_ratio:.1f}"
        assert _table_row(results, seed) == f"| {seed} | {how} | {cells[0]} | {cells[1]} | {first_fid} |"
        both += "out:" not in cells[0] + cells[1]
        record = [json.loads(line) for line in (dcgan / f"{prefix}-metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in record] == list(range(1, 11))
        assert all((r["lr"], r["lr_D"]) == (4e-4, 2e-4) for r in record if "lr_D" in r) and record[-1]["lr"] == 4e-4
        fakes_scored.append(record[-1]["D_G_z"])
    runs = len(_NO_BN_RUNS)
    assert passed == {10_000: runs - 1, 100_000: runs - 1} and max(misses) < 0.3
    assert both == runs - 2 and "six of seven inside by each reading, five of seven by both" in flat
    words = {6: "six", 7: "seven"}
    assert f"balance met on {words[runs - 1]} of {words[runs]} untuned seeds" in results.splitlines()[0]
    assert f"inside 7–13% on {words[runs - 1]} of the {words[runs]} seeds on either reading" in flat
    assert f"FID {min(fids):.1f}–{max(fids):.1f}× real" in flat
    assert f"D(G(z)) {min(fakes_scored):.2f}–{max(fakes_scored):.2f} at epoch 10 on the {words[runs]} seeds" in flat
    with_bn = [json.loads((dcgan / f).read_text().splitlines()[-1])["D_G_z"] for f in
               ("dcgan-seed0-10epochs-metrics.jsonl", "dcgan-seed1-10epochs-metrics.jsonl",
                "dcgan-seed2-10epochs-metrics.jsonl", *(f"dcgan-lrG4e-4-2026-12-06-seed{s}-metrics.jsonl"
                                                        for s in (1, 2, 3)), "dcgan-lrG8e-4-2026-12-06-seed1-metrics.jsonl")]
    assert f"against {min(with_bn):.2f}–{max(with_bn):.2f} on the seven runs with it" in flat
    readme = " ".join((REPO / "README.md").read_text().split())
    assert (f"on {words[runs]} untuned seeds (1, 4–9; 10 epochs) every digit read 7–13% on {words[runs - 1]}" in readme
            and f"at FID {min(fids):.1f}–{max(fids):.1f}× real" in readme)
    # README's figure is seed 9's epoch-10 grid, captioned with its two readings and its FID.
    seed9 = [json.loads((dcgan / f"dcgan-default-2t-2026-12-06-seed9-eval-epoch10{x}.json").read_text())
             for x in ("", "-n10000")]
    (small, fid9), (big, _) = map(_eval_scores_unconditional, seed9)
    share = lambda h, f: f"{f(100 * n / sum(h) for n in h):.1f}"  # noqa: E731
    assert (f"every digit {share(small, min)}–{share(small, max)}% of 10,000 samples by the classifier "
            f"({share(big, min)}–{share(big, max)}% of 100,000), FID {fid9:.1f}× real") in readme
    # What the table made the default.
    assert model_options(TrainConfig(model="dcgan")) == {"d_norm": None}
    assert learning_rates(TrainConfig(model="dcgan")) == (4e-4, 2e-4)


#: The conditional DCGAN's D without BatchNorm against the default, paired by seed and thread count: seed, the
#: table's thread note, and the default's and the screen's file prefixes in benchmarks/results/dcgan.
_CDCGAN_NO_BN_PAIRS = (
    (21, "one thread", ("cdcgan-default-2026-12-06-seed21", "cdcgan-nobn-1t-2026-12-06-seed21")),
    (22, "default threads", ("cdcgan-default-2t-2026-12-06-seed22", "cdcgan-nobn-2t-2026-12-06-seed22")))


def _section(path: str, start: str, end: str) -> tuple[str, str, list[str]]:
    """The text of ``path`` from ``start`` to the next ``end``: as written, with whitespace runs made single spaces,
    and its table rows whose first cell begins with "2" (a seed in the 20s)."""
    text = (REPO / path).read_text()
    text = text[text.index(start):]
    text = text[:text.index(end)]
    return text, " ".join(text.split()), [line.strip() for line in text.splitlines() if line.startswith("| 2")]


def _cdcgan_screen_row(seed: int, threads: str, d: str, ev: dict, dataset: str = "mnist") -> str:
    """A row of docs/RESULTS.md's conditional DCGAN screens (seed, D, labels, worst class, FID x real, Parzen) from
    a `minigan eval --classifier --parzen` JSON of the model after 10 epochs on ``dataset``."""
    assert (ev["model"], ev["epoch"], ev["n_samples"], ev["seed"], ev["dataset"]) == ("cdcgan", 10, 10_000, 0, dataset)
    per_class = ev["classifier"]["samples"]["label_accuracy"]["per_class"]
    worst = min(range(10), key=lambda k: per_class[k])
    scores = _eval_scores(ev)
    return (f"| {seed} ({threads}) | {d} | {100 * scores['accuracy']:.1f}% | {100 * per_class[worst]:.1f}% "
            f"(\"{worst}\") | {scores['fid_ratio']:.2f} | {ev['parzen']['mean']:.1f} |")


def test_cdcgan_d_norm_screen_table_comes_from_the_committed_runs():
    """docs/RESULTS.md's table of the conditional DCGAN with and without D's BatchNorm (seeds 21, 22), row by row
    from the committed evals, with the D(G(z)) ranges quoted beside it."""
    results, flat, rows = _section("docs/RESULTS.md", "### The conditional DCGAN with D without BatchNorm",
                                   "\n### D's matching-aware term")
    dcgan = REPO / "benchmarks" / "results" / "dcgan"
    expected, fakes_scored = [], {"BatchNorm (the default)": [], "none": []}
    for seed, threads, prefixes in _CDCGAN_NO_BN_PAIRS:
        for d, prefix in zip(("BatchNorm (the default)", "none"), prefixes):
            ev = json.loads((dcgan / f"{prefix}-eval-epoch10.json").read_text())
            expected.append(_cdcgan_screen_row(seed, threads, d, ev))
            record = [json.loads(line) for line in (dcgan / f"{prefix}-metrics.jsonl").read_text().splitlines()]
            assert [r["epoch"] for r in record] == list(range(1, 11)) and record[-1]["lr"] == 4e-4
            fakes_scored[d] += [r["D_G_z"] for r in record[1:]]
    assert rows == expected
    readme = " ".join((REPO / "README.md").read_text().split())
    screen = [row.split(" | ") for row in expected if "| none |" in row]
    fids = sorted(row[4] for row in screen)
    accuracies, worst = sorted(row[2] for row in screen), sorted(row[3].split()[0] for row in screen)
    assert (f"FID under 1.5× real on the two seeds tried ({float(fids[0]):.2f}–{float(fids[1]):.2f}×) but read the "
            f"labels worse ({accuracies[0][:-1]}–{accuracies[1]}, worst class {worst[0][:-1]}–{worst[1]})") in readme
    assert max(map(float, fids)) < 1.5
    # D's rate doubled, seed 22.
    ev = json.loads((dcgan / "cdcgan-nobn-lrD4e-4-2t-2026-12-06-seed22-eval-epoch10.json").read_text())
    c = ev["classifier"]
    per_class = c["samples"]["label_accuracy"]["per_class"]
    record = [json.loads(line) for line in (dcgan / "cdcgan-nobn-lrD4e-4-2t-2026-12-06-seed22-metrics.jsonl")
              .read_text().splitlines()]
    assert (record[-1]["epoch"], record[-1]["lr"], record[-1]["lr_D"]) == (10, 4e-4, 4e-4)
    assert (f"label accuracy {100 * c['samples']['label_accuracy']['overall']:.1f}%, worst class "
            f"{100 * min(per_class):.1f}% (the \"{per_class.index(min(per_class))}\"s), FID "
            f"{c['samples']['fid_test'] / c['real_valid']['fid_test']:.2f}× real, Parzen {ev['parzen']['mean']:.1f} ± "
            f"{ev['parzen']['se']:.1f}") in flat
    assert f"D(G(z)) {record[-1]['D_G_z']:.2f} at epoch 10" in flat
    span = {d: f"{min(v):.2f}–{max(v):.2f}" for d, v in fakes_scored.items()}
    assert f"D(G(z)) {span['none']} over epochs 2–10 without it, {span['BatchNorm (the default)']} with it" in flat
    sevens = [json.loads((dcgan / f"{prefixes[1]}-eval-epoch10.json").read_text())["classifier"]["samples"]
              ["label_accuracy"]["per_class"][7] for _, _, prefixes in _CDCGAN_NO_BN_PAIRS]
    assert f'the "7"s {100 * sevens[0]:.1f}% and {100 * sevens[1]:.1f}%' in flat
    seconds = {d: [r["seconds"] for r in map(json.loads, (dcgan / f"{p}-metrics.jsonl").read_text().splitlines())]
               for d, p in zip(("default", "none"), _CDCGAN_NO_BN_PAIRS[1][2])}
    assert (f"{min(seconds['none']):.0f}–{max(seconds['none']):.0f} s an epoch at the default threads against the "
            f"default's {min(seconds['default']):.0f}–{max(seconds['default']):.0f} s") in flat


def _eval_scores_unconditional(ev: dict) -> tuple[list[int], float]:
    """A `minigan eval --classifier` JSON of an unconditional model: its class histogram and FID x real."""
    c = ev["classifier"]
    assert c["samples"]["label_accuracy"] is None
    return c["samples"]["histogram"], c["samples"]["fid_test"] / c["real_valid"]["fid_test"]


def test_cli_agreement_table_comes_from_the_committed_e2e_runs():
    """benchmarks/RESULTS.md's 2026-12-06 table (trainer against the CLI timed as a median of pairs) and the
    floor-every figures quoted before it, from benchmarks/results/2026-12-06-xeon."""
    results = (REPO / "benchmarks" / "RESULTS.md").read_text()
    results = results[results.index("## The CLI timed from outside agrees"):]
    results = results[:results.index("\n## ", 5)]
    flat = " ".join(results.split())
    runs = REPO / "benchmarks" / "results" / "2026-12-06-xeon"
    ms = lambda s: f"{1e3 * s:.2f}"  # noqa: E731
    over_floor, cli_over_floor = [], []
    for run in (1, 2):
        d = json.loads((runs / f"cgan-e2e-b100-cli3-run{run}.json").read_text())
        c = d["cli"]
        assert (d["preset"], d["batch"], d["threads"], c["repeats"]) == ("paper", 100, 2, 3)
        pairs = ", ".join(ms(t) for t in c["per_update_each_s"])
        row = (f"| {run} | {ms(d['trainer_s'])} | {ms(c['per_update_s'])} ({pairs}) | {ms(c['inside_per_update_s'])} "
               f"| {c['trainer_over_cli']:.3f} | {c['trainer_over_cli_inside']:.3f} |")
        assert _table_row(results, run) == row
        assert abs(c["trainer_over_cli"] - 1) <= 0.03 and abs(c["trainer_over_cli_inside"] - 1) <= 0.011
        over_floor.append(d["trainer_over_floor"])
        cli_over_floor.append(c["cli_over_floor"])
    assert "**1.74–1.76× its floor**" in results and "1.72–1.75× through the CLI" in flat
    assert (f"{min(over_floor):.2f}", f"{max(over_floor):.2f}") == ("1.74", "1.76")
    assert (f"{min(cli_over_floor):.2f}", f"{max(cli_over_floor):.2f}") == ("1.72", "1.75")
    single = [json.loads((runs / f"cgan-e2e-b100-floor-every{f}-rep{r}.json").read_text())
              for r in (1, 2) for f in (25, 150)]
    assert [d["floor_samples"] for d in single] == [11, 1, 11, 1]
    assert f"trainer {', '.join(ms(d['trainer_s']) for d in single)} ms per update" in flat
    cli = [d["cli"]["per_update_s"] for d in single]
    ratio = [d["cli"]["trainer_over_cli"] for d in single]
    assert f"one pair each read {1e3 * min(cli):.1f}–{1e3 * max(cli):.1f} ms" in flat
    assert f"(trainer/CLI {min(ratio):.3f}–{max(ratio):.3f})" in flat


#: The conditional DCGAN with and without D's matching-aware term: seed, its thread note, D, and the file prefix in
#: benchmarks/results/dcgan (the first two rows are the runs of the subsection before).
_CDCGAN_MA_ROWS = (
    (21, "one thread", "BatchNorm, no term (the previous default)", "cdcgan-default-2026-12-06-seed21"),
    (21, "one thread", "none, no term", "cdcgan-nobn-1t-2026-12-06-seed21"),
    (21, "one thread", "none, `joint`", "cdcgan-nobn-majoint-1t-2026-12-06-seed21"),
    (21, "one thread", "none, `step`", "cdcgan-nobn-mastep-1t-2026-12-06-seed21"),
    (23, "one thread, untuned", "none, `step`", "cdcgan-nobn-mastep-1t-2026-12-06-seed23"),
    (24, "default threads, untuned", "none, `step` (the new default)", "cdcgan-default-2t-2026-12-06-seed24"))
#: Fashion-MNIST with the new default's D, by seed: the file prefix.
_CDCGAN_MA_FASHION = {0: "cdcgan-fashion-nobn-mastep-1t-2026-12-06-seed0",
                      1: "cdcgan-fashion-default-2t-2026-12-06-seed1"}


def _value_span(values, fmt: str, unit: str = "") -> str:
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return f"{low}{unit}" if low == high else f"{low}–{high}{unit}"


def test_cdcgan_matching_aware_table_and_default_come_from_the_committed_runs():
    """docs/RESULTS.md's subsection on D's matching-aware term: its table row by row from the committed evals, the
    spans quoted beside it, the Fashion-MNIST readings, and the preset it made the default."""
    from minigan.config import TrainConfig, model_options

    _, flat, rows = _section("docs/RESULTS.md", "### D's matching-aware term for the conditional DCGAN",
                             "\n### Five untuned seeds")
    dcgan = REPO / "benchmarks" / "results" / "dcgan"
    expected, all_scores, records = _cdcgan_rows(_CDCGAN_MA_ROWS)
    with_term = [(scores, scores["parzen"], record) for scores, record, (_, _, d, _) in
                 zip(all_scores, records, _CDCGAN_MA_ROWS) if "`" in d]
    assert rows == expected
    meets = [s for s, _, _ in with_term if _meets_labels(s)]
    assert len(meets) == len(with_term) == 4
    accuracy = _value_span([100 * s["accuracy"] for s, _, _ in with_term], "{:.1f}", "%")
    worst = f"{100 * min(s['worst_class'] for s, _, _ in with_term):.1f}%"
    assert f"{accuracy} overall with every class at {worst} or better on all four runs" in flat
    steps = [(s, p, r) for (s, p, r), row in zip(with_term, _CDCGAN_MA_ROWS[2:]) if "step" in row[2]]
    fids = _value_span([s["fid_ratio"] for s, _, _ in steps], "{:.2f}", "×")
    parzen = _value_span([p for _, p, _ in with_term], "{:.1f}")
    assert f"FID lands between the two Ds**: {fids} real" in flat and f"Parzen {parzen}**" in flat
    seconds = [r["seconds"] for r in with_term[-1][2]]
    assert f"An epoch took {_value_span(seconds, '{:.0f}', ' s')} at the default threads on seed 24" in flat
    fashion = []
    for seed, prefix in _CDCGAN_MA_FASHION.items():
        ev = json.loads((dcgan / f"{prefix}-eval-epoch10.json").read_text())
        assert (ev["model"], ev["epoch"], ev["n_samples"], ev["dataset"]) == ("cdcgan", 10, 10_000, "fashion-mnist")
        fashion.append(_eval_scores(ev))
        assert fashion[-1]["accuracy"] >= 0.95
        assert (f"Seed {seed}: **{100 * fashion[-1]['accuracy']:.1f}% label accuracy** (worst class "
                f"{100 * fashion[-1]['worst_class']:.1f}%") in flat
        assert f"FID {fashion[-1]['fid_ratio']:.2f}× real" in flat
    readme = prose("README.md")
    assert f"labels came back, and more: {accuracy} with every class at {worst} or better on four runs" in readme
    assert f"at FID {fids} real and Parzen {parzen} (the highest here" in readme
    assert (f"on Fashion-MNIST {100 * fashion[0]['accuracy']:.1f}% and {100 * fashion[1]['accuracy']:.1f}% on seeds 0 "
            "and 1, where issue 12 asks 95%") in readme
    assert (f"with the term throughout (the default before this one) {_value_span(seconds, '{:.0f}', ' s')} on the "
            "Xeon") in readme
    config = TrainConfig(model="cdcgan")
    assert model_options(config) == {"d_norm": None} and config.matching_aware_mode == "step"
    assert model_options(TrainConfig(model="cdcgan", dataset="fashion-mnist")) == {"d_norm": None}


#: The conditional default on five untuned seeds (seed, the table's thread note, D, file prefix): seed 23 with the
#: default's options written out, the others exactly as a user runs it.
_CDCGAN_ROBUST_ROWS = (
    (23, "one thread, untuned", "none, `step` (the default's options)", "cdcgan-nobn-mastep-1t-2026-12-06-seed23"),
    *((seed, "default threads, untuned", "none, `step` (the default)", f"cdcgan-default-2t-2026-12-06-seed{seed}")
      for seed in (24, 25, 26, 27)))
#: The FID screens on seed 21 at one thread, beside the same seed's runs without the term and with the step.
_CDCGAN_FID_SCREEN_ROWS = (
    (21, "one thread", "none, no term", "cdcgan-nobn-1t-2026-12-06-seed21"),
    (21, "one thread", "none, `step` (the default's options)", "cdcgan-nobn-mastep-1t-2026-12-06-seed21"),
    (21, "one thread", "none, `step` every 2 updates", "cdcgan-maevery2-1t-2026-12-06-seed21"),
    (21, "one thread", "none, batch spread, `step`", "cdcgan-mbs4-1t-2026-12-06-seed21"))


def _pct(x: float) -> str:
    """A fraction as the docs print a label accuracy: 0.9957 -> "99.6%"."""
    return f"{100 * x:.1f}%"


def _mean_class_spread(ev: dict) -> float:
    """An eval JSON's samples' within-class spread (as a fraction of the test set's), averaged over the classes."""
    return sum(ev["classifier"]["samples"]["fid_parts"]["class_spread"]) / 10


def _records_without_seconds(prefix: str) -> list[dict]:
    """A committed run's metrics records without their timings: what two runs of the same computation share."""
    path = REPO / "benchmarks" / "results" / "dcgan" / f"{prefix}-metrics.jsonl"
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


def _cdcgan_rows(rows):
    """(table rows, scores, metrics records) of the committed 10-epoch conditional DCGAN runs ``rows`` name."""
    dcgan = REPO / "benchmarks" / "results" / "dcgan"
    expected, scores, records = [], [], []
    for seed, threads, d, prefix in rows:
        ev = json.loads((dcgan / f"{prefix}-eval-epoch10.json").read_text())
        expected.append(_cdcgan_screen_row(seed, threads, d, ev))
        spread = {"class_spread": _mean_class_spread(ev)} if "fid_parts" in ev["classifier"]["samples"] else {}
        scores.append({**_eval_scores(ev), "parzen": ev["parzen"]["mean"], **spread})
        records.append([json.loads(line) for line in (dcgan / f"{prefix}-metrics.jsonl").read_text().splitlines()])
        assert [r["epoch"] for r in records[-1]] == list(range(1, 11)) and records[-1][-1]["lr"] == 4e-4
    return expected, scores, records


def test_cdcgan_five_untuned_seeds_and_the_fid_screens_come_from_the_committed_runs():
    """docs/RESULTS.md's subsection on the conditional default's five untuned seeds and the two FID screens: both
    tables row by row from the committed evals, the spans and readings quoted beside them, and the README's."""
    text, flat, rows = _section("docs/RESULTS.md", "### Five untuned seeds of the conditional default",
                                "\n### Where the FID goes")
    robust, robust_scores, robust_records = _cdcgan_rows(_CDCGAN_ROBUST_ROWS)
    screen, screen_scores, screen_records = _cdcgan_rows(_CDCGAN_FID_SCREEN_ROWS)
    assert rows == robust + screen
    assert all(_meets_labels(s) for s in robust_scores)
    accuracy = _value_span([100 * s["accuracy"] for s in robust_scores], "{:.1f}", "%")
    worst = f"{100 * min(s['worst_class'] for s in robust_scores):.1f}%"
    fids = _value_span([s["fid_ratio"] for s in robust_scores], "{:.2f}", "×")
    parzen = _value_span([s["parzen"] for s in robust_scores], "{:.1f}")
    assert f"met on all five untuned seeds**: {accuracy} overall, every class at {worst} or better" in flat
    assert f"FID {fids} real (issue 12: 1.5), Parzen {parzen} (225)" in flat
    quiet_epochs = [r["seconds"] for r in robust_records[2][4:] + robust_records[3] + robust_records[4]]
    assert f"Epochs took {_value_span(quiet_epochs, '{:.0f}', ' s')} at the default threads" in flat
    first_four = _value_span([r["seconds"] for r in robust_records[2][:4]], "{:.0f}", " s")
    assert f"seed 25's first four, beside the test suite for most of them, {first_four})" in flat
    none, step, every2, spread = screen_scores
    assert (f"Half the term gives back a little of the FID, not most of it**: {every2['fid_ratio']:.2f}× against "
            f"{step['fid_ratio']:.2f}× with the step on every update and {none['fid_ratio']:.2f}× without it") in flat
    assert _meets_labels(every2) and _meets_labels(spread)
    assert f"makes the FID worse** ({spread['fid_ratio']:.2f}× against {step['fid_ratio']:.2f}×)" in flat
    with_term = robust_scores + screen_scores[1:]
    assert f"read {min(s['fid_ratio'] for s in with_term):.2f}× or more" in flat
    fakes = [_value_span([r["D_G_z"] for r in record[3:]], "{:.2f}") for record in screen_records]
    assert (f"D(G(z)) read {fakes[2]} over epochs 4–10 with the term on every other update, {fakes[1]} on every "
            f"update, {fakes[0]} without it") in flat
    readme = prose("README.md")
    assert (f"on five untuned seeds (23–27) it reads {accuracy} with every class at {worst} or better, issue 12's "
            f"five of five, at FID {fids} real") in readme
    assert (f"a little on a first seed ({every2['fid_ratio']:.2f}× against {step['fid_ratio']:.2f}×), and D seeing its "
            f"batch's spread raised it ({spread['fid_ratio']:.2f}×)") in readme


#: The runs whose FID docs/RESULTS.md splits into its parts, in the table's order (seed, threads, D, file prefix).
_CDCGAN_PARTS_ROWS = (
    (21, "one thread", "none, no term", "cdcgan-nobn-1t-2026-12-06-seed21"),
    (22, "default threads", "none, no term", "cdcgan-nobn-2t-2026-12-06-seed22"),
    *((seed, "default threads", "none, `step` (the default)", f"cdcgan-default-2t-2026-12-06-seed{seed}")
      for seed in (24, 25, 26, 27)),
    *((21, "one thread", f"none, `step` every {n} updates", f"cdcgan-maevery{n}-1t-2026-12-06-seed21") for n in (2, 4, 8)),
    (21, "one thread", "none, batch spread, `step`", "cdcgan-mbs4-1t-2026-12-06-seed21"),
    *((21, "one thread", f"none, `step` in the first {k} epochs", f"cdcgan-mafirst{k}-1t-2026-12-06-seed21")
      for k in (3, 5)))
#: The screens of the term on fewer updates and in the first epochs only, beside seed 21's runs of the tables above.
_CDCGAN_FIRST_EPOCHS_ROWS = (
    _CDCGAN_FID_SCREEN_ROWS[0], _CDCGAN_FID_SCREEN_ROWS[1], _CDCGAN_PARTS_ROWS[6], _CDCGAN_PARTS_ROWS[7],
    _CDCGAN_PARTS_ROWS[8], _CDCGAN_PARTS_ROWS[10], _CDCGAN_PARTS_ROWS[11])


def _fid_parts_of(prefix: str) -> tuple[dict, dict]:
    """(the samples', the real validation set's) FID and its parts from a committed ``-fidparts-epoch10.json``,
    the class parts averaged over the ten classes; checked against the run's committed eval."""
    dcgan = REPO / "benchmarks" / "results" / "dcgan"
    ev = json.loads((dcgan / f"{prefix}-fidparts-epoch10.json").read_text())
    scored = json.loads((dcgan / f"{prefix}-eval-epoch10.json").read_text())
    assert (ev["model"], ev["epoch"], ev["n_samples"], ev["seed"]) == ("cdcgan", 10, 10_000, 0)
    assert ev["classifier"]["samples"]["fid_test"] == pytest.approx(scored["classifier"]["samples"]["fid_test"],
                                                                    rel=1e-7)  # the same draws

    def read(side: dict) -> dict:
        p = side["fid_parts"]
        assert len(p["class_fid"]) == 10 and None not in p["class_fid"]
        return {"accuracy": side["label_accuracy"]["overall"], "fid": side["fid_test"], "mean": p["mean_term"],
                "spread": p["spread"], "class_fid": sum(p["class_fid"]) / 10, "class_spread": sum(p["class_spread"]) / 10}

    samples, real = read(ev["classifier"]["samples"]), read(ev["classifier"]["real_valid"])
    samples["fid_ratio"] = samples["fid"] / real["fid"]
    return samples, real


def _parts_row(first: str, d: str, x: dict, fid_ratio: str) -> str:
    return (f"| {first} | {d} | {100 * x['accuracy']:.1f}% | {fid_ratio} | {x['mean']:.3f} | {x['spread']:.3f} | "
            f"{x['class_fid']:.2f} | {x['class_spread']:.3f} |")


def test_cdcgan_fid_parts_and_the_first_epochs_screens_come_from_the_committed_runs():
    """docs/RESULTS.md's subsection on the FID's parts and the term in the first epochs only: both tables row by
    row from the committed evals, the readings quoted beside them, and the README's."""
    text, flat, _ = _section("docs/RESULTS.md", "### Where the FID goes", "\n### The term in the first seven")
    rows = [line.strip() for line in text.splitlines() if line[:3] in ("| 2", "| 3")]  # seeds 21-30
    parts = {prefix: _fid_parts_of(prefix) for *_, prefix in _CDCGAN_PARTS_ROWS}
    expected = [_parts_row(f"{seed} ({threads})", d, parts[prefix][0], f"{parts[prefix][0]['fid_ratio']:.2f}")
                for seed, threads, d, prefix in _CDCGAN_PARTS_ROWS]
    real = parts[_CDCGAN_PARTS_ROWS[0][3]][1]
    for _, other in parts.values():  # the real validation set against the test set, the same in every eval
        assert other == pytest.approx(real, rel=1e-6)
    assert _parts_row("real validation set (the ceiling)", "—", real, "1.00") in text
    screen, screen_scores, screen_records = _cdcgan_rows(_CDCGAN_FIRST_EPOCHS_ROWS)
    untuned_rows = [(seed, "one thread, untuned", "none, `step` in the first 5 epochs",
                     f"cdcgan-mafirst5-1t-2026-12-06-seed{seed}") for seed in (28, 29, 30)]
    untuned, untuned_scores, untuned_records = _cdcgan_rows(untuned_rows)
    assert rows == expected + screen + untuned
    samples = [x for x, _ in parts.values()]
    none, default, every, first = samples[:2], samples[2:6], samples[6:9], samples[10:]
    span = lambda xs, key, fmt="{:.3f}": _value_span([x[key] for x in xs], fmt)  # noqa: E731
    assert (f"each class's samples spread {span(default, 'class_spread')} of the test set's same class, against "
            f"{span(none, 'class_spread')} without the term (seeds 21–22) and {real['class_spread']:.3f} for real "
            f"validation digits; the whole set spreads {span(default, 'spread')}") in flat
    assert f"its mean moves by {span(default, 'mean')} against {span(none, 'mean')}" in flat
    assert f"where the classifier reads real validation digits at {100 * real['accuracy']:.1f}%" in flat
    assert f"(every 8: {every[2]['class_spread']:.3f})" in flat and max(x["class_spread"] for x in every) == \
        every[2]["class_spread"]
    assert (f"(every 2, 4 and 8 updates: {every[0]['fid_ratio']:.2f}, {every[1]['fid_ratio']:.2f} and "
            f"{every[2]['fid_ratio']:.2f}×)") in flat
    no_term, step, _, _, _, first3, first5 = screen_scores
    assert _meets_labels(first5) and first5["fid_ratio"] <= 1.5 and not _meets_labels(first3)
    assert (f"meets the FID and the label targets together on seed 21**: {first5['fid_ratio']:.2f}× real (issue 12: "
            f"1.5), label accuracy {100 * first5['accuracy']:.1f}% with every class at "
            f"{100 * first5['worst_class']:.1f}% or better") in flat
    assert f"(within-class spread {first[1]['class_spread']:.3f})" in flat
    assert min(x["class_fid"] for x in samples) == first[1]["class_fid"]
    assert (f"lowest in the table of parts ({first[1]['class_fid']:.2f}, against {span(none, 'class_fid', '{:.2f}')} "
            f"without the term and {span(default, 'class_fid', '{:.2f}')} with it throughout)") in flat
    assert (f"too few for the labels**: {100 * first3['accuracy']:.1f}% overall (worst class "
            f"{100 * first3['worst_class']:.1f}%), FID {first3['fid_ratio']:.2f}×") in flat
    assert (f"**Parzen falls as the classes widen**: {first5['parzen']:.1f} against {step['parzen']:.1f} with the term "
            f"throughout (no term: {no_term['parzen']:.1f})") in flat
    record = screen_records[-1]
    on, off = record[:5], record[5:]
    assert (f"D(G(z)) reads {_value_span([r['D_G_z'] for r in on[1:]], '{:.2f}')} over epochs 2–5, as with the term "
            f"throughout, and {_value_span([r['D_G_z'] for r in off], '{:.2f}')} once it is gone") in flat
    assert (f"{_value_span([r['seconds'] for r in off], '{:.0f}', ' s')} against "
            f"{_value_span([r['seconds'] for r in on], '{:.0f}', ' s')} at one thread") in flat
    # Three untuned seeds: the FID under 1.5x on each, the labels met on two.
    dcgan = REPO / "benchmarks" / "results" / "dcgan"
    spreads = [sum(json.loads((dcgan / f"{prefix}-eval-epoch10.json").read_text())["classifier"]["samples"]
                   ["fid_parts"]["class_spread"]) / 10 for *_, prefix in untuned_rows]
    assert all(s["fid_ratio"] <= 1.5 for s in untuned_scores)
    assert [_meets_labels(s) for s in untuned_scores] == [False, True, True]
    assert (f"**The FID holds on every seed**: {_value_span([s['fid_ratio'] for s in untuned_scores], '{:.2f}')}× real, "
            f"under issue 12's 1.5 on all three (and on seed 21), each class's samples spreading "
            f"{_value_span(spreads, '{:.3f}')} of the test set's same class") in flat
    s28, s29, s30 = untuned_scores
    assert (f"seeds 29 and 30 meet the targets by little (worst class {100 * s29['worst_class']:.1f}% and "
            f"{100 * s30['worst_class']:.1f}%, the \"5\"s), seed 28 misses them ({100 * s28['accuracy']:.1f}% overall, "
            f"its \"5\"s at {100 * s28['worst_class']:.1f}%)") in flat
    assert f"Parzen {_value_span([s['parzen'] for s in untuned_scores], '{:.1f}')} (225 asked)" in flat
    on = [r["seconds"] for record in untuned_records for r in record[:5]]
    off = [r["seconds"] for record in untuned_records for r in record[5:]]
    assert (f"epochs with the term {_value_span(on, '{:.0f}', ' s')}, without it "
            f"{_value_span(off, '{:.0f}', ' s')}") in flat
    readme = prose("README.md")
    assert (f"FID {first5['fid_ratio']:.2f}× real with {100 * first5['accuracy']:.1f}% and every class at "
            f"{100 * first5['worst_class']:.1f}% or better on seed 21, and "
            f"{_value_span([s['fid_ratio'] for s in untuned_scores], '{:.2f}')}× on three untuned seeds") in readme


#: The term in the first six and seven epochs: seed 28 (whose "5"s missed with five), seed 21, the untuned seeds
#: 31-33 (one thread) and 34-36 (default threads, as a user runs it; 35-36 on the AMD EPYC), beside the five-epoch
#: runs of seeds 28 and 21.
_CDCGAN_FIRST_SEVEN_ROWS = (
    (28, "one thread, untuned", "none, `step` in the first 5 epochs", "cdcgan-mafirst5-1t-2026-12-06-seed28"),
    *((28, "one thread", f"none, `step` in the first {k} epochs", f"cdcgan-mafirst{k}-1t-2026-12-06-seed28")
      for k in (6, 7)),
    _CDCGAN_PARTS_ROWS[11],
    (21, "one thread", "none, `step` in the first 7 epochs", "cdcgan-mafirst7-1t-2026-12-06-seed21"),
    *((seed, "one thread, untuned", "none, `step` in the first 7 epochs", f"cdcgan-mafirst7-1t-2026-12-06-seed{seed}")
      for seed in (31, 32, 33)),
    (34, "default threads, untuned", "none, `step` in the first 7 epochs", "cdcgan-mafirst7-2t-2026-12-06-seed34"),
    *((seed, "default threads, untuned, AMD EPYC", "none, `step` in the first 7 epochs",
       f"cdcgan-mafirst7-2t-2026-12-06-seed{seed}") for seed in (35, 36)))


def test_cdcgan_first_seven_epochs_come_from_the_committed_runs():
    """docs/RESULTS.md's subsection on the term in the first seven epochs: the table row by row from the committed
    evals, the readings and spans quoted beside it, seed 28's runs one run until the term ends, and the README's."""
    text, flat, _ = _section("docs/RESULTS.md", "### The term in the first seven epochs", "\n### Fashion-MNIST with")
    rows = [line.strip() for line in text.splitlines() if line[:3] in ("| 2", "| 3")]
    expected, scores, records = _cdcgan_rows(_CDCGAN_FIRST_SEVEN_ROWS)
    assert rows == expected
    five28, six28, seven28, five21, seven21, *rest = scores
    untuned, (user, user35, user36) = rest[:3], rest[3:]
    assert (f"{_pct(five28['worst_class'])} → {_pct(six28['worst_class'])} → {_pct(seven28['worst_class'])} with the term "
            f"in the first five, six and seven epochs (overall {_pct(five28['accuracy'])}, {_pct(six28['accuracy'])}, "
            f"{_pct(seven28['accuracy'])}), the FID {five28['fid_ratio']:.2f}, {six28['fid_ratio']:.2f} and "
            f"{seven28['fid_ratio']:.2f}× real") in flat
    assert five28["worst_class"] < six28["worst_class"] < seven28["worst_class"] and not _meets_labels(five28)
    same = ("loss_D", "loss_G", "D_x", "D_G_z", "diversity", "label_share")
    firsts = [[{k: r[k] for k in same} for r in record[:5]] for record in records[:3]]
    assert firsts[0] == firsts[1] == firsts[2]  # one run until the term ends (two sessions, two commits)
    assert [{k: r[k] for k in same} for r in records[0][5:6]] != [{k: r[k] for k in same} for r in records[1][5:6]]
    assert (f"{_pct(five21['worst_class'])} → {_pct(seven21['worst_class'])} for the worst class, FID "
            f"{five21['fid_ratio']:.2f} → {seven21['fid_ratio']:.2f}× real, still under 1.5") in flat
    assert (f"label accuracy {_value_span([100 * s['accuracy'] for s in untuned], '{:.1f}', '%')} with every class at "
            f"{_pct(min(s['worst_class'] for s in untuned))} or better (the \"5\"s again the weakest), FID "
            f"{_value_span([s['fid_ratio'] for s in untuned], '{:.2f}')}× real") in flat
    seven = [seven28, seven21, *untuned]
    assert all(_meets_labels(s) and s["fid_ratio"] <= 1.5 for s in seven)  # five of five
    fids = _value_span([s["fid_ratio"] for s in seven], "{:.2f}")
    worst = _pct(min(s["worst_class"] for s in seven))
    assert f"together on five of five seeds** (FID {fids}× real, every class {worst} or better)" in flat
    spreads = [s["class_spread"] for s in seven]
    assert len(spreads) == 5
    assert (f"Each class spreads {_value_span(spreads, '{:.3f}')} of the test set's same class (first five epochs: "
            "0.923–0.945; the term throughout: 0.866–0.878), and Parzen reads "
            f"{_value_span([s['parzen'] for s in seven], '{:.1f}')}") in flat
    on = [r["seconds"] for record in records[5:8] for r in record[:7]]
    off = [r["seconds"] for record in records[5:8] for r in record[7:]]
    assert (f"Epochs with the term took {_value_span(on, '{:.0f}', ' s')}, without it "
            f"{_value_span(off, '{:.0f}', ' s')}") in flat
    assert _meets_labels(user) and user["fid_ratio"] <= 1.5
    assert (f"{_pct(user['accuracy'])} with every class at {_pct(user['worst_class'])} or better, FID "
            f"{user['fid_ratio']:.2f}× real, Parzen {user['parzen']:.1f}, the targets met on a sixth seed") in flat
    # Seeds 35 and 36, as a user runs them on the other machine, and the default they made.
    users = [user35, user36]
    assert all(_meets_labels(s) and s["fid_ratio"] <= 1.5 for s in users)
    user_spreads = [user35["class_spread"], user36["class_spread"]]
    assert (f"{_pct(user35['accuracy'])} and {_pct(user36['accuracy'])} with every class at "
            f"{_pct(user35['worst_class'])} and {_pct(user36['worst_class'])} or better, FID {user35['fid_ratio']:.2f} "
            f"and {user36['fid_ratio']:.2f}× real, Parzen {user35['parzen']:.1f} and {user36['parzen']:.1f}; each "
            f"class spreads {user_spreads[0]:.3f} and {user_spreads[1]:.3f} of the test set's") in flat
    every = [*seven, user, *users]
    assert len(every) == 8 and all(_meets_labels(s) and s["fid_ratio"] <= 1.5 for s in every)
    every_fids = _value_span([s["fid_ratio"] for s in every], "{:.2f}")
    every_acc = _value_span([100 * s["accuracy"] for s in every], "{:.1f}", "%")
    every_worst = _pct(min(s["worst_class"] for s in every))
    assert (f"**eight of eight seeds** (FID {every_fids}× real, {every_acc} with every class at {every_worst} or "
            "better), three of them at the default threads from a fresh install") in flat
    from minigan.config import TrainConfig
    assert TrainConfig(model="cdcgan").matching_aware_first_epochs == 7  # the default since
    assert TrainConfig(model="cdcgan", dataset="fashion-mnist").matching_aware_first_epochs == 0
    # The epochs of seeds 35 and 36 that had the cores to themselves (the rest shared them; listed in the text).
    shared = {(35, 1), (35, 2), (35, 5), (36, 3), (36, 4)}
    quiet = {True: [], False: []}
    for seed, record in zip((35, 36), records[-2:]):
        for r in record:
            if (seed, r["epoch"]) not in shared:
                quiet[r["epoch"] <= 7].append(r["seconds"])
    busy = [r["seconds"] for seed, record in zip((35, 36), records[-2:]) for r in record
            if (seed, r["epoch"]) in shared]
    assert min(busy) > max(quiet[True])  # what was left out is what the shared cores slowed
    assert (f"{_value_span(quiet[True], '{:.0f}', ' s')} with the term and {_value_span(quiet[False], '{:.0f}', ' s')} "
            f"without it (seeds 35 and 36, leaving out the five epochs that shared the cores with the test suite, the "
            f"classifier's training or an eval: seed 35's 1, 2 and 5, seed 36's 3 and 4, "
            f"{_value_span(busy, '{:.0f}', ' s')})") in flat
    readme = prose("README.md")
    assert (f"both held on five of five seeds, three of them untuned: FID {fids}× real, "
            f"{_value_span([100 * s['accuracy'] for s in seven], '{:.1f}', '%')} with every class at {worst} or "
            "better") in readme
    user_fids = _value_span([s["fid_ratio"] for s in [user, *users]], "{:.2f}")
    assert (f"three more untuned seeds at the default threads, each run as a user runs it from a fresh install "
            f"(34–36), met both too: FID {user_fids}× real, "
            f"{_value_span([100 * s['accuracy'] for s in [user, *users]], '{:.1f}', '%')} with every class at "
            f"{_pct(min(s['worst_class'] for s in [user, *users]))} or better") in readme
    assert (f"the default now: {_value_span(quiet[True], '{:.0f}', ' s')} with the term and "
            f"{_value_span(quiet[False], '{:.0f}', ' s')} after it") in readme


def test_cdcgan_fashion_first_seven_epochs_screen_comes_from_the_committed_runs():
    """docs/RESULTS.md's Fashion-MNIST screen of the term in the first seven epochs: both rows from the committed
    evals, the readings beside them, the run with the term throughout equal to the committed Xeon run, and the
    preset that keys the seven epochs to MNIST."""
    text, flat, _ = _section("docs/RESULTS.md", "### Fashion-MNIST with the term in the first seven epochs",
                             "\n## pix2pix on fashion-edges")
    dcgan = REPO / "benchmarks" / "results" / "dcgan"
    prefixes = {"none, `step` (Fashion's default)": "cdcgan-fashion-nobn-mastep-1t-amd-2026-12-06-seed0",
                "none, `step` in the first 7 epochs": "cdcgan-fashion-mafirst7-1t-2026-12-06-seed0"}
    evals = {d: json.loads((dcgan / f"{prefix}-eval-epoch10.json").read_text()) for d, prefix in prefixes.items()}
    rows = [line.strip() for line in text.splitlines() if line.startswith("| 0 ")]
    assert rows == [_cdcgan_screen_row(0, "one thread", d, ev, "fashion-mnist") for d, ev in evals.items()]
    throughout, first7 = (_eval_scores(ev) for ev in evals.values())
    per_class = [ev["classifier"]["samples"]["label_accuracy"]["per_class"] for ev in evals.values()]
    spreads = [_mean_class_spread(ev) for ev in evals.values()]
    drop = 100 * (throughout["accuracy"] - first7["accuracy"])
    assert first7["accuracy"] < 0.95 <= throughout["accuracy"]
    assert (f"the labels fall {drop:.1f} points**, to {_pct(first7['accuracy'])}, under issue 12's 95%, and the FID "
            f"does not move ({throughout['fid_ratio']:.2f} → {first7['fid_ratio']:.2f}× real)") in flat
    assert f"({spreads[0]:.3f} → {spreads[1]:.3f} of the test set's same class)" in flat
    falls = {k: 100 * (per_class[0][k] - per_class[1][k]) for k in range(10)}
    assert max(falls, key=falls.get) == 6 and sorted(falls, key=falls.get)[-4:-1] == [4, 0, 2]
    assert f'the shirts ("6") fall from {_pct(per_class[0][6])} to {_pct(per_class[1][6])}' in flat
    assert (f"by {min(falls[k] for k in (0, 2, 4)):.0f}–{max(falls[k] for k in (0, 2, 4)):.0f} points (pullovers "
            f'"2" {_pct(per_class[0][2])} → {_pct(per_class[1][2])}, T-shirts "0" {_pct(per_class[0][0])} → '
            f'{_pct(per_class[1][0])}, coats "4" {_pct(per_class[0][4])} → {_pct(per_class[1][4])})') in flat
    for ev in evals.values():
        assert ev["classifier"]["test_accuracy"] == 0.8846
    assert "88.46% on the test garments" in flat
    # The run with the term throughout is the committed Xeon run, record for record and in its eval.
    amd = _records_without_seconds("cdcgan-fashion-nobn-mastep-1t-amd-2026-12-06-seed0")
    xeon = _records_without_seconds("cdcgan-fashion-nobn-mastep-1t-2026-12-06-seed0")
    assert len(amd) == 10 and amd == xeon
    xeon_ev = json.loads((dcgan / "cdcgan-fashion-nobn-mastep-1t-2026-12-06-seed0-eval-epoch10.json").read_text())
    assert _eval_scores(xeon_ev) == throughout
    first7_run = _records_without_seconds("cdcgan-fashion-mafirst7-1t-2026-12-06-seed0")
    assert first7_run[:7] == amd[:7] and first7_run[7] != amd[7]  # one run until the term ends
    assert "all ten epochs' records equal" in flat and "their first seven epochs' records are equal" in flat
    assert (f"Fashion-MNIST keeps it throughout: there, on seed 0, its labels fell from {_pct(throughout['accuracy'])} "
            f"to {_pct(first7['accuracy'])} without the term after epoch 7, at the same FID") in prose("README.md")
    from minigan.config import TrainConfig
    assert TrainConfig(model="cdcgan", dataset="fashion-mnist").matching_aware_first_epochs == 0
    assert TrainConfig(model="cdcgan", dataset="mnist").matching_aware_first_epochs == 7


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.2f}"


def _issue14_rows(runs_dir: str) -> tuple[list[str], dict, dict]:
    """The five table rows of an issue-14 section of benchmarks/RESULTS.md (step_time at batch 100, 100 at one
    thread and 1000; the paper preset's trainer and CLI at 100 and 1000) from its JSON files in ``runs_dir``,
    with the step and end-to-end records by name and by batch."""
    runs = REPO / "benchmarks" / "results" / runs_dir
    load = lambda name: json.loads((runs / f"{name}.json").read_text())  # noqa: E731
    ms = _ms
    step = {name: load(name) for name in ("cgan-step-b100", "cgan-step-b100-1t", "cgan-step-b1000")}
    expected = []
    for name, d in step.items():
        assert (d["mode"], d["device"], d["machine"]["cpu"]) == ("step", "cpu", "AMD EPYC")
        threads = " --threads 1" if d["threads"] == 1 else ""
        expected.append(f"| `python benchmarks/step_time.py --batch {d['batch']}{threads} --json` | {d['threads']} | "
                        f"{ms(d['minigan_s'])} | {ms(d['floor_s'])} | {d['minigan_over_floor']:.2f} | "
                        f"{ms(d['torch_s'])} | {d['torch_over_minigan']:.2f} |")
    e2e = {b: load(f"cgan-e2e-b{b}-cli3") for b in (100, 1000)}
    for b, d in e2e.items():
        c = d["cli"]
        assert (d["preset"], d["threads"], c["repeats"]) == ("paper", 2, 3)
        expected.append(f"| `python benchmarks/step_time.py --e2e --preset paper --batch {b} --cli --json` (trainer; CLI) "
                        f"| 2 | {ms(d['trainer_s'])}; {ms(c['per_update_s'])} | {ms(d['floor_s'])} | "
                        f"{d['trainer_over_floor']:.2f}; {c['cli_over_floor']:.2f} | | |")
    return expected, step, e2e


def _issue14_section(start: str, end: str, runs_dir: str):
    """An issue-14 section of benchmarks/RESULTS.md whose five table rows are :func:`_issue14_rows`' (asserted):
    its text with whitespace runs made single spaces, the step and end-to-end records, and a loader of the
    section's JSON files by name."""
    results, flat, _ = _section("benchmarks/RESULTS.md", start, end)
    rows = [line.strip() for line in results.splitlines() if line.startswith("| `python")]
    expected, step, e2e = _issue14_rows(runs_dir)
    assert sorted(rows) == sorted(expected) and len(rows) == 5
    runs = REPO / "benchmarks" / "results" / runs_dir
    return flat, step, e2e, lambda name: json.loads((runs / f"{name}.json").read_text())


def test_amd_cpu_figures_come_from_the_committed_runs():
    """benchmarks/RESULTS.md's 2026-12-06 AMD EPYC section: each table row from its step_time JSON, the readings
    against issue 14's targets, and the profile's phases from its JSON."""
    flat, step, e2e, load = _issue14_section("## Issue 14's CPU figures on the AMD EPYC",
                                             "\n## The CLI timed from outside", "2026-12-06-amd")
    ms = _ms
    b100, b100_1t, b1000 = step.values()
    assert b1000["minigan_over_floor"] <= 1.3 < b100["minigan_over_floor"]
    assert 1.3 < e2e[1000]["trainer_over_floor"] < 1.32 and 1.3 < e2e[1000]["cli"]["cli_over_floor"] < 1.32
    assert abs(e2e[1000]["cli"]["trainer_over_cli"] - 1) <= 0.002
    # PyTorch's best thread count is two here, and at it PyTorch is 1.30x minigan's time, not the 1.5x asked.
    assert b100["torch_s"] < b100_1t["torch_s"]
    assert (f"(two threads: {ms(b100['torch_s'])} ms, against {ms(b100_1t['torch_s'])} at one) takes "
            f"**{b100['torch_over_minigan']:.2f}× minigan's time**") in flat
    assert b100["torch_over_minigan"] < 1.5
    profile = load("cgan-profile-layers-b100")["layers"]
    phases = {p["phase"]: p["s"] for p in profile["phases"]}
    opt_G, opt_D = phases["optimizer G step"], phases["optimizer D step"]
    dropout = sum(s for name, s in phases.items() if "(Dropout) forward" in name)
    other = phases["other (noise, losses, batch, sync gaps)"]
    gap = b100["minigan_s"] - b100["floor_s"]
    assert (f"puts the optimizer steps at {ms(opt_G + opt_D)} ms (G {ms(opt_G)}, D {ms(opt_D)}), the dropout forwards "
            f"(draws and masks) at {ms(dropout)} ms and the rest outside the layers at {ms(other)} ms, of a "
            f"{ms(profile['step_s'])} ms iteration: {1e3 * (opt_G + opt_D + dropout + other):.1f} ms, more than half "
            f"of the {1e3 * gap:.1f} ms between the bare step and its floor") in flat
    assert opt_G + opt_D + dropout + other > gap / 2


def test_amd_cpu_figures_after_the_pool_changes_come_from_the_committed_runs():
    """benchmarks/RESULTS.md's 2026-12-07 AMD EPYC section: each table row from its JSON, the readings against
    issue 14's targets and the 2026-12-06 figures, the side-by-side runs of the two checkouts, and the profile."""
    flat, step, e2e, load = _issue14_section("## Issue 14's CPU figures after the pool was re-measured",
                                             "\n## Issue 14's CPU figures on the AMD EPYC, all cores (2026-12-06)",
                                             "2026-12-07-amd")
    ms = _ms
    b100, b100_1t, b1000 = step.values()
    _, before, before_e2e = _issue14_rows("2026-12-06-amd")
    # batch 1000 meets 1.3x everywhere; batch 100 does not, but moved from the figures of the day before
    assert max(b1000["minigan_over_floor"], e2e[1000]["trainer_over_floor"], e2e[1000]["cli"]["cli_over_floor"]) <= 1.35
    assert b1000["minigan_over_floor"] <= 1.3 and e2e[1000]["trainer_over_floor"] <= 1.3
    assert 1.3 < b100["minigan_over_floor"] < before["cgan-step-b100"]["minigan_over_floor"]
    assert (f"at batch 100 the bare step is **{b100['minigan_over_floor']:.2f}×** "
            f"({before['cgan-step-b100']['minigan_over_floor']:.2f}× on 2026-12-06), the trainer "
            f"{e2e[100]['trainer_over_floor']:.2f}× ({before_e2e[100]['trainer_over_floor']:.2f}×), the CLI "
            f"{e2e[100]['cli']['cli_over_floor']:.2f}×") in flat
    assert (f"met at batch 1000 (the bare step {b1000['minigan_over_floor']:.2f}×, the trainer "
            f"{e2e[1000]['trainer_over_floor']:.2f}×, the CLI {e2e[1000]['cli']['cli_over_floor']:.2f}×)") in flat
    ratios = sorted(round(d["cli"]["trainer_over_cli"], 2) for d in e2e.values())
    assert f"The trainer took {ratios[0]:.2f}–{ratios[-1]:.2f} of the CLI's time per update" in flat
    each = {b: ", ".join(f"{1e3 * s:.{2 if b == 100 else 1}f}" for s in d["cli"]["per_update_each_s"])
            for b, d in e2e.items()}
    assert f"pairs at batch 100: {each[100]} ms; at 1000: {each[1000]} ms" in flat
    # PyTorch at its best thread count (two), against 1.5x asked
    assert b100["torch_s"] < b100_1t["torch_s"]
    assert (f"(two threads: {ms(b100['torch_s'])} ms, against {ms(b100_1t['torch_s'])} at one) takes **"
            f"{b100['torch_over_minigan']:.2f}× minigan's time** at batch 100 "
            f"({before['cgan-step-b100']['torch_over_minigan']:.2f}× on 2026-12-06; the issue asks 1.5×), "
            f"{b1000['torch_over_minigan']:.2f}× at batch 1000") in flat
    assert before["cgan-step-b100"]["torch_over_minigan"] < b100["torch_over_minigan"] < 1.5
    readme = " ".join((REPO / "README.md").read_text().split())
    assert (f"files `benchmarks/results/2026-12-07-amd/`): {b100['minigan_over_floor']:.2f}× the floor at batch 100 and "
            f"{b1000['minigan_over_floor']:.2f}× at batch 1000, PyTorch taking {b100['torch_over_minigan']:.2f}× and "
            f"{b1000['torch_over_minigan']:.2f}× minigan's time.") in readme
    # the two checkouts side by side, both orders, and the DCGAN
    ab, ba, dc = load("ab-cgan-main-dev"), load("ab-cgan-dev-main"), load("ab-cdcgan-main-dev")
    assert (ab["A"]["commit"], ab["B"]["commit"], ba["A"]["commit"], ba["B"]["commit"]) == ("d97b2ed", "bff1f07",
                                                                                          "bff1f07", "d97b2ed")
    assert (ab["iters"], ba["iters"], dc["iters"], dc["model"]) == (300, 300, 30, "cdcgan")
    assert (f"bff1f07 takes **{ab['pair_ratio_median']:.3f}** of main's time (main {1e3 * ab['median_s']['A']:.1f} ms, "
            f"bff1f07 {1e3 * ab['median_s']['B']:.1f} ms); swapped, main takes {ba['pair_ratio_median']:.3f} of "
            f"bff1f07's. The conditional DCGAN's iteration is unchanged ({dc['pair_ratio_median']:.3f}, 30 pairs)") in flat
    assert ab["pair_ratio_median"] < 0.95 and ba["pair_ratio_median"] > 1.05 and abs(dc["pair_ratio_median"] - 1) < 0.01
    # the profile, against the day before's
    phases = {}
    for name, d in (("now", load("cgan-profile-layers-b100")),
                    ("before", json.loads((REPO / "benchmarks" / "results" / "2026-12-06-amd"
                                           / "cgan-profile-layers-b100.json").read_text()))):
        p = {x["phase"]: x["s"] for x in d["layers"]["phases"]}
        phases[name] = (p["optimizer G step"], p["optimizer D step"],
                        sum(s for n, s in p.items() if "(Dropout) forward" in n),
                        p["other (noise, losses, batch, sync gaps)"], d["layers"]["step_s"])
    g, d_, drop, other, step_s = phases["now"]
    g0, d0, drop0, other0, step0 = phases["before"]
    assert (f"puts the optimizer steps at {ms(g + d_)} ms (G {ms(g)}, D {ms(d_)}), the dropout forwards at "
            f"{ms(drop)} ms and the rest outside the layers at {ms(other)} ms of a {ms(step_s)} ms iteration (on "
            f"2026-12-06: {ms(g0 + d0)}, {ms(drop0)} and {ms(other0)} of {ms(step0)} ms)") in flat
