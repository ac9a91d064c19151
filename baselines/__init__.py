"""The paper's baselines, each run as `python -m baselines.NAME` from the project root.

train_rft.py        rejection-sampling fine-tuning on DAPO's rollouts
train_grpo.py       GRPO, online, at DAPO's budget of generated tokens
train_ppo.py        PPO with a value model and GAE, online, at the same budget
grpo_ppo_shared.py  what GRPO and PPO share: the online loop, sampling, budget, evaluation
train_eq12.py       DAPO's eq. 12 without a critic (step-mc, response) and the oracle ablation
rollouts.py         the rollouts of a baseline's own round, with no critic

They use the same sampler, verifier and evaluation as DAPO's stages (the top-level modules).
"""
