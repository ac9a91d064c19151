"""Every printed table and plot: accuracy tables, the critic's held-out report, the multi-seed
summary of pipeline.py --summarize. The stage scripts compute and save; this module shows.

docs/metrics.md explains every number these reports print.
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import torch

from artifacts import load_critic, load_policy, load_rollouts, read_results, read_times, unflat
from common import UserError, atomic_write
from dapo import critic_loss, evaluate_splits, mc_noise, show_failure
from data import EOT_ID, TaskConfig, decode, first_wrong
from model import pick_device, state_values

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


def pi_ref_accuracy(run_dir: Path, rnd: int, eval_n: int, cfg: TaskConfig, data_seed: int,
                    device) -> dict:
    """Greedy accuracy per split of round rnd's pi_ref: as the stage that made it recorded it
    in results.json, or measured again when it was recorded with another eval_n."""
    prev = read_results(run_dir).get(f"dapo_{rnd - 1}" if rnd > 1 else "sft", {})
    before = {s: prev[s]["greedy_acc"] for s in ("val", "test", "ood")
              if isinstance(prev.get(s), dict) and prev[s].get("n") == eval_n
              and isinstance(prev[s].get("greedy_acc"), float)}
    if len(before) == 3:
        return before
    ref, _ = load_policy(run_dir, rnd, device)
    record, _ = evaluate_splits(ref.eval(), cfg, eval_n, data_seed)
    return {s: r["greedy_acc"] for s, r in record.items()}


def accuracy_vs_pi_ref(model, run_dir, rnd: int, eval_n: int, cfg, data_seed: int,
                       device) -> dict:
    """A trained policy's greedy accuracy per split next to its pi_ref's, printed as a table;
    returns the split records of results.json, each with greedy_acc_before."""
    after, _ = evaluate_splits(model, cfg, eval_n, data_seed)
    before = pi_ref_accuracy(run_dir, rnd, eval_n, cfg, data_seed, device)
    print(before_after_table(before, after, eval_n))
    return {s: {**after[s], "greedy_acc_before": before[s]} for s in SPLITS}


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


def calibration(v: torch.Tensor, mc: torch.Tensor, bins: int = 10) -> list[dict]:
    """Held-out states binned by predicted V: mean prediction vs mean MC target per bin."""
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        m = (v >= lo) & ((v < hi) if b < bins - 1 else (v <= hi))
        if m.any():
            out.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": int(m.sum()),
                        "mean_v": float(v[m].mean()), "mean_mc": float(mc[m].mean())})
    return out


def ratio_interval(err: torch.Tensor, err_const: torch.Tensor, groups: list[int],
                   n_boot: int = 2000, level: float = 0.9, seed: int = 0) -> tuple[float, float]:
    """A bootstrap interval for sum(err) / sum(err_const), resampling whole groups (held-out
    problems: the states of one problem are not independent) with replacement."""
    ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    gi = torch.tensor([ids[g] for g in groups])
    num = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, gi, err.double())
    den = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, gi, err_const.double())
    pick = torch.randint(len(ids), (n_boot, len(ids)),
                         generator=torch.Generator().manual_seed(seed))
    r = (num[pick].sum(1) / den[pick].sum(1).clamp(min=1e-12)).sort().values
    k = int(round((1 - level) / 2 * (n_boot - 1)))
    return float(r[k]), float(r[n_boot - 1 - k])


def first_error_signal(data: dict, values: torch.Tensor, heldout: torch.Tensor) -> dict:
    """How V changes across the first wrong step of held-out kept responses, against how it
    changes across correct steps: the drop DAPO's advantages are made of."""
    wrong, right = [], []
    for ids, ok in zip(unflat(data["resp_states"]), unflat(data["resp_line_ok"])):
        if not ids or not heldout[ids[0]]:
            continue
        first = first_wrong(ok)
        for t in range(len(ids) - 1):  # the step taken in state ids[t] leads to ids[t + 1]
            before, after = float(values[ids[t]]), float(values[ids[t + 1]])
            if first is not None and t == first:
                wrong.append((before, after))
            elif first is None or t < first:
                right.append((before, after))

    def mean(xs, i):
        return sum(x[i] for x in xs) / max(1, len(xs))
    return {"n_first_wrong": len(wrong), "v_before_first_wrong": mean(wrong, 0),
            "v_after_first_wrong": mean(wrong, 1), "n_correct_steps": len(right),
            "v_before_correct": mean(right, 0), "v_after_correct": mean(right, 1)}


