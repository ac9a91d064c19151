"""Plumbing shared by the scripts: one-sentence errors, flag checks, the presets, atomic files,
checkpoints and the metrics log. (What each file of a run folder is: artifacts.py.)

Every file a stage writes goes through a temporary file and an atomic rename, so an interrupted
run never leaves a half-written checkpoint, rollout file or results.json behind.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as tdist
from tqdm import tqdm

from data import VOCAB_SIZE, max_tokens
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
        where = f" (rank {tdist.get_rank()})" if not main_process() else ""
        print(f"error{where}: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing half-written was left behind; run the same command again",
              file=sys.stderr)
        sys.exit(130)


def positive(name: str, value, allow_zero: bool = False):
    """Reject zero, negative and non-finite (NaN, inf) values of --name with one sentence."""
    if not math.isfinite(value):
        raise UserError(f"--{name} must be a finite number, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"--{name} must be {'zero or more' if allow_zero else 'positive'}, "
                        f"got {value}")
    return value


def fraction(name: str, value, low_open: bool = False, high_open: bool = False):
    """Reject a --name outside [0, 1] (an open end excludes 0 or 1), NaN included."""
    ok = (math.isfinite(value) and (0 < value if low_open else 0 <= value)
          and (value < 1 if high_open else value <= 1))
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise UserError(f"--{name} must be in {lo}0, 1{hi}, got {value}")
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



def check_task_args(args) -> None:
    """The task flags (data.TaskConfig) in range, and the longest problem inside the model."""
    for name in ("min_steps", "max_steps", "ood_steps"):
        positive(name.replace("_", "-"), getattr(args, name))
    fraction("fuse-prob", args.fuse_prob)
    if args.min_steps > args.max_steps:
        raise UserError(f"--min-steps ({args.min_steps}) cannot exceed --max-steps "
                        f"({args.max_steps})")
    block = GPTConfig.block_size
    for name in ("max_steps", "ood_steps"):
        n = getattr(args, name)
        if max_tokens(n) - 1 > block:
            most = max(k for k in range(1, n) if max_tokens(k) - 1 <= block)
            raise UserError(f"--{name.replace('_', '-')} {n}: a problem of {n} operations takes "
                            f"up to {max_tokens(n)} tokens, more than the model's "
                            f"{block + 1}; use at most {most}")

def add_device_arg(group) -> None:
    """The --device flag, the same in every script (model.pick_device reads it)."""
    group.add_argument("--device", default="auto",
                       help="auto (cuda > mps > cpu), cpu, cuda or mps")


def add_model_args(parser) -> None:
    """The model-size flags (model.GPTConfig), the same in train_sft.py and experiments/bench.py."""
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


def add_force_arg(group) -> None:
    group.add_argument("--force", action="store_true",
                       help="make this stage's outputs again where the run folder holds ones "
                       "made by other flags or inputs (without it, the stage stops and says "
                       "what differs); outputs made by exactly these are reused either way")


def add_run_args(group) -> None:
    """--device, --preset and --force, the same in every stage."""
    add_device_arg(group)
    add_preset_arg(group)
    add_force_arg(group)


def add_round_args(parser, seed_help: str):
    """The flags every DAPO stage shares: its run folder, round, seed, device, preset, force."""
    g = parser.add_argument_group("run")
    g.add_argument("--run-dir", default="runs/default", help="folder of the earlier stages")
    g.add_argument("--round", type=int, default=1, help="DAPO round R (1, 2, ...)")
    g.add_argument("--seed", type=int, default=0, help=seed_help)
    add_run_args(g)


def add_tag_arg(group, as_pi_ref: bool = False) -> None:
    group.add_argument("--tag", default="", help="a name for this stage's files, so that a "
                       "sweep keeps several: its checkpoint and results record get _<tag>")
    if as_pi_ref:
        group.add_argument("--as-pi-ref", action="store_true",
                           help="write the checkpoint as actor_R.pt, pi_ref of round R + 1, in "
                           "a run folder of this method's own rounds (sweep baselines)")


def tag_suffix(tag: str) -> str:
    """"_<tag>" for a --tag (letters, digits, '.' and '-'), "" for none."""
    if tag and not re.fullmatch(r"[A-Za-z0-9.-]+", tag):
        raise UserError(f"--tag may hold letters, digits, '.' and '-' only, got {tag!r}")
    return f"_{tag}" if tag else ""


def prepare_run_dir(path: str, must_exist: bool = False) -> Path:
    """Create the run folder (or, for a stage that reads earlier stages' files, require it),
    make sure it is writable, and remove the temporary files a kill during a write left."""
    if not str(path).strip():
        raise UserError("--run-dir is empty; name a folder, for example --run-dir runs/default")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"--run-dir {p} is a file, not a folder; name a folder")
    if must_exist and not p.is_dir():
        raise UserError(f"no run folder {p}; run train_sft.py --run-dir {p} first")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p):
            pass
    except OSError as e:
        raise UserError(f"cannot write to run folder {p} ({e.strerror}); "
                        "pass a writable --run-dir") from None
    if main_process():  # under torchrun only rank 0 writes, so only it has temporary files
        hold(p)  # before the clean-up: another process's temporary files are live
        remove_orphans(p)
    return p


HELD: dict[str, int] = {}  # the run folders this process holds: path -> its lock's descriptor


def hold(folder: Path) -> None:
    """One process per run folder: an exclusive lock on folder/.lock, held until this process
    ends (a pipeline or sweep calling stage after stage holds it once). Another process
    holding it stops this one with one sentence that names it; under torchrun rank 0 holds it
    for the job."""
    key = str(Path(folder).resolve())
    if key in HELD or os.environ.get("RANK", "0") != "0":  # (before the process group is up)
        return
    fd = os.open(Path(folder) / ".lock", os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        other = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UserError(f"{other} is using run folder {folder}; wait for it to end, or pass "
                        "another --run-dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()} ({' '.join(sys.argv)[:120]})".encode())
    HELD[key] = fd


def remove_orphans(folder: Path) -> list[Path]:
    """Delete the temporary files (.NAME.*.tmp, atomic_write's) that a process killed during a
    write left in folder and in its *.parts subfolders; returns what it removed."""
    gone = [f for pattern in (".*.tmp", "*.parts/.*.tmp") for f in Path(folder).glob(pattern)
            if f.is_file()]
    for f in gone:
        f.unlink(missing_ok=True)
    return gone


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main_process() -> bool:
    """False on the processes of a torchrun job but rank 0: they write no file (parallel.py)."""
    return not tdist.is_initialized() or tdist.get_rank() == 0


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), then rename tmp_path over path (atomic on POSIX). The file gets
    the user's normal permissions (0666 less the umask, as open() gives). A failed write
    (a full disk, say) leaves no file behind and stops with one sentence. Under torchrun every
    rank calls it, and rank 0 alone writes once every rank has come to it and before any goes
    on: so every rank sees the run folder change at the same point of the code, and what it
    reads between two writes is the same as every other rank reads."""
    if not tdist.is_initialized():
        return write_file(Path(path), write)
    try:
        tdist.barrier()
        if tdist.get_rank() == 0:
            write_file(Path(path), write)
        tdist.barrier()
    except (RuntimeError, tdist.DistError) as e:
        raise lost_rank(e) from None


def lost_rank(e: Exception) -> UserError:
    """The one sentence for a collective step that failed because another process died (e,
    the backend's own message, names a socket, not the cause)."""
    return UserError(f"rank {tdist.get_rank()} lost contact with another process of this "
                     "torchrun job, which stopped (its own error, if it had one, is above); what "
                     "the ranks finished is saved: run the same command again to resume")


def write_file(path: Path, write) -> None:
    """atomic_write's work in the process that writes."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, (OSError, RuntimeError)):  # torch.save raises RuntimeError
            raise UserError(f"could not write {path} ({str(e).strip().splitlines()[-1]}); "
                            "nothing was written: free some space or pass another --run-dir "
                            "and run the same command again") from None
        raise


def finite_json(obj):
    """obj with every non-finite float (NaN, inf) replaced by None: strict JSON, which every
    JSON reader accepts ("NaN" is not JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def save_json(path: Path, obj) -> None:
    text = json.dumps(finite_json(obj), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_torch(path: Path, obj) -> None:
    """torch.save, atomically. Written through a file object, so that the archive's inner
    folder has a fixed name (given a path, torch names it after the temporary file): the same
    content makes the same bytes, and so the same content hash (artifacts.file_hash)."""
    def write(tmp):
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    atomic_write(path, write)


def load_torch(path: Path, what: str, hint: str) -> dict:
    """torch.load(weights_only=True) of a dict, with one-sentence errors for a missing, damaged
    or wrong file. hint says what to do ("run train_sft.py first")."""
    path = Path(path)
    todo = hint.split("; ")[-1]
    if not path.exists():
        raise UserError(f"no {what} at {path}; {hint}")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a {what}; give the path of the file itself")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is not a readable {what} ({type(e).__name__}): it is damaged; "
                        f"delete it and {todo}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a {what}; {todo}")
    return obj


def save_checkpoint(path: Path, model: GPT, **extra) -> None:
    """A plain dict of the unwrapped module, plus its config as JSON beside it."""
    model = getattr(model, "_orig_mod", model)  # never save a torch.compile wrapper
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    ckpt = {"model": state, "model_config": config_dict(model), **extra}
    save_torch(path, ckpt)
    described = ("args", "step", "stage", "task", "data_seed", "made_by")  # all but weights
    save_json(Path(path).with_suffix(".json"),
              {"model_config": config_dict(model),
               **{k: v for k, v in extra.items() if k in described}})


def load_model(path: Path, device, what: str, hint: str, value_head: bool | None = None,
               value_surprisal: bool | None = None):
    """Load a GPT checkpoint. value_head=True adds a fresh (zero) value head to a policy;
    value_head=False drops one; value_surprisal=True gives a new value head the surprisal input
    (model.GPT.value_logits). Returns (model, checkpoint dict)."""
    ckpt = load_torch(path, what, hint)
    if "states" in ckpt or "continuations" in ckpt:  # a valid file, in the wrong place
        raise UserError(f"{path} is a rollout file, not a {what}; {hint.split('; ')[-1]}")
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
        raise UserError(f"{path} does not hold a model of this project ({e}); "
                        f"{hint.split('; ')[-1]}") from None
    return model.to(device), ckpt


def model_from_args(args, device) -> GPT:
    """A fresh GPT of the --n-layer, --n-embd and --n-head size on device (build_model)."""
    return build_model(GPTConfig(vocab_size=VOCAB_SIZE, n_layer=args.n_layer,
                                 n_embd=args.n_embd, n_head=args.n_head), device)


def build_model(cfg: GPTConfig, device) -> GPT:
    """GPT(cfg) on device, or one sentence when it does not fit in memory."""
    try:
        return GPT(cfg).to(device)
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
        if not isinstance(e, MemoryError) and "memory" not in str(e).lower():
            raise
        n = 12 * cfg.n_layer * cfg.n_embd ** 2 + cfg.vocab_size * cfg.n_embd
        raise UserError(f"a model of about {n / 1e6:,.0f}M parameters (--n-layer "
                        f"{cfg.n_layer}, --n-embd {cfg.n_embd}) does not fit in the memory of "
                        f"{device}; choose a smaller --n-layer or --n-embd") from None


def adamw(model, lr: float, device) -> torch.optim.AdamW:
    """The optimiser of the RL stages and baselines: AdamW, betas (0.9, 0.95), no weight decay
    (the paper's), fused on CUDA."""
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0,
                             fused=torch.device(device).type == "cuda")


def adam_step(model, opt, loss: torch.Tensor) -> None:
    """One optimiser step on a loss, gradients clipped to norm 1."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def progress(iterable=None, **kwargs) -> tqdm:
    """A progress bar (tqdm, on stderr); under torchrun only rank 0's shows."""
    return tqdm(iterable, dynamic_ncols=True, disable=not main_process(), **kwargs)


def log_interval(run_dir: Path, record: dict, loss: float, what: str, fix: str,
                 line: str) -> None:
    """The training loops' logging, once per interval: one sentence if the interval's loss is
    not finite (nothing is saved yet: fix says what to change), else the progress line
    (printed above any progress bar) and the record appended to metrics.jsonl."""
    if not math.isfinite(loss):
        raise UserError(f"{what} became {loss} by step {record['step']}; nothing was saved: "
                        f"{fix}")
    tqdm.write(line)
    log_metrics(run_dir, record)


def log_metrics(run_dir: Path, record: dict) -> None:
    """Append one JSON line to run_dir/metrics.jsonl (one line per logging interval); under
    torchrun, rank 0's call does."""
    if not main_process():
        return
    path = Path(run_dir) / "metrics.jsonl"
    try:
        with open(path, "a") as f:
            f.write(json.dumps(finite_json({"time": round(time.time(), 3), **record}),
                               allow_nan=False) + "\n")
    except OSError as e:
        raise UserError(f"could not append to {path} ({e.strerror}); free some space or pass "
                        "another --run-dir and run the same command again") from None


def command(module: str) -> str:
    """How a script module runs from the project root: a top-level one as a file, one in a
    folder (baselines/, experiments/) as a module.

        >>> command("train_sft"), command("baselines.train_grpo")
        ('python train_sft.py', 'python -m baselines.train_grpo')
    """
    return f"python -m {module}" if "." in module else f"python {module}.py"


def args_dict(args) -> dict:
    return {k: v for k, v in vars(args).items()}
