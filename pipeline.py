"""The whole of Direct Advantage Policy Optimization in one command, from nothing:

    python pipeline.py                       # ~15 minutes or less on a 2-core CPU
    python pipeline.py --run-dir runs/seed1 --seed 1
    python pipeline.py --preset gpu          # a larger model, task and budget for one GPU
    python pipeline.py --paper               # the paper's critic recipe exactly
    python pipeline.py --summarize runs/s0 runs/s1 runs/s2   # mean ± std over finished runs

Runs train_sft.py (the reference policy), then for each round R = 1 .. --rounds
train_critic.py --round R and train_actor.py --round R (iterative DAPO: the actor of round R is
pi_ref of round R + 1), then prints a table of greedy accuracy per stage and split, generated
tokens and wall time per stage, from RUN_DIR/results.json. Each stage reuses the outputs in the
run folder that were made by exactly its flags and inputs (artifacts.py), so an interrupted
pipeline resumes where it stopped; an output made otherwise (another seed, another pi_ref)
stops it with one sentence, unless --force lets the stages make their outputs again.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from artifacts import read_results, read_times
from common import (add_device_arg, add_force_arg, add_preset_arg, command, friendly_errors,
                    positive, prepare_run_dir, save_json)
from report import stage_table, summarize
import train_actor
import train_critic
import train_sft


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run-dir", default="runs/default", help="folder for everything")
    p.add_argument("--seed", type=int, default=0, help="one seed for every stage")
    add_device_arg(p)
    p.add_argument("--rounds", type=int, default=2, help="DAPO rounds after the SFT stage")
    add_preset_arg(p)
    add_force_arg(p)
    p.add_argument("--paper", action="store_true",
                   help="the paper's recipe exactly: train_critic.py --paper in every round "
                   "(--head plain --lm-coef 0 --targets states)")
    p.add_argument("--sft-args", default="", help="extra flags for train_sft.py, quoted")
    p.add_argument("--critic-args", default="", help="extra flags for train_critic.py, quoted")
    p.add_argument("--actor-args", default="", help="extra flags for train_actor.py, quoted")
    p.add_argument("--summarize", nargs="+", metavar="RUN_DIR",
                   help="run nothing: print mean ± std of finished runs' results.json and plot "
                   "test accuracy per round to accuracy.png in the first run folder")
    args = p.parse_args(argv)
    positive("rounds", args.rounds)
    return args


def stages(args, run_dir: Path) -> list[tuple]:
    """(name, stage main, its argv) of every stage, in order."""
    common = ["--run-dir", str(run_dir), "--device", args.device, "--seed", str(args.seed),
              "--preset", args.preset] + (["--force"] if args.force else [])
    out = [("sft", train_sft.main, common + args.sft_args.split())]
    paper = ["--paper"] if args.paper else []
    for r in range(1, args.rounds + 1):
        rr = common + ["--round", str(r)]
        out.append((f"critic_{r}", train_critic.main, rr + paper + args.critic_args.split()))
        out.append((f"dapo_{r}", train_actor.main, rr + args.actor_args.split()))
    return out


def main(argv=None):
    args = get_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return
    run_dir = prepare_run_dir(args.run_dir)
    t_all, walls = time.time(), read_times(run_dir)
    for name, fn, argv_stage in stages(args, run_dir):
        print(f"\n== {name}: {command(fn.__module__)} {' '.join(argv_stage)}")
        record = fn(argv_stage)  # reuses an output made by exactly these flags and inputs
        walls[name] = record.get("wall_time_s", 0.0)  # the stage's own time, kept on reuse
        save_json(run_dir / "pipeline_times.json", walls)
    print(f"\nDirect Advantage Policy Optimization, {args.rounds} rounds, seed {args.seed}: "
          "greedy accuracy")
    print(stage_table(read_results(run_dir), walls))
    print(f"total wall time {sum(walls.values()):.0f} s (this invocation "
          f"{time.time() - t_all:.0f} s); results in {run_dir / 'results.json'}")


if __name__ == "__main__":
    with friendly_errors():
        main()
