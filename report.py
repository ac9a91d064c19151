"""Every printed table and plot: accuracy tables, the critic's held-out report, the multi-seed
summary of pipeline.py --summarize. The stage scripts compute and save; this module shows.

docs/metrics.md explains every number these reports print.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from artifacts import read_results, read_times
from common import UserError, atomic_write
from data import Problem, Verdict, split_lines

SPLITS = ("val", "test", "ood")


def pyplot():
    """matplotlib.pyplot with a file-only backend, or None when matplotlib (optional) is not
    installed: every plot here is skipped then."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, path: Path) -> None:
    """fig as a PNG at path, atomically (under torchrun, rank 0's), and closed."""
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    pyplot().close(fig)


def grid(header: list[str], rows: list[list[str]], first: int = 8,
         width: int | list[int] = 8) -> str:
    """A plain-text table: the first column left-aligned in `first` characters, the others
    right-aligned in `width` (one width for all, or one per column)."""
    widths = width if isinstance(width, list) else [width] * (len(header) - 1)

    def line(cells):
        return " ".join([f"{cells[0]:{first}s}"] + [f"{c:>{w}s}" for c, w in
                                                    zip(cells[1:], widths)])
    return "\n".join(line(r).rstrip() for r in [header] + rows)


def pct(x: float | None, spec: str = ".1%") -> str:
    return "-" if x is None else f"{x:{spec}}"


# ----------------------------------------------------------------------------- accuracy tables


def show_failure(problem: Problem, response: str, verdict: Verdict) -> str:
    """A wrong solution written out line by line; each wrong line is marked with what it should
    have said, given the lines before it (the verifier's per-step truth)."""
    out = [problem.prompt.rstrip("\n")]
    for i, line in enumerate(split_lines(response)):
        ok = i < len(verdict.line_ok) and verdict.line_ok[i]
        want = verdict.expected[i] if i < len(verdict.expected) else ""
        out.append((f"  {line:14s}" + ("" if ok else f"  <-- wrong, should be {want!r}")).rstrip())
    return "\n".join(out)


def policy_table(record: dict, n: int, label: str, failures=()) -> str:
    """train_sft.py's table: greedy and sampled accuracy per split, how greedy failures are
    spread over 1 / 2 / more wrong lines, and the greedy two-operation lines (right)."""
    rows = [[s, pct(r["greedy_acc"]), pct(r.get("sampled_acc")),
             f"{r['fail_1_wrong']:.0%} / {r['fail_2_wrong']:.0%} / {r['fail_more_wrong']:.0%}",
             f"{r['two_op_lines']:.1%} ({pct(r['two_op_acc'], '.0%')})"]
            for s, r in record.items()]
    out = [f"\n{label}: accuracy on {n} problems per split",
           grid(["split", "greedy", "sampled", "failures: 1 / 2 / >2 wrong lines",
                 "two-op lines (right)"], rows, first=6, width=[7, 8, 33, 21])]
    if failures:
        out.append("\nsome wrong greedy test solutions (the verifier marks the wrong lines):")
        out += [show_failure(*f) for f in failures]
    return "\n".join(out)


def before_after_table(before: dict, after: dict, n: int) -> str:
    """train_actor.py's table: greedy accuracy of pi_ref and of the actor, per split."""
    rows = [[s, pct(before[s]), pct(after[s]["greedy_acc"]),
             f"{after[s]['greedy_acc'] - before[s]:+.1%}", pct(after[s]["two_op_lines"])]
            for s in SPLITS]
    return f"\ngreedy accuracy, {n} problems per split\n" + grid(
        ["split", "pi_ref", "actor", "change", "actor's two-op lines"], rows, first=6,
        width=[7, 7, 7, 21])


