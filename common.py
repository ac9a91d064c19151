"""Plumbing shared by the scripts: one-sentence errors, flag checks, the presets, atomic files,
checkpoints and the metrics log. (What each file of a run folder is: artifacts.py.)

Every file a stage writes goes through a temporary file and an atomic rename, so an interrupted
run never leaves a half-written checkpoint, rollout file or results.json behind.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from model import GPT, GPTConfig, config_dict


class UserError(Exception):
    """Bad input: the message is one sentence that says what is wrong and what to do."""


@contextmanager
def friendly_errors():
    """Turn UserError (and ValueError from argument checks) into one line and exit code 2;
    Ctrl-C exits with 130 and a note that the stage can be resumed or re-run."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # log lines appear as they happen
    try:
        yield
    except (UserError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing half-written was left behind; run the same command again",
              file=sys.stderr)
        sys.exit(130)


def positive(name: str, value, allow_zero: bool = False):
    """Reject zero or negative sizes with one clear sentence."""
    if value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "positive"
        raise UserError(f"--{name} must be {bound}, got {value}")
    return value


# The one definition of the presets. "cpu" is every script's own defaults: a laptop CPU, minutes.
# "gpu" is a bigger model, a harder task and a bigger budget for one GPU (untested: no GPU has
# run it yet). Each section lists flag values of one script; --preset gpu makes them its
# defaults, and a flag given on the command line still wins.
PRESETS: dict[str, dict[str, dict]] = {
    "cpu": {},
    "gpu": {
        "model": dict(n_layer=8, n_embd=512, n_head=8),
        "sft": dict(batch_size=256, steps=6000, lr=1e-3, max_steps=8, ood_steps=9),
        "critic": dict(problems=8192, n1=4, n=2, K=8, sample_batch=4096, batch_size=256,
                       chunk=2048),
        "actor": dict(batch_pairs=512),
        "bench": dict(batch=1024, train_batch=256),
    },
}


def add_device_arg(group) -> None:
    """The --device flag, the same in every script (model.pick_device reads it)."""
    group.add_argument("--device", default="auto",
                       help="auto (cuda > mps > cpu), cpu, cuda or mps")


def add_model_args(parser) -> None:
    """The model-size flags (model.GPTConfig), the same in train_sft.py and bench.py."""
    g = parser.add_argument_group("model (model.GPTConfig)")
    for name, what in (("n_layer", "transformer blocks"), ("n_embd", "residual width"),
                       ("n_head", "attention heads")):
        default = getattr(GPTConfig, name)
        g.add_argument("--" + name.replace("_", "-"), type=int, default=default,
                       help=f"{what} ({default})")


def add_preset_arg(group) -> None:
    group.add_argument("--preset", choices=PRESETS, default="cpu",
                       help="cpu: the defaults shown; gpu: a larger model, task and budget "
                       "(common.PRESETS)")


def parse_with_preset(parser: argparse.ArgumentParser, argv, *sections: str):
    """Parse argv; with --preset gpu, parse again with that preset's values of the given
    sections (common.PRESETS) as the defaults, so that explicit flags still win."""
    args = parser.parse_args(argv)
    values = {k: v for s in sections for k, v in PRESETS[args.preset].get(s, {}).items()}
    if values:
        parser.set_defaults(**values)
        args = parser.parse_args(argv)
    return args


def add_round_args(parser, seed_help: str):
    """The flags every DAPO stage shares: its run folder, round, seed, device and preset."""
    g = parser.add_argument_group("run")
    g.add_argument("--run-dir", default="runs/default", help="folder of the earlier stages")
    g.add_argument("--round", type=int, default=1, help="DAPO round R (1, 2, ...)")
    g.add_argument("--seed", type=int, default=0, help=seed_help)
    add_device_arg(g)
    add_preset_arg(g)


def prepare_run_dir(path: str, must_exist: bool = False) -> Path:
    """Create the run folder (or, for a stage that reads earlier stages' files, require it) and
    make sure it is writable."""
    p = Path(path)
    if must_exist and not p.is_dir():
        raise UserError(f"no run folder {p}; run train_sft.py --run-dir {p} first")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p):
            pass
    except OSError as e:
        raise UserError(f"cannot write to run folder {p} ({e.strerror}); "
                        "pass a writable --run-dir") from None
    return p


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), then rename tmp_path over path (atomic on POSIX)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_json(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


def save_torch(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: Path, what: str, hint: str) -> dict:
    """torch.load(weights_only=True) with one-sentence errors for missing or corrupt files."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"no {what} at {path}; {hint}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is not a readable {what} ({type(e).__name__}); "
                        f"delete it and {hint.split('; ')[-1]}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a {what}; delete it and {hint.split('; ')[-1]}")
    return obj


def save_checkpoint(path: Path, model: GPT, **extra) -> None:
    """A plain dict of the unwrapped module, plus its config as JSON beside it."""
    model = getattr(model, "_orig_mod", model)  # never save a torch.compile wrapper
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {"model": state, "model_config": config_dict(model), **extra}
    save_torch(path, ckpt)
    described = ("args", "step", "stage", "task", "data_seed")  # the JSON: all but weights
    save_json(Path(path).with_suffix(".json"),
              {"model_config": config_dict(model),
               **{k: v for k, v in extra.items() if k in described}})


def load_model(path: Path, device, what: str, hint: str, value_head: bool | None = None,
               value_surprisal: bool | None = None):
    """Load a GPT checkpoint. value_head=True adds a fresh (zero) value head to a policy;
    value_head=False drops one; value_surprisal=True gives a new value head the surprisal input
    (model.GPT.value_logits). Returns (model, checkpoint dict)."""
    ckpt = load_torch(path, what, hint)
    try:
        cfg = dict(ckpt["model_config"])
        if value_head is not None:
            cfg["value_head"] = value_head
        if value_head is False:  # a policy has no value head, so no surprisal input either
            cfg["value_surprisal"] = False
        elif value_surprisal is not None:
            cfg["value_surprisal"] = value_surprisal
        model = GPT(GPTConfig(**cfg))
        state = {k: v for k, v in ckpt["model"].items()
                 if value_head is not False or not k.startswith("value_head")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("value_head")]:
            raise KeyError(f"{len(missing)} missing, {len(unexpected)} unexpected weights")
    except (KeyError, TypeError, RuntimeError, ValueError, AttributeError) as e:
        raise UserError(f"{path} does not hold a compatible model ({e}); "
                        f"delete it and {hint.split('; ')[-1]}") from None
    return model.to(device), ckpt


def log_metrics(run_dir: Path, record: dict) -> None:
    """Append one JSON line to run_dir/metrics.jsonl (one line per logging interval)."""
    with open(Path(run_dir) / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


def args_dict(args) -> dict:
    return {k: v for k, v in vars(args).items()}
