"""The paper's comparison and ablations as resumable sweeps, one command each, with their tables
and plots (docs/results.md shows what they measured):

    python -m experiments.sweep baselines        # Table 3: base, RFT, GRPO, PPO, critic-less, DAPO
    python -m experiments.sweep baselines --fuse-prob 0  # the same on the control task
    python -m experiments.sweep rounds           # Table 4: DAPO rounds 1 .. 4
    python -m experiments.sweep beta             # Table 5: beta of eq. 12
    python -m experiments.sweep K                # Table 6: continuations per state, twice
    python -m experiments.sweep figure2          # Figure 2: negative steps inside right answers
    python -m experiments.sweep tune --seeds 0   # 5 trials per method (lr, beta or KL), on val
    python -m experiments.sweep baselines --tuned-from runs --seeds 0  # at the grid's choices
    python -m experiments.sweep baselines --report-only  # the table and plot of what finished
    python -m experiments.sweep beta --dry-run   # the commands it would run, and nothing else

Every sweep works on one run folder per seed, ROOT/seed<S> (ROOT/fuse<P>-seed<S> with
--fuse-prob), made by pipeline.py and shared by all sweeps: their SFT stage and DAPO rounds are
made once. Each job is a stage's command; a stage reuses the outputs made by exactly its flags
and inputs (artifacts.py), so a sweep that stopped resumes where it did, and finished jobs cost
a few seconds. The table goes to stdout and ROOT/sweeps/<sweep>.txt, the plot beside it.
"""

from __future__ import annotations

import argparse
import math
import shlex
import time
from pathlib import Path

from common import (UserError, add_device_arg, add_preset_arg, atomic_write, friendly_errors,
                    save_json)
from common import command as script_command
import artifacts
import pipeline
import report
from experiments import sweep_report
import train_actor
import train_critic
from baselines import rollouts, train_eq12, train_grpo, train_ppo, train_rft

SWEEPS = ("baselines", "rounds", "beta", "K", "figure2", "tune")
BETAS = (0.01, 0.03, 0.1, 0.3, 1.0)
KS = (2, 4, 8, 16)
# The offline baselines with rounds of their own: a run folder each, ROOT/<name>-seed<S>, that
# starts from the seed's pi_ref and round-1 rollouts; round 2 samples from its own actor.
LINEAGES = (("rft", train_rft, []), ("response", train_eq12, ["--advantage", "response"]),
            ("step-mc", train_eq12, ["--advantage", "step-mc"]))
# The tuning grid: every method gets the same 5 trials, on one round's budget of generated tokens
# for the online methods (to keep the trials affordable): its default learning rate and the two
# next to it on a 1-3-10 ladder, then, at the default learning rate, the two ladder neighbours of
# its beta (eq. 12) or KL weight. RFT has neither and gets the 5 learning rates around its default.
# (method, results key, stage, its flags, the flag tuned besides --lr)
TUNE = (("dapo", "dapo_1", train_actor, [], "beta"),
        ("response", "dapo_1_response", train_eq12, ["--advantage", "response"], "beta"),
        ("step-mc", "dapo_1_step_mc", train_eq12, ["--advantage", "step-mc"], "beta"),
        ("rft", "rft_1", train_rft, [], None),
        ("grpo", "grpo_1", train_grpo, ["--budget-rounds", "1"], "kl"),
        ("ppo", "ppo_1", train_ppo, ["--budget-rounds", "1"], "kl"))


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("sweep", choices=SWEEPS, help="which sweep")
    p.add_argument("--root", default="runs", help="folder of the per-seed run folders")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run")
    p.add_argument("--fuse-prob", type=float, default=None,
                   help="train_sft.py --fuse-prob for every run (the control task with 0)")
    add_device_arg(p)
    add_preset_arg(p)
    p.add_argument("--tuned-from", metavar="DIR", default=None,
                   help="baselines: run every method at the setting the tuning sweep under DIR "
                   "chose on val (python -m experiments.sweep tune --root DIR), not at its "
                   "defaults; --root may be DIR (the trials' results are tagged), not a root "
                   "whose baselines ran at other settings")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: the table and plot of the finished jobs")
    p.add_argument("--dry-run", action="store_true", help="print the jobs' commands only")
    p.add_argument("--archive", metavar="DIR", default=None,
                   help="also merge each run folder's results.json into DIR/<folder>/ after "
                   "every job, which outlives the run folders (docs/records is this project's); "
                   "--root DIR --report-only makes the tables from it again")
    return p.parse_args(argv)


def seed_dir(args, seed: int) -> Path:
    prefix = "" if args.fuse_prob is None else f"fuse{args.fuse_prob:g}-"
    return Path(args.root) / f"{prefix}seed{seed}"


