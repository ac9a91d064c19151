"""Tests of common.py: atomic files, checkpoints, clear errors, the run folder, results.json."""

import json
import os
from pathlib import Path

import pytest
import torch

from artifacts import update_results
from common import (UserError, atomic_write, friendly_errors, load_model, load_torch,
                    log_metrics, positive, prepare_run_dir, save_checkpoint, save_json)
from model import GPT, GPTConfig, config_dict, state_values

HINT = "run train_sft.py first"
CFG = dict(block_size=32, n_layer=2, n_head=2, n_embd=16)


class NotAllowed:
    """A class weights_only unpickling must refuse (stand-in for arbitrary pickled code)."""

    def __init__(self):
        self.x = 1


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread avoids spin-waiting on a shared 2-core CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(seed=0, value_head=False, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**CFG, "value_head": value_head, **overrides}))


def load(path, **kw):
    return load_model(path, "cpu", "reference policy checkpoint", HINT, **kw)


def files(folder):
    return sorted(f for f in os.listdir(folder) if f != ".lock")


def same_weights(a: GPT, b: GPT) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- checkpoints


def test_save_checkpoint_round_trip(tmp_path):
    """Guards against checkpoints that lose weights, config or metadata, leave temporary files
    behind, or cannot be read with weights_only=True: save, then load_model, gives the same
    weights and outputs, and the JSON config sits beside the .pt file."""
    m = tiny(1)
    path = tmp_path / "sft.pt"
    args = {"lr": 0.001, "seed": 3, "name": "x", "flags": [1, 2]}
    save_checkpoint(path, m, step=7, args=args, stage="sft", other=torch.ones(2))
    assert files(tmp_path) == ["sft.json", "sft.pt"]
    meta = json.loads((tmp_path / "sft.json").read_text())
    assert meta == {"model_config": config_dict(m), "step": 7, "args": args, "stage": "sft"}
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["model_config"] == config_dict(m) and raw["step"] == 7
    loaded, ckpt = load(path)
    assert isinstance(loaded, GPT) and loaded.config == m.config
    assert same_weights(loaded, m)
    assert ckpt["args"] == args and torch.equal(ckpt["other"], torch.ones(2))
    x = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(loaded(x)[0], m(x)[0])
    assert loaded.lm_head.weight is loaded.wte.weight  # tying survives loading


def test_save_checkpoint_overwrite_is_clean(tmp_path):
    """Guards against a second save leaving temporary files or the old weights behind."""
    path = tmp_path / "critic_1.pt"
    save_checkpoint(path, tiny(1), step=1)
    save_checkpoint(path, tiny(2), step=2)
    assert files(tmp_path) == ["critic_1.json", "critic_1.pt"]
    loaded, ckpt = load(path)
    assert ckpt["step"] == 2 and same_weights(loaded, tiny(2))
    assert not same_weights(loaded, tiny(1))


