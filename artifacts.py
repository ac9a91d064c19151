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

Provenance. Every artifact (checkpoint, rollout file, completion chunk, results record) also
records what made it, "made_by": the stage, the flags that change its content, and the
SHA-256 of each input file's content (not its name). A stage compares an existing output
with what it would make now: the same, it reuses it; different, it stops and says which flag
or input differs, unless --force lets it make the output again. Flags that change nothing
(log intervals, evaluation batch sizes) are not part of it. The device is not either: the same
flags on another device give numbers that differ in rounding.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import parallel
from common import (UserError, args_dict, atomic_write, load_model, load_torch, prepare_run_dir,
                    save_checkpoint, save_json)
from data import TaskConfig
from model import unflat

# ----------------------------------------------------------------------------- file names


def policy_path(run_dir: Path, rnd: int) -> Path:
    """pi_ref of round rnd: the SFT model, then each round's actor."""
    return Path(run_dir) / ("sft.pt" if rnd == 1 else f"actor_{rnd - 1}.pt")


def policy_hint(rnd: int) -> str:
    """What to run when pi_ref of round rnd is missing."""
    return ("run train_sft.py first" if rnd == 1 else
            f"run train_actor.py --round {rnd - 1} first")


def actor_path(run_dir: Path, rnd: int, suffix: str = "", as_pi_ref: bool = False) -> Path:
    """Round rnd's actor: actor_R.pt for DAPO (and for a baseline's own rounds, --as-pi-ref),
    actor_R<suffix>.pt for a baseline or a sweep's trial beside it."""
    return Path(run_dir) / f"actor_{rnd}{'' if as_pi_ref else suffix}.pt"


def critic_path(run_dir: Path, rnd: int) -> Path:
    return Path(run_dir) / f"critic_{rnd}.pt"


def rollouts_path(run_dir: Path, rnd: int) -> Path:
    return Path(run_dir) / f"rollouts_{rnd}.pt"


# ----------------------------------------------------------------------------- provenance


def file_hash(path: Path) -> str | None:
    """SHA-256 of a file's content (None if there is no such file)."""
    path = Path(path)
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def made_by(stage: str, args, keys: tuple[str, ...], inputs: dict[str, Path]) -> dict:
    """The fingerprint of what a stage makes now: its name, the values of the flags that
    change its content (keys, attribute names of args) and the content hash of each input
    file, by its name in the run folder."""
    return {"stage": stage, "args": {k: getattr(args, k) for k in keys},
            "inputs": {name: file_hash(p) for name, p in inputs.items()}}


def difference(have, want: dict) -> str | None:
    """None if a recorded fingerprint equals want; else a phrase that says how it differs."""
    if not isinstance(have, dict) or not isinstance(have.get("args"), dict) \
            or not isinstance(have.get("inputs"), dict):
        return "does not record what made it"
    for key, value in want["args"].items():
        if key not in have["args"] or have["args"][key] != value:
            flag = "--" + key.replace("_", "-")
            return f"was made with {flag} {have['args'].get(key, '(unset)')}, not {value}"
    for name, digest in want["inputs"].items():
        if have["inputs"].get(name) != digest:
            return (f"was made from another {name}" if digest else
                    f"was made from a {name} that is not in the folder (or is to be made "
                    "again)")
    return None if have.get("stage") == want["stage"] else f"was made by {have.get('stage')}"


def up_to_date(path: Path, want: dict, force: bool, what: str) -> dict | None:
    """The existing artifact at path (loaded) if it was made by exactly want; None if there
    is none or --force lets it be made again; otherwise one sentence that names the
    difference and what to do."""
    path = Path(path)
    if not path.exists():
        return None
    obj = load_torch(path, what, "pass --force to make it again")
    diff = difference(obj.get("made_by"), want)
    if diff is None:
        return obj
    if force:
        print(f"--force: {path} {diff}; making it again")
        return None
    raise UserError(f"{path} {diff}; pass --force to make it again (the stages after it will "
                    "then ask for --force too), or use a new --run-dir")


