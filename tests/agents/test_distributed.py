"""Data-parallel training: two CPU ranks (gloo) launched by torchrun.

The helpers against one-process references (the averaged gradient of two half batches is the
gradient of the whole batch; the global advantage normalisation is the normalisation of the
concatenated advantages; decisions agree), a short 2-rank PPO run (identical parameters on both
ranks, all ranks' steps counted, one TensorBoard run), and SIGKILL + ``--resume`` under 2 ranks
ending where the uninterrupted 2-rank run ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from agents import PPO
from agents.distributed import Distributed, average_dicts, launch_info, rank_device, setup
from agents.vec import EnvStepper, make_vec_env

ROOT = Path(__file__).resolve().parents[2]
ENV = "MemoRL/Corridor-L10-v0"
N_ENVS, ROLLOUT, UPDATES, SEED = 2, 16, 4, 5
TOTAL = N_ENVS * ROLLOUT * 2 * UPDATES  # 2 ranks


def torchrun(tmp: Path, script: str, *args: str, timeout: float = 120.0) -> tuple[int, str]:
    """Run ``script`` (Python source, or a path) as 2 ranks; returns (exit code, output)."""
    if "\n" in script:
        path = tmp / "script.py"
        path.write_text(script)
        script = str(path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", script, *args]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its ranks
        out, _ = proc.communicate()
        pytest.fail(f"torchrun timed out after {timeout} s:\n{out[-3000:]}")
    return proc.returncode, out


# helpers, one launch

HELPERS = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    torch.set_num_threads(1)
    from agents.distributed import setup, shutdown
    d = setup("cpu")
    r = d.rank
    out = {"rank": r, "world": d.world_size, "device": str(d.device),
           "backend": torch.distributed.get_backend()}

    # gradients: each rank backprops the mean loss of its half of a fixed batch
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    only0 = nn.Parameter(torch.ones(3))    # used by rank 0's loss only
    unused = nn.Parameter(torch.ones(2))   # used by no rank
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 5, generator=g), torch.randn(8, 3, generator=g)
    xs, ys = x[4 * r: 4 * r + 4], y[4 * r: 4 * r + 4]
    loss = (model(xs) - ys).pow(2).mean()
    if r == 0:
        loss = loss + (only0 * xs.mean(0)[:3]).sum()
    loss.backward()
    params = list(model.parameters()) + [only0, unused]
    out["local_grads"] = [None if p.grad is None else p.grad.clone() for p in params]
    d.average_gradients(params)
    out["grads"] = [None if p.grad is None else p.grad.clone() for p in params]

    # advantages: rank 0 holds columns 0:2, rank 1 columns 2:6 of a fixed (7, 6) tensor
    adv = torch.randn(7, 6, generator=g) * 3 + 2
    mine = adv[:, :2] if r == 0 else adv[:, 2:]
    out["norm"] = d.normalize_advantages(mine)
    out["norm_floor"] = d.normalize_advantages(mine, std_floor=100.0)

    # decisions: a NaN gradient on rank 1 only; a stop flag on rank 1 only
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.ones(4)
    if r == 1:
        p.grad[2] = float("nan")
    d.average_gradients([p])
    norm = torch.nn.utils.clip_grad_norm_([p], 0.5)
    out["finite"] = bool(torch.isfinite(norm))
    out["any"] = d.any(r == 1)
    out["none"] = d.any(False)
    out["mean"] = float(d.mean(torch.tensor(float(r))))

    # broadcast: a module built with another seed on each rank ends as rank 0's
    torch.manual_seed(100 + r)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    m[1].running_mean.fill_(float(r))
    d.broadcast_module(m)
    out["broadcast"] = {k: v.clone() for k, v in m.state_dict().items()}
    out["gathered"] = d.all_gather_object({"r": r})
    out["gathered0"] = d.gather_object(r * 10)
    out["obj"] = d.broadcast_object(f"from {r}")
    d.barrier()
    torch.save(out, f"{sys.argv[1]}/rank{r}.pt")
    shutdown()
    """
)


@pytest.fixture(scope="module")
def helper_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("helpers")
    code, out = torchrun(tmp, HELPERS, str(tmp))
    assert code == 0, out[-3000:]
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_launch_and_backend(helper_results):
    for r, res in enumerate(helper_results):
        assert (res["rank"], res["world"], res["device"], res["backend"]) == (r, 2, "cpu", "gloo")


