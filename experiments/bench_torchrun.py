"""The whole pipeline twice on this machine: one process with N threads, then torchrun with N
processes of one thread each (docs/distributed.md). Prints the wall seconds of each part (SFT
training, A.1 sampling, A.2 Monte Carlo completion, critic training, actor training, the
evaluations) and the greedy accuracy each way; then it makes round 1's rollouts once more
under torchrun from the one-process run's pi_ref, and says whether they are the one process's
bit for bit (the torchrun pipeline's own pi_ref differs from it by float rounding).

    python -m experiments.bench_torchrun  # the CPU pipeline twice: ~40 min on 2 cores
    python -m experiments.bench_torchrun --nproc 4 --out runs/bench4 --pipeline-args "--rounds 1"

Run it on an idle machine: the two runs are timed one after the other. The one-process run
is the pipeline exactly as `python pipeline.py --seed S` makes it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from artifacts import read_results
from common import UserError, friendly_errors, positive, save_json
from report import grid
from training import add_rollout_args

ROOT = Path(__file__).resolve().parents[1]  # the project root


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="runs/bench-torchrun",
                   help="folder for the two run folders (one, torchrun) and the logs")
    p.add_argument("--nproc", type=int, default=2, help="threads of the one process, and "
                   "processes of the torchrun job (2)")
    p.add_argument("--seed", type=int, default=0, help="pipeline.py --seed")
    p.add_argument("--device", default="cpu", help="pipeline.py --device (cpu)")
    p.add_argument("--pipeline-args", default="", help="more flags for pipeline.py, quoted")
    args = p.parse_args(argv)
    positive("nproc", args.nproc)
    return args


def commands(args, out: Path) -> dict:
    """(environment, command) of each way: the plain process and the torchrun job."""
    flags = ["--seed", str(args.seed), "--device", args.device] + shlex.split(args.pipeline_args)
    script = str(ROOT / "pipeline.py")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={args.nproc}", "--"]
    return {"one": ({"OMP_NUM_THREADS": str(args.nproc)},
                    [sys.executable, script, "--run-dir", str(out / "one")] + flags),
            "torchrun": ({"OMP_NUM_THREADS": "1"},
                         torchrun + [script, "--run-dir", str(out / "torchrun")] + flags)}


def run(name: str, env: dict, cmd: list[str], out: Path) -> float:
    """Run one way to its end, its output in OUT/<name>.log; returns its wall seconds."""
    print(f"{name}: OMP_NUM_THREADS={env['OMP_NUM_THREADS']} {shlex.join(cmd)}")
    t0 = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, env={**os.environ, **env}, stdout=log,
                              stderr=subprocess.STDOUT, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise UserError(f"the {name} run failed (exit {proc.returncode}); its output is in "
                        f"{out / (name + '.log')}")
    print(f"  {seconds:.0f} s")
    return seconds


def parts(res: dict) -> list[tuple[str, float]]:
    """(part, seconds) of a finished pipeline's results.json, in the pipeline's order."""
    out = [("SFT training", res["sft"]["train_time_s"]),
           ("SFT evaluation", res["sft"]["wall_time_s"] - res["sft"]["train_time_s"])]
    rounds = sorted(int(k.split("_")[1]) for k in res if k.startswith("critic_"))
    for r in rounds:
        c, a = res[f"critic_{r}"], res[f"dapo_{r}"]
        out += [(f"round {r}: A.1 sampling", c["generate_time_s"]),
                (f"round {r}: A.2 completion", c["complete_time_s"]),
                (f"round {r}: critic training + report", c["wall_time_s"] - c["rollout_time_s"]),
                (f"round {r}: actor training", a["train_time_s"]),
                (f"round {r}: actor's rest (pairs, evaluation)",
                 a["wall_time_s"] - a["train_time_s"])]
    return out


def rollout_flags(args) -> list[str]:
    """The preset and the rollout flags (training.add_rollout_args) among the flags of
    pipeline.py's train_critic.py calls that --pipeline-args sets."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--critic-args", default="")
    p.add_argument("--preset", default="cpu")
    given, _ = p.parse_known_args(shlex.split(args.pipeline_args))
    r = argparse.ArgumentParser(add_help=False)
    add_rollout_args(r)
    known, defaults = r.parse_known_args(shlex.split(given.critic_args))[0], r.parse_args([])
    return ["--preset", given.preset] + [f"--{k.replace('_', '-')}={v}" for k, v in
                                         vars(known).items() if v != getattr(defaults, k)]


