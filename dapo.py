"""Direct Advantage Policy Optimization (Liu et al., arXiv 2412.18279), as plain functions.

Not ByteDance's 2025 "DAPO" (Decoupled Clip and Dynamic sAmpling Policy Optimization,
arXiv 2503.14476): a different algorithm with the same acronym.

DAPO is step-level and offline. A critic V(s), trained on Monte Carlo rollouts of the reference
policy pi_ref, predicts after each reasoning step how likely pi_ref is to finish correctly; the
actor is then trained with a squared loss that regresses each step's log-probability ratio
log(pi/pi_ref) onto the critic's advantage A/beta (eq. 12). Equation numbers are the paper's.
"""

from __future__ import annotations

import torch

from data import EOT_ID, NL_ID, OPS, Problem, decode, encode, parse_prompt, split_lines, verify
from model import (autocast, continuation_logprob, pack_continuations, sequence_logprobs,
                   state_values, unflat)


def max_solution_tokens(problems: list[Problem]) -> int:
    """A generous token budget for a full solution of the longest problem in the list."""
    return 18 * (max(len(p.ops) for p in problems) + 1) + 8


# ----------------------------------------------------------------------------- steps and states


def step_spans(tokens: list[int]) -> list[tuple[int, int]]:
    """Token spans [start, end) of the steps of a response. A step ends with its "\\n" token,
    which belongs to the step (docs/paper.md §6); a trailing piece without one is a last step.

        >>> step_spans(encode("1+2=3\\nA: 3*4=12\\n"))
        [(0, 6), (6, 16)]
    """
    # EXERCISE steps (docs/paper.md §6)
    spans, start = [], 0
    for i, t in enumerate(tokens):
        if t == NL_ID:  # the "\n" belongs to the step (paper silent: docs/paper.md §6)
            spans.append((start, i + 1))
            start = i + 1
    if start < len(tokens):
        spans.append((start, len(tokens)))
    return spans


def prefix_states(prompt: list[int], response: list[int]) -> list[list[int]]:
    """Every state in which the response takes an action: the bare prompt, then the prompt
    followed by the first t steps, for t = 1 .. (number of steps - 1). s_t = x + a_0 + ... +
    a_{t-1}; the finished response itself is terminal, not a state to act in.

        >>> prompt, response = encode("Q: 1+2*4\\n"), encode("1+2=3\\nA: 3*4=12\\n")
        >>> [decode(s) for s in prefix_states(prompt, response)]
        ['Q: 1+2*4\\n', 'Q: 1+2*4\\n1+2=3\\n']
    """
    # EXERCISE steps (docs/paper.md §3.1)
    spans = step_spans(response)
    return [prompt + response[:spans[t][0]] for t in range(len(spans))]


def first_step(continuation: list[int]) -> list[int]:
    """The action a continuation takes: its tokens up to and including the first "\\n", or all of
    them (a response that stops or is cut off without ending the line)."""
    # EXERCISE steps (docs/paper.md §3.1)
    for i, t in enumerate(continuation):
        if t == NL_ID:
            return continuation[:i + 1]
    return list(continuation)


def is_terminal(action: list[int]) -> bool:
    """s∘a is a finished solution when a is the answer line or does not end its line."""
    return not action or action[-1] != NL_ID or decode(action).startswith("A:")


def balanced_pick(rewards: list[float], n: int, rng) -> list[int]:
    """Indices of n of the samples, half correct and half incorrect where possible
    (docs/paper.md §2.1): n // 2 of each kind (an odd n's extra slot goes to a kind at
    random), chosen at random, then filled up from whichever kind has samples left."""
    # EXERCISE critic (docs/paper.md §2.1)
    good = [i for i, r in enumerate(rewards) if r > 0]
    bad = [i for i, r in enumerate(rewards) if r <= 0]
    rng.shuffle(good)
    rng.shuffle(bad)
    want_good = n // 2 + (n % 2 if rng.random() < 0.5 else 0)
    take_good = min(len(good), max(want_good, n - len(bad)))
    take_bad = min(len(bad), n - take_good)
    return sorted(good[:take_good] + bad[:take_bad])