def stage_table(results: dict, walls: dict) -> str:
    """pipeline.py's table: greedy accuracy per stage and split, generated tokens and wall
    time per stage."""
    rows = []
    for stage, rec in results.items():
        if stage.startswith("critic"):
            cells = ["", "", "", f"{rec.get('generated_tokens', 0):,d}"]
        else:
            cells = [pct((rec.get(s) or {}).get("greedy_acc")) for s in SPLITS] + [""]
        rows.append([stage] + cells + [f"{walls.get(stage, 0):.0f}"])
    return grid(["stage", "val", "test", "ood", "gen. tokens", "wall s"], rows, first=10,
                width=11)


# ----------------------------------------------------------------------------- the critic


def true_v_estimates(h: dict) -> tuple[float, float] | None:
    """The critic's and the constant's Brier scores against the true V (the MC targets' own
    noise subtracted: dapo.mc_noise), or None when that is unavailable: K = 1, or an
    estimate that comes out zero or negative (too few held-out states to tell)."""
    noise = h.get("brier_mc_noise")
    if noise is None or h["brier"] - noise <= 0 or h["brier_const"] - noise <= 0:
        return None
    return h["brier"] - noise, h["brier_const"] - noise


def critic_report(h: dict, n_problems: int, K: int) -> str:
    """The held-out report train_critic.py prints, from critic_heldout's record h."""
    ratio = h["brier"] / max(h["brier_const"], 1e-12)
    lo, hi = h["brier_ratio_interval"]
    out = [f"\ncritic on {h['n_states']} held-out states ({n_problems} held-out problems):",
           f"  BCE   {h['bce']:.4f}  (constant predictor {h['bce_const']:.4f})",
           f"  Brier {h['brier']:.4f}  (constant predictor {h['brier_const']:.4f}; ratio "
           f"{ratio:.2f}, 90 % bootstrap interval over the held-out problems {lo:.2f}-{hi:.2f})"]
    noise, true_v = h["brier_mc_noise"], true_v_estimates(h)
    if noise is not None:
        out.append(f"  of each Brier score about {noise:.4f} is the MC targets' own sampling "
                   f"noise (K={K}); without it (an estimate against the true V) "
                   + (f"{true_v[0]:.4f} vs {true_v[1]:.4f}, ratio {true_v[0] / true_v[1]:.2f}"
                      if true_v else "unavailable: an estimate came out zero or negative"))
    by_depth, error_aware = (h[k] / max(h["brier_const"], 1e-12)
                             for k in ("brier_by_depth", "brier_error_aware"))  # ratios
    out.append(f"  yardsticks, not critics: the mean MC of training states with as many steps "
               f"taken, Brier {h['brier_by_depth']:.4f} (ratio {by_depth:.2f}); the same when "
               f"also told by the verifier whether an earlier line is wrong, "
               f"{h['brier_error_aware']:.4f} (ratio {error_aware:.2f})")
    out.append("  calibration:  bin       n   mean V  mean MC")
    out += [f"               {r['bin']}  {r['n']:4d}   {r['mean_v']:.3f}   {r['mean_mc']:.3f}"
            for r in h["calibration"]]
    out.append(f"  across the first wrong step ({h['n_first_wrong']} held-out responses): V "
               f"{h['v_before_first_wrong']:.3f} -> {h['v_after_first_wrong']:.3f}; across "
               f"correct steps: {h['v_before_correct']:.3f} -> {h['v_after_correct']:.3f}")
    return "\n".join(out)


def plot_calibration(cal: list[dict], path: Path) -> None:
    """A reliability plot of critic_heldout's calibration bins (when matplotlib is installed)."""
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    ax.plot([r["mean_v"] for r in cal], [r["mean_mc"] for r in cal], "o-", label="critic")
    ax.set_xlabel("predicted V(s)")
    ax.set_ylabel("mean MC target")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def show_critic(h: dict, n_problems: int, K: int, plot: Path) -> None:
    """The critic's held-out report printed (critic_report) and its reliability plot saved."""
    print(critic_report(h, n_problems, K))
    plot_calibration(h["calibration"], plot)


# ----------------------------------------------------------------------------- many runs