def pipeline_job(args, seed: int, rounds: int, actor_flags: list[str] | None = None) -> tuple:
    argv = ["--run-dir", str(seed_dir(args, seed)), "--seed", str(seed), "--rounds",
            str(rounds), "--device", args.device, "--preset", args.preset]
    if args.fuse_prob is not None:
        argv += ["--sft-args", f"--fuse-prob {args.fuse_prob:g}"]
    if actor_flags:
        argv += ["--actor-args", shlex.join(actor_flags)]
    return pipeline.main, argv


def stage_argv(args, seed: int, run_dir: Path | None = None) -> list[str]:
    """A stage's run folder (the seed's by default), seed, device and preset flags."""
    return ["--run-dir", str(run_dir or seed_dir(args, seed)), "--seed", str(seed), "--device",
            args.device, "--preset", args.preset]


def jobs(args) -> list[tuple]:
    """(stage main, its argv) of every job of the sweep, in order; a seed's DAPO pipeline
    first, since every other job starts from its files."""
    out, tuned = [], tuned_flags(args) if args.sweep == "baselines" else {}
    for s in args.seeds:
        common = stage_argv(args, s)
        if args.sweep == "baselines":
            out.append(pipeline_job(args, s, 2, tuned.get("dapo")))
            out.append((train_eq12.main, common + ["--advantage", "oracle"]
                        + tuned.get("dapo", [])))
            out += [(train_grpo.main, common + tuned.get("grpo", [])),
                    (train_ppo.main, common + tuned.get("ppo", []))]
            out += lineage_jobs(args, s, tuned)
        elif args.sweep == "rounds":
            out.append(pipeline_job(args, s, 4))
        elif args.sweep == "K":
            out.append(pipeline_job(args, s, 1))
            out += k_jobs(args, s)
        elif args.sweep == "beta":
            out.append(pipeline_job(args, s, 1))
            out += [(train_actor.main, common + ["--beta", f"{b:g}", "--tag", f"beta{b:g}"])
                    for b in BETAS if b != default_beta()]
        elif args.sweep == "tune":  # the trials start from round 1's rollouts and critic
            out.append(pipeline_job(args, s, 1))
            out += [(module.main, common + flags) for _, _, module, flags, _ in tune_trials()]
        else:  # figure2: the critic of round 1 on its own rollouts
            out.append(pipeline_job(args, s, 1))
    return out


def lineage_dir(args, name: str, seed: int) -> Path:
    return Path(args.root) / f"{name}-{seed_dir(args, seed).name}"


def lineage_jobs(args, seed: int, tuned: dict) -> list[tuple]:
    """Two rounds of each offline baseline in its own folder: round 1 on the shared round-1
    rollouts (its actor written as the next pi_ref), round 2 on rollouts of that actor; each
    at its tuned setting where `tuned` has one."""
    out = []
    for name, module, extra in LINEAGES:
        extra = extra + tuned.get(name, [])
        d = lineage_dir(args, name, seed)
        argv = stage_argv(args, seed, d)
        out += [(share_round1, [str(seed_dir(args, seed)), str(d)]),
                (module.main, argv + extra + ["--as-pi-ref"]),
                (rollouts.main, argv + ["--round", "2"]),
                (module.main, argv + extra + ["--round", "2"])]
    return out


def share_round1(argv: list[str]) -> None:
    artifacts.share_round1(Path(argv[0]), Path(argv[1]))


def k_dirs(args, seed: int) -> list[tuple[int, bool, Path]]:
    """(K, at the same budget?, run folder) of the K sweep: each K at the pipeline's problems,
    and at the pipeline's generated-token budget (problems scaled by default K / K); the
    default K at the default problems is the seed's own folder."""
    K0, problems = critic_defaults()
    out = []
    for same_budget in (False, True):
        for k in KS:
            if k == K0:
                out.append((k, same_budget, seed_dir(args, seed)))
            else:
                name = f"K{k}-{'budget-' if same_budget else ''}{seed_dir(args, seed).name}"
                out.append((k, same_budget, Path(args.root) / name))
    return out


def critic_defaults() -> tuple[int, int]:
    a = train_critic.get_args([])
    return a.K, a.problems


def k_jobs(args, seed: int) -> list[tuple]:
    """Per K: share the seed's SFT stage, then round 1's critic and actor with that K."""
    K0, problems = critic_defaults()
    out = []
    for k, same_budget, d in k_dirs(args, seed):
        if d == seed_dir(args, seed):
            continue
        n = round(problems * K0 / k) if same_budget else problems
        argv = stage_argv(args, seed, d)
        out += [(share_sft, [str(seed_dir(args, seed)), str(d)]),
                (train_critic.main, argv + ["--K", str(k), "--problems", str(n)]),
                (train_actor.main, argv)]
    return out