def reusable(run_dir: Path, out: Path, stage: str, want: dict, force: bool, what: str,
             **settings) -> dict | None:
    """The stage's results record when out was made by exactly want and the record measured
    out with these settings: the stage has nothing to do. None when it must run; one
    sentence (up_to_date) when out was made otherwise and --force is not given."""
    if up_to_date(out, want, force, what) is not None:
        record = current_record(run_dir, stage, stamp(out, **settings))
        if record is not None:
            print(f"{out} and its results are up to date with these flags: skipped")
            return record
    return None


def check_made_from(obj: dict, path: Path, inputs: list[Path], fix: str) -> None:
    """Stop with one sentence unless the artifact obj (read from path) records exactly the
    current content of each input file."""
    have = (obj.get("made_by") or {}).get("inputs", {})
    for p in inputs:
        if have.get(p.name) != file_hash(p):
            raise UserError(f"{path} was not made from the {p.name} now in {p.parent}; {fix}")


def stamp(path: Path, **settings) -> dict:
    """What a results record was made from: the checkpoint's name and content hash, and the
    settings of the measurement (for example eval_n)."""
    return {"file": Path(path).name, "sha256": file_hash(path), **settings}


def current_record(run_dir: Path, stage: str, want: dict) -> dict | None:
    """results.json[stage] if it was made from exactly the stamp want, else None."""
    record = read_results(run_dir).get(stage)
    return record if isinstance(record, dict) and record.get("made_by") == want else None


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


def load_policy_file(path: Path, device) -> tuple:
    """(a saved policy, sft.pt or actor_R.pt, in eval mode, its task, its data seed)."""
    model, ckpt = load_model(path, device, "policy checkpoint",
                             "give the path of an sft.pt or actor_R.pt", value_head=False)
    return (model.eval(), *task_of(ckpt, path))


def load_pi_ref(run_dir: Path, rnd: int, device) -> tuple:
    """(pi_ref of round rnd in eval mode, the task it was trained on, its data seed)."""
    model, ckpt = load_policy(run_dir, rnd, device)
    return (model.eval(), *task_of(ckpt, policy_path(run_dir, rnd)))


def load_critic(run_dir: Path, rnd: int, device):
    """The critic of round rnd, with its checkpoint dict."""
    return load_model(critic_path(run_dir, rnd), device, "critic checkpoint",
                      f"run train_critic.py --round {rnd} first", value_head=True)


def critic_inputs(run_dir: Path, rnd: int) -> list[Path]:
    """What round rnd's critic is made from: the rollouts and the network it starts from
    (pi_ref in round 1, the previous critic after)."""
    start = policy_path(run_dir, 1) if rnd == 1 else critic_path(run_dir, rnd - 1)
    return [rollouts_path(run_dir, rnd), start]


def starting_critic(run_dir: Path, rnd: int, head: str, device):
    """The network round rnd's critic is trained from: in round 1 pi_ref with a fresh value
    head (BEYOND THE PAPER, head "surprisal": the head also reads the LM's surprisal), later
    the previous round's critic, head and all (Alg. 1)."""
    if rnd == 1:
        return load_model(policy_path(run_dir, 1), device, "reference policy checkpoint",
                          policy_hint(1), value_head=True, value_surprisal=head == "surprisal")[0]
    critic, _ = load_critic(run_dir, rnd - 1, device)
    have = "surprisal" if critic.config.value_surprisal else "plain"
    if have != head:  # each round refits the last critic, head and all
        raise UserError(f"critic_{rnd - 1}.pt has the {have} head; pass --head {have}, or "
                        f"start again from round 1 with --head {head}")
    return critic


def saved_critic(run_dir: Path, rnd: int, heldout_frac: float, device):
    """Round rnd's saved critic, to report on again: it must come from the rollouts and the
    network now in the folder, and have held out the same share of problems."""
    if not (rollouts_path(run_dir, rnd).exists() and critic_path(run_dir, rnd).exists()):
        raise UserError(f"--report-only needs rollouts_{rnd}.pt and critic_{rnd}.pt in "
                        f"{run_dir}; run train_critic.py --round {rnd} first")
    critic, ckpt = load_critic(run_dir, rnd, device)
    have = (ckpt.get("made_by") or {}).get("inputs")
    if have != {p.name: file_hash(p) for p in critic_inputs(run_dir, rnd)}:
        raise UserError(f"critic_{rnd}.pt was not made from the rollouts_{rnd}.pt and network "
                        f"now in {run_dir}, so it cannot be reported on them; train it again "
                        f"with train_critic.py --round {rnd} --force")
    trained = ckpt.get("args", {}).get("heldout_frac", heldout_frac)
    if trained != heldout_frac:  # another split would report on training states
        raise UserError(f"critic_{rnd}.pt held out --heldout-frac {trained}; pass the same "
                        "value to --report-only")
    return critic


