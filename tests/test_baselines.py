"""The baselines of the paper's comparison: RFT, GRPO and PPO (baselines/train_rft.py,
train_grpo.py, train_ppo.py) by hand and as smoke runs. (The critic-less eq. 12 variants,
train_actor.py --advantage, are in test_dapo.py.)"""

import json
import math

import pytest
import torch

import train_critic
from baselines import train_rft
import train_sft
from model import GPT, GPTConfig, flat, unflat
from data import EOT_ID, Problem, encode
from tiny import CRITIC, SFT


def test_correct_responses_keeps_each_right_answer_once():
    """Guards against RFT training on wrong, partial or repeated responses: only whole
    responses (kept A.1 samples and the bare prompt's continuations, never a later state's),
    only the verifier's right ones, each once per problem, each closed by <|endoftext|>."""
    p = Problem(5, (("+", 3), ("*", 2)))  # 5+3=8, A: 8*2=16
    right, wrong = encode("5+3=8\nA: 8*2=16\n"), encode("5+3=9\nA: 9*2=18\n")
    s0, s1 = encode(p.prompt), encode(p.prompt + "5+3=8\n")
    data = {"states": flat([s0, s1]), "state_problem": torch.tensor([0, 0]),
            "continuations": flat([right + [EOT_ID], wrong + [EOT_ID],  # s0: whole responses
                                   encode("A: 8*2=16\n") + [EOT_ID], [EOT_ID]]),  # s1: endings
            "rewards": torch.tensor([[1.0, 0.0], [1.0, 0.0]]), "problems": [p.prompt],
            "responses": flat([right]), "resp_states": flat([[0, 1]])}
    prompts, responses, looked_at = train_rft.correct_responses(data)
    assert looked_at == 3  # the kept response and s0's two continuations
    assert responses == [right + [EOT_ID]] and prompts == [s0]