def test_gradient_average_equals_combined_batch(helper_results):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    only0, unused = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 5, generator=g), torch.randn(8, 3, generator=g)
    # one process, the whole batch: the mean loss, plus rank 0's extra term with weight 1/2
    loss = (model(x) - y).pow(2).mean() + 0.5 * (only0 * x[:4].mean(0)[:3]).sum()
    loss.backward()
    want = [p.grad for p in model.parameters()] + [only0.grad, unused.grad]
    r0, r1 = helper_results
    # the ranks' own gradients differed (different halves) ...
    assert not torch.allclose(r0["local_grads"][0], r1["local_grads"][0])
    assert r1["local_grads"][-2] is None
    # ... and after the all-reduce both equal the whole batch's
    for res in helper_results:
        for got, ref in zip(res["grads"][:-1], want[:-1], strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        assert res["grads"][-1] is None and want[-1] is None  # no rank had one: stays None
    for a, b in zip(r0["grads"][:-1], r1["grads"][:-1], strict=True):
        assert torch.equal(a, b)  # bit-identical on the ranks


def test_global_advantage_normalisation(helper_results):
    g = torch.Generator().manual_seed(1)
    torch.randn(8, 5, generator=g), torch.randn(8, 3, generator=g)  # same draws as the ranks
    adv = torch.randn(7, 6, generator=g) * 3 + 2
    one_process = Distributed()  # the world-size-1 path: exactly the trainer's old formula
    want = one_process.normalize_advantages(adv)
    torch.testing.assert_close(want, (adv - adv.mean()) / (adv.std() + 1e-8))
    want_floor = (adv - adv.mean()) / (100.0 + 1e-8)
    r0, r1 = helper_results
    torch.testing.assert_close(torch.cat([r0["norm"], r1["norm"]], 1), want)
    torch.testing.assert_close(torch.cat([r0["norm_floor"], r1["norm_floor"]], 1), want_floor)
    # not the per-rank normalisation
    local = one_process.normalize_advantages(adv[:, :2])
    assert not torch.allclose(r0["norm"], local, atol=1e-3)


def test_decisions_and_objects_agree(helper_results):
    for r, res in enumerate(helper_results):
        assert res["finite"] is False  # rank 1's NaN makes every rank skip
        assert (res["any"], res["none"]) == (True, False)
        assert res["mean"] == 0.5
        assert res["gathered"] == [{"r": 0}, {"r": 1}]
        assert res["gathered0"] == ([0, 10] if r == 0 else None)
        assert res["obj"] == "from 0"
    b0, b1 = helper_results[0]["broadcast"], helper_results[1]["broadcast"]
    for k in b0:
        assert torch.equal(b0[k], b1[k]), k
    assert torch.equal(b0["1.running_mean"], torch.zeros(4))


def test_single_process_is_a_noop_and_bad_launches_are_refused():
    d = setup("cpu")
    assert not d.enabled and d.is_main and d.device is None
    t = torch.randn(3)
    assert d.mean(t) is t and d.any(True) and not d.any(False)
    assert d.all_gather_object(7) == [7] and d.gather_object(7) == [7]
    p = nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    d.average_gradients([p])
    assert torch.equal(p.grad, torch.full((2,), 3.0))
    assert average_dicts([{"a": 1.0, "b": 2.0}, {"a": 3.0}]) == {"a": 2.0, "b": 2.0}
    assert rank_device("cpu", 1) == torch.device("cpu")
    assert rank_device("cuda", 1) == torch.device("cuda:1")
    assert launch_info({}) == launch_info({"WORLD_SIZE": "1"})
    info = launch_info({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    assert (info.rank, info.world_size, info.local_rank) == (1, 2, 1)
    with pytest.raises(ValueError, match="RANK must be an integer in \\[0, 1\\], got 2"):
        launch_info({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer, got 'x'"):
        launch_info({"WORLD_SIZE": "x"})
    with pytest.raises(ValueError, match="MASTER_PORT is not set"):
        launch_info({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h"})
    if "WORLD_SIZE" not in os.environ:
        with pytest.raises(ValueError, match="distributed=True needs a launch"):
            setup("cpu", enabled=True)


# a short 2-rank PPO run, and a SIGKILL + resume of it

RUN = textwrap.dedent(
    f"""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from agents import PPO
    mode, root = sys.argv[1], sys.argv[2]
    model = PPO("gru", {ENV!r}, tensorboard_log=os.path.join(root, "runs"),
                checkpoint_path=os.path.join(root, "ck.pt"), n_envs={N_ENVS},
                rollout_len={ROLLOUT}, bptt_len=8, n_minibatches=2, n_epochs=2, seed={SEED},
                checkpoint_every=1, device="cpu", log_every=1,
                policy_kwargs={{"features_dim": 16, "hidden_dim": 16}})
    r = model.dist.rank
    init = {{k: v.clone() for k, v in model.policy.state_dict().items()}}
    resets = []
    reset = model.stepper.reset
    def record(seed=None):
        obs = reset(seed=seed)
        resets.append((seed, obs.clone()))
        return obs
    model.stepper.reset = record

    def die(m):
        if mode == "kill" and m.n_updates == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    model.learn({TOTAL}, progress_bar=False, callback=die)
    torch.save({{"init": init, "final": model.policy.state_dict(), "resets": resets,
                "num_timesteps": model.num_timesteps, "n_updates": model.n_updates,
                "log_dir": str(model.log_dir), "stats": model.last_stats}},
               os.path.join(root, f"rank{{r}}.pt"))
    """
)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    code, out = torchrun(tmp, RUN, "full", str(tmp))
    assert code == 0, out[-3000:]
    return tmp, [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_two_rank_ppo_run(full_run):
    tmp, (r0, r1) = full_run
    for k in r0["final"]:
        assert torch.equal(r0["final"][k], r1["final"][k]), k  # bit-identical ranks
        assert torch.equal(r0["init"][k], r1["init"][k]), k
    assert any(not torch.equal(r0["init"][k], r0["final"][k]) for k in r0["init"])
    per_rank = N_ENVS * ROLLOUT * UPDATES
    assert r0["num_timesteps"] == r1["num_timesteps"] == 2 * per_rank == TOTAL
    assert r0["n_updates"] == r1["n_updates"] == UPDATES
    # the logged statistics are every rank's (gathered), so the same on both ranks
    for k, v in r0["stats"].items():
        if not k.startswith("time/"):
            assert r1["stats"][k] == v, k
    # rank r's env i is seeded SEED + r * N_ENVS + i: together the envs of one 4-env process
    ref = EnvStepper(make_vec_env(ENV, 2 * N_ENVS, device=torch.device("cpu")), torch.device("cpu"))
    want = ref.reset(seed=SEED)
    assert [s for s, _ in r0["resets"]] == [SEED] and [s for s, _ in r1["resets"]] == [SEED + 2]
    assert torch.equal(r0["resets"][0][1], want[:N_ENVS])
    assert torch.equal(r1["resets"][0][1], want[N_ENVS:])
    # one run directory (rank 0's, named on rank 0 for both) with the usual tags
    runs = list((tmp / "runs").iterdir())
    assert [p.name for p in runs] == [Path(r0["log_dir"]).name] and r0["log_dir"] == r1["log_dir"]
    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("charts/episodic_return", "charts/success_rate", "charts/episode_length",
                "losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
                "memory/memory_size", "time/fps"):
        assert tag in tags, (tag, sorted(tags))
    steps = [e.step for e in acc.Scalars("losses/policy_loss")]
    assert steps == [2 * N_ENVS * ROLLOUT * (i + 1) for i in range(UPDATES)]
    ck = torch.load(tmp / "ck.pt", weights_only=False)
    assert ck["distributed"]["world_size"] == 2 and len(ck["distributed"]["ranks"]) == 2
    for k, v in ck["model"].items():
        assert torch.equal(v, r0["final"][k]), k


def test_single_process_load_of_a_two_rank_checkpoint(full_run):
    tmp, (r0, _) = full_run
    with pytest.warns(UserWarning, match="written by 2 rank.*this run has 1.*fresh reset"):
        model = PPO.load(tmp / "ck.pt", device="cpu")
    assert model.num_timesteps == TOTAL and not model.dist.enabled
    for k, v in model.policy.state_dict().items():
        assert torch.equal(v, r0["final"][k]), k
    model.learn(TOTAL + N_ENVS * ROLLOUT, progress_bar=False, reset_num_timesteps=False)
    assert model.num_timesteps == TOTAL + N_ENVS * ROLLOUT


def test_sigkill_and_resume_under_two_ranks(full_run, tmp_path):
    full_dir, (r0, _) = full_run
    code, out = torchrun(tmp_path, RUN, "kill", str(tmp_path))
    assert code != 0
    assert not (tmp_path / "rank0.pt").exists()
    mid = torch.load(tmp_path / "ck.pt", weights_only=False)
    assert mid["counters"]["n_updates"] == 2 and mid["distributed"]["world_size"] == 2
    # resume through the command line, under torchrun
    code, out = torchrun(
        tmp_path, str(ROOT / "scripts" / "train_agent.py"), "--resume", str(tmp_path / "ck.pt"),
        "--total-steps", str(TOTAL), "--device", "cpu", "--no-progress",
    )
    assert code == 0, out[-3000:]
    assert "world size:    2" in out and f"steps:         {TOTAL} (all ranks)" in out
    assert out.count("summary") == 1  # rank 0 alone prints
    final = torch.load(tmp_path / "ck.pt", weights_only=False)
    assert final["counters"]["n_updates"] == UPDATES
    for k, v in r0["final"].items():
        assert torch.equal(final["model"][k], v), k  # where the uninterrupted run ended
    assert any(not torch.equal(mid["model"][k], v) for k, v in r0["final"].items())
