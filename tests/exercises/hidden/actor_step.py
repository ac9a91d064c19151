import torch

import dapo
from model import GPT, GPTConfig


def test_batch_loss_on_fresh_groups(rng, monkeypatch):
    monkeypatch.setattr(dapo, "dapo_loss", lambda lp, r, a, b: 0.5 * (
        (a / b - (lp - r)) ** 2).mean())
    torch.manual_seed(rng.randrange(1000))
    actor = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32))
    groups = [{"state": [rng.randint(1, 90) for _ in range(rng.randint(1, 5))],
               "actions": [[rng.randint(1, 90) for _ in range(rng.randint(1, 4))]
                           for _ in range(rng.randint(1, 3))]} for _ in range(3)]
    for g in groups:
        g["adv"] = [rng.uniform(-1, 1) for _ in g["actions"]]
        g["ref_logp"] = torch.tensor([rng.uniform(-9, -1) for _ in g["actions"]])
    beta, b = rng.uniform(0.05, 1), [0, 2]
    loss, _ = dapo.batch_loss(actor, groups, b, beta, torch.device("cpu"))
    terms = []
    with torch.no_grad():
        for i in b:
            g = groups[i]
            for a, A, r in zip(g["actions"], g["adv"], g["ref_logp"].tolist()):
                logp = torch.log_softmax(actor(torch.tensor([g["state"] + a]))[0][0], -1)
                lp = sum(float(logp[len(g["state"]) + j - 1, t]) for j, t in enumerate(a))
                terms.append((A / beta - (lp - r)) ** 2)
    assert abs(float(loss) - sum(terms) / (2 * len(terms))) < 1e-4 * (1 + sum(terms))
