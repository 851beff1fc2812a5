"""The benchmark scripts' plumbing on the CPU: argument parsing, threads, the end-to-end window, the sweep's
failure records, and the GPU check's JSON summary driven by a fake stage runner (no GPU needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from helpers import load_benchmark, write_idx_dir



step_time = load_benchmark("step_time")
sweep = load_benchmark("sweep")
gpu_check = load_benchmark("gpu_check")


# --------------------------------------------------------------------------------------------------
# step_time.py
# --------------------------------------------------------------------------------------------------


def test_step_time_defaults_measure_what_users_get():
    a = step_time.parse_args([])
    assert a.threads is None and a.device == "cpu" and a.update is None and not a.e2e
    assert (a.e2e_warmup, a.e2e_steps, a.preset, a.data) == (100, 400, "paper", "synthetic")
    assert step_time.parse_args(["--threads", "1", "--device", "gpu"]).threads == 1
    with pytest.raises(SystemExit):
        step_time.parse_args(["--e2e", "--e2e-warmup", "10", "--e2e-steps", "10"])


def test_threads_default_is_the_machines_and_re_exec_without_a_settable_blas(monkeypatch):
    for var in (*step_time.BLAS_ENV, step_time._REEXEC_MARK):
        monkeypatch.delenv(var, raising=False)
    assert step_time.apply_threads(None) == step_time.blas_threads()
    assert "OPENBLAS_NUM_THREADS" not in os.environ  # the default sets nothing
    monkeypatch.setattr(step_time.minigan_threads, "blas_libraries", lambda: [])  # no BLAS it can set
    calls = []
    step_time.apply_threads(1, ["--batch", "7"], execv=lambda exe, argv: calls.append(argv))
    assert calls and calls[0][1:] == [os.path.abspath(step_time.__file__), "--batch", "7"]
    assert all(os.environ[v] == "1" for v in step_time.BLAS_ENV)
    calls.clear()
    assert step_time.apply_threads(1, [], execv=lambda exe, argv: calls.append(argv)) == 1
    assert not calls  # the re-executed process does not loop


def test_floor_counts_the_matching_aware_step():
    from minigan.families import mlp as models

    m = models.cgan(0)
    for update in ("alternating", "simultaneous"):
        plain = step_time.products(m, 10, update)
        extra = [p for p in step_time.products(m, 10, update, matching_aware=True) if p[0].startswith("MA ")]
        d_step = [p for p in plain if p[0].startswith("Dstep D")] if update == "alternating" else None
        assert extra and all(p[1][0] in (20, p[1][0]) for p in extra)
        if d_step is not None:
            assert [p[1:] for p in extra] == [p[1:] for p in d_step]  # the same D step on 2B rows


class _FakeTrainer:
    updates = 0


def test_window_timer_subtracts_the_floor_pauses():
    now = [0.0]
    trainer = _FakeTrainer()

    def floor():
        now[0] += 5.0  # the floor's time must not count as the trainer's

    timer = step_time.WindowTimer(2, 10, floor, floor_every=3, clock=lambda: now[0])
    for u in range(1, 11):
        now[0] += 1.0  # one update
        trainer.updates = u
        timer(trainer)
    assert timer.floor_samples == [5.0, 5.0]  # after updates 5 and 8
    assert timer.per_update_s == pytest.approx(1.0)
    with pytest.raises(RuntimeError, match="did not complete"):
        step_time.WindowTimer(2, 50).per_update_s


def test_e2e_mode_runs_the_public_trainer(tmp_path, capsys, isolated_run_env):
    idx = write_idx_dir(tmp_path / "idx", n_train=60, n_test=6)
    out = step_time.main(["--e2e", "--batch", "5", "--e2e-warmup", "2", "--e2e-steps", "6", "--floor-every", "1",
                          "--data", str(idx), "--json"])
    assert out["mode"] == "e2e" and out["update"] == "simultaneous" and out["window"] == [2, 6]
    assert out["floor_samples"] == 3 and out["trainer_s"] > 0 and out["floor_products"] == 21
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["trainer_over_floor"] > 0


def test_cli_window_alternates_the_order_and_takes_the_median(monkeypatch):
    """Each pair's difference over the window; the order flips from pair to pair; the median is reported, beside
    the same difference of the runs' own training times."""
    args = step_time.parse_args(["--e2e", "--cli", "--cli-repeats", "3", "--e2e-warmup", "100", "--e2e-steps", "400"])
    calls = []
    walls = iter([4.8, 12.9, 13.3, 3.8, 4.0, 12.4])
    sessions = iter([3.2, 12.2, 12.6, 3.1, 3.2, 11.6])

    def fake_time_cli(args, data_dir, tmp, steps, threads):
        calls.append(steps)
        return next(walls), next(sessions)

    monkeypatch.setattr(step_time, "time_cli", fake_time_cli)
    out = step_time.time_cli_window(args, None, "unused", None)
    assert calls == [100, 400, 400, 100, 100, 400]
    assert out["per_update_each_s"] == pytest.approx([8.1 / 300, 9.5 / 300, 8.4 / 300])
    assert out["per_update_s"] == pytest.approx(8.4 / 300)
    assert out["inside_per_update_s"] == pytest.approx(9.0 / 300)  # median of 9.0, 9.5, 8.4
    assert [p["first"] for p in out["pairs"]] == [100, 400, 100]
    with pytest.raises(SystemExit):
        step_time.parse_args(["--e2e", "--cli", "--cli-repeats", "0"])