def share_sft(argv: list[str]) -> None:
    artifacts.share_sft(Path(argv[0]), Path(argv[1]))


def ladder(x: float, steps: int) -> list[float]:
    """x and `steps` neighbours on each side of it on the ladder 1e-7, 3e-7, 1e-6, ..., 1, 3.

        >>> ladder(3e-5, 1)
        [1e-05, 3e-05, 0.0001]
        >>> ladder(0.1, 2)
        [0.01, 0.03, 0.1, 0.3, 1.0]
    """
    rungs = [float(f"{m}e{e}") for e in range(-7, 1) for m in (1, 3)]
    i = next((j for j, r in enumerate(rungs) if math.isclose(r, x)), None)
    if i is None or i < steps or i + steps >= len(rungs):
        raise UserError(f"the tuning grid needs {x:g} and {steps} rungs on each side of it on "
                        "the ladder 1e-7, 3e-7, ..., 1, 3; set the stage's default to a rung")
    return rungs[i - steps:i + steps + 1]


def tune_trials() -> list[tuple]:
    """(method, results key, stage module, its flags, setting) of every trial of the grid above,
    the setting as the report prints it ("lr 3e-05", "beta 0.3")."""
    out = []
    for method, key, module, extra, knob in TUNE:
        defaults = module.get_args(extra)
        settings = [("lr", lr) for lr in ladder(defaults.lr, 1 if knob else 2)]
        if knob:
            settings += [(knob, v) for v in ladder(getattr(defaults, knob), 1)
                         if v != getattr(defaults, knob)]
        out += [(method, f"{key}_{name}{v:g}", module,
                 extra + [f"--{name}", f"{v:g}", "--tag", f"{name}{v:g}"], f"{name} {v:g}")
                for name, v in settings]
    return out


def tuned_flags(args) -> dict[str, list[str]]:
    """{method: flags} of the settings the tuning sweep under --tuned-from chose on val over
    its seed folders, for every method of the grid; {} without --tuned-from."""
    if not args.tuned_from:
        return {}
    dirs = sorted(Path(args.tuned_from).glob("seed*"))
    trials = [(m, k, setting) for m, k, _, _, setting in tune_trials()]
    chosen = sweep_report.tune_choices(dirs, trials, default_settings())
    missing = [m for m, *_ in TUNE if m not in chosen]
    if not dirs or missing:
        raise UserError(f"{args.tuned_from} holds no finished tuning grid of "
                        f"{', '.join(missing)}; finish it with python -m experiments.sweep tune "
                        f"--root {args.tuned_from} first")
    return {m: [f"--{s.split()[0]}", s.split()[1]] for m, s in chosen.items()}


def default_settings() -> dict[str, str]:
    """{method: its default learning rate as a trial's setting}, which wins a tie on val."""
    return {m: f"lr {module.get_args(extra).lr:g}" for m, _, module, extra, _ in TUNE}


def default_beta() -> float:
    return train_actor.get_args([]).beta


def command(fn, argv) -> str:
    if fn is share_sft:
        return f"(share the SFT stage of {argv[0]} with {argv[1]})"
    if fn is share_round1:
        return f"(share the SFT stage and round-1 rollouts of {argv[0]} with {argv[1]})"
    return f"{script_command(fn.__module__)} {shlex.join(argv)}"


def write_report(args, run_dirs: list[Path]) -> str:
    """The sweep's table (and plot) from the run folders' results, saved under ROOT/sweeps."""
    out = Path(args.root) / "sweeps"
    out.mkdir(parents=True, exist_ok=True)
    name = args.sweep + ("" if args.fuse_prob is None else f"-fuse{args.fuse_prob:g}")
    if args.sweep == "baselines":
        lineages = {n: [lineage_dir(args, n, s) for s in args.seeds] for n, _, _ in LINEAGES}
        text = sweep_report.baselines_report(run_dirs, lineages, out / f"{name}.png")
    elif args.sweep == "rounds":
        text = sweep_report.rounds_report([str(d) for d in run_dirs], out / f"{name}.png")
    elif args.sweep == "beta":
        text = sweep_report.beta_report(run_dirs, BETAS, default_beta(), out / f"{name}.png")
    elif args.sweep == "tune":
        trials = [(m, key, setting) for m, key, _, _, setting in tune_trials()]
        text = sweep_report.tune_report(run_dirs, trials, default_settings())
    elif args.sweep == "K":
        runs = {(k, b): [d for s in args.seeds for kk, b2, d in k_dirs(args, s)
                         if (kk, b2) == (k, b)] for k in KS for b in (False, True)}
        text = sweep_report.k_report(runs, out / f"{name}.png")
    else:
        text = sweep_report.figure2_report(run_dirs, args.device, out / f"{name}.png")
    atomic_write(out / f"{name}.txt", lambda tmp: Path(tmp).write_text(text + "\n"))
    return text + f"\n(saved to {out / name}.txt)"