# ----------------------------------------------------------------------------- rollouts


ROLLOUT_KEYS = ("states", "state_problem", "continuations", "rewards", "mc", "problems",
                "made_by")


def check_rollouts(data: dict, path: Path, hint: str) -> None:
    """Stop with one sentence if a rollout file's parts do not fit together: S states, an
    (S, K) reward table, S*K continuations, MC values and problems for every state."""
    try:
        S = len(data["states"]["offsets"]) - 1
        rewards, n_conts = data["rewards"], len(data["continuations"]["offsets"]) - 1
        sp = data["state_problem"]
        ok = (rewards.dim() == 2 and rewards.shape[0] == S and n_conts == S * rewards.shape[1]
              and data["mc"].shape == (S,) and sp.shape == (S,)
              and (S == 0 or 0 <= int(sp.min()) <= int(sp.max()) < len(data["problems"]))
              and all(0 <= i < S for ids in unflat(data["resp_states"]) for i in ids))
    except (KeyError, TypeError, AttributeError, IndexError, RuntimeError):
        ok = False
    if not ok:
        raise UserError(f"{path} is inconsistent (its states, rewards and continuations do not "
                        f"fit together): it is damaged; {hint}")


def load_rollouts(run_dir: Path, rnd: int) -> dict:
    """rollouts_R.pt, checked for its keys and for consistency.

    It holds: states (flat), state_problem (S,), continuations (flat, K per state, state i's at
    i*K .. i*K+K-1), rewards (S, K), mc (S,), problems (prompts), the kept responses
    (responses, resp_states, resp_line_ok, resp_reward), gen_accuracy, generated_tokens,
    completion_tokens and made_by (the flags and pi_ref that made it)."""
    path = rollouts_path(run_dir, rnd)
    return checked_rollouts(load_torch(path, "rollout file", f"run train_critic.py --round "
                                       f"{rnd}"), path, rnd)


def checked_rollouts(data: dict, path: Path, rnd: int) -> dict:
    """data, read from the rollout file at path, once its keys and consistency are checked."""
    hint = f"make it again with train_critic.py --round {rnd} --force"
    if any(k not in data for k in ROLLOUT_KEYS + ("resp_states",)):
        raise UserError(f"{path} is truncated or corrupt (keys missing); {hint}")
    check_rollouts(data, path, hint)
    return data


# ----------------------------------------------------------------------------- a stage's run