def test_time_cli_reads_the_runs_own_training_time(tmp_path, isolated_run_env):
    """The real command line, on a tiny data set: wall time from outside and the seconds it prints itself."""
    idx = write_idx_dir(tmp_path / "idx", n_train=60, n_test=6)
    args = step_time.parse_args(["--e2e", "--cli", "--batch", "5"])
    args.update = None
    wall, session = step_time.time_cli(args, str(idx), str(tmp_path), 3, None)
    assert session is not None and 0 < session < wall
    # The same run directory again: a fresh run of 3 updates, not one refused or resumed at its end.
    again, again_session = step_time.time_cli(args, str(idx), str(tmp_path), 3, None)
    assert again_session is not None and 0 < again_session < again


# --------------------------------------------------------------------------------------------------
# sweep.py
# --------------------------------------------------------------------------------------------------


class _Result:
    def __init__(self, returncode, stdout="", stderr=""):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def test_sweep_records_a_failed_point_and_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    args = sweep.parse_args(["--batches", "100,8192", "--device", "gpu"])
    assert args.out == str(tmp_path / "sweep_gpu.json") and args.png == str(tmp_path / "sweep_gpu.png")
    assert "--threads" not in sweep.point_command(100, args)  # all cores unless asked
    assert sweep.point_command(100, sweep.parse_args(["--threads", "1"]))[-2:] == ["--threads", "1"]
    good = {"batch": 100, "threads": 1, "minigan_s": 0.01, "floor_s": 0.008, "torch_s": 0.012,
            "minigan_over_floor": 1.25, "torch_over_floor": 1.5, "torch_over_minigan": 1.2, "minigan_over_sgemm": 0.4}

    def fake_run(cmd, **kw):
        if cmd[cmd.index("--batch") + 1] == "100":
            return _Result(0, "noise\n" + json.dumps(good) + "\n")
        return _Result(1, "", "Traceback ...\ncupy.cuda.memory.OutOfMemoryError: out of memory\n")

    monkeypatch.setattr(sweep, "plot", lambda *a, **k: None)
    assert sweep.main(["--batches", "100,8192", "--device", "gpu"], run=fake_run) == 1
    records = json.loads((tmp_path / "sweep_gpu.json").read_text())
    assert records[0] == good and records[1]["error"]["returncode"] == 1
    assert "OutOfMemoryError" in records[1]["error"]["tail"]
    assert "| 8192 | failed (exit 1)" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# gpu_check.py