def test_rft_loss_is_the_mean_response_token_cross_entropy():
    """Guards against a loss that also predicts the prompt, skips the stop token, or sums
    instead of averaging: by hand from the model's own next-token probabilities."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16))
    prompts, responses = [[65, 10], [66, 67, 10]], [[49, 50, EOT_ID], [51, EOT_ID]]
    loss, n = train_rft.rft_loss(model, prompts, responses, torch.device("cpu"))
    nll = []
    for p, r in zip(prompts, responses):
        seq = torch.tensor([p + r])
        logp = torch.log_softmax(model(seq)[0][0], dim=-1)
        nll += [-float(logp[len(p) + j - 1, t]) for j, t in enumerate(r)]
    assert n == 5 and float(loss) == pytest.approx(sum(nll) / len(nll), rel=1e-5)


def test_rft_smoke_and_reuse(tmp_path, capsys):
    """Guards against baselines/train_rft.py not training on the round's rollouts or not writing its
    checkpoint and record; run again with the same flags, it is reused. The tiny policy
    solves nothing, which gets one sentence; one right response written into its rollouts
    then gives RFT something to learn."""
    from data import parse_prompt
    from tiny import run
    d = tmp_path / "run"
    train_sft.main(["--run-dir", str(d)] + SFT)
    train_critic.main(["--run-dir", str(d)] + CRITIC)
    argv = ["--run-dir", str(d), "--eval-n", "12", "--device", "cpu", "--log-every", "1"]
    code, err = run(train_rft.main, argv, capsys)
    assert code == 2 and "is correct, so RFT has nothing to train on" in err
    data = torch.load(d / "rollouts_1.pt", weights_only=True)
    conts = unflat(data["continuations"])
    conts[0] = encode(parse_prompt(data["problems"][0]).solution) + [EOT_ID]  # state 0: bare
    data["continuations"] = flat(conts)
    torch.save(data, d / "rollouts_1.pt")
    rec = train_rft.main(argv)
    res = json.loads((d / "results.json").read_text())["rft_1"]
    assert (d / "actor_1_rft.pt").exists() and res["responses"] == rec["responses"] == 1
    assert set(rec) >= {"val", "test", "ood", "candidates", "made_by"}
    train_rft.main(argv)
    assert "up to date with these flags: skipped" in capsys.readouterr().out
    train_rft.main(argv + ["--tag", "lr1e-3", "--lr", "1e-3"])  # a sweep's trial, beside it
    assert (d / "actor_1_rft_lr1e-3.pt").exists() and (d / "actor_1_rft.pt").exists()
    assert "rft_1_lr1e-3" in json.loads((d / "results.json").read_text())


def test_grpo_advantage_and_loss_by_hand():
    """Guards against GRPO's group normalisation, clipping or KL term drifting from their
    definitions: a hand-worked batch of two responses."""
    from baselines import train_grpo
    adv = train_grpo.group_advantages(torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0] * 4]))
    sd = float(torch.tensor([1.0, 1.0, 0.0, 0.0]).std())  # the unbiased std of the group
    assert adv[0].tolist() == pytest.approx([0.5 / (sd + 1e-4)] * 2 + [-0.5 / (sd + 1e-4)] * 2)
    assert adv[1].tolist() == [0.0] * 4  # all equal: no signal
    old = torch.zeros(2, 3)
    logp = torch.log(torch.tensor([[1.5, 1.0, 1.0], [0.5, 1.1, 1.0]]))  # ratios
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    a = torch.tensor([1.0, -1.0])
    # response 1: min(1.5, 1.2) * 1 = 1.2 and 1.0 -> mean 1.1; response 2: min(-0.5, -0.8),
    # min(-1.1, -1.1), min(-1, -1) -> mean (-0.8 - 1.1 - 1) / 3; the loss is minus their mean
    want = -(1.1 + (-0.8 - 1.1 - 1.0) / 3) / 2
    got = train_grpo.grpo_loss(logp, old, logp, mask, a, clip=0.2, kl=0.5)  # ref = pi: KL 0
    assert float(got) == pytest.approx(want)
    ref = logp - 0.3  # pi_ref below pi everywhere: k3 = e^-0.3 + 0.3 - 1 per token
    k3 = math.exp(-0.3) + 0.3 - 1
    got = train_grpo.grpo_loss(logp, old, ref, mask, a, clip=0.2, kl=0.5)
    assert float(got) == pytest.approx(want + 0.5 * k3)


def test_grpo_ratio_is_one_before_the_first_update_and_smoke(tmp_path, capsys):
    """Guards against old log-probs taken from another policy than the one that sampled (the
    probability ratio must be exactly 1 before the first update), and against train_grpo.py
    not spending its budget, not recording its curve or not writing its files."""
    from baselines import grpo_ppo_shared
    from baselines import train_grpo
    from artifacts import load_policy
    from data import TaskConfig, TrainProblems
    from model import token_logprobs
    d = tmp_path / "run"
    train_sft.main(["--run-dir", str(d)] + SFT)
    policy, _ = load_policy(d, 1, "cpu")
    problems = TrainProblems(0, TaskConfig(min_steps=1, max_steps=2, ood_steps=3)).take(0, 3)
    b = grpo_ppo_shared.sample_batch(policy.eval(), policy, problems, 4,
                            torch.Generator().manual_seed(0), torch.device("cpu"))
    logp = token_logprobs(policy, b["idx"], b["mask"])
    assert torch.equal(logp, b["old"]) and torch.equal(b["old"], b["ref"])
    assert b["rewards"].shape == (3, 4) and b["tokens"] == int(b["mask"].sum()) - int(
        (b["idx"][:, 1:][b["mask"][:, 1:] > 0] == EOT_ID).sum())  # stops are not generated
    argv = ["--run-dir", str(d), "--G", "4", "--batch-problems", "4", "--budget", "600",
            "--eval-every", "300", "--eval-n", "12", "--device", "cpu"]
    rec = train_grpo.main(argv)
    assert rec["generated_tokens"] >= 600 and len(rec["curve"]) >= 2
    assert rec["curve"][-1]["test"] == rec["test"]["greedy_acc"]
    assert (d / "actor_1_grpo.pt").exists() and "grpo_1" in json.loads(
        (d / "results.json").read_text())
    train_grpo.main(argv)
    assert "up to date with these flags: skipped" in capsys.readouterr().out


def test_gae_by_hand_on_a_padded_batch():
    """Guards against GAE reading values across the prompt or the padding, or bootstrapping
    past the end of a response: two responses in one batch, worked by hand (gamma 0.9,
    lambda 0.5)."""
    from baselines import train_ppo
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]])  # prompt, then response
    values = torch.tensor([[9.0, 0.2, 0.4, 0.6], [9.0, 9.0, 0.5, 9.0]]) * mask
    rewards = torch.tensor([[0.0, 0.0, 0.1, 1.0], [0.0, 0.0, 1.0, 0.0]])
    adv, ret = train_ppo.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    d3 = 1.0 - 0.6                      # the last token: no value after it
    d2 = 0.1 + 0.9 * 0.6 - 0.4
    d1 = 0.0 + 0.9 * 0.4 - 0.2
    a3, a2 = d3, d2 + 0.45 * d3
    a1 = d1 + 0.45 * a2
    assert adv[0].tolist() == pytest.approx([0.0, a1, a2, a3])
    assert adv[1].tolist() == pytest.approx([0.0, 0.0, 0.5, 0.0])
    assert ret[0].tolist() == pytest.approx([0.0, a1 + 0.2, a2 + 0.4, a3 + 0.6])


def test_ppo_rewards_and_losses_by_hand():
    """Guards against the KL penalty or the verifier's reward landing on the wrong token, and
    against the clipped policy and value losses drifting from their definitions."""
    from baselines import train_ppo
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    old, ref = torch.tensor([[-1.0, -2.0, 0.0], [0.0, -1.0, -1.0]]), torch.full((2, 3), -1.5)
    r = train_ppo.shaped_rewards(torch.tensor([1.0, 0.0]), old, ref, mask, kl=0.1)
    assert r.flatten().tolist() == pytest.approx([-0.05, 0.05 + 1.0, 0.0, 0.0, -0.05, -0.05])
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.0], [1.0, 1.1, 1.0]]))  # ratios, old = 0
    adv = torch.tensor([[1.0, -1.0, 0.0], [0.0, 2.0, -1.0]])
    v, old_v = torch.tensor([[0.5, 0.9, 0.0], [0.0, 0.1, 0.0]]), torch.zeros(2, 3)
    ret = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    pg, vf = train_ppo.ppo_losses(logp, torch.zeros(2, 3), adv, v, old_v, ret, mask,
                                  clip=0.2, vf_clip=0.2)
    # tokens: min(1.5, 1.2) = 1.2; min(-0.5, -0.8) = -0.8; min(2.2, 2.4) = 2.2; min(-1, -1)
    assert float(pg) == pytest.approx(-(1.2 - 0.8 + 2.2 - 1.0) / 4)
    # value: v 0.5 (clipped 0.2) -> max(0.25, 0.64); 0.9 (0.2) -> max(0.01, 0.64);
    # 0.1 (0.1) -> 0.01; 0 -> 1
    assert float(vf) == pytest.approx(0.5 * (0.64 + 0.64 + 0.01 + 1.0) / 4)


def test_ppo_smoke_ratio_one_and_bad_input(tmp_path, capsys):
    """Guards against baselines/train_ppo.py not spending its budget, not recording its curve or not
    writing its files; against a value model that does not start at pi_ref's trunk with a zero
    head; and against a budget to match that is not in the run folder."""
    from baselines import train_ppo
    from artifacts import load_policy
    from tiny import run
    d = tmp_path / "run"
    train_sft.main(["--run-dir", str(d)] + SFT)
    argv = ["--run-dir", str(d), "--samples", "2", "--batch-problems", "4", "--eval-every",
            "300", "--eval-n", "12", "--device", "cpu"]
    code, err = run(train_ppo.main, argv, capsys)
    assert code == 2 and "no generated_tokens in results.json['critic_1']" in err
    assert not (d / "actor_1_ppo.pt").exists()
    code, err = run(train_ppo.main, argv + ["--samples", "0"], capsys)
    assert code == 2 and "--samples must be positive" in err
    vm, policy = train_ppo.initial_value_model(d, 1, "cpu"), load_policy(d, 1, "cpu")[0]
    idx = torch.tensor([encode("1+2=")])
    assert torch.equal(vm.hidden(idx), policy.hidden(idx))
    assert torch.equal(train_ppo.token_values(vm, idx), torch.zeros(1, idx.size(1) - 1))
    rec = train_ppo.main(argv + ["--budget", "600"])
    assert rec["generated_tokens"] >= 600 and len(rec["curve"]) >= 2
    assert rec["curve"][-1]["test"] == rec["test"]["greedy_acc"]
    assert (d / "actor_1_ppo.pt").exists() and "ppo_1" in json.loads(
        (d / "results.json").read_text())