def sweep_dirs(args) -> list[Path]:
    """Every run folder the sweep's table reads: the seeds', the baselines' rounds, the K's."""
    out = [seed_dir(args, s) for s in args.seeds]
    if args.sweep == "baselines":
        out += [lineage_dir(args, n, s) for n, _, _ in LINEAGES for s in args.seeds]
    if args.sweep == "K":
        out += [d for s in args.seeds for _, _, d in k_dirs(args, s) if d not in out]
    return out


def archive(args) -> list[Path]:
    """Merge the results.json of the sweep's run folders into ARCHIVE/<folder>/results.json
    (a stage's record replaces the one kept before); returns the files written."""
    merges = [(d, Path(args.archive) / d.name, artifacts.read_results(d))
              for d in sweep_dirs(args)]
    merges = [(d, dest, res, artifacts.read_results(dest)) for d, dest, res in merges if res]
    for d, dest, res, kept in merges:  # all checked before any is written
        check_same_pi_ref(res, kept, d, dest)
    for _, dest, res, kept in merges:
        dest.mkdir(parents=True, exist_ok=True)
        save_json(dest / "results.json", {**kept, **res})
    return [dest / "results.json" for _, dest, _, _ in merges]


def pi_ref_sha(results: dict) -> str | None:
    """The SHA-256 of the sft.pt a results.json's runs started from, where it says."""
    return ((results.get("sft") or {}).get("made_by") or {}).get("sha256")


def archived_trial(args, fn, argv: list[str]) -> tuple[Path, str, dict] | None:
    """(run folder, results key, archived record) of a tuning trial whose result the archive
    holds for the run folder's pi_ref, so that a sweep resumed in another session, on a run
    folder remade bit for bit, skips it; None for any other job."""
    if args.sweep != "tune" or not args.archive:
        return None
    seed, key = next(((s, k) for s in args.seeds for _, k, module, flags, _ in tune_trials()
                      if fn is module.main and argv == stage_argv(args, s) + flags),
                     (None, None))
    if key is None:
        return None
    run_dir = seed_dir(args, seed)
    kept = artifacts.read_results(Path(args.archive) / run_dir.name)
    sha = pi_ref_sha(artifacts.read_results(run_dir))
    if sha is None or sha != pi_ref_sha(kept) or not report.finished(kept, key):
        return None
    return run_dir, key, kept[key]


def check_same_pi_ref(results: dict, kept: dict, src: Path, dest: Path) -> None:
    """One sentence if an archived record came from another pi_ref than the run folder's (the
    same seed trains other weights on another machine): merged, one record would mix them."""
    ours, theirs = pi_ref_sha(results), pi_ref_sha(kept)
    if ours and theirs and ours != theirs:
        raise UserError(f"{dest} holds results of another pi_ref than {src} (sft.pt "
                        f"{theirs[:12]} against {ours[:12]}, made on another machine or with "
                        "other flags); archive this run into another folder with --archive")


def main(argv=None):
    args = get_args(argv)
    if not args.seeds:
        raise UserError("--seeds needs at least one seed")
    todo, t0 = [] if args.report_only else jobs(args), time.time()
    for i, (fn, argv_job) in enumerate(todo, 1):
        print(f"\n== sweep {args.sweep}, job {i}/{len(todo)}: {command(fn, argv_job)}")
        kept = None if args.dry_run else archived_trial(args, fn, argv_job)
        if kept:  # its record goes back into the run folder, whose table then has it
            artifacts.update_results(*kept)
            print(f"its result is in {args.archive} for this pi_ref: skipped")
        elif not args.dry_run:
            fn(argv_job)  # reuses what was made by exactly these flags and inputs
            if args.archive:  # after every job, so that a sweep cut short keeps what finished
                archive(args)
    if not args.dry_run:
        print("\n" + write_report(args, [seed_dir(args, s) for s in args.seeds]))
        print(f"this invocation: {len(todo)} jobs in {time.time() - t0:.0f} s (jobs made "
              "before were reused)")
    if args.archive and not args.dry_run:
        print(f"archived {len(archive(args))} results.json files in {args.archive}")


if __name__ == "__main__":
    with friendly_errors():
        main()