# --------------------------------------------------------------------------------------------------

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_layers" name="test_linear[cupy]"/>
<testcase classname="tests.test_layers" name="test_maxout[cupy-5]"><failure message="AssertionError: arrays differ">
trace</failure></testcase>
<testcase classname="tests.test_cli" name="test_help"/>
<testcase classname="tests.test_data" name="test_real_mnist"><skipped message="no wheel"/></testcase>
</testsuite></testsuites>"""


def _fake_runner(out_dir, junit=JUNIT, sweep_ok=True):
    step = {"batch": 100, "torch_over_minigan": 1.3, "minigan_over_sgemm": 0.1}
    big = {"batch": 8192, "torch_over_minigan": 1.1, "minigan_over_sgemm": 0.7}

    def run(command, env, timeout, log):
        text = " ".join(command)
        log(text + "\n")
        if "--probe" in command:
            return gpu_check.Outcome(0, json.dumps({"gpu": "NVIDIA H200", "cupy": "14.2.0"}), False, 1.0)
        if command[1:3] == ["-m", "pytest"]:
            assert env["MINIGAN_TEST_BACKENDS"] == "cupy"
            Path(out_dir, "junit.xml").write_text(junit)
            return gpu_check.Outcome(1, "1 failed, 2 passed, 1 skipped", False, 50.0)
        if command[1].endswith("step_time.py"):
            rec = big if "8192" in command else step
            return gpu_check.Outcome(0, "table\n" + json.dumps(rec), False, 20.0)
        if sweep_ok:
            Path(out_dir, "sweep_gpu.json").write_text(json.dumps([step, big]))
            return gpu_check.Outcome(0, "", False, 60.0)
        return gpu_check.Outcome(None, "batch 100 ...", True, 170.0)

    return run


def test_gpu_check_summary_names_the_first_failure_and_runs_every_stage(tmp_path):
    args = gpu_check.parse_args(["--out", str(tmp_path)])
    stages = gpu_check.plan(args, str(tmp_path))
    names = [s.name for s in stages]
    assert names[:2] == ["probe", "tests"] and names[-1] == "sweep"
    assert sum(n.startswith("step_time") for n in names) == 4  # 2 batches x 2 update rules
    assert sum(s.cap_s for s in stages[1:]) > args.budget  # caps alone would overrun: the budget cuts them
    summary = gpu_check.run_check(stages, str(tmp_path), args.budget, runner=_fake_runner(tmp_path, sweep_ok=False))
    assert summary == json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(summary) >= {"ok", "first_failure", "stages", "targets", "environment", "wall_s", "budget_s"}
    assert summary["ok"] is False and summary["environment"]["gpu"] == "NVIDIA H200"
    first = summary["first_failure"]
    assert first["stage"] == "tests" and "tests.test_layers::test_maxout[cupy-5]" in first["what"]
    assert "arrays differ" in first["what"]
    assert [r["name"] for r in summary["stages"]] == names  # later stages still ran
    tests = summary["stages"][1]["details"]
    assert tests["cupy"] == {"passed": 1, "failed": 1, "skipped": 0} and tests["all"]["skipped"] == 1
    assert summary["stages"][-1]["ok"] is False and "timed out" in summary["stages"][-1]["what_broke"]
    t = summary["targets"]
    assert t["torch_over_minigan_at_100"]["values"] == [1.3, 1.3] and t["torch_over_minigan_at_100"]["met"]
    assert t["minigan_over_sgemm_at_8192"]["values"] == [0.7, 0.7] and t["minigan_over_sgemm_at_8192"]["met"]
    assert (tmp_path / "gpu_check.log").read_text().count("=====") == 2 * len(names)


def test_gpu_check_a_skipped_cupy_suite_is_a_failure(tmp_path):
    skipped = JUNIT.replace('name="test_linear[cupy]"/>', 'name="test_linear[cupy]"><skipped message="no GPU"/>'
                                                          '</testcase>').replace("<failure", "<skipped").replace(
        "</failure>", "</skipped>")
    stages = [s for s in gpu_check.plan(gpu_check.parse_args(["--out", str(tmp_path)]), str(tmp_path))
              if s.name == "tests"]
    summary = gpu_check.run_check(stages, str(tmp_path), 450, runner=_fake_runner(tmp_path, junit=skipped))
    assert not summary["ok"] and "no test ran on CuPy (2 CuPy tests skipped)" in summary["first_failure"]["what"]


def test_gpu_check_budget_leaves_later_stages_their_minimum(tmp_path):
    stages = gpu_check.plan(gpu_check.parse_args(["--out", str(tmp_path)]), str(tmp_path))
    now = [0.0]
    limits = []

    def runner(command, env, timeout, log):
        limits.append(timeout)
        now[0] += timeout  # every stage runs to its limit
        return gpu_check.Outcome(0, "{}", False, timeout)

    summary = gpu_check.run_check(stages, str(tmp_path), 450, runner=runner, clock=lambda: now[0])
    assert now[0] <= 450 and len(limits) == len(stages)  # every stage started, none pushed past the budget
    assert all(limit >= s.reserve_s for limit, s in zip(limits, stages))
    assert summary["ok"] is False  # "{}" is not a pytest report: the tests stage fails, the others pass
    assert [r["ok"] for r in summary["stages"]].count(False) == 1


_PARAMS_PLUGIN = """
import os, re