def reference_predictors(data: dict, mc: torch.Tensor, tr_idx, ho_idx) -> dict:
    """Two yardsticks for the critic's held-out Brier score; neither is a critic.

    by_depth: predicts the mean MC of the training states that have taken as many steps.
    error_aware: also knows, from the verifier (privileged: a critic only sees text), whether
    an earlier line of the state is wrong, and predicts the mean MC of the training states with
    the same (steps, earlier line wrong). It shows how much of V is "has it already slipped",
    the judgement a critic must learn from the text alone to reach it. Both read the per-line
    verdicts the rollouts stored for their kept responses (state t of a response has taken t
    steps).
    """
    keys: dict[int, tuple] = {}
    for ids, ok in zip(unflat(data["resp_states"]), unflat(data["resp_line_ok"])):
        first = first_wrong(ok)
        for t, s in enumerate(ids):
            keys[s] = (t, first is not None and first < t)
    out = {}
    for name, key in (("by_depth", lambda k: k[0]), ("error_aware", lambda k: k)):
        sums: dict = {}
        for i in tr_idx:
            t = sums.setdefault(key(keys[i]), [0.0, 0])
            t[0], t[1] = t[0] + float(mc[i]), t[1] + 1
        fallback = float(mc[tr_idx].mean())
        pred = torch.tensor([sums[key(keys[i])][0] / sums[key(keys[i])][1]
                             if key(keys[i]) in sums else fallback for i in ho_idx])
        out[f"brier_{name}"] = float(((pred - mc[ho_idx]) ** 2).mean())
    return out


def critic_heldout(v_all: torch.Tensor, data: dict, heldout: torch.Tensor, const: float) -> dict:
    """The critic against the MC targets of held-out problems' states, next to the constant
    predictor `const` (the training states' mean MC) and two yardsticks (results.json
    critic_R.heldout; docs/metrics.md)."""
    mc = data["mc"]
    tr_idx = (~heldout).nonzero().squeeze(1).tolist()
    ho_idx = heldout.nonzero().squeeze(1).tolist()
    v_ho, mc_ho = v_all[ho_idx], mc[ho_idx]
    eps = 1e-6
    bce = float(critic_loss(torch.logit(v_ho.clamp(eps, 1 - eps)), mc_ho))
    bce_c = float(critic_loss(torch.full_like(mc_ho, math.log(const / (1 - const))), mc_ho))
    brier, brier_c = float(((v_ho - mc_ho) ** 2).mean()), float(((const - mc_ho) ** 2).mean())
    lo, hi = ratio_interval((v_ho - mc_ho) ** 2, (const - mc_ho) ** 2,
                            data["state_problem"][ho_idx].tolist())
    return {"bce": bce, "bce_const": bce_c, "brier": brier, "brier_const": brier_c,
            "brier_ratio_interval": [lo, hi],
            "brier_mc_noise": mc_noise(mc_ho, data["rewards"].shape[1]),
            **reference_predictors(data, mc, tr_idx, ho_idx),
            "n_states": len(ho_idx), "calibration": calibration(v_ho, mc_ho),
            **first_error_signal(data, v_all, heldout)}


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
    rd, re_ = (h[k] / max(h["brier_const"], 1e-12) for k in ("brier_by_depth",
                                                              "brier_error_aware"))
    out.append(f"  yardsticks, not critics: the mean MC of training states with as many steps "
               f"taken, Brier {h['brier_by_depth']:.4f} (ratio {rd:.2f}); the same when also "
               f"told by the verifier whether an earlier line is wrong, "
               f"{h['brier_error_aware']:.4f} (ratio {re_:.2f})")
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