def load_runs(run_dirs: list[str]) -> tuple[list[tuple[dict, dict]], list[str]]:
    """(results.json, pipeline_times.json or {}) of each run folder, and the stages they all
    finished (sft, dapo_1, ...); one sentence if a folder has not finished them."""
    runs = []
    for d in run_dirs:
        if not (Path(d) / "results.json").exists():
            raise UserError(f"no results.json in {d}; run pipeline.py --run-dir {d} first")
        runs.append((read_results(Path(d)), read_times(Path(d))))
    stages = [k for k in runs[0][0] if k == "sft" or re.fullmatch(r"dapo_\d+", k)]
    for d, (res, _) in zip(run_dirs, runs):
        for st in stages or ["sft"]:
            if not finished(res, st):
                raise UserError(f"{d} has not finished {st} (no greedy accuracy in its "
                                f"results.json); finish it with pipeline.py --run-dir {d}, or "
                                "leave it out of --summarize")
    return runs, stages


def mean_sd(xs) -> tuple[float, float]:
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def cell(xs, spec: str, sd_spec: str = "4.1f") -> str:
    """ "mean ± std" of xs, the value alone if there is one, "-" if there are none."""
    if not xs:
        return "-"
    m, sd = mean_sd(xs)
    if len(xs) == 1:
        return f"{m:{spec}}"
    return f"{m:{spec}} ± {sd:{sd_spec}}"


def stage_wall(res: dict, times: dict, stage: str) -> float:
    """A stage's wall seconds: pipeline.py's timing where the run folder has it, else the
    stage's own record (an archived results.json has no pipeline_times.json beside it)."""
    return times.get(stage, (res.get(stage) or {}).get("wall_time_s", 0.0))


def summary_accuracy(runs, stages) -> list[str]:
    """Greedy accuracy per stage and split, and wall time per stage (a dapo_R row includes
    its critic stage), then each stage's change from its own run's sft."""
    rows, walls = [], []
    for st in stages:
        cells = [cell([100 * r[st][s]["greedy_acc"] for r, _ in runs], "6.1f") for s in SPLITS]
        w = [stage_wall(r, t, st) + (stage_wall(r, t, st.replace("dapo", "critic"))
                                     if st != "sft" else 0) for r, t in runs]
        rows.append([st] + cells + [cell(w, "6.0f", "3.0f")])
        walls.append(w)
    total = mean_sd([sum(w) for w in zip(*walls)])
    change = [[st] + [cell([100 * (r[st][s]["greedy_acc"] - r["sft"][s]["greedy_acc"])
                            for r, _ in runs], "+6.1f") for s in SPLITS] for st in stages[1:]]
    return [f"{len(runs)} runs, greedy accuracy mean ± std (n = "
            f"{runs[0][0]['sft']['test']['n']} problems per split)",
            grid(["stage", "val", "test", "ood", "wall s"], rows, width=14),
            f"total wall time {total[0]:.0f} ± {total[1]:.0f} s (a dapo_R row includes its "
            "critic stage)", "",
            "change from sft in points, mean ± std over runs (each run against its own sft)",
            grid(["stage", "val", "test", "ood"], change, width=14)]


def summary_two_op(runs, stages) -> list[str]:
    rows = [[st] + [cell([100 * r[st][s]["two_op_lines"] for r, _ in runs
                          if "two_op_lines" in r[st][s]], "6.1f") for s in SPLITS]
            for st in stages]
    return ["", "share of greedy lines that do two operations at once (skip writing a value), "
            "in %", grid(["stage", "val", "test", "ood"], rows, width=14)]