def mc_value(rewards: torch.Tensor) -> torch.Tensor:
    """MC(s) = the mean reward of the K continuations of each state (docs/paper.md §2.2).
    (S, K) -> (S,). An unbiased estimate of V^{pi_ref}(s), the chance that pi_ref finishes s
    correctly."""
    # EXERCISE critic (docs/paper.md §2.2)
    return rewards.float().mean(dim=-1)


def mc_noise(mc: torch.Tensor, K: int) -> float | None:
    """How much of a Brier score against MC targets is the targets' own sampling noise.

    MC(s) averages K rewards, so Var(MC | s) = V(1 - V) / K, and since E[MC (1 - MC)] =
    V(1 - V) (K - 1) / K, the mean of MC (1 - MC) / (K - 1) estimates it without bias. For any
    predictor p that did not see these targets (held-out states), E[(p - MC)^2] =
    E[(p - V)^2] + this: subtracting it estimates the Brier score against the true V.
    None when K = 1 (one sample says nothing about its own variance).
    """
    if K < 2:
        return None
    return float((mc * (1 - mc) / (K - 1)).mean())


# ----------------------------------------------------------------------------- critic


def critic_loss(logits: torch.Tensor, mc: torch.Tensor) -> torch.Tensor:
    """Eq. 14-15: binary cross-entropy on soft targets, averaged over states:
    -[MC log V + (1 - MC) log(1 - V)], V = sigmoid(logit). BCE rather than MSE keeps gradients
    alive when V saturates near 0 or 1."""
    # EXERCISE critic (eq. 14-15)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), mc.float())


# ----------------------------------------------------------------------------- actor


def advantages(values: torch.Tensor) -> torch.Tensor:
    """Eq. 13: A(s, a_i) = V(s∘a_i) - (1/M) sum_j V(s∘a_j), for M sampled actions of a state.

    values (M,) holds V(s∘a_i) for every sampled action, duplicates included (the mean is over
    all M samples, taken before de-duplication: docs/paper.md §6). The baseline is the mean
    over sibling next states, not V(s). No normalisation, no clipping. For a finished solution
    s∘a, the caller puts the verifier's reward in values (exact), not the critic's guess
    (docs/paper.md §6).
    """
    # EXERCISE advantages (eq. 13)
    return values - values.mean()


def action_advantages(actions: list[list[int]], values: list[float]) -> dict[tuple, float]:
    """Eq. 13 for the K sampled actions of one state, one advantage per distinct action:
    {action tokens: A}. The mean is over all K samples, duplicates included, and only then are
    duplicates merged (they share one advantage: docs/paper.md §6).

        >>> action_advantages([[1], [2], [1], [3]], [1.0, 0.0, 1.0, 0.0])
        {(1,): 0.5, (2,): -0.5, (3,): -0.5}
    """
    # EXERCISE advantages (eq. 13)
    adv = advantages(torch.tensor(values, dtype=torch.float32)).tolist()
    out: dict[tuple, float] = {}
    for a, A in zip(actions, adv):
        out.setdefault(tuple(a), A)
    return out


def passes_gap_filter(adv: list[float], threshold: float) -> bool:
    """App. F.1: keep a state only if its actions' advantages spread by at least threshold
    (max A - min A >= threshold); a state whose actions all look alike teaches nothing."""
    # EXERCISE advantages (App. F.1)
    return max(adv) - min(adv) >= threshold


def dapo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, adv: torch.Tensor,
              beta: float) -> torch.Tensor:
    """Eq. 12: L = 1/2 E[(A(s,a)/beta - log(pi(a|s) / pi_ref(a|s)))^2], the mean over the batch
    of (state, action) pairs.

    logp, ref_logp (N,) are summed log-probs of each action's tokens (its "\\n" included) under
    the actor and the frozen pi_ref; adv (N,) the advantages. Averaged over pairs because the
    paper's expectation runs over sampled (s, a) pairs: a state with more distinct actions
    weighs more, as it does in the sampled data.
    """
    # EXERCISE advantages (eq. 12)
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    logratio = logp - ref_logp
    return 0.5 * ((adv / beta - logratio) ** 2).mean()



