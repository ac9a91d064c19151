"""The tables and plots of experiments/sweep.py: the paper's comparison (Table 3) and ablations
(rounds, beta, K, Figure 2, the tuning grid) over the per-seed run folders. The one-run tables
they build on are in report.py; docs/metrics.md explains the numbers.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import torch

from artifacts import load_critic, load_rollouts, read_results
from model import pick_device, state_values, unflat
from data import EOT_ID, decode
from report import SPLITS, cell, finished, grid, mean_sd, pyplot, save_figure, summarize


def rounds_report(run_dirs: list[str], plot: Path) -> str:
    """sweep rounds: the summary, then where the rounds stop and why (report.summary_errors)."""
    return summarize(run_dirs, plot, errors=True)


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
    """sweep baselines: each method's greedy accuracy, mean ± std over the seeds that
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
    """sweep beta: greedy accuracy after one DAPO round per beta of eq. 12, mean ± std, and
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
    """sweep figure2: step_credit by round 1's critic and by the MC targets, per seed, their
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
    """sweep K: per K (at the pipeline's problems, then at its token budget), mean ± std
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
    """sweep tune: each method's trials (method, results key, setting such as "lr 3e-05"),
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