def summary_critic(runs, stages) -> list[str]:
    """Per round: the critic's held-out Brier ratio (also without the MC targets' noise), the
    two yardsticks' ratios, the states the gap filter kept and the sibling rank accuracy."""
    rows = []
    for st in stages[1:]:
        crit = [r.get(st.replace("dapo", "critic"), {}).get("heldout", {}) for r, _ in runs]
        cells = [cell([h[key] / h["brier_const"] for h in crit
                       if key in h and h["brier_const"] > 0], "5.2f", "4.2f")
                 for key in ("brier", "brier_by_depth", "brier_error_aware")]
        cells.insert(1, cell([a / b for a, b in filter(None, map(true_v_estimates, crit))],
                             "5.2f", "4.2f"))
        cells += [cell([100 * r[st]["filter"][key] for r, _ in runs
                        if r[st].get("filter", {}).get(key) is not None], "5.1f")
                  for key in ("kept_state_frac", "sibling_rank_acc")]
        rows.append([st] + cells)
    return ["", "critic and advantages, mean ± std: held-out Brier / constant predictor's for "
            "the critic, the same", "without the MC targets' sampling noise (an estimate "
            "against the true V), and two", "yardsticks (critic_R.heldout); states kept by the "
            "gap filter; A ranks a right step above", "a wrong sibling (dapo_R.filter)",
            grid(["round", "critic", "vs true V", "by steps", "err-aware", "kept %",
                  "rank acc %"], rows, width=12)]


def summary_errors(runs, stages) -> list[str]:
    """The errors greedy decoding still makes (test failures by how many lines are wrong, and
    the shortcut's share of lines) and, per round, the sampled accuracy (temperature 1) of the
    policy whose rollouts the round learned from (critic_R.gen_accuracy)."""
    rows = []
    for st in stages:
        test = [r[st]["test"] for r, _ in runs]
        cells = [cell([100 * t[key] for t in test if key in t], "5.1f")
                 for key in ("two_op_lines", "fail_1_wrong", "fail_2_wrong", "fail_more_wrong")]
        critic = st.replace("dapo", "critic")
        sampled = [100 * r[critic]["gen_accuracy"] for r, _ in runs
                   if "gen_accuracy" in r.get(critic, {})]
        rows.append([st] + cells + [cell(sampled, "5.1f")])
    return ["", "what greedy decoding still gets wrong on test, in %, mean ± std: the "
            "shortcut's share of lines, and", "the failures with 1, 2 or more wrong lines; "
            "sampled: the accuracy at temperature 1 of the policy", "whose rollouts the round "
            "learned from (critic_R.gen_accuracy)",
            grid(["stage", "two-op", "1 wrong", "2 wrong", ">2 wrong", "sampled"], rows,
                 width=12)]


def plot_accuracy(runs, stages, path: Path) -> str:
    """Greedy accuracy per round, mean ± std over runs; returns a line saying where it went."""
    plt = pyplot()
    if plt is None:
        return "(pip install matplotlib for the plot)"
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for split in SPLITS:
        vals = [mean_sd([100 * r[st][split]["greedy_acc"] for r, _ in runs]) for st in stages]
        ax.errorbar(range(len(stages)), [m for m, _ in vals], yerr=[sd for _, sd in vals],
                    marker="o", capsize=3, label=split)
    ax.set_xticks(range(len(stages)), ["pi_ref (SFT)"] + [f"DAPO round {i}" for i in
                                                          range(1, len(stages))])
    ax.set_ylabel("greedy accuracy (%)")
    ax.set_title(f"mean ± std over {len(runs)} seeds")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    return f"plot: {path}"


def summarize(run_dirs: list[str], plot: Path | None = None, errors: bool = False) -> str:
    """pipeline.py --summarize: mean ± std over finished runs (e.g. seeds) of every table, and
    test accuracy per round plotted to plot (accuracy.png in the first run folder); errors:
    also what greedy decoding still gets wrong (experiments/sweep.py rounds)."""
    runs, stages = load_runs(run_dirs)
    rows = (summary_accuracy(runs, stages) + summary_two_op(runs, stages)
            + summary_critic(runs, stages))
    rows.append(plot_accuracy(runs, stages, plot or Path(run_dirs[0]) / "accuracy.png"))
    return "\n".join(rows + (summary_errors(runs, stages) if errors else []))


def finished(res: dict, key: str) -> bool:
    rec = res.get(key)
    return isinstance(rec, dict) and all(
        isinstance((rec.get(s) or {}).get("greedy_acc"), (int, float)) for s in SPLITS)