# ----------------------------------------------------------------------------- B.1-B.3: pairs


def sibling_actions(data: dict) -> list[dict]:
    """B.1: every state of a round's rollouts with its K sibling actions, the first steps of
    its K continuations (docs/paper.md §3.1). Each entry: "state" (tokens), "actions" (K token
    lists, a stop included), "rewards" (the K continuations' rewards), "line" (the index of
    the line an action writes) and "verdicts" (the verifier on s∘a, once per distinct a)."""
    states, conts = unflat(data["states"]), unflat(data["continuations"])
    K = data["rewards"].shape[1]
    problems = [parse_prompt(p) for p in data["problems"]]
    out = []
    for i, p in enumerate(data["state_problem"].tolist()):
        problem, actions = problems[p], [first_step(conts[i * K + k]) for k in range(K)]
        done = decode(states[i][len(encode(problem.prompt)):])  # the response so far
        verdicts = {tuple(a): verify(problem, done + decode([x for x in a if x != EOT_ID]))
                    for a in actions}
        out.append({"state": states[i], "actions": actions, "verdicts": verdicts,
                    "rewards": data["rewards"][i].tolist(), "line": len(split_lines(done))})
    return out


def next_state_values(critic, sibs: list[dict]) -> dict:
    """The learned critic's V(s∘a) of every distinct non-terminal next state, keyed by
    (state index, action tokens): one evaluation each."""
    nxt, keys = [], []
    for i, sib in enumerate(sibs):
        for a in dict.fromkeys(map(tuple, sib["actions"])):
            if not is_terminal(list(a)):
                keys.append((i, a))
                nxt.append(sib["state"] + list(a))
    values = state_values(critic, nxt, EOT_ID).tolist() if nxt else []
    return dict(zip(keys, values))


def critic_values(critic, sibs: list[dict]) -> list[list[float]]:
    """DAPO's V(s∘a_i) of every sibling action: the learned critic's, or for a finished
    solution the verifier's exact reward (WHERE THE PAPER IS SILENT, docs/paper.md §6)."""
    v_next = next_state_values(critic, sibs)
    return [[sib["verdicts"][tuple(a)].reward if is_terminal(a) else v_next[(i, tuple(a))]
             for a in sib["actions"]] for i, sib in enumerate(sibs)]


def advantage_groups(sibs: list[dict], values: list[list[float]],
                     threshold: float) -> tuple[list[dict], dict]:
    """B.2: eq. 13 over each state's sibling actions (unique actions, the mean over all K),
    and the gap filter (App. F.1). Returns one group per kept state ("state", "actions",
    "adv") and the filter's statistics, with a diagnostic never trained on: how often A ranks
    a right step above a wrong sibling by the verifier's per-step truth."""
    groups, n_terminal, ranked, rank_ok = [], 0, 0, 0
    for sib, vals in zip(sibs, values):
        n_terminal += sum(is_terminal(a) for a in sib["actions"])
        uniq = action_advantages(sib["actions"], vals)  # eq. 13
        t, verdicts = sib["line"], sib["verdicts"]
        right = [t < len(verdicts[a].line_ok) and verdicts[a].line_ok[t] for a in uniq]
        for (A1, r1) in zip(uniq.values(), right):
            for (A2, r2) in zip(uniq.values(), right):
                if r1 and not r2:
                    ranked += 1
                    rank_ok += (A1 > A2) + 0.5 * (A1 == A2)
        if passes_gap_filter(list(uniq.values()), threshold):  # App. F.1
            groups.append({"state": sib["state"], "actions": [list(a) for a in uniq],
                           "adv": list(uniq.values())})
    K = len(sibs[0]["actions"]) if sibs else 1
    return groups, pair_stats(groups, len(sibs), n_terminal / max(1, len(sibs) * K),
                              ranked, rank_ok)