def pytest_collection_finish(session):
    rows = []
    for item in session.items:
        spec = getattr(item, "callspec", None)
        params = sorted((k, re.sub(r" at 0x[0-9a-f]+", "", repr(v))) for k, v in spec.params.items()) if spec else []
        rows.append(item.nodeid + " " + repr(params))
    with open(os.environ["COLLECTED_PARAMS"], "w") as f:
        f.write("\\n".join(rows))
"""


def test_the_suite_collects_the_same_tests_in_every_process(tmp_path):
    """gpu_check runs the suite on pytest-xdist workers, which refuse to start unless every worker collects the
    same tests (the first GPU run failed so: a parameter made by os.urandom, whose test id newer pytest spells
    out byte by byte). Two collections in fresh processes with different hash seeds must agree on every test
    id and on every parameter's repr (object addresses aside)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    (tmp_path / "collected_params_plugin.py").write_text(_PARAMS_PLUGIN)

    def collect(hash_seed):
        out = tmp_path / f"params-{hash_seed}.txt"
        env = dict(os.environ, PYTHONHASHSEED=str(hash_seed), COLLECTED_PARAMS=str(out),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
        done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                               "-p", "collected_params_plugin", "tests"],
                              cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and out.exists(), done.stdout[-2000:] + done.stderr[-2000:]
        return out.read_text().splitlines()

    first, second = collect(1), collect(2)
    assert len(first) > 500 and any("[" in row for row in first)
    assert first == second, sorted(set(first) ^ set(second))[:4]


def test_what_broke_and_cupy_ids():
    assert gpu_check.what_broke("x\nTraceback\n  File\nValueError: bad shape\n") == "ValueError: bad shape"
    assert gpu_check.what_broke("E   cupy_backends.cuda.api.runtime.CUDARuntimeError: cudaErrorNoDevice\nend") \
        == "cupy_backends.cuda.api.runtime.CUDARuntimeError: cudaErrorNoDevice"
    assert gpu_check.is_cupy_case("test_a[cupy]") and gpu_check.is_cupy_case("test_b[float32-cupy-5]")
    assert not gpu_check.is_cupy_case("test_c[numpy]") and not gpu_check.is_cupy_case("test_cupy_help")


# -- benchmarks/pix2pix_step_time.py ---------------------------------------------------------------------------

pix2pix_step_time = load_benchmark("pix2pix_step_time")


def test_pix2pix_step_time_runs_the_trainers_update_and_writes_json(tmp_path, capsys):
    args = pix2pix_step_time._parse(["--batch", "2", "--width", "2", "--iters", "2", "--warmup", "1", "--threads",
                                     "1", "--out", str(tmp_path / "r.json"), "--no-torch"])
    result = pix2pix_step_time.main(args)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["median_seconds"]["minigan"] > 0 and saved["torch_over_minigan"] is None
    assert saved["threads"] == 1 and saved["width"] == 2 and "command" in saved and "commit" in saved
    assert saved["idle_threads"]["OMP_WAIT_POLICY"]
    assert result["epoch_minutes_50k"]["minigan"] == pytest.approx(result["median_seconds"]["minigan"] * 25_000 / 60)
    assert "PyTorch skipped (--no-torch)" in capsys.readouterr().out


