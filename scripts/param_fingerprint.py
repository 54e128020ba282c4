"""Fixed-seed training fingerprints: proof that a refactor changed nothing.

Trains a few updates of PPO and A2C with Expire-Span and the LSTM on the 10-cell corridor (one
torch thread, fixed seeds) and prints a SHA-256 of every run's final parameters. With ``--base
REV`` the same runs are made on git revision ``REV`` (checked out in a temporary worktree) and
the two are compared: exit status 0 only when every run's parameters are bit-identical.

    python scripts/param_fingerprint.py                 # this tree's fingerprints
    python scripts/param_fingerprint.py --base main     # compare this tree with main
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (algorithm, policy, extra config): each trained for UPDATES updates on Corridor-L10, seed 0
RUNS = [
    ("ppo", "expire_span", {}),
    ("ppo", "lstm", {}),
    ("a2c", "expire_span", {}),
    ("a2c", "lstm", {}),
    ("ppo", "expire_span", {"mrbp": True}),
]
UPDATES = 3
N_ENVS = 8
ROLLOUT = 32


def fingerprints() -> dict[str, str]:
    """Train each of RUNS in this process and hash its final parameters and optimizer state."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from agents import ALGORITHMS

    out: dict[str, str] = {}
    for algo, policy, extra in RUNS:
        cls = ALGORITHMS[algo]
        config = {"n_envs": N_ENVS, "rollout_len": ROLLOUT, "bptt_len": ROLLOUT // 2,
                  "n_minibatches": 2, "seed": 0, **extra}
        if algo == "a2c":
            config.pop("n_minibatches")
        if extra.get("mrbp"):
            config["mrbp_chunk_len"] = ROLLOUT // 4
        model = cls(policy, "MemoRL/Corridor-L10-v0", tensorboard_log=None, **config)
        model.learn(UPDATES * N_ENVS * ROLLOUT, progress_bar=False)
        h = hashlib.sha256()
        for name, tensor in sorted(model.policy.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        key = f"{algo}/{policy}" + "".join(f"/{k}={v}" for k, v in extra.items())
        out[key] = h.hexdigest()
    return out


def run_at(rev: str) -> dict[str, str]:
    """The fingerprints of git revision ``rev``: this script run on that revision's code (so a
    revision that predates the script can be compared too)."""
    with tempfile.TemporaryDirectory() as tmp:
        wt = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(wt), rev],
                       check=True)
        try:
            script = wt / "scripts" / "_fingerprint_base.py"
            script.write_text(Path(__file__).read_text())
            env = dict(os.environ, PYTHONPATH=str(wt), OMP_NUM_THREADS="1")
            res = subprocess.run([sys.executable, str(script), "--json"], cwd=wt, env=env,
                                 check=True, capture_output=True, text=True)
            return json.loads(res.stdout)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)],
                           check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="git revision to compare with (e.g. main, HEAD~3)")
    parser.add_argument("--json", action="store_true", help="print the fingerprints as JSON")
    args = parser.parse_args()
    mine = fingerprints()
    if args.base is None:
        print(json.dumps(mine, indent=None if args.json else 2))
        return 0
    base = run_at(args.base)
    same = True
    for key in mine:
        ok = base.get(key) == mine[key]
        same &= ok
        print(f"{'identical' if ok else 'DIFFERENT'}  {key}  {mine[key][:16]}  {args.base}: "
              f"{str(base.get(key))[:16]}")
    print("bit-identical" if same else "parameters differ")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