def pair_stats(groups, n_states: int, terminal_frac: float, ranked: int, rank_ok) -> dict:
    """The advantage filter's record (results.json dapo_R.filter; docs/metrics.md)."""
    return {"states": n_states, "kept_states": len(groups),
            "kept_state_frac": len(groups) / max(1, n_states),
            "pairs": sum(len(g["actions"]) for g in groups),
            "terminal_action_frac": terminal_frac, "sibling_pairs": ranked,
            "sibling_rank_acc": rank_ok / ranked if ranked else None}


def pooled(actions: list, rewards: list[float]) -> list[float]:
    """Each sample's reward replaced by the mean reward of the samples with the same action.

        >>> pooled([[1], [2], [1]], [1.0, 0.0, 0.0])
        [0.5, 0.0, 0.5]
    """
    by: dict = {}
    for a, r in zip(actions, rewards):
        by.setdefault(tuple(a), []).append(r)
    return [sum(by[tuple(a)]) / len(by[tuple(a)]) for a in actions]


def attach_ref_logprobs(ref, groups: list[dict]) -> None:
    """B.3: log pi_ref(a|s) of every kept pair, summed over the action's tokens, computed once
    with the frozen pi_ref (docs/paper.md §3.4) and stored in each group as "ref_logp"."""
    flat_s = [g["state"] for g in groups for _ in g["actions"]]
    flat_a = [a for g in groups for a in g["actions"]]
    ref_logp = sequence_logprobs(ref, flat_s, flat_a, EOT_ID)
    start = 0
    for g in groups:
        g["ref_logp"] = ref_logp[start:start + len(g["actions"])]
        start += len(g["actions"])


def state_batches(groups: list[dict], batch_pairs: int, rng) -> list[list[int]]:
    """Shuffle states, then cut into batches of about batch_pairs pairs; all actions of a state
    stay in the same batch (state-wise batching, docs/paper.md §3.6)."""
    order = list(range(len(groups)))
    rng.shuffle(order)
    batches, cur, n = [], [], 0
    for i in order:
        if cur and n + len(groups[i]["actions"]) > batch_pairs:
            batches.append(cur)
            cur, n = [], 0
        cur.append(i)
        n += len(groups[i]["actions"])
    return batches + ([cur] if cur else [])


# The sums batch_loss returns, in order: loss * pairs, pairs, pairs whose log-ratio has the sign
# of A, pairs with A != 0, the log-ratios summed where A > 0 and their count, the same for A < 0.
BATCH_SUMS = ("loss", "pairs", "agree", "signed", "logratio_pos", "n_pos", "logratio_neg",
              "n_neg")


def batch_loss(actor, groups: list[dict], b: list[int], beta: float, device) -> tuple:
    """B.4: eq. 12 on the pairs of the states b, and the sums behind the authors' diagnostics
    (docs/paper.md §3.7), one per name of BATCH_SUMS: (loss, sums)."""
    # EXERCISE actor-step (eq. 12)
    s = [groups[i]["state"] for i in b for _ in groups[i]["actions"]]
    a = [x for i in b for x in groups[i]["actions"]]
    adv = torch.tensor([x for i in b for x in groups[i]["adv"]], device=device)
    ref_lp = torch.cat([groups[i]["ref_logp"] for i in b]).to(device)
    idx, mask = pack_continuations(s, a, EOT_ID, device)
    with autocast(device):
        logp = continuation_logprob(actor, idx, mask)  # log pi_theta(a|s), summed
    loss = dapo_loss(logp.float(), ref_lp, adv, beta)  # eq. 12
    with torch.no_grad():
        logratio = logp.detach().float() - ref_lp
        pos, neg = adv > 0, adv < 0
        agree = (torch.sign(logratio) == torch.sign(adv)) & (pos | neg)
        sums = torch.stack([loss.detach() * len(a), torch.tensor(len(a), device=device),
                            agree.sum(), (pos | neg).sum(), logratio[pos].sum(), pos.sum(),
                            logratio[neg].sum(), neg.sum()]).float()
    return loss, sums


