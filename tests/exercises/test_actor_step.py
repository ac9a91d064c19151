"""Exercise "actor-step": one training step of the actor (dapo.batch_loss): eq. 12 on a
batch of (state, action) pairs, with log pi(a|s) summed over the action's tokens and log
pi_ref(a|s) taken from the cache computed once with the frozen pi_ref. Run:
python -m course.exercise test --set actor-step. Eq. 12 itself is exercise "advantages"; here
a local copy stands in for dapo.dapo_loss, so that this exercise's tests do not depend on that
one."""

import pytest
import torch

import dapo
from data import EOT_ID
from model import GPT, GPTConfig


@pytest.fixture(autouse=True)
def own_eq12(monkeypatch):
    def eq12(logp, ref_logp, adv, beta):
        return 0.5 * ((adv / beta - (logp - ref_logp)) ** 2).mean()
    monkeypatch.setattr(dapo, "dapo_loss", eq12)


def summed_logprob(model, state, action) -> float:
    """log pi(a|s) by hand: each action token's log-probability given all before it."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([state + action]))[0][0].float(), dim=-1)
    return sum(float(logp[len(state) + j - 1, t]) for j, t in enumerate(action))


def setup():
    torch.manual_seed(0)
    actor = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32))
    groups = [{"state": [65, 66, 10], "actions": [[49, 50, 10], [51, 10, 52, 53]],
               "adv": [0.3, -0.3], "ref_logp": torch.tensor([-4.0, -9.0])},
              {"state": [70, 10], "actions": [[55, EOT_ID]], "adv": [0.1],
               "ref_logp": torch.tensor([-3.0])}]
    return actor, groups


def test_batch_loss_is_eq12_on_summed_logprobs_against_the_cached_reference():
    actor, groups = setup()
    loss, sums = dapo.batch_loss(actor, groups, [0, 1], 0.5, torch.device("cpu"))
    pairs = [(g["state"], a, A, float(r)) for g in groups
             for a, A, r in zip(g["actions"], g["adv"], g["ref_logp"])]
    want = sum((A / 0.5 - (summed_logprob(actor, s, a) - r)) ** 2
               for s, a, A, r in pairs) / (2 * len(pairs))
    assert float(loss) == pytest.approx(want, rel=1e-4), (
        "likely mistake: log pi(a|s) is the sum (not the mean) of the action's token "
        "log-probs, every action token included, and log pi_ref(a|s) is the cached "
        "group['ref_logp'], never recomputed from the actor being trained")
    assert int(sums[1]) == 3, "likely mistake: the batch holds every pair of the states b"


def test_batch_loss_only_reads_the_states_it_is_given():
    actor, groups = setup()
    loss, sums = dapo.batch_loss(actor, groups, [1], 0.5, torch.device("cpu"))
    s, a = groups[1]["state"], groups[1]["actions"][0]
    want = 0.5 * (0.1 / 0.5 - (summed_logprob(actor, s, a) + 3.0)) ** 2
    assert float(loss) == pytest.approx(want, rel=1e-4) and int(sums[1]) == 1, (
        "likely mistake: the loss must use the pairs of the states b only")


def test_batch_loss_trains_the_actor():
    actor, groups = setup()
    loss, _ = dapo.batch_loss(actor, groups, [0, 1], 0.5, torch.device("cpu"))
    hint = ("likely mistake: the loss must be differentiable in the actor's log-probs (do not "
            "compute them under torch.no_grad or detach them)")
    assert loss.requires_grad, hint
    loss.backward()
    grads = [p.grad for p in actor.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0, hint