def rollouts_check(args, out: Path) -> dict:
    """Round 1's rollouts again under torchrun, from the one-process run's own pi_ref (the
    torchrun pipeline trained another, as far apart as float rounding takes it): are they the
    one process's bit for bit, and how long did A.1 and A.2 take?"""
    d = out / "rollouts-check"
    d.mkdir()
    for name in ("sft.pt", "sft.json"):
        shutil.copy2(out / "one" / name, d / name)
    save_json(d / "results.json", {"sft": read_results(out / "one")["sft"]})
    env, cmd = commands(args, out)["torchrun"]
    cmd = cmd[:cmd.index("--")] + ["--module", "--", "baselines.rollouts", "--run-dir", str(d),
                                   "--seed", str(args.seed), "--device", args.device] \
        + rollout_flags(args)
    run("rollouts-check", env, cmd, out)
    rec = read_results(d)["rollouts_1"]
    return {"identical": same_rollouts(out / "one" / "rollouts_1.pt", d / "rollouts_1.pt"),
            "rollout_time_s": rec["rollout_time_s"]}


def same_rollouts(a: Path, b: Path) -> bool:
    ra, rb = (torch.load(p, weights_only=True) for p in (a, b))
    keys = ("states", "responses", "continuations")
    return all(torch.equal(ra[k][f], rb[k][f]) for k in keys for f in ("tokens", "offsets")) \
        and torch.equal(ra["rewards"], rb["rewards"])


def table(args, out: Path, walls: dict) -> tuple[str, dict]:
    res = {name: read_results(out / name) for name in walls}
    rows, record = [], {"nproc": args.nproc, "wall_s": walls, "parts": {}}
    one, two = parts(res["one"]), dict(parts(res["torchrun"]))
    for part, s1 in one + [("whole pipeline (process wall time)", walls["one"])]:
        s2 = two.get(part, walls["torchrun"])
        rows.append([part, f"{s1:.0f}", f"{s2:.0f}", f"{s1 / s2:.2f}x"])
        record["parts"][part] = [s1, s2]
    lines = [grid(["part", f"1 process x {args.nproc} threads (s)",
                   f"{args.nproc} processes x 1 thread (s)", "speed-up"], rows, first=42)]
    last = max(k for k in res["one"] if k.startswith("dapo_"))
    for name in walls:
        acc = {s: res[name][last][s]["greedy_acc"] for s in ("val", "test", "ood")}
        record[f"{name}_greedy_acc"] = acc
        lines.append(f"{name}: greedy accuracy after {last}: " + ", ".join(
            f"{s} {v:.1%}" for s, v in acc.items()))
    return "\n".join(lines), record


def main(argv=None):
    args = get_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty, and the runs must start from nothing to be timed; "
                        "remove it or pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    walls = {name: run(name, env, cmd, out) for name, (env, cmd) in commands(args, out).items()}
    text, record = table(args, out, walls)
    record["rollouts_check"] = check = rollouts_check(args, out)
    print(text)
    print(f"round 1's rollouts under torchrun from the one-process pi_ref: the same bit for "
          f"bit: {'yes' if check['identical'] else 'NO'} ({check['rollout_time_s']:.0f} s "
          f"against {read_results(out / 'one')['critic_1']['rollout_time_s']:.0f} s)")
    save_json(out / "bench_torchrun.json", record)
    print(f"(saved to {out / 'bench_torchrun.json'})")


if __name__ == "__main__":
    with friendly_errors():
        main()
