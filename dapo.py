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

from data import EOT_ID, NL_ID, OPS, Problem, decode, encode, parse_prompt, verify


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
