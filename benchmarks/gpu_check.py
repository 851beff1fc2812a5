#!/usr/bin/env python
"""The GPU check: minigan's CuPy code proven on a real GPU in one run of a few minutes, with one JSON summary.

Run it as ``bash benchmarks/gpu_check.sh`` (which makes minigan importable and calls this file) on a machine
with an NVIDIA GPU, CuPy and PyTorch; it installs nothing. Stages, in order, each in its own process; a stage
that fails is recorded (exit code, the end of its output, what broke) and the next one still runs:

1. ``probe``: CuPy imports, sees the GPU, and minigan's CuPy backend multiplies two matrices; versions.
2. ``tests``: the whole test suite, with ``MINIGAN_TEST_BACKENDS=cupy`` so that every backend-parametrised test
   runs on CuPy (tests/conftest.py then refuses to start if CuPy is unusable). The junit report is read back:
   the stage passes only if pytest passed *and* at least one CuPy test ran *and* no CuPy test was skipped, so
   a skip never passes for a CuPy pass.
3. ``step_time``: ``step_time.py --device gpu`` at batch 100 and 8192 for each update rule (alternating, with
   PyTorch eager CUDA beside it; simultaneous), each with the measured SGEMM rate.
4. ``sweep``: ``sweep.py --device gpu`` over batch 100..8192.

Targets read from the step-time records (reported, not a pass/fail of the check): minigan-CuPy at least as fast
as PyTorch eager CUDA at batch 100 (``torch_over_minigan`` >= 1), and minigan at >= 60% of the measured SGEMM
rate at batch >= 8192 (``minigan_over_sgemm`` >= 0.6).

The whole run keeps within ``--budget`` seconds (default 450, for an 8-minute slot): each stage's time limit is
cut so that the stages after it keep their minimum. A stage over its limit gets SIGINT (pytest then still writes
its report), then SIGKILL.

Output, in ``--out`` (default ``$OUT``, else ``benchmarks/out``): ``gpu_check.json`` (the summary),
``gpu_check.log`` (every stage's full output), ``junit.xml``, ``sweep_gpu.json`` and ``sweep_gpu.png``: five
files, within what a device session brings back (8).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TAIL_CHARS = 3000

TARGETS = {"torch_over_minigan_at_100": 1.0, "minigan_over_sgemm_at_8192": 0.6}


@dataclass
class Stage:
    """One step of the check: a command, its time cap, and the minimum it needs to be worth starting."""

    name: str
    command: list
    cap_s: float
    reserve_s: float
    env: dict = field(default_factory=dict)
    kind: str = "plain"  # "probe", "tests", "step_time", "sweep": how its output is read


@dataclass
class Outcome:
    returncode: int | None
    output: str
    timed_out: bool
    wall_s: float


def run_process(command, env, timeout, log) -> Outcome:
    """Run ``command`` in its own process group; on timeout SIGINT (reports get written), then SIGKILL."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True)
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    log(out or "")
    return Outcome(proc.returncode, out or "", timed_out, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------------
# Reading what a stage printed
# --------------------------------------------------------------------------------------------------

_EXC = re.compile(r"^(?:E\s+)?([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b.*)$")


def what_broke(output: str) -> str:
    """One line naming the failure: the last exception line of the output, else its last non-empty line."""
    lines = [ln.rstrip() for ln in output.splitlines() if ln.strip()]
    for ln in reversed(lines):
        m = _EXC.match(ln.strip())
        if m:
            return m.group(1)[:400]
    return lines[-1][:400] if lines else "(no output)"


def last_json(output: str):
    """The last line of ``output`` that parses as a JSON object, or None."""
    for ln in reversed(output.splitlines()):
        ln = ln.strip()
        if ln.startswith("{"):
            try:
                return json.loads(ln)
            except ValueError:
                continue
    return None


def is_cupy_case(name: str) -> bool:
    """A parametrised test id that runs on the CuPy backend: ``test_x[cupy]``, ``test_y[cupy-3]``..."""
    m = re.search(r"\[(.*)\]$", name)
    return bool(m) and "cupy" in re.split(r"[-,]", m.group(1))


def read_junit(path: str) -> dict | None:
    """Counts from a pytest junit report, all tests and the CuPy ones apart; the first failure named."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    counts = {k: 0 for k in ("passed", "failed", "skipped")}
    cupy = dict(counts)
    first_failure, cupy_skips = None, []
    for case in root.iter("testcase"):
        name = case.get("name", "")
        test_id = f"{case.get('classname', '')}::{name}"
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        skipped = case.find("skipped")
        outcome = "failed" if bad is not None else "skipped" if skipped is not None else "passed"
        counts[outcome] += 1
        if is_cupy_case(name):
            cupy[outcome] += 1
            if outcome == "skipped" and len(cupy_skips) < 10:
                cupy_skips.append({"test": test_id, "reason": (skipped.get("message") or "")[:300]})
        if bad is not None and first_failure is None:
            message = bad.get("message") or (bad.text or "").strip().splitlines()[-1:] or [""]
            first_failure = {"test": test_id, "message": (message if isinstance(message, str) else message[0])[:600]}
    return {"all": counts, "cupy": cupy, "first_failure": first_failure, "cupy_skipped_examples": cupy_skips}


def judge(stage: Stage, outcome: Outcome, out_dir: str) -> dict:
    """The stage's record: ok, what broke (one line) and the parsed details."""
    rec = {"name": stage.name, "command": stage.command, "returncode": outcome.returncode,
           "timed_out": outcome.timed_out, "wall_s": round(outcome.wall_s, 2),
           "tail": outcome.output[-TAIL_CHARS:]}
    ok = outcome.returncode == 0 and not outcome.timed_out
    broke = None
    if stage.kind == "tests":
        report = read_junit(os.path.join(out_dir, "junit.xml"))
        rec["details"] = report
        if report is None:
            ok, broke = False, "no junit report: " + what_broke(outcome.output)
        elif report["cupy"]["passed"] == 0:
            ok, broke = False, (f"no test ran on CuPy ({report['cupy']['skipped']} CuPy tests skipped); "
                                + what_broke(outcome.output))
        elif report["cupy"]["skipped"]:
            ok = False
            ex = report["cupy_skipped_examples"][0]
            broke = f"{report['cupy']['skipped']} CuPy test(s) skipped, e.g. {ex['test']}: {ex['reason']}"
        if report is not None and report["first_failure"]:
            ok = False
            f = report["first_failure"]
            broke = f"{f['test']}: {f['message']}"
    elif stage.kind in ("step_time", "probe"):
        rec["details"] = last_json(outcome.output)
        if ok and rec["details"] is None:
            ok, broke = False, "no JSON result line in the output"
    elif stage.kind == "sweep":
        try:
            with open(os.path.join(out_dir, "sweep_gpu.json")) as f:
                rec["details"] = json.load(f)
        except (OSError, ValueError):
            rec["details"] = None
    if outcome.timed_out:
        broke = f"timed out after {outcome.wall_s:.0f} s" + (f"; {broke}" if broke else "")
    if not ok and broke is None:
        broke = what_broke(outcome.output)
    rec["ok"] = ok
    rec["what_broke"] = broke
    return rec


def targets(records: list) -> dict:
    """The GPU targets, from the step-time records and the sweep (None where nothing measured them)."""
    at100 = [r["details"] for r in records if r.get("kind") == "step_time" and r.get("details")
             and r["details"].get("batch") == 100 and r["details"].get("torch_over_minigan") is not None]
    big = [r["details"] for r in records if r.get("kind") == "step_time" and r.get("details")
           and r["details"].get("batch", 0) >= 8192 and r["details"].get("minigan_over_sgemm") is not None]
    for r in records:
        if r.get("kind") == "sweep" and isinstance(r.get("details"), list):
            big += [p for p in r["details"] if "error" not in p and p.get("batch", 0) >= 8192
                    and p.get("minigan_over_sgemm") is not None]

    def target(values, threshold, what):
        if not values:
            return {"what": what, "target": threshold, "values": [], "met": None}
        return {"what": what, "target": threshold, "values": values, "met": min(values) >= threshold}

    return {
        "torch_over_minigan_at_100": target(
            [d["torch_over_minigan"] for d in at100], TARGETS["torch_over_minigan_at_100"],
            "PyTorch eager CUDA's time / minigan-CuPy's, batch 100 (>= 1: minigan at least as fast)"),
        "minigan_over_sgemm_at_8192": target(
            [d["minigan_over_sgemm"] for d in big], TARGETS["minigan_over_sgemm_at_8192"],
            "minigan's achieved GFLOP/s / the measured SGEMM GFLOP/s, batch >= 8192"),
    }


# --------------------------------------------------------------------------------------------------
# The plan and the run
# --------------------------------------------------------------------------------------------------


def plan(args, out_dir: str) -> list:
    py = sys.executable
    stages = [Stage("probe", [py, os.path.abspath(__file__), "--probe"], 90, 15, kind="probe")]
    tests = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs",
             "--junitxml", os.path.join(out_dir, "junit.xml"), "tests"]
    workers = args.workers if args.workers is not None else min(8, max(1, (os.cpu_count() or 2) // 2))
    if workers > 1 and importlib.util.find_spec("xdist") is not None:
        tests[3:3] = ["-n", str(workers)]
    if importlib.util.find_spec("pytest_timeout") is not None:
        tests[3:3] = ["--timeout", "120"]  # a hung test is named instead of eating the stage
    stages.append(Stage("tests", tests, 240, 60, env={"MINIGAN_TEST_BACKENDS": args.test_backends},
                        kind="tests"))
    step = os.path.join(HERE, "step_time.py")
    for update in ("alternating", "simultaneous"):
        for batch, iters, warmup in ((100, 30, 10), (8192, 10, 3)):
            stages.append(Stage(f"step_time {update} batch {batch}",
                                [py, step, "--device", "gpu", "--batch", str(batch), "--update", update,
                                 "--iters", str(iters), "--warmup", str(warmup), "--json"], 75, 20,
                                kind="step_time"))
    stages.append(Stage("sweep", [py, os.path.join(HERE, "sweep.py"), "--device", "gpu", "--point-timeout", "60",
                                  "--out", os.path.join(out_dir, "sweep_gpu.json")], 170, 45, kind="sweep"))
    if args.only:
        stages = [s for s in stages if any(s.name.startswith(o) for o in args.only.split(","))]
    return stages


def run_check(stages: list, out_dir: str, budget_s: float, runner=run_process, clock=time.monotonic) -> dict:
    """Run the stages in order within the budget; return the summary (also written to gpu_check.json)."""
    os.makedirs(out_dir, exist_ok=True)
    log_path = os.path.join(out_dir, "gpu_check.log")
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0 = clock()
    records = []
    with open(log_path, "w") as log_file:
        for i, stage in enumerate(stages):
            left = budget_s - (clock() - t0)
            timeout = min(stage.cap_s, left - sum(s.reserve_s for s in stages[i + 1:]))
            header = f"\n===== {stage.name}: {' '.join(stage.command)} (limit {timeout:.0f} s) =====\n"
            log_file.write(header)
            log_file.flush()
            print(header.strip(), flush=True)
            if timeout < stage.reserve_s / 2:
                rec = {"name": stage.name, "command": stage.command, "returncode": None, "timed_out": False,
                       "wall_s": 0.0, "tail": "", "details": None, "ok": False,
                       "what_broke": f"not run: {left:.0f} s of the {budget_s:.0f} s budget left"}
            else:
                env = dict(os.environ, PYTHONUNBUFFERED="1", **stage.env)
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
                outcome = runner(stage.command, env, timeout, log_file.write)
                rec = judge(stage, outcome, out_dir)
            rec["kind"] = stage.kind
            records.append(rec)
            print(f"  -> {'ok' if rec['ok'] else 'FAILED: ' + str(rec['what_broke'])} "
                  f"({rec['wall_s']:.1f} s)", flush=True)
    first = next((r for r in records if not r["ok"]), None)
    probe = next((r for r in records if r["kind"] == "probe"), None)
    summary = {
        "check": "benchmarks/gpu_check.sh",
        "started_utc": started,
        "wall_s": round(clock() - t0, 1),
        "budget_s": budget_s,
        "ok": first is None,
        "first_failure": None if first is None else {
            "stage": first["name"], "returncode": first["returncode"], "what": first["what_broke"],
            "tail": first["tail"][-1500:]},
        "environment": probe["details"] if probe else None,
        "stages": records,
        "targets": targets(records),
    }
    with open(os.path.join(out_dir, "gpu_check.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def probe() -> dict:
    """What the machine has, and a first product through minigan's CuPy backend (raises if it breaks)."""
    import platform

    import numpy as np

    info = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("pytest", "hypothesis", "xdist", "pytest_timeout", "threadpoolctl", "scipy", "torch"):
        info[f"has_{mod}"] = importlib.util.find_spec(mod) is not None
    if info["has_torch"]:
        import torch
        info.update(torch=torch.__version__, torch_cuda=torch.cuda.is_available())
    from minigan import backend

    info["minigan"] = os.path.dirname(os.path.abspath(backend.__file__))
    backend.use("cupy")
    cupy = backend.xp()
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    info.update(cupy=cupy.__version__, cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(),
                cuda_driver=cupy.cuda.runtime.driverGetVersion(),
                gpu=name.decode() if isinstance(name, bytes) else str(name),
                gpu_memory_gib=round(props["totalGlobalMem"] / 2**30, 1), cupy_tf32=os.environ.get("CUPY_TF32", "0"))
    a = backend.to_device(np.arange(6, dtype=np.float32).reshape(2, 3))
    got = backend.to_host(a @ a.T)
    want = np.arange(6, dtype=np.float32).reshape(2, 3)
    if not np.allclose(got, want @ want.T):
        raise AssertionError(f"CuPy product wrong: {got} vs {want @ want.T}")
    info["first_product"] = "ok"
    return info


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="output folder (default: $OUT, else benchmarks/out)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for all stages together")
    ap.add_argument("--workers", type=int, default=None,
                    help="pytest-xdist workers for the tests (default: half the cores, at most 8; 1 = serial)")
    ap.add_argument("--test-backends", default="cupy", help="MINIGAN_TEST_BACKENDS for the tests stage")
    ap.add_argument("--only", default=None, help="comma-separated stage-name prefixes to run (e.g. probe,step)")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = os.environ.get("OUT") or os.path.join(HERE, "out")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.probe:
        print(json.dumps(probe()))
        return 0
    out_dir = os.path.abspath(args.out)
    summary = run_check(plan(args, out_dir), out_dir, args.budget)
    print(f"\ngpu_check: {'all stages passed' if summary['ok'] else 'FAILED'} in {summary['wall_s']:.0f} s; "
          f"summary {os.path.join(out_dir, 'gpu_check.json')}")
    if summary["first_failure"]:
        f = summary["first_failure"]
        print(f"first failure: stage '{f['stage']}' (exit {f['returncode']}): {f['what']}")
    for key, t in summary["targets"].items():
        vals = ", ".join(f"{v:.3f}" for v in t["values"]) or "not measured"
        print(f"target {key} (>= {t['target']}): {vals} -> "
              f"{'met' if t['met'] else 'not met' if t['met'] is False else 'n/a'}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
