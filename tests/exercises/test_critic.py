"""Exercise "critic": the Monte Carlo targets (dapo.mc_value), the critic's loss (eq. 14-15,
dapo.critic_loss) and the balanced pick of A.1 (dapo.balanced_pick). Run: python -m course.exercise
test --set critic."""

import math
import random

import pytest
import torch

from dapo import balanced_pick, critic_loss, mc_value, scripted_policy
from data import Problem, decode, encode, verify


def test_mc_value_is_the_mean_reward_of_the_k_continuations():
    got = mc_value(torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])).tolist()
    assert got == pytest.approx([0.25, 0.75]), (
        "likely mistake: MC(s) is the mean reward over the K continuations (a fraction in "
        "[0, 1]), not their sum or their best")


def test_mc_targets_fall_in_the_binomial_band_of_the_closed_form():
    """A scripted policy slips on each remaining step with probability eps, so the state after
    t of 3 steps, still right, is finished correctly with probability (1 - eps)^(3 - t)."""
    eps, K = 0.3, 400
    problem = Problem(12, (("+", 5), ("*", 2), ("-", 4)))
    prompt = encode(problem.prompt)
    lines = problem.solution.splitlines(keepends=True)
    states = [prompt + encode("".join(lines[:t])) for t in range(3)]
    conts = scripted_policy(eps, random.Random(3))(states, K)
    rewards = torch.tensor([[verify(problem, decode(s[len(prompt):] + c[:-1])).reward
                             for c in conts[i * K:(i + 1) * K]] for i, s in enumerate(states)])
    for t, mc in enumerate(mc_value(rewards).tolist()):
        v = (1 - eps) ** (3 - t)
        band = 4 * math.sqrt(v * (1 - v) / K)
        assert abs(mc - v) < band, (
            f"likely mistake: MC(s_{t}) = {mc:.3f} is outside 4 standard errors of the true "
            f"value {v:.3f}: MC(s) must be the mean reward of the state's own K continuations")


def test_critic_loss_is_bce_on_soft_targets_by_hand():
    logits, mc = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([0.25, 1.0, 0.4])
    p = torch.sigmoid(logits).tolist()
    want = -sum(m * math.log(q) + (1 - m) * math.log(1 - q)
                for m, q in zip(mc.tolist(), p)) / 3
    assert float(critic_loss(logits, mc)) == pytest.approx(want, rel=1e-5), (
        "likely mistake: eq. 14-15 is the binary cross-entropy of V = sigmoid(logit) against "
        "the soft target MC(s) itself (not MSE, not a target rounded to 0 or 1), averaged "
        "over states")


def test_critic_loss_is_minimised_at_v_equal_mc():
    mc = torch.tensor([0.1, 0.5, 0.8, 1.0 - 1e-6])
    logits = torch.log(mc / (1 - mc)).requires_grad_(True)
    critic_loss(logits, mc).backward()
    assert logits.grad.abs().max() < 1e-6, (
        "likely mistake: the critic's loss must have zero gradient where V = MC (BCE on the "
        "soft targets; a rounded target moves V away from MC)")


def test_balanced_pick_takes_half_of_each_kind_and_fills_up():
    rng = random.Random(0)
    picked = balanced_pick([1, 0, 0, 1, 0, 1], 4, rng)
    rewards = [1, 0, 0, 1, 0, 1]
    assert len(picked) == 4 and sum(rewards[i] for i in picked) == 2, (
        "likely mistake: n // 2 correct and n // 2 incorrect samples when both kinds have them")
    for seed in range(4):  # one incorrect sample: it and three correct ones
        short = balanced_pick([1, 1, 0, 1, 1, 1], 4, random.Random(seed))
        assert len(short) == 4 and 2 in short, (
            "likely mistake: when one kind runs short, fill up with the other kind, so that "
            "n samples are kept whenever there are n")
    assert picked == sorted(picked) and len(set(picked)) == len(picked), (
        "likely mistake: return each index once, in increasing order")


def test_balanced_pick_chooses_at_random():
    rewards = [1] * 5 + [0] * 5
    picks = {tuple(balanced_pick(rewards, 4, random.Random(s))) for s in range(20)}
    assert len(picks) > 5, (
        "likely mistake: shuffle each kind before taking from it (always taking the first "
        "samples biases the states toward what the policy writes first)")