@dataclass
class Stage:
    """One run of a stage: opened by open_stage, finished by finish.

        stage = open_stage(args, "dapo_1", actor_path(Path(args.run_dir), 1))
        done = stage.reusable("actor checkpoint", MADE_BY, [pi_ref, rollouts, critic])
        if done is not None: return done          # the output and its record are current
        ...                                       # the method's steps
        stage.save(actor, step, cfg, data_seed)   # the checkpoint, with its fingerprint
        return stage.finish(record)               # the record, into results.json
    """
    args: object
    name: str
    out: Path
    run_dir: Path
    device: torch.device
    t_start: float = field(default_factory=time.time)
    flags: tuple[str, ...] = ()  # the flags that change what out holds
    inputs: list[Path] = field(default_factory=list)  # the files it is made from

    def reusable(self, what: str, flags: tuple[str, ...], inputs: list[Path],
                 remade: tuple[Path, ...] = (), **settings) -> dict | None:
        """Fingerprint the output (the flags that change it and its input files' content;
        remade: inputs this run makes again, which nothing made before can match); its
        results record if the output and the record are current (nothing to do), None if the
        stage must run; one sentence if the output was made otherwise, without --force."""
        self.flags, self.inputs = flags, list(inputs)
        want = made_by(self.name, self.args, flags, {p.name: p for p in inputs})
        want["inputs"].update({p.name: None for p in remade})
        return reusable(self.run_dir, self.out, self.name, want, self.args.force, what,
                        **settings)

    def save(self, model, step: int, cfg: TaskConfig, data_seed: int, **extra) -> None:
        """The stage's checkpoint (atomically): the model, its task, its flags and the
        fingerprint of what made it, its inputs hashed as they are now."""
        want = made_by(self.name, self.args, self.flags, {p.name: p for p in self.inputs})
        save_checkpoint(self.out, model, step=step, stage=self.name, args=args_dict(self.args),
                        made_by=want, **task_record(cfg, data_seed), **extra)

    def previous_record(self, name: str | None = None) -> dict:
        """What results.json holds for this stage (or the stage name) from an earlier run ({}
        if nothing)."""
        return read_results(self.run_dir).get(name or self.name, {})

    def current_record(self, **settings) -> dict | None:
        """This stage's results record if it measured the output as it is now, else None."""
        return current_record(self.run_dir, self.name, stamp(self.out, **settings))

    def finish(self, record: dict, **settings) -> dict:
        """The stage's record, stamped with the output it measured (and the settings of the
        measurement), into results.json."""
        record["made_by"] = stamp(self.out, **settings)
        return finish_stage(self.run_dir, self.name, record, self.t_start)


def open_stage(args, name: str, out: Path, must_exist: bool = True) -> Stage:
    """The start of a stage: its device (this rank's under torchrun), the run folder (writable;
    it must exist unless the stage reads no earlier stage's files), results.json (a malformed
    one stops here, not after training) and the clock of its wall time."""
    device = parallel.setup(args.device)
    run_dir = prepare_run_dir(args.run_dir, must_exist=must_exist)
    read_results(run_dir)
    return Stage(args, name, Path(out), run_dir, device)


def round_inputs(run_dir: Path, rnd: int, critic: bool) -> tuple[dict, list[Path]]:
    """Round rnd's rollouts, checked to come from pi_ref's current file, and the input files of
    a stage that trains on them: pi_ref, the rollouts and (critic=True) the critic, checked to
    come from those rollouts."""
    pi_ref, rolls = policy_path(run_dir, rnd), rollouts_path(run_dir, rnd)
    fix = f"make it again with train_critic.py --round {rnd} --force"
    data = load_rollouts(run_dir, rnd)
    check_made_from(data, rolls, [pi_ref], fix)
    files = [pi_ref, rolls]
    if critic:
        crit = critic_path(run_dir, rnd)
        ckpt = load_torch(crit, "critic checkpoint", f"run train_critic.py --round {rnd} first")
        check_made_from(ckpt, crit, [rolls], fix)
        files.append(crit)
    return data, files


# ----------------------------------------------------------------------------- results.json


def read_json_dict(path: Path, what: str) -> dict:
    """A JSON file that must hold an object, or one sentence saying what is wrong with it."""
    try:
        obj = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is corrupt; move it away and run the stages again") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds {type(obj).__name__}, not {what}: it was not written "
                        "by these scripts; move it away and run the stages again")
    return obj


def read_results(run_dir: Path) -> dict:
    """run_dir/results.json as {stage: record} ({} if there is none yet). Stages call it before
    their expensive work too, so that a malformed file stops them at once, not after."""
    path = Path(run_dir) / "results.json"
    if not path.exists():
        return {}
    results = read_json_dict(path, "one record per stage")
    bad = [k for k, v in results.items() if not isinstance(v, dict)]
    if bad:
        raise UserError(f"{path} holds a {type(results[bad[0]]).__name__} under {bad[0]!r}, "
                        "not a record; move it away and run the stages again")
    return results


def read_times(run_dir: Path) -> dict:
    """run_dir/pipeline_times.json: {stage: wall seconds} ({} if there is none)."""
    path = Path(run_dir) / "pipeline_times.json"
    if not path.exists():
        return {}
    times = read_json_dict(path, "seconds per stage")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
               for v in times.values()):
        raise UserError(f"{path} holds something other than seconds per stage; move it away "
                        "and run the pipeline again")
    return times


