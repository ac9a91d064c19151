"""How well a policy solves and how well a critic predicts: greedy (and sampled) accuracy on the
evaluation splits, shared out by problem under torchrun, and the critic's held-out numbers
against its Monte Carlo targets. report.py prints what this module measures.

docs/metrics.md explains every number.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from artifacts import load_policy, read_results
from dapo import critic_loss, max_solution_tokens, mc_noise
from data import (EOT_ID, Problem, TaskConfig, Verdict, decode, encode, eval_split, first_wrong,
                  verify)
from model import GPT, generate, state_values, unflat
import parallel
from report import SPLITS, before_after_table, policy_table


def solve(model: GPT, problems: list[Problem], temperature: float = 0.0,
          generator: torch.Generator | None = None, batch_size: int = 256,
          num_samples: int = 1) -> list[str]:
    """Sample num_samples responses per problem (greedy when temperature == 0)."""
    outs = generate(model, [encode(p.prompt) for p in problems], max_solution_tokens(problems),
                    temperature, num_samples, generator, stop_id=EOT_ID, pad_id=EOT_ID,
                    batch_size=batch_size)
    return [decode(o) for o in outs]


def evaluate(model: GPT, problems: list[Problem], temperature: float = 0.0,
             generator: torch.Generator | None = None, batch_size: int = 256,
             keep_failures: int = 0) -> tuple[dict, list[tuple[Problem, str, Verdict]]]:
    """Accuracy of one response per problem through the same sampler as training uses.

    Returns ({"acc", "n", "fail_1_wrong", "fail_2_wrong", "fail_more_wrong", "two_op_lines",
    "two_op_acc"}, failures): the fail_* fields are fractions of failed solutions with exactly
    1, exactly 2 or more wrong lines by the verifier's per-step truth; two_op_lines is the
    share of the written lines that do two or more operations at once (skip writing a value),
    two_op_acc the share of those that are right (None if there are none); failures lists up
    to keep_failures examples.
    """
    mine = parallel.shard(problems)  # under torchrun each rank solves a share (parallel.py)
    responses = parallel.unshard(solve(model, mine, temperature, generator, batch_size)
                                 if mine else [], len(problems))
    verdicts = [verify(p, r) for p, r in zip(problems, responses)]
    wrong = [v.n_wrong for v in verdicts if v.reward == 0]
    two = [ok for v in verdicts for k, ok in zip(v.line_ops, v.line_ok) if k >= 2]
    nf = max(1, len(wrong))
    stats = {
        "acc": sum(v.reward for v in verdicts) / len(verdicts),
        "n": len(verdicts),
        "fail_1_wrong": sum(w == 1 for w in wrong) / nf,
        "fail_2_wrong": sum(w == 2 for w in wrong) / nf,
        "fail_more_wrong": sum(w > 2 for w in wrong) / nf,
        "two_op_lines": len(two) / max(1, sum(len(v.line_ops) for v in verdicts)),
        "two_op_acc": sum(two) / len(two) if two else None,
    }
    failures = [(p, r, v) for p, r, v in zip(problems, responses, verdicts) if v.reward == 0]
    return stats, failures[:keep_failures]


def evaluate_splits(model: GPT, cfg: TaskConfig, n: int, data_seed: int,
                    generator: torch.Generator | None = None,
                    keep_failures: int = 0) -> tuple[dict, list]:
    """Greedy accuracy on the first n problems of val, test and ood (and, given a generator,
    accuracy at temperature 1 too: "sampled_acc"). Returns ({split: record}, up to
    keep_failures wrong greedy test solutions); a record holds greedy_acc, n, the fail_*
    fractions and two_op_lines / two_op_acc (see evaluate)."""
    record, shown = {}, []
    for split in ("val", "test", "ood"):
        problems = eval_split(split, n, data_seed, cfg)
        greedy, fails = evaluate(model, problems, 0.0, keep_failures=keep_failures)
        rec = {"greedy_acc": greedy.pop("acc"), **greedy}
        if generator is not None:
            rec["sampled_acc"] = evaluate(model, problems, 1.0, generator)[0]["acc"]
        record[split] = rec
        if split == "test":
            shown = fails
    return record, shown



def splits_table(model: GPT, cfg: TaskConfig, n: int, data_seed: int, generator, label: str,
                 show_failures: int = 0) -> dict:
    """evaluate_splits (greedy, and sampled with the generator) printed as a table with up to
    show_failures wrong greedy test solutions; returns the split records."""
    record, failures = evaluate_splits(model, cfg, n, data_seed, generator,
                                       keep_failures=show_failures)
    print(policy_table(record, n, label, failures))
    return record

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


def evaluate_critic(critic, data: dict, heldout: torch.Tensor, const: float) -> dict:
    """critic_heldout of the critic's V on every state of a round's rollouts."""
    return critic_heldout(state_values(critic, unflat(data["states"]), EOT_ID), data, heldout,
                          const)