def rounds_report(run_dirs: list[str], plot: Path) -> str:
    """sweep.py rounds: the summary, then where the rounds stop and why (summary_errors)."""
    return summarize(run_dirs, plot, errors=True)


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
    also what greedy decoding still gets wrong (sweep.py rounds)."""
    runs, stages = load_runs(run_dirs)
    rows = (summary_accuracy(runs, stages) + summary_two_op(runs, stages)
            + summary_critic(runs, stages))
    rows.append(plot_accuracy(runs, stages, plot or Path(run_dirs[0]) / "accuracy.png"))
    return "\n".join(rows + (summary_errors(runs, stages) if errors else []))


# ----------------------------------------------------------------------------- sweeps
# (sweep.py: the paper's comparison and ablations over the per-seed run folders)

# The rows of the baselines table, in the shape of the paper's Table 3: label, results key,
# and the run folders it is in (None: the seed's own; a name: that baseline's own rounds).
METHODS = (("pi_ref (SFT)", "sft", None),
           ("+ RFT, 1 round", "rft_1", "rft"), ("+ RFT, 2 rounds", "rft_2", "rft"),
           ("+ response-level eq. 12, 1 round", "dapo_1_response", "response"),
           ("+ response-level eq. 12, 2 rounds", "dapo_2_response", "response"),
           ("+ step-level eq. 12, no critic, 1 round", "dapo_1_step_mc", "step-mc"),
           ("+ step-level eq. 12, no critic, 2 rounds", "dapo_2_step_mc", "step-mc"),
           ("+ GRPO", "grpo_1", None), ("+ PPO", "ppo_1", None),
           ("+ DAPO, 1 round", "dapo_1", None), ("+ DAPO, 2 rounds", "dapo_2", None),
           ("oracle advantages, 1 round (privileged)", "dapo_1_oracle", None))


def finished(res: dict, key: str) -> bool:
    rec = res.get(key)
    return isinstance(rec, dict) and all(
        isinstance((rec.get(s) or {}).get("greedy_acc"), (int, float)) for s in SPLITS)


def round_keys(key: str) -> list[str]:
    """The results keys of rounds 1 .. R of an offline method's round-R key.

        >>> round_keys("dapo_2_step_mc")
        ['dapo_1_step_mc', 'dapo_2_step_mc']
    """
    m = re.fullmatch(r"(rft|dapo)_(\d+)(\w*)", key)
    return [f"{m.group(1)}_{r}{m.group(3)}" for r in range(1, int(m.group(2)) + 1)]


def method_cost(res: dict, key: str) -> tuple[float, float]:
    """(generated tokens, wall seconds) a method spent after SFT, evaluations included: an
    online method's own; round R of an offline method, every round's rollouts (a baseline's
    own: results rollouts_r; DAPO's and the seed folder's: critic_r) and stages up to R (DAPO's
    critic stages in full)."""
    if key == "sft":
        return 0, 0.0
    if "curve" in res[key]:  # online
        return res[key]["generated_tokens"], res[key]["wall_time_s"]
    stages = round_keys(key)
    rounds = range(1, len(stages) + 1)
    own = "rollouts_1" in res  # a baseline's own rounds
    samples = [res[f"rollouts_{r}" if own else f"critic_{r}"] for r in rounds]
    tokens = sum(s["generated_tokens"] for s in samples)
    if re.fullmatch(r"dapo_\d+", key):  # DAPO: its critic stages in full
        return tokens, sum(s["wall_time_s"] for s in samples) + sum(
            res[st]["wall_time_s"] for st in stages)
    return tokens, sum(s["rollout_time_s"] for s in samples) + sum(
        res[st]["wall_time_s"] for st in stages)


def read_sources(run_dirs: list[Path], lineages: dict) -> dict:
    """The results.json of every folder the table reads, once: {None: the seeds' own,
    baseline: its rounds' folders}, each list in the order of the seeds."""
    return {None: [read_results(Path(d)) for d in run_dirs],
            **{name: [read_results(Path(d)) for d in dirs] for name, dirs in lineages.items()}}


def baselines_report(run_dirs: list[Path], lineages: dict, plot: Path) -> str:
    """sweep.py baselines: each method's greedy accuracy, mean ± std over the seeds that
    finished it, with the generated tokens and wall seconds it spent; the plot of test accuracy
    against generated tokens along training. lineages: {baseline: its run folders}."""
    sources = read_sources(run_dirs, lineages)
    results = sources[None]
    rows, curves = [], {}
    for label, key, where in METHODS:
        done = [r for r in sources.get(where, []) if finished(r, key)]
        costs = [method_cost(r, key) for r in done]
        rows.append([label, str(len(done))]
                    + [cell([100 * r[key][s]["greedy_acc"] for r in done], "5.1f")
                       for s in ("test", "val", "ood")]
                    + [cell(paired_change(done, key, s), "+5.1f") for s in ("test", "val")]
                    + [cell([c[0] / 1e6 for c in costs], "5.2f", "4.2f"),
                       cell([c[1] for c in costs], "5.0f", "4.0f")])
        if label.endswith(", 1 round") and where is not None or key == "dapo_1":
            continue  # drawn as the first point of its two-round line
        curves[label.split(",")[0].lstrip("+ ")] = curve_points(done, key)
    n = next((r["sft"]["test"]["n"] for r in results if finished(r, "sft")), "?")
    return "\n".join([
        f"greedy accuracy in %, mean ± std over the seeds that finished (n = {n} problems per "
        "split); the change from each seed's own pi_ref in points; generated tokens (millions) "
        "and wall seconds after SFT",
        grid(["method", "seeds", "test", "val", "ood", "test change", "val change",
              "tokens (M)", "wall s"], rows, first=41, width=[5, 12, 12, 12, 12, 12, 12, 11]),
        versus_dapo(sources), plot_tokens(curves, plot)])


def versus_dapo(sources: dict) -> str:
    """Each method's greedy accuracy minus DAPO's two rounds on the same seed (its record and
    the seed folder's at one index of read_sources, from one pi_ref), in points: the seeds'
    spread cancels."""
    rows = []
    for label, key, where in METHODS:
        if key in ("sft", "dapo_2"):
            continue
        pairs = [(r, o) for o, r in zip(sources[None], sources.get(where, []))
                 if finished(r, key) and finished(o, "dapo_2") and same_pi_ref(r, o)]
        diffs = {s: [100 * (r[key][s]["greedy_acc"] - o["dapo_2"][s]["greedy_acc"])
                     for r, o in pairs] for s in ("test", "val")}
        rows.append([label, str(len(pairs)), cell(diffs["test"], "+5.1f"),
                     cell(diffs["val"], "+5.1f"), " / ".join(f"{d:+.1f}" for d in diffs["test"])])
    return "\n".join([
        "each method minus DAPO's two rounds on the same seed and pi_ref, in points, mean ± std",
        grid(["method", "seeds", "test", "val", "test, seed by seed"], rows, first=41,
             width=[5, 12, 12, 22])])


def same_pi_ref(a: dict, b: dict) -> bool:
    """Whether two run folders' records start from one pi_ref: the same greedy accuracy of
    sft on every split (a baseline's folder shares the seed folder's sft.pt)."""
    return finished(a, "sft") and finished(b, "sft") and all(
        a["sft"][s]["greedy_acc"] == b["sft"][s]["greedy_acc"] for s in SPLITS)


def paired_change(done: list[dict], key: str, split: str) -> list[float]:
    """Each run's greedy accuracy on `split` minus its own pi_ref's, in points: the seeds'
    pi_refs differ by more than the methods do, and a paired change removes that spread."""
    return [100 * (r[key][split]["greedy_acc"] - r["sft"][split]["greedy_acc"]) for r in done
            if key != "sft" and finished(r, "sft")]


def curve_points(done: list[dict], key: str) -> list[tuple[float, float, float]]:
    """(tokens, mean, std) of the change in greedy test accuracy from each run's own pi_ref, in
    points, along a method's training over the runs done: an online method's curve (point by
    point), an offline method's rounds 1 .. R, or pi_ref's one (0 by definition)."""
    done = [r for r in done if finished(r, "sft")]
    if not done:
        return []
    if key == "sft":
        series = [[(0, 0.0)]] * len(done)
    elif "curve" in done[0][key]:
        length = min(len(r[key]["curve"]) for r in done)
        series = [[(c["tokens"], 100 * (c["test"] - r["sft"]["test"]["greedy_acc"]))
                   for c in r[key]["curve"][:length]] for r in done]
    else:
        series = [[(method_cost(r, k)[0], *paired_change([r], k, "test"))
                   for k in round_keys(key) if finished(r, k)] for r in done]
    return [(statistics.mean(p[0] for p in pts), *mean_sd([p[1] for p in pts]))
            for pts in zip(*series)]


def plot_tokens(curves: dict, path: Path) -> str:
    """The change in test accuracy from pi_ref against generated tokens for every method,
    mean ± std over seeds (paired: the seeds' pi_refs differ by more than the methods do)."""
    plt = pyplot()
    if plt is None:
        return "(pip install matplotlib for the plot)"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in curves.items():
        if not pts:
            continue
        if label.startswith("pi_ref"):
            ax.axhline(pts[0][1], color="gray", ls="--", lw=1, label=label)
            continue
        ax.errorbar([p[0] / 1e6 for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                    marker="o", ms=4, capsize=3, label=label)
    ax.set_xlabel("generated tokens (millions)")
    ax.set_ylabel("greedy test accuracy minus pi_ref's (points)")
    ax.set_title("test accuracy along training, change from each seed's pi_ref")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return f"plot: {path}"


def beta_report(run_dirs: list[Path], betas, default: float, plot: Path | None = None) -> str:
    """sweep.py beta: greedy accuracy after one DAPO round per beta of eq. 12, mean ± std, and
    the plot of its change from each seed's pi_ref against beta."""
    results = [read_results(Path(d)) for d in run_dirs]
    rows, series = [], {"val": [], "test": []}
    for b in (None,) + tuple(betas):
        key = "sft" if b is None else "dapo_1" if b == default else f"dapo_1_beta{b:g}"
        done = [r for r in results if finished(r, key)]
        change = {s: paired_change(done, key, s) if b is not None else [] for s in series}
        rows.append(["pi_ref" if b is None else f"{b:g}", str(len(done))]
                    + [cell([100 * r[key][s]["greedy_acc"] for r in done], "5.1f")
                       for s in SPLITS] + [cell(change[s], "+5.1f") for s in series])
        for s in series:
            if change[s]:
                series[s].append((b, *mean_sd(change[s])))
    lines = ["greedy accuracy in % after one DAPO round, by beta (eq. 12), mean ± std over "
             "seeds; the change from each seed's own pi_ref in points",
             grid(["beta", "seeds", "val", "test", "ood", "val change", "test change"], rows,
                  width=[5, 12, 12, 12, 12, 12])]
    if plot is not None:
        lines.append(plot_lines(series, plot, "beta (eq. 12)", "change from pi_ref (points)",
                                "one DAPO round by beta, mean ± std over seeds"))
    return "\n".join(lines)


def plot_lines(series: dict, path: Path, xlabel: str, ylabel: str, title: str) -> str:
    """A line per series {label: [(x, mean, std)]} on a log x axis, as a PNG at path."""
    plt = pyplot()
    if plt is None:
        return "(pip install matplotlib for the plot)"
    if not any(series.values()):
        return "(no finished runs to plot)"
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in series.items():
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                        marker="o", ms=4, capsize=3, label=label)
    ax.axhline(0, color="gray", ls="--", lw=1)
    ax.set_xscale("log")
    xs = sorted({p[0] for pts in series.values() for p in pts})
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return f"plot: {path}"


def step_credit(data: dict, values: torch.Tensor) -> dict:
    """Figure 2 of the paper: along every correct response pi_ref sampled and kept (A.1), the
    advantage of each step as the value of the state after it less the value of the state
    before it (the verifier's reward after the last step), with values (S,) one per state of
    the rollouts. Returns the share of steps with a negative advantage, the share of correct
    responses with at least one, and per response its states and advantages."""
    per, negative, steps = [], 0, 0
    for ids, reward in zip(unflat(data["resp_states"]), data["resp_reward"].tolist()):
        if reward <= 0 or not ids:
            continue
        v = values[ids].tolist() + [float(reward)]
        adv = [v[t + 1] - v[t] for t in range(len(ids))]
        per.append({"states": ids, "values": v, "adv": adv})
        negative, steps = negative + sum(a < 0 for a in adv), steps + len(adv)
    return {"correct": len(per), "steps": steps,
            "negative_step_frac": negative / steps if steps else None,
            "with_negative_frac": (sum(any(a < 0 for a in p["adv"]) for p in per) / len(per)
                                   if per else None), "responses": per}


def credit_example(data: dict, credit: dict) -> str:
    """One correct response with a negative step, shown as the paper's Figure 2 does: each
    step with the value before and after it."""
    ex = next((p for p in credit["responses"] if any(a < 0 for a in p["adv"])), None)
    if ex is None:
        return "(no correct response has a negative step)"
    states = unflat(data["states"])
    prompt = states[ex["states"][0]]
    ends = [states[i] for i in ex["states"][1:]]
    full = next(r for r, ids in zip(unflat(data["responses"]), unflat(data["resp_states"]))
                if ids == ex["states"])
    cuts = [len(s) - len(prompt) for s in ends] + [len(full)]
    lines, start = [decode(prompt).strip()], 0
    for t, cut in enumerate(cuts):
        step = decode(full[start:cut]).strip()
        lines.append(f"  {step:28s} V {ex['values'][t]:.2f} -> {ex['values'][t + 1]:.2f}   "
                     f"A {ex['adv'][t]:+.2f}")
        start = cut
    return "\n".join(lines)


def figure2_report(run_dirs: list[Path], device: str, plot: Path | None = None) -> str:
    """sweep.py figure2: step_credit by round 1's critic and by the MC targets, per seed, their
    mean ± std over the seeds, and the plot of the critic's step advantages per seed."""
    keys = ("negative_step_frac", "with_negative_frac")
    rows, shares, example, advs = [], [], "", {}
    for d in run_dirs:
        data = load_rollouts(Path(d), 1)
        critic = load_critic(Path(d), 1, pick_device(device))[0].eval()
        v = state_values(critic, unflat(data["states"]), EOT_ID)
        by_critic, by_mc = step_credit(data, v), step_credit(data, data["mc"].float())
        shares.append([c[k] for c in (by_critic, by_mc) for k in keys])
        rows.append([Path(d).name, str(by_critic["correct"]), str(by_critic["steps"])]
                    + ["-" if x is None else f"{100 * x:.1f}" for x in shares[-1]])
        example = example or credit_example(data, by_critic)
        advs[Path(d).name] = [a for r in by_critic["responses"] for a in r["adv"]]
    if len(shares) > 1:
        rows.append(["mean", "", ""] + [cell([100 * x for x in col if x is not None], "4.1f",
                                             "3.1f") for col in zip(*shares)])
    return "\n".join([
        "Among pi_ref's correct kept responses of round 1: the share of steps whose advantage "
        "V(after) - V(before)", "is negative, and the share of correct responses with at "
        "least one such step, in %; V by the critic and by", "the K-sample MC targets "
        "(noisier). A response-level method gives each of these steps a positive sign.",
        grid(["run", "correct", "steps", "neg steps", "with neg", "MC: steps", "MC: with"],
             rows, first=10, width=[8, 7, 11, 11, 11, 11]),
        "how far the critic's negative steps go: " + negative_depth(advs),
        "", "an example (V by the critic):", example]
        + ([plot_step_advantages(advs, plot)] if plot is not None else []))


def negative_depth(advs: dict[str, list[float]]) -> str:
    """Per run, the share of its negative step advantages above -0.25 and the lowest one."""
    negs = {run: [a for a in adv if a < 0] for run, adv in advs.items()}
    return "; ".join(f"{run} {sum(a > -0.25 for a in n) / len(n):.1%} above -0.25, the lowest "
                     f"{min(n):.2f}" if n else f"{run} none" for run, n in negs.items())


def plot_step_advantages(advs: dict[str, list[float]], path: Path) -> str:
    """Figure 2 as a histogram: the critic's advantage of every step inside pi_ref's correct
    responses, one line per seed; the mass left of 0 is what a response-level method pushes up."""
    plt = pyplot()
    if plt is None:
        return "(pip install matplotlib for the plot)"
    if not any(advs.values()):
        return "(no correct responses to plot)"
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = [i / 20 for i in range(-20, 21)]
    for label, a in advs.items():
        if a:
            ax.hist(a, bins=bins, histtype="step", density=True, label=label)
    ax.axvline(0, color="gray", ls="--", lw=1)
    ax.set(xlabel="A = V(after) - V(before), by the critic", ylabel="density",
           title="steps inside pi_ref's right answers, round 1")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return f"plot: {path}"


def k_report(runs: dict, plot: Path | None = None) -> str:
    """sweep.py K: per K (at the pipeline's problems, then at its token budget), mean ± std
    over seeds of the tokens generated, the critic's held-out Brier ratio, the states kept, the
    sibling rank accuracy and the greedy gain of one round, and the plot of the test gain
    against K. runs: {(K, same budget): dirs}."""
    rows, series = [], {"same problems": [], "same generated tokens": []}
    for (k, same_budget), dirs in runs.items():
        res = [r for r in (read_results(Path(d)) for d in dirs) if finished(r, "dapo_1")]
        gains = {s: paired_change(res, "dapo_1", s) for s in ("val", "test")}
        if gains["test"]:
            series["same generated tokens" if same_budget else "same problems"].append(
                (k, *mean_sd(gains["test"])))
        crit, filt = [r["critic_1"] for r in res], [r["dapo_1"]["filter"] for r in res]
        rows.append([f"{k}{' (budget)' if same_budget else ''}", str(len(res)),
                     cell([c["generated_tokens"] / 1e6 for c in crit], "5.2f", "4.2f"),
                     cell([c["heldout"]["brier"] / c["heldout"]["brier_const"] for c in crit],
                          "5.2f", "4.2f"),
                     cell([100 * f["kept_state_frac"] for f in filt], "5.1f"),
                     cell([100 * f["sibling_rank_acc"] for f in filt
                           if f.get("sibling_rank_acc") is not None], "5.1f")]
                    + [cell(gains[s], "+5.1f") for s in ("val", "test")])
    lines = ["one DAPO round per K (continuations per state), mean ± std over seeds; (budget): "
             "problems scaled so that the round generates about the default K's tokens",
             grid(["K", "seeds", "tokens (M)", "Brier ratio", "kept %", "rank acc %",
                   "val gain", "test gain"], rows, first=12, width=[5, 12, 12, 12, 12, 12, 12])]
    if plot is not None:
        lines.append(plot_lines(series, plot, "K, Monte Carlo continuations per state",
                                "greedy test gain over pi_ref (points)",
                                "one DAPO round by K, mean ± std over seeds"))
    return "\n".join(lines)


def tune_report(run_dirs: list[Path], trials: list[tuple[str, str, str]],
                defaults: dict[str, str]) -> str:
    """sweep.py tune: each method's trials (method, results key, setting such as "lr 3e-05"),
    greedy val and test mean over seeds; the chosen setting is the best on val (test is shown,
    never chosen on), once every trial of the method has finished."""
    results = [read_results(Path(d)) for d in run_dirs]
    rows = []
    for method, key, setting in trials:
        done = [r for r in results if finished(r, key)]
        rows.append([method, setting, str(len(done)),
                     cell([100 * r[key]["val"]["greedy_acc"] for r in done], "5.1f"),
                     cell([100 * r[key]["test"]["greedy_acc"] for r in done], "5.1f")])
    chosen = tune_choices(run_dirs, trials, defaults)
    unfinished = sorted({m for m, _, _ in trials} - set(chosen))
    return "\n".join(["tuning trials: greedy accuracy in %, mean ± std over seeds; a trial "
                      "changes one setting from the method's defaults",
                      grid(["method", "setting", "seeds", "val", "test"], rows, first=10,
                           width=[12, 5, 12, 12]),
                      "chosen on val: " + "; ".join(f"{m} {s}" for m, s in chosen.items())
                      + (f" (grid unfinished: {', '.join(unfinished)})" if unfinished else "")])


def tune_choices(run_dirs: list[Path], trials: list[tuple[str, str, str]],
                 defaults: dict[str, str]) -> dict[str, str]:
    """{method: the setting of its best trial on val, mean over the run folders; its default
    setting on a tie}, for the methods whose every trial finished in every folder (a partial
    grid chooses nothing)."""
    results = [read_results(Path(d)) for d in run_dirs]
    by_method: dict[str, list] = {}
    for method, key, setting in trials:
        val = [100 * r[key]["val"]["greedy_acc"] for r in results if finished(r, key)]
        by_method.setdefault(method, []).append(
            (statistics.mean(val), setting) if len(val) == len(results) else None)
    return {m: max(ts, key=lambda t: (t[0], t[1] == defaults.get(m)))[1]
            for m, ts in by_method.items() if results and None not in ts}
