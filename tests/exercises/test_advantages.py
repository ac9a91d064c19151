"""Exercise "advantages": eq. 13 (dapo.advantages, dapo.action_advantages), the gap filter of
App. F.1 (dapo.passes_gap_filter) and eq. 12 (dapo.dapo_loss). Run: python -m course.exercise test
--set advantages. The numbers are chosen so that each common mistake gives another value, and
every failure names the mistake it most likely is."""

import random

import pytest
import torch

from dapo import action_advantages, advantages, dapo_loss, passes_gap_filter


def test_advantages_are_values_less_the_sibling_mean():
    got = advantages(torch.tensor([0.9, 0.9, 0.1, 0.5])).tolist()
    assert got == pytest.approx([0.3, 0.3, -0.5, -0.1]), (
        "likely mistake: eq. 13 is V(s∘a_i) less the plain mean over the sampled siblings; "
        "no division by their std, no other baseline")


def test_advantages_sum_to_zero_over_a_state_s_samples():
    rng = random.Random(7)
    for k in (2, 3, 8):
        values = torch.tensor([rng.random() for _ in range(k)])
        assert float(advantages(values).sum()) == pytest.approx(0.0, abs=1e-6), (
            "likely mistake: eq. 13's advantages must sum to zero over a state's samples "
            "(the baseline is their mean)")


def test_duplicates_count_in_the_mean_then_share_one_advantage():
    got = action_advantages([[1], [1], [1], [2]], [1.0, 1.0, 1.0, 0.0])
    assert got == pytest.approx({(1,): 0.25, (2,): -0.75}), (
        "likely mistake: de-duplicating actions before the mean; the mean runs over all K "
        "samples, duplicates included, and duplicates are merged only after")


@pytest.mark.parametrize("adv, threshold, keep", [
    ([0.25, -0.25], 0.5, True),        # a spread of exactly the threshold is kept
    ([0.2, 0.1, -0.15], 0.3, True),    # spread 0.35, though no |A| reaches 0.3
    ([0.1, -0.1], 0.3, False),
    ([0.0, 0.0], 0.0, True),           # threshold 0 keeps every state
])
def test_gap_filter_keeps_states_whose_advantages_spread(adv, threshold, keep):
    assert passes_gap_filter(adv, threshold) == keep, (
        "likely mistake: the filter of App. F.1 compares the spread max A - min A with the "
        "threshold, inclusive (>=), not the largest |A|")


def test_dapo_loss_by_hand():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -1.5, -0.5])
    adv = torch.tensor([0.2, -0.1, 0.05])
    # A / beta = (0.4, -0.2, 0.1); log-ratio = (0.5, -0.5, 0); 1/2 mean of squared gaps
    want = 0.5 * ((0.4 - 0.5) ** 2 + (-0.2 + 0.5) ** 2 + 0.1 ** 2) / 3
    got = float(dapo_loss(logp, ref, adv, beta=0.5))
    assert got == pytest.approx(want), (
        "likely mistake: eq. 12 is 1/2 mean((A/beta - log(pi/pi_ref))^2): check the sign of "
        "the log-ratio (log pi - log pi_ref), A divided (not multiplied) by beta, the mean "
        "(not the sum) over pairs, and the 1/2")


def test_dapo_loss_is_stationary_where_the_log_ratio_is_a_over_beta():
    adv, beta = torch.tensor([0.3, -0.2, 0.1, -0.2]), 0.25
    ref = torch.tensor([-1.0, -0.7, -2.0, -0.1])
    logp = (ref + adv / beta).requires_grad_(True)
    loss = dapo_loss(logp, ref, adv, beta)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-10) and logp.grad.abs().max() < 1e-6, (
        "likely mistake: eq. 12 must be zero, with zero gradient, where log(pi/pi_ref) = A/beta")
    other = ref + 2 * adv / beta
    assert float(dapo_loss(other, ref, adv, beta)) > 0.1, (
        "likely mistake: eq. 12 must grow when the log-ratio overshoots A/beta")


def test_lemma_3_1_the_gradient_at_pi_ref():
    """Lemma 3.1 on a tabular softmax policy over 5 actions: at theta = theta_ref the gradient
    of sum_a pi_ref(a) * eq. 12 (a) is -1/beta times that of the policy's improvement I_s, in
    closed form -(1/beta) pi_ref(b) (A(b) - E_pi_ref[A]) for logit b."""
    torch.manual_seed(3)
    logits_ref = torch.randn(5, dtype=torch.float64)
    ref = torch.log_softmax(logits_ref, -1)
    pi, adv, beta = ref.exp(), torch.rand(5, dtype=torch.float64), 0.4
    theta = logits_ref.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, -1)
    loss = sum(pi[a] * dapo_loss(logp[a:a + 1], ref[a:a + 1], adv[a:a + 1], beta)
               for a in range(5))
    (grad,) = torch.autograd.grad(loss, theta)
    want = -(pi * (adv - (pi * adv).sum())) / beta
    assert torch.allclose(grad, want, atol=1e-10), (
        "likely mistake: Lemma 3.1 fails, so eq. 12's gradient at pi_ref is not the policy "
        "gradient of the advantage: check the sign of the log-ratio, A / beta, and the 1/2")
