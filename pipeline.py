"""The whole of Direct Advantage Policy Optimization in one command, from nothing:

    python pipeline.py                       # ~15 minutes or less on a 2-core CPU
    python pipeline.py --run-dir runs/seed1 --seed 1
    python pipeline.py --preset gpu          # a larger model, task and budget for one GPU
    python pipeline.py --summarize runs/s0 runs/s1 runs/s2   # mean ± std over finished runs

Runs train_sft.py (the reference policy), then for each round R = 1 .. --rounds
train_critic.py --round R and train_actor.py --round R (iterative DAPO: the actor of round R is
pi_ref of round R + 1), then prints a table of greedy accuracy per stage and split, generated
tokens and wall time per stage, from RUN_DIR/results.json. A stage whose output already exists
in the run folder is skipped, so an interrupted pipeline resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from common import friendly_errors, positive, prepare_run_dir, read_results, save_json
import train_actor
import train_critic
import train_sft


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run-dir", default="runs/default", help="folder for everything")
    p.add_argument("--seed", type=int, default=0, help="one seed for every stage")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda or mps")
    p.add_argument("--rounds", type=int, default=2, help="DAPO rounds after the SFT stage")
    p.add_argument("--preset", choices=train_sft.PRESETS, default="cpu",
                   help="cpu: defaults for a laptop; gpu: a larger model, task and budget")
    p.add_argument("--sft-args", default="", help="extra flags for train_sft.py, quoted")
    p.add_argument("--critic-args", default="", help="extra flags for train_critic.py, quoted")
    p.add_argument("--actor-args", default="", help="extra flags for train_actor.py, quoted")
    p.add_argument("--summarize", nargs="+", metavar="RUN_DIR",
                   help="run nothing: print mean ± std of finished runs' results.json and plot "
                   "test accuracy per round to accuracy.png in the first run folder")
    args = p.parse_args(argv)
    positive("rounds", args.rounds)
    return args


GPU_STAGE_ARGS = {  # --preset gpu: bigger rollouts for the bigger model
    "critic": "--problems 8192 --n1 4 --n 2 --K 8 --sample-batch 4096 --batch-size 256 "
              "--chunk 2048",
    "actor": "--batch-pairs 512",
}


def table(results: dict, walls: dict) -> str:
    """Greedy accuracy per stage and split, generated tokens and wall time per stage."""
    rows = [f"{'stage':10s} {'val':>7s} {'test':>7s} {'ood':>7s} {'gen. tokens':>12s} "
            f"{'wall s':>7s}"]
    for stage, rec in results.items():
        if stage.startswith("critic"):
            rows.append(f"{stage:10s} {'':>7s} {'':>7s} {'':>7s} "
                        f"{rec.get('generated_tokens', 0):12,d} {walls.get(stage, 0):7.0f}")
            continue
        accs = [f"{rec[s]['greedy_acc']:7.1%}" if s in rec else f"{'-':>7s}"
                for s in ("val", "test", "ood")]
        rows.append(f"{stage:10s} {' '.join(accs)} {'':>12s} {walls.get(stage, 0):7.0f}")
    return "\n".join(rows)


def summarize(run_dirs: list[str]) -> str:
    """Mean ± std (over runs, e.g. seeds) of greedy accuracy per stage and split, and of the wall
    time per stage; plots test accuracy per round when matplotlib is installed."""
    import statistics

    runs = []
    for d in run_dirs:
        path = Path(d) / "results.json"
        if not path.exists():
            raise ValueError(f"no results.json in {d}; run pipeline.py --run-dir {d} first")
        times = Path(d) / "pipeline_times.json"
        runs.append((json.loads(path.read_text()),
                     json.loads(times.read_text()) if times.exists() else {}))
    stages = [k for k in runs[0][0] if k == "sft" or re.fullmatch(r"dapo_\d+", k)]

    def ms(xs):
        return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)

    def cell(xs, spec: str, sd_spec: str = "4.1f") -> str:  # "mean ± std", "-" if no xs
        if not xs:
            return "-"
        m, sd = ms(xs)
        return f"{m:{spec}} ± {sd:{sd_spec}}"
    rows = [f"{len(runs)} runs, greedy accuracy mean ± std (n = {runs[0][0]['sft']['test']['n']} "
            "problems per split)",
            f"{'stage':8s} {'val':>14s} {'test':>14s} {'ood':>14s} {'wall s':>10s}"]
    for st in stages:
        cells = [cell([100 * r[st][split]["greedy_acc"] for r, _ in runs], "6.1f")
                 for split in ("val", "test", "ood")]
        w = [t.get(st, 0.0) + (t.get(st.replace("dapo", "critic"), 0.0) if st != "sft" else 0)
             for _, t in runs]
        m, sd = ms(w)
        rows.append(f"{st:8s} {' '.join(f'{c:>14s}' for c in cells)} {m:6.0f} ± {sd:3.0f}")
    total = ms([sum(t.values()) for _, t in runs])
    rows.append(f"total wall time {total[0]:.0f} ± {total[1]:.0f} s (a dapo_R row includes its "
                "critic stage)")
    rows += ["", "change from sft in points, mean ± std over runs (each run against its own sft)",
             f"{'stage':8s} {'val':>14s} {'test':>14s} {'ood':>14s}"]
    for st in stages[1:]:
        cells = [cell([100 * (r[st][split]["greedy_acc"] - r["sft"][split]["greedy_acc"])
                       for r, _ in runs], "+6.1f") for split in ("val", "test", "ood")]
        rows.append(f"{st:8s} {' '.join(f'{c:>14s}' for c in cells)}")
    rows += ["", "share of greedy lines that do two operations at once (skip writing a value), "
             "in %", f"{'stage':8s} {'val':>14s} {'test':>14s} {'ood':>14s}"]
    for st in stages:
        cells = [cell([100 * r[st][split]["two_op_lines"] for r, _ in runs
                       if "two_op_lines" in r[st][split]], "6.1f")
                 for split in ("val", "test", "ood")]
        rows.append(f"{st:8s} {' '.join(f'{c:>14s}' for c in cells)}")
    rows += ["", "critic and advantages, mean ± std: held-out Brier / constant predictor's for "
             "the critic, the same", "without the MC targets' sampling noise (an estimate against "
             "the true V), and two", "yardsticks (critic_R.heldout); states kept by the gap "
             "filter; A ranks a right step above", "a wrong sibling (dapo_R.filter)",
             f"{'round':8s} {'critic':>12s} {'vs true V':>12s} {'by steps':>12s} "
             f"{'err-aware':>12s} {'kept %':>12s} {'rank acc %':>12s}"]
    for st in stages[1:]:
        crit = [r.get(st.replace("dapo", "critic"), {}).get("heldout", {}) for r, _ in runs]
        cells = [cell([h[key] / h["brier_const"] for h in crit
                       if key in h and h["brier_const"] > 0], "5.2f", "4.2f")
                 for key in ("brier", "brier_by_depth", "brier_error_aware")]
        cells.insert(1, cell([(h["brier"] - h["brier_mc_noise"])
                              / (h["brier_const"] - h["brier_mc_noise"]) for h in crit
                              if h.get("brier_mc_noise") is not None
                              and h["brier_const"] > h["brier_mc_noise"]], "5.2f", "4.2f"))
        cells += [cell([100 * r[st]["filter"][key] for r, _ in runs
                        if r[st].get("filter", {}).get(key) is not None], "5.1f")
                  for key in ("kept_state_frac", "sibling_rank_acc")]
        rows.append(f"{st:8s} {' '.join(f'{c:>12s}' for c in cells)}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for split in ("val", "test", "ood"):
            xs = list(range(len(stages)))
            vals = [[100 * r[st][split]["greedy_acc"] for r, _ in runs] for st in stages]
            ax.errorbar(xs, [ms(v)[0] for v in vals], yerr=[ms(v)[1] for v in vals],
                        marker="o", capsize=3, label=split)
        ax.set_xticks(range(len(stages)), ["pi_ref (SFT)"] + [f"DAPO round {i}" for i in
                                                              range(1, len(stages))])
        ax.set_ylabel("greedy accuracy (%)")
        ax.set_title(f"mean ± std over {len(runs)} seeds")
        ax.legend()
        fig.tight_layout()
        fig.savefig(Path(run_dirs[0]) / "accuracy.png", dpi=100)
        plt.close(fig)
        rows.append(f"plot: {Path(run_dirs[0]) / 'accuracy.png'}")
    except ImportError:
        rows.append("(pip install matplotlib for the plot)")
    return "\n".join(rows)


def main(argv=None):
    args = get_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return
    run_dir = prepare_run_dir(args.run_dir)
    common = ["--run-dir", str(run_dir), "--device", args.device]
    t_all, walls = time.time(), {}
    stages = [("sft", run_dir / "sft.pt", train_sft.main,
               common + ["--seed", str(args.seed), "--preset", args.preset]
               + args.sft_args.split())]
    for r in range(1, args.rounds + 1):
        extra = GPU_STAGE_ARGS if args.preset == "gpu" else {"critic": "", "actor": ""}
        rr = ["--round", str(r), "--seed", str(args.seed)]
        stages.append((f"critic_{r}", run_dir / f"critic_{r}.pt", train_critic.main,
                       common + rr + extra["critic"].split() + args.critic_args.split()))
        stages.append((f"dapo_{r}", run_dir / f"actor_{r}.pt", train_actor.main,
                       common + rr + extra["actor"].split() + args.actor_args.split()))
    timing_file = run_dir / "pipeline_times.json"
    if timing_file.exists():
        walls = json.loads(timing_file.read_text())
    for name, output, fn, argv_stage in stages:
        if output.exists() and name in walls:
            print(f"== {name}: {output} exists, skipped")
            continue
        print(f"\n== {name}: {fn.__module__}.py {' '.join(argv_stage)}")
        t0 = time.time()
        fn(argv_stage)
        walls[name] = time.time() - t0
        save_json(timing_file, walls)
    results = read_results(run_dir)
    print(f"\nDirect Advantage Policy Optimization, {args.rounds} rounds, seed {args.seed}: "
          "greedy accuracy")
    print(table(results, walls))
    print(f"total wall time {sum(walls.values()):.0f} s (this invocation "
          f"{time.time() - t_all:.0f} s); results in {run_dir / 'results.json'}")


if __name__ == "__main__":
    with friendly_errors():
        main()
