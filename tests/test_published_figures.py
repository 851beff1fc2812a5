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
        cells = [c.replace("&nbsp;", "").replace("**", "").strip() for c in line.strip().strip("|").split("|")]
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