def test_pix2pix_step_time_default_threads_are_every_core():
    assert pix2pix_step_time._parse([]).threads == os.cpu_count()


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_pix2pix_torch_mirror_computes_minigans_networks(tmp_path, norm):
    torch = pytest.importorskip("torch")
    args = pix2pix_step_time._parse(["--batch", "2", "--width", "4", "--norm", norm, "--threads", "1"])
    trainer, _ = pix2pix_step_time.make_minigan(args, str(tmp_path))
    m = trainer.model
    g, d = pix2pix_step_time.to_torch(m.G).eval(), pix2pix_step_time.to_torch(m.D).eval()
    a = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    out = m.G.forward(a, train=False)
    np.testing.assert_allclose(g(torch.from_numpy(a)).detach().numpy(), out, rtol=1e-4, atol=1e-5)
    logits = m.D.forward((out, a), train=False)
    torch_logits = d((torch.from_numpy(out), torch.from_numpy(a))).detach().numpy()
    np.testing.assert_allclose(torch_logits.reshape(-1), logits.reshape(-1), rtol=1e-4, atol=1e-5)


def test_idle_threads_sleep_in_interleaved_benchmarks_unless_the_user_chose(monkeypatch):
    idle_threads = load_benchmark("idle_threads")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert idle_threads.apply()["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert idle_threads.apply()["OMP_WAIT_POLICY"] == "ACTIVE"
    for script in (pix2pix_step_time, step_time):
        assert set(script.IDLE_THREADS) == {"OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT"}


# -- benchmarks/step_profile.py --------------------------------------------------------------------------------

step_profile = load_benchmark("step_profile")


def test_step_profile_charges_every_layer_and_counts_launches(tmp_path):
    out = tmp_path / "profile.json"
    record = step_profile.main(["--batch", "8", "--iters", "2", "--warmup", "1", "--ops", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    phases = {row["phase"]: row for row in record["layers"]["phases"]}
    assert "D.D.hidden (Maxout) backward" in phases and "optimizer G step" in phases
    assert all(row["calls_per_iter"] >= 1 for name, row in phases.items() if not name.startswith("other"))
    assert record["layers"]["step_s"] > 0 and record["calls"]["functions"]
    ops = record["ops"]["by_site"]
    # a fused pass counts once (one CuPy kernel), not as the strict backend's unfused passes
    fused_maxout = [n for site, n in ops.items() if site.startswith("maxout_forward (one kernel on CuPy) @ dense.py:")]
    assert fused_maxout == [6]  # three Maxout layers; D runs twice (its step, on real and fake together; G's step)
    backend_files = ("__init__.py:", "fused.py:", "updates.py:", "rng.py:", "kernels.py:", "strict.py:")
    assert not any(site.split(" @ ")[-1].startswith(backend_files) for site in ops)  # charged to the caller
    # the optimizers: one launch per network and step (G's and D's), not one per tensor
    assert sum(n for site, n in ops.items() if site.startswith("sgd_momentum_update_many (one kernel")) == 2
    assert not any(site.startswith("sgd_momentum_update (") for site in ops)
    assert 60 < record["ops"]["ops_per_iter"] < 200
    kernels = step_profile.main(["--batch", "8", "--iters", "1", "--warmup", "1", "--view", "kernels"])["kernels"]
    assert "--device gpu" in kernels["error"]  # on the CPU: a sentence, not a crash or an empty table


def test_step_profile_times_every_product_of_the_floor():
    record = step_profile.main(["--batch", "8", "--iters", "3", "--view", "products"])["products"]
    listed = step_time.products(step_profile._new_step(8, 0).m, 8)
    assert [r["product"] for r in record["products"]] == [label for label, *_ in listed]
    for row, (_, (m, k), (_, n), ta, tb) in zip(record["products"], listed):
        assert (row["m"], row["k"], row["n"], row["a_transposed"], row["b_transposed"]) == (m, k, n, ta, tb)
        assert row["s"] > 0 and row["tflops"] == pytest.approx(2 * m * k * n / row["s"] / 1e12)
    assert record["sum_s"] == pytest.approx(sum(r["s"] for r in record["products"]))


def test_ab_checkouts_times_each_side_with_its_own_code(tmp_path):
    import shutil
    import subprocess
    import sys

    repo = str(Path(__file__).resolve().parents[1])
    script = os.path.join(repo, "benchmarks", "ab_checkouts.py")
    copy = tmp_path / "copy"  # a second checkout whose block pool sleeps in every optimizer step
    shutil.copytree(os.path.join(repo, "minigan"), copy / "minigan")
    shutil.copytree(os.path.join(repo, "benchmarks"), copy / "benchmarks", ignore=shutil.ignore_patterns("results"))
    parallel = copy / "minigan" / "parallel.py"
    source = parallel.read_text()
    marker = "    blocks = [views for arrays in groups for views in backend.cache_blocks(*arrays, block=block)]\n"
    assert marker in source  # parallel.blockwise_many: both SGD steps of an iteration, one call each
    parallel.write_text(source.replace(marker, "    import time; time.sleep(0.06)\n" + marker))
    # The block pool is imported lazily on the timed path (the optimizers' steps): if side A ran the copy's
    # module there, both sides would sleep and the ratio would be near 1.
    done = subprocess.run([sys.executable, script, repo, str(copy), "--model", "cgan", "--iters", "4",
                           "--warmup", "1", "--batch", "8", "--threads", "1", "--json", str(tmp_path / "ab.json")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "cgan, batch 8, threads 1, 4 alternating pairs" in done.stdout
    record = json.loads((tmp_path / "ab.json").read_text())
    assert record["B"] == {"checkout": str(copy), "commit": None}  # the copy is not a git checkout
    # Each of the iteration's two SGD steps calls the pool once: two sleeps on B's side, none on A's.
    assert record["median_s"]["B"] - record["median_s"]["A"] > 0.1 and record["pair_ratio_median"] > 2
    bad = subprocess.run([sys.executable, script, repo, str(tmp_path / "nowhere")], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert bad.returncode != 0 and "is not a minigan checkout" in bad.stderr
    (copy / "benchmarks" / "step_time.py").unlink()  # a checkout without the script: refused, not run from A's
    stray = subprocess.run([sys.executable, script, repo, str(copy), "--model", "cgan", "--iters", "1", "--batch",
                            "8", "--threads", "1"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert stray.returncode != 0


@pytest.mark.parametrize("model", ["dcgan", "cdcgan"])
def test_dcgan_step_time_times_radford_et_al_networks_whatever_the_preset(tmp_path, model):
    """dcgan_step_time.py times Radford et al.'s networks, rates and D step, which its PyTorch mirror builds (weights
    copied layer by layer), even though the modern preset's DCGANs have no BatchNorm in D, train G at 4e-4 and
    give the conditional D the matching-aware step."""
    from minigan import backend
    from minigan.config import learning_rates

    backend.use("numpy")
    bench = load_benchmark("dcgan_step_time")
    args = bench._parse(["--model", model, "--width", "2", "--batch", "8"])
    trainer, step = bench.make_minigan(args, str(tmp_path))
    assert any(".bn2." in f".{k}" for k in trainer.model.D.params)
    assert not any(k.endswith("conv2.b") for k in trainer.model.D.params)
    assert learning_rates(trainer.config) == (2e-4, 2e-4)
    assert trainer.family.matching_aware == "none"
    step()
    assert (trainer.updates, trainer.step_in_epoch) == (1, 1) and trainer.optimizers["D"].steps == 1
    if bench.import_torch(1) is not None:  # the mirror takes minigan's weights: it fails on another network
        bench.make_torch(args, trainer)()