def complete(sample, states: list[list[int]], problems: list[Problem], K: int) -> tuple:
    """A.2: K continuations of every state and their rewards.

    sample(states, K) -> len(states) * K continuations (token lists; continuation k of state i
    at i * K + k), from pi_ref at temperature 1 in the pipeline, or a scripted policy in tests.
    problems[i] is the problem state i belongs to. Returns (continuations, rewards (S, K)); the
    reward of a continuation is the verifier's score of the whole response state + continuation.
    MC(s) = rewards.mean(1) (see mc_value).
    """
    # EXERCISE steps (A.2)
    conts = sample(states, K)
    rewards = torch.zeros(len(states), K)
    for j, c in enumerate(conts):
        i = j // K
        prompt_len = len(encode(problems[i].prompt))
        text = decode(states[i][prompt_len:] + [t for t in c if t != EOT_ID])
        rewards[i, j % K] = verify(problems[i], text).reward
    return conts, rewards


def scripted_policy(eps: float, rng):
    """A stand-in for pi_ref with a known per-step error rate, for tests and the walk-through
    below: sample(states, K) continues each state K times, each remaining step line right (from
    the value written so far) with probability 1 - eps, else off by one, the last one marked
    "A: ", then <|endoftext|>. So V(s) = (1 - eps) ** (steps left) if s has no error yet, else 0.
    """
    def sample(states: list[list[int]], K: int) -> list[list[int]]:
        out = []
        for s in states:
            prompt, rest = decode(s).split("\n", 1)
            prob = parse_prompt(prompt + "\n")
            done = [line for line in rest.split("\n") if line]
            v = int(done[-1].split("=")[1]) if done else prob.start
            for _ in range(K):
                lines, w = [], v
                for i, (op, y) in enumerate(prob.ops[len(done):], len(done)):
                    r = OPS[op](w, y) + (1 if rng.random() < eps else 0)
                    lines.append(("A: " if i == len(prob.ops) - 1 else "") + f"{w}{op}{y}={r}")
                    w = r
                out.append(encode("".join(x + "\n" for x in lines)) + [EOT_ID])
        return out
    return sample


if __name__ == "__main__":  # a hand-sized walk through the method, no model needed
    import random as _random

    problem = Problem(47, (("+", 38), ("-", 19), ("*", 3)))
    prompt, response = encode(problem.prompt), encode(problem.solution)
    print("problem:", problem.prompt, end="")
    print("1. steps (token spans):", step_spans(response))
    for t, s in enumerate(prefix_states(prompt, response)):
        print(f"   state s_{t}: {decode(s)!r}")

    eps = 0.2
    scripted = scripted_policy(eps, _random.Random(0))
    states = prefix_states(prompt, response)
    conts, rewards = complete(scripted, states, [problem] * len(states), K=200)
    print(f"2. MC(s_t) from K=200 continuations of a policy with a {eps:.0%} slip per step:")
    for t, v in enumerate(mc_value(rewards).tolist()):
        print(f"   MC(s_{t}) = {v:.3f}   closed form (1-eps)^{3 - t} = "
              f"{(1 - eps) ** (3 - t):.3f}")
    values = torch.tensor([0.80, 0.80, 0.05, 0.65])  # V(s∘a_i) of 4 sampled actions
    adv = advantages(values)
    print("3. V(s∘a_i) =", [round(v, 2) for v in values.tolist()], "-> A (eq. 13) =",
          [round(a, 3) for a in adv.tolist()])
    logp = torch.tensor([-0.2, -0.2, -3.0, -1.0])
    for beta in (0.05, 0.5):
        print(f"4. eq. 12 at theta = theta_ref, beta={beta}: "
              f"{dapo_loss(logp, logp, adv, beta).item():.3f} (= mean (A/beta)^2 / 2)")
