"""The run folder: which file is what, the rollout file format, and loading a round's inputs.

Every stage reads the files of the stages before it from one folder and writes its own:

    sft.pt, sft.json           pi_ref of round 1 (train_sft.py); the .json is its configuration
    rollouts_R.pt              round R's states, continuations, rewards and MC targets
    critic_R.pt                round R's critic (train_critic.py --round R)
    actor_R.pt                 round R's actor (train_actor.py --round R): pi_ref of round R + 1
    results.json               one record per stage: "sft", "critic_R", "dapo_R" (docs/metrics.md)
    metrics.jsonl              one line per logging interval of every stage
    pipeline_times.json        wall seconds per stage (pipeline.py)

Every checkpoint records its own resolved arguments ("args"), the task it was trained on
("task", a data.TaskConfig as a dict) and the seed of the task's splits ("data_seed").
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from common import UserError, load_model, load_torch, save_json
from data import TaskConfig

# ----------------------------------------------------------------------------- file names


def policy_path(run_dir: Path, rnd: int) -> Path:
    """pi_ref of round rnd: the SFT model, then each round's actor."""
    return Path(run_dir) / ("sft.pt" if rnd == 1 else f"actor_{rnd - 1}.pt")


def policy_hint(rnd: int) -> str:
    """What to run when pi_ref of round rnd is missing."""
    return ("run train_sft.py first" if rnd == 1 else
            f"run train_actor.py --round {rnd - 1} first")


def critic_path(run_dir: Path, rnd: int) -> Path:
    return Path(run_dir) / f"critic_{rnd}.pt"


def rollouts_path(run_dir: Path, rnd: int) -> Path:
    return Path(run_dir) / f"rollouts_{rnd}.pt"


# ----------------------------------------------------------------------------- checkpoints


def task_record(cfg: TaskConfig, data_seed: int) -> dict:
    """What every checkpoint stores about its task: save_checkpoint(..., **task_record(...))."""
    return {"task": asdict(cfg), "data_seed": data_seed}


def task_of(ckpt: dict, path: Path) -> tuple[TaskConfig, int]:
    """(task, data seed) a checkpoint was trained on, as task_record stored them."""
    try:
        return TaskConfig(**ckpt["task"]), int(ckpt["data_seed"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path} does not record its task and data seed; retrain it with "
                        "train_sft.py (or train_actor.py) of this version") from None


def load_policy(run_dir: Path, rnd: int, device):
    """pi_ref of round rnd (no value head), with its checkpoint dict."""
    return load_model(policy_path(run_dir, rnd), device, "reference policy checkpoint",
                      policy_hint(rnd), value_head=False)


def load_critic(run_dir: Path, rnd: int, device):
    """The critic of round rnd, with its checkpoint dict."""
    return load_model(critic_path(run_dir, rnd), device, "critic checkpoint",
                      f"run train_critic.py --round {rnd} first", value_head=True)


# ----------------------------------------------------------------------------- rollouts


def flat(seqs: list[list[int]]) -> dict:
    """Token lists as one flat int32 tensor + offsets (compact, and weights_only-loadable).

        >>> flat([[5, 6], [], [7]])["offsets"].tolist()
        [0, 2, 2, 3]
    """
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    tokens = torch.tensor([t for s in seqs for t in s], dtype=torch.int32)
    return {"tokens": tokens, "offsets": torch.cat([torch.zeros(1, dtype=torch.long),
                                                    lengths.cumsum(0)])}


def unflat(d: dict) -> list[list[int]]:
    """The inverse of flat."""
    tok, off = d["tokens"].tolist(), d["offsets"].tolist()
    return [tok[off[i]:off[i + 1]] for i in range(len(off) - 1)]


ROLLOUT_KEYS = ("states", "state_problem", "continuations", "rewards", "mc", "problems", "meta")


def load_rollouts(run_dir: Path, rnd: int, meta: dict | None = None) -> dict:
    """rollouts_R.pt, checked for its keys (and, given meta, for the settings that made it).

    It holds: states (flat), state_problem (S,), continuations (flat, K per state, state i's at
    i*K .. i*K+K-1), rewards (S, K), mc (S,), problems (prompts), the kept responses
    (responses, resp_states, resp_line_ok, resp_reward), gen_accuracy, generated_tokens,
    completion_tokens and meta (the settings and pi_ref that made it)."""
    path = rollouts_path(run_dir, rnd)
    hint = f"run train_critic.py --round {rnd}"
    data = load_torch(path, "rollout file", f"delete it if it exists and {hint}")
    if any(k not in data for k in ROLLOUT_KEYS) or \
            len(data["mc"]) != len(data["states"]["offsets"]) - 1:
        raise UserError(f"{path} is truncated or corrupt; delete it and {hint}")
    if meta is not None and data["meta"] != meta:
        raise UserError(f"{path} was made with other settings ({data['meta']}); delete it or "
                        "pass the same flags")
    return data


# ----------------------------------------------------------------------------- results.json


def read_results(run_dir: Path) -> dict:
    """run_dir/results.json as a dict ({} if there is none yet)."""
    path = Path(run_dir) / "results.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path} is corrupt; delete it and re-run the stages") from None


def update_results(run_dir: Path, stage: str, record: dict) -> dict:
    """Merge {stage: record} into run_dir/results.json (atomically) and return the whole."""
    path = Path(run_dir) / "results.json"
    results = read_results(run_dir)
    results[stage] = record
    save_json(path, results)
    return results