def copy_file(src: Path, dst: Path) -> None:
    """Copy src to dst atomically (common.atomic_write: under torchrun, rank 0's copy)."""
    atomic_write(dst, lambda tmp: shutil.copy2(src, tmp))


def share_sft(src: Path, dst: Path) -> None:
    """Give run folder dst the SFT stage of src (sft.pt, sft.json and its results record), so
    that train_sft.py there finds them up to date and trains nothing: runs that differ only
    after SFT (a sweep over K, the golden runs) share one pi_ref."""
    src, dst = Path(src), Path(dst)
    if not (src / "sft.pt").is_file() or "sft" not in read_results(src):
        raise UserError(f"{src} has no finished SFT stage to share; run train_sft.py "
                        f"--run-dir {src} first")
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("sft.pt", "sft.json"):
        if not (dst / name).exists():
            copy_file(src / name, dst / name)
    if "sft" not in read_results(dst):
        update_results(dst, "sft", read_results(src)["sft"])


def share_round1(src: Path, dst: Path) -> None:
    """Give run folder dst the SFT stage and round 1's rollouts of src, with a record of what
    the rollouts cost (results.json["rollouts_1"], from src's critic_1): a baseline's own
    rounds start from the very samples DAPO's round 1 is made from."""
    share_sft(src, dst)
    src, dst = Path(src), Path(dst)
    crit = read_results(src).get("critic_1", {})
    if not rollouts_path(src, 1).is_file() or "generated_tokens" not in crit:
        raise UserError(f"{src} has no finished round-1 rollouts to share; run "
                        f"train_critic.py --run-dir {src} first")
    if not rollouts_path(dst, 1).exists():
        copy_file(rollouts_path(src, 1), rollouts_path(dst, 1))
    if "rollouts_1" not in read_results(dst):
        update_results(dst, "rollouts_1", {
            "generated_tokens": crit["generated_tokens"], "gen_accuracy": crit["gen_accuracy"],
            "states": crit["states"], "rollout_time_s": crit["rollout_time_s"],
            "made_by": stamp(rollouts_path(dst, 1))})


def machine() -> dict:
    """What ran a stage, beside its flags and inputs: the same code and seed give the same
    numbers bit for bit only on the same torch build, instruction set (its kernels round
    differently with AVX2 and AVX-512), CPU (two that both report AVX-512 have trained two
    pi_refs from one seed; family and model numbers may tell them apart) and thread count, so
    every record says which."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu": cpu_model(), "threads": torch.get_num_threads(),
            "processes": parallel.world(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_initialized() else None}


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's name with its family and model numbers, which tell CPUs apart where the name
    does not ("AMD EPYC, family 26 model 2"); the processor's or architecture's name where
    there is no such file or it says none of these (off Linux, on ARM)."""
    try:
        first = cpuinfo.read_text().split("\n\n")[0]
    except OSError:
        first = ""
    info = {k.strip(): v.strip() for k, v in
            (line.split(":", 1) for line in first.splitlines() if ":" in line)}
    if "model name" not in info:
        return platform.processor() or platform.machine()
    return (f"{info['model name']}, family {info.get('cpu family', '?')} "
            f"model {info.get('model', '?')}")


def finish_stage(run_dir: Path, stage: str, record: dict, t_start: float) -> dict:
    """The end of every stage: its record, with its wall seconds since t_start unless it has
    them already and the machine that ran it, merged into results.json; says so and returns
    the record."""
    record.setdefault("wall_time_s", time.time() - t_start)
    record.setdefault("machine", machine())
    update_results(run_dir, stage, record)
    print(f"{stage} done in {time.time() - t_start:.0f} s; results.json['{stage}'] written")
    return record


def update_results(run_dir: Path, stage: str, record: dict) -> dict:
    """Merge {stage: record} into run_dir/results.json (atomically) and return the whole."""
    path = Path(run_dir) / "results.json"
    results = read_results(run_dir)
    results[stage] = record
    save_json(path, results)
    return results