def test_save_checkpoint_unwraps_compiled_module(tmp_path):
    """Guards against saving a torch.compile wrapper, whose keys carry an "_orig_mod." prefix
    that a plain GPT cannot load."""
    m = tiny(3)

    class Wrapper(torch.nn.Module):  # what torch.compile returns, for our purposes
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    save_checkpoint(tmp_path / "a.pt", Wrapper(m))
    raw = torch.load(tmp_path / "a.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in raw["model"])
    assert same_weights(load(tmp_path / "a.pt")[0], m)


def test_load_uses_weights_only(tmp_path):
    """Guards against loading checkpoints with weights_only=False (arbitrary code execution
    from a downloaded file): a pickled custom object is refused with a UserError."""
    m = tiny(0)
    path = tmp_path / "evil.pt"
    torch.save({"model": m.state_dict(), "model_config": config_dict(m), "x": NotAllowed()},
               path)
    with pytest.raises(UserError, match="not a readable"):
        load(path)


def test_missing_checkpoint_message(tmp_path):
    """Guards against a bare FileNotFoundError traceback: the UserError names the missing file
    and says what to do."""
    path = tmp_path / "nope" / "sft.pt"
    with pytest.raises(UserError) as e:
        load(path)
    msg = str(e.value)
    assert str(path) in msg and HINT in msg and "reference policy checkpoint" in msg


def _corrupt_cases(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, tiny(0))
    blob = good.read_bytes()
    g = torch.Generator().manual_seed(0)
    rand = bytes(torch.randint(0, 256, (4096,), generator=g, dtype=torch.uint8).tolist())
    return {
        "random bytes": rand,
        "truncated": blob[: len(blob) // 2],
        "truncated tail": blob[:-100],
        "empty": b"",
        "text": b'{"model": 1}\n',
    }


@pytest.mark.parametrize("case", ["random bytes", "truncated", "truncated tail", "empty", "text"])
def test_corrupt_checkpoint_raises_user_error(tmp_path, case):
    """Guards against an UnpicklingError/RuntimeError traceback on a damaged file: corrupt or
    truncated checkpoints raise UserError naming the file and the fix."""
    data = _corrupt_cases(tmp_path)[case]
    path = tmp_path / "bad.pt"
    path.write_bytes(data)
    with pytest.raises(UserError) as e:
        load(path)
    assert str(path) in str(e.value) and "delete it and run train_sft.py first" in str(e.value)


@pytest.mark.parametrize("obj", [torch.zeros(3), [1, 2, 3], "checkpoint"])
def test_non_dict_checkpoint_raises_user_error(tmp_path, obj):
    """Guards against a readable file that is not a checkpoint dict crashing later with a
    TypeError: load_torch refuses it with a UserError."""
    path = tmp_path / "x.pt"
    torch.save(obj, path)
    with pytest.raises(UserError, match="not a checkpoint"):
        load_torch(path, "checkpoint", HINT)
    with pytest.raises(UserError):
        load(path)


def _mismatch(ckpt, how):
    cfg = ckpt["model_config"]
    if how == "wider":
        cfg["n_embd"] = 32
    elif how == "more layers":
        cfg["n_layer"] = 3
    elif how == "fewer layers":
        cfg["n_layer"] = 1
    elif how == "vocab":
        cfg["vocab_size"] = 300
    elif how == "unknown key":
        cfg["n_experts"] = 4
    elif how == "invalid size":
        cfg["n_head"] = 0
    elif how == "no config":
        del ckpt["model_config"]
    elif how == "no weights":
        del ckpt["model"]
    elif how == "config not a dict":
        ckpt["model_config"] = "gpt"
    return ckpt


@pytest.mark.parametrize("how", ["wider", "more layers", "fewer layers", "vocab", "unknown key",
                                 "invalid size", "no config", "no weights",
                                 "config not a dict"])
def test_mismatched_checkpoint_raises_user_error(tmp_path, how):
    """Guards against size-mismatch / missing-key tracebacks (or a silently half-loaded model)
    when a checkpoint's config does not match its weights."""
    path = tmp_path / "m.pt"
    save_checkpoint(path, tiny(0))
    ckpt = _mismatch(torch.load(path, weights_only=True), how)
    torch.save(ckpt, path)
    with pytest.raises(UserError) as e:
        load(path)
    assert "does not hold a model of this project" in str(e.value) and str(path) in str(e.value)
    assert "delete" not in str(e.value)  # it may be a valid file of another kind


def test_weights_not_a_mapping_raises_user_error(tmp_path):
    """Guards against an AttributeError traceback when a checkpoint's "model" entry is not a
    state dict (e.g. another program's file with a tensor there)."""
    path = tmp_path / "m.pt"
    torch.save({"model": torch.zeros(3), "model_config": dict(CFG)}, path)
    with pytest.raises(UserError):
        load(path)


def test_value_head_added_to_policy_and_dropped_from_critic(tmp_path):
    """Guards against the critic not starting from the policy's weights: value_head=True on a
    policy checkpoint keeps every policy weight and adds a zero head (V = 0.5);
    value_head=False on a critic checkpoint drops the head and still loads."""
    policy = tiny(4)
    save_checkpoint(tmp_path / "sft.pt", policy)
    critic, _ = load(tmp_path / "sft.pt", value_head=True)
    assert critic.config.value_head and critic.value_head is not None
    sd = critic.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in policy.state_dict().items())
    assert torch.count_nonzero(critic.value_head.weight) == 0
    v = state_values(critic, [[1, 2, 3], [4]], pad_id=0)
    torch.testing.assert_close(v, torch.full((2,), 0.5))

    trained = tiny(5, value_head=True)
    torch.nn.init.normal_(trained.value_head.weight, generator=torch.Generator().manual_seed(0))
    save_checkpoint(tmp_path / "critic_1.pt", trained)
    as_critic, _ = load(tmp_path / "critic_1.pt")
    assert same_weights(as_critic, trained)
    as_policy, _ = load(tmp_path / "critic_1.pt", value_head=False)
    assert as_policy.value_head is None and not as_policy.config.value_head
    x = torch.tensor([[5, 6, 7]])
    assert torch.equal(as_policy(x)[0], trained(x)[0])


# ----------------------------------------------------------------------------- run folder


def test_prepare_run_dir_creates_nested(tmp_path):
    """Guards against a run folder that must already exist: nested folders are created, and an
    existing one is accepted, with no probe file left behind."""
    p = prepare_run_dir(str(tmp_path / "a" / "b"))
    assert p == tmp_path / "a" / "b" and p.is_dir() and files(p) == []
    assert prepare_run_dir(str(p)) == p


@pytest.mark.parametrize("sub", ["", "run", "run/deeper"])
def test_prepare_run_dir_unwritable_raises_user_error(tmp_path, sub):
    """Guards against a NotADirectoryError/FileExistsError traceback: a run folder at or under
    a regular file is refused with a UserError that names it and says what to do."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    target = blocker / sub if sub else blocker
    with pytest.raises(UserError) as e:
        prepare_run_dir(str(target))
    assert str(target) in str(e.value) and "--run-dir" in str(e.value)
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("value", [0, -1, -0.5, -100])
def test_positive_rejects_zero_and_negatives(value):
    """Guards against zero or negative sizes reaching a loop (silent no-op or crash)."""
    with pytest.raises(UserError, match="--batch-size must be positive"):
        positive("batch-size", value)


def test_positive_accepts_and_allow_zero():
    """Guards against positive() rejecting valid values or allow_zero not allowing zero."""
    assert positive("steps", 3) == 3 and positive("lr", 1e-4) == 1e-4
    assert positive("warmup", 0, allow_zero=True) == 0
    with pytest.raises(UserError, match="zero or more"):
        positive("warmup", -1, allow_zero=True)


# ----------------------------------------------------------------------------- results, files


def test_update_results_merges_stages(tmp_path):
    """Guards against a stage overwriting another stage's results: records merge by stage,
    existing ones are kept, re-running a stage replaces only its own entry."""
    sft = {"val": {"greedy_acc": 0.41, "n": 500}, "test": {"greedy_acc": 0.4, "n": 500}}
    update_results(tmp_path, "sft", sft)
    out = update_results(tmp_path, "critic_1", {"val_loss": 0.5})
    assert out == {"sft": sft, "critic_1": {"val_loss": 0.5}}
    out = update_results(tmp_path, "sft", {"val": {"greedy_acc": 0.5}})
    assert out == {"sft": {"val": {"greedy_acc": 0.5}}, "critic_1": {"val_loss": 0.5}}
    assert json.loads((tmp_path / "results.json").read_text()) == out
    assert files(tmp_path) == ["results.json"]


def test_update_results_corrupt_file(tmp_path):
    """Guards against a JSONDecodeError traceback (or silently discarding old results) when
    results.json is damaged: UserError, and the damaged file is left for the user to see."""
    (tmp_path / "results.json").write_text('{"sft": {"val": ')
    with pytest.raises(UserError, match="results.json is corrupt"):
        update_results(tmp_path, "dapo_1", {"x": 1})
    assert (tmp_path / "results.json").read_text() == '{"sft": {"val": '


@pytest.mark.parametrize("exc, raised", [
    (RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0: No "
                  "space left on device"), UserError),  # what torch.save raises on a full disk
    (OSError(28, "No space left on device"), UserError), (KeyboardInterrupt(), KeyboardInterrupt)])
def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path, exc, raised):
    """Guards against half-written files: if the writer raises (even Ctrl-C) after writing part
    of its output, the old file is untouched and no temporary file remains; a failed write
    (a full disk) is one sentence saying so, Ctrl-C propagates as it is."""
    path = tmp_path / "results.json"
    path.write_text("old contents")

    def writer(tmp):
        with open(tmp, "w") as f:
            f.write("partial")
        raise exc

    with pytest.raises(raised) as e:
        atomic_write(path, writer)
    if raised is UserError:
        assert "could not write" in str(e.value) and "No space left" in str(e.value)
    assert path.read_text() == "old contents"
    assert files(tmp_path) == ["results.json"]
    with pytest.raises(raised):
        atomic_write(tmp_path / "new.json", writer)
    assert files(tmp_path) == ["results.json"]


def test_atomic_write_replaces(tmp_path):
    """Guards against atomic_write not replacing the target or writing it elsewhere."""
    path = tmp_path / "a.json"
    save_json(path, {"a": 1})
    save_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2} and files(tmp_path) == ["a.json"]


def test_log_metrics_appends_json_lines(tmp_path):
    """Guards against metrics.jsonl being overwritten instead of appended to."""
    log_metrics(tmp_path, {"step": 1, "loss": 2.5})
    log_metrics(tmp_path, {"step": 2, "loss": 2.0})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 2.5), (2, 2.0)]
    assert all(isinstance(r["time"], float) for r in rows)


@pytest.mark.parametrize("exc,code", [(UserError("no checkpoint at x; run a"), 2),
                                      (ValueError("bad --device"), 2), (KeyboardInterrupt(), 130)])
def test_friendly_errors_one_line_and_exit_code(capsys, exc, code):
    """Guards against tracebacks for user mistakes: friendly_errors prints one "error:" line
    (or the interrupt note) to stderr and exits with 2 (130 on Ctrl-C)."""
    with pytest.raises(SystemExit) as e:
        with friendly_errors():
            raise exc
    assert e.value.code == code
    err = capsys.readouterr().err
    if code == 2:
        assert err == f"error: {exc}\n"
    else:
        assert "interrupted" in err and "Traceback" not in err


def test_a_run_folder_another_process_holds_stops_with_one_sentence(tmp_path):
    """Guards against two processes on one run folder (one's clean-up deleting the other's
    live temporary file, a results record lost): the second names the first and stops; the
    folder is free again once the first ends."""
    import subprocess
    import sys
    d = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from common import prepare_run_dir; "
         f"prepare_run_dir({str(d)!r}); print('held', flush=True); sys.stdin.read()"],
        cwd=Path(__file__).resolve().parents[1], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"process {holder.pid} \(.*\) is using run folder"):
            prepare_run_dir(str(d))
    finally:
        holder.communicate("")
    assert prepare_run_dir(str(d)) == d
