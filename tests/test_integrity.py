"""A run folder that cannot lie: every artifact records what made it, a stage whose existing
output was made otherwise stops with one sentence (or, with --force, makes it again), and the
bad inputs a hostile but fair user tries get one sentence, no traceback, no half-written file.

In the spirit of a fuzz list: each case is one thing that once went wrong or could; add the
cases you find."""

import json
import math
import os
import shutil
import stat

import pytest
import torch

import pipeline
import train_actor
import train_critic
import training
import train_sft
from artifacts import check_rollouts, file_hash, load_rollouts
from common import UserError, build_model, finite_json, prepare_run_dir, save_json, save_torch
from model import GPTConfig
from report import true_v_estimates
from tiny import ACTOR, CRITIC, SFT, run


@pytest.fixture(scope="module")
def round1(tmp_path_factory):
    """A finished tiny round 1: sft.pt, rollouts_1.pt, critic_1.pt, actor_1.pt."""
    d = tmp_path_factory.mktemp("round1")
    train_sft.main(["--run-dir", str(d)] + SFT)
    train_critic.main(["--run-dir", str(d)] + CRITIC)
    train_actor.main(["--run-dir", str(d)] + ACTOR)
    return d


def copy(src, tmp_path, name="run"):
    d = tmp_path / name
    shutil.copytree(src, d)
    return d


def files(d):
    """The run folder's files, its .lock (common.hold) left out."""
    return sorted(p.name for p in d.iterdir() if p.name != ".lock")


# ----------------------------------------------------------------------------- provenance


def test_every_artifact_records_what_made_it(round1):
    """Guards against an artifact that cannot say what made it: checkpoints and rollouts
    record their flags and the content hash of their inputs, results records the hash of
    the checkpoint they measured."""
    sft, roll, critic, actor = (torch.load(round1 / f, weights_only=True) for f in
                                ("sft.pt", "rollouts_1.pt", "critic_1.pt", "actor_1.pt"))
    assert sft["made_by"]["args"]["seed"] == 0 and sft["made_by"]["inputs"] == {}
    assert roll["made_by"]["inputs"] == {"sft.pt": file_hash(round1 / "sft.pt")}
    assert roll["made_by"]["args"]["K"] == 3 and roll["made_by"]["args"]["sample_batch"] == 512
    assert critic["made_by"]["inputs"]["rollouts_1.pt"] == file_hash(round1 / "rollouts_1.pt")
    assert actor["made_by"]["inputs"]["critic_1.pt"] == file_hash(round1 / "critic_1.pt")
    res = json.loads((round1 / "results.json").read_text())
    assert res["sft"]["made_by"] == {"file": "sft.pt", "sha256": file_hash(round1 / "sft.pt"),
                                     "eval_n": 12}
    assert res["dapo_1"]["made_by"]["sha256"] == file_hash(round1 / "actor_1.pt")
    assert res["critic_1"]["made_by"]["sha256"] == file_hash(round1 / "critic_1.pt")


def test_each_stage_reuses_an_output_made_by_the_same_flags(round1, tmp_path, capsys):
    """Guards against redoing (or silently redoing differently) finished work: run again with
    the same flags, every stage says it is up to date and changes no file."""
    d = copy(round1, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir() if p.name != ".lock"}
    train_sft.main(["--run-dir", str(d)] + SFT)
    train_critic.main(["--run-dir", str(d)] + CRITIC)
    train_actor.main(["--run-dir", str(d)] + ACTOR)
    assert capsys.readouterr().out.count("up to date with these flags: skipped") == 3
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir() if p.name != ".lock"} == before


def test_the_same_content_saves_to_the_same_bytes(tmp_path):
    """Guards against provenance that tells identical files apart: torch.save given a path
    names the archive's inner folder after the (random) temporary file, so equal content had
    unequal hashes and every later stage refused a same-seed re-run."""
    obj = {"w": torch.arange(6.0), "made_by": {"stage": "sft"}}
    save_torch(tmp_path / "a.pt", obj)
    save_torch(tmp_path / "b.pt", obj)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert file_hash(tmp_path / "a.pt") == file_hash(tmp_path / "b.pt")
    save_torch(tmp_path / "c.pt", {**obj, "w": torch.arange(6.0) + 1})
    assert file_hash(tmp_path / "c.pt") != file_hash(tmp_path / "a.pt")


def test_sft_made_again_the_same_way_keeps_the_later_stages(tmp_path, capsys):
    """Guards against a same-seed re-run that breaks the chain: with results.json moved away
    (the advice a malformed one gets), train_sft.py trains sft.pt again, bit for bit the
    same, and the later stages still take it as their input."""
    d = tmp_path / "run"  # a folder of its own: the checkpoints record their --run-dir
    train_sft.main(["--run-dir", str(d)] + SFT)
    train_critic.main(["--run-dir", str(d)] + CRITIC)
    (d / "results.json").rename(tmp_path / "results.old.json")
    before = file_hash(d / "sft.pt")
    train_sft.main(["--run-dir", str(d)] + SFT)
    assert file_hash(d / "sft.pt") == before
    train_critic.main(["--run-dir", str(d)] + CRITIC)  # reuses rollouts, makes its record
    assert "made from another sft.pt" not in capsys.readouterr().out
    assert train_actor.main(["--run-dir", str(d)] + ACTOR)["made_by"]["sha256"] == \
        file_hash(d / "actor_1.pt")


def test_retrained_sft_makes_every_later_stage_stop(round1, tmp_path, capsys):
    """Guards against stale inputs reused without a word: sft.pt retrained with another seed
    but the same step count (the old check compared only the name and the step count) in a
    folder that still holds round-1 files; each later stage names the stale file."""
    d = copy(round1, tmp_path)
    code, err = run(train_sft.main, ["--run-dir", str(d), "--seed", "1"] + SFT, capsys)
    assert code == 2 and "sft.pt was made with --seed 0, not 1" in err and "--force" in err
    train_sft.main(["--run-dir", str(d), "--seed", "1", "--force"] + SFT)
    # each stage has its own --seed; with the same ones, only the input file differs
    code, err = run(train_critic.main, ["--run-dir", str(d)] + CRITIC, capsys)
    assert code == 2 and "rollouts_1.pt was made from another sft.pt" in err
    code, err = run(train_actor.main, ["--run-dir", str(d)] + ACTOR, capsys)
    assert code == 2 and "rollouts_1.pt was not made from the sft.pt now in" in err
    train_critic.main(["--run-dir", str(d), "--force"] + CRITIC)
    roll = torch.load(d / "rollouts_1.pt", weights_only=True)
    assert roll["made_by"]["inputs"]["sft.pt"] == file_hash(d / "sft.pt")
    code, err = run(train_actor.main, ["--run-dir", str(d)] + ACTOR, capsys)
    assert code == 2 and "actor_1.pt was made from another sft.pt" in err
    rec = train_actor.main(["--run-dir", str(d), "--force"] + ACTOR)
    assert rec["made_by"]["sha256"] == file_hash(d / "actor_1.pt")


def test_retrained_critic_makes_the_actor_stop(round1, tmp_path, capsys):
    """Guards against an actor trained on an old critic: critic_1.pt refit with another
    learning rate; the existing actor_1.pt no longer matches, and says so."""
    d = copy(round1, tmp_path)
    code, err = run(train_critic.main, ["--run-dir", str(d), "--lr", "3e-4"] + CRITIC, capsys)
    assert code == 2 and "critic_1.pt was made with --lr 0.001, not 0.0003" in err
    train_critic.main(["--run-dir", str(d), "--lr", "3e-4", "--force"] + CRITIC)
    assert "reusing" in capsys.readouterr().out  # the rollouts still match: kept
    code, err = run(train_actor.main, ["--run-dir", str(d)] + ACTOR, capsys)
    assert code == 2 and "actor_1.pt was made from another critic_1.pt" in err


def test_a_critic_whose_rollouts_are_gone_stops_before_rolling_out(round1, tmp_path, capsys):
    """Guards against expensive work before a check that must fail: critic_1.pt exists but the
    rollouts it was made from do not; the stage stops at once, making nothing."""
    d = copy(round1, tmp_path)
    (d / "rollouts_1.pt").unlink()
    code, err = run(train_critic.main, ["--run-dir", str(d)] + CRITIC, capsys)
    assert code == 2 and "critic_1.pt was made from a rollouts_1.pt that is not in the" in err
    assert not (d / "rollouts_1.pt").exists() and not (d / "rollouts_1.parts").exists()


def test_force_with_another_rollout_flag_remakes_rollouts_and_critic(round1, tmp_path, capsys):
    """Guards against --force keeping a critic whose rollouts it replaces: with another --K,
    the rollouts are made again and so is the critic, from them (its own flags and its
    starting network did not change, so only the rollouts' change can say it is stale)."""
    d = copy(round1, tmp_path)
    code, err = run(train_critic.main, ["--run-dir", str(d)] + CRITIC + ["--K", "2"], capsys)
    assert code == 2 and "rollouts_1.pt was made with --K 3, not 2" in err
    train_critic.main(["--run-dir", str(d), "--force"] + CRITIC + ["--K", "2"])
    assert "skipped" not in capsys.readouterr().out
    roll = torch.load(d / "rollouts_1.pt", weights_only=True)
    critic = torch.load(d / "critic_1.pt", weights_only=True)
    assert roll["rewards"].shape[1] == 2
    assert critic["made_by"]["inputs"]["rollouts_1.pt"] == file_hash(d / "rollouts_1.pt")


def test_pipeline_with_another_seed_on_a_finished_folder_stops(round1, tmp_path, capsys):
    """Guards against `pipeline.py --seed 1` on a finished seed-0 folder skipping every stage
    and printing seed-0 numbers under a "seed 1" heading."""
    d = copy(round1, tmp_path)
    argv = ["--run-dir", str(d), "--rounds", "1", "--sft-args", " ".join(SFT),
            "--critic-args", " ".join(CRITIC), "--actor-args", " ".join(ACTOR)]
    code, err = run(pipeline.main, argv + ["--seed", "1"], capsys)
    assert code == 2 and "sft.pt was made with --seed 0, not 1" in err
    pipeline.main(argv + ["--seed", "0"])
    assert "seed 0" in capsys.readouterr().out


def kill_after(monkeypatch, n_chunks: int):
    """Make train_critic's completion die (as at Ctrl-C) when it starts chunk n_chunks + 1."""
    real, calls = training.complete_chunk, {"n": 0}

    def dying(*args, **kw):
        calls["n"] += 1
        if calls["n"] > n_chunks:
            raise KeyboardInterrupt
        return real(*args, **kw)
    monkeypatch.setattr(training, "complete_chunk", dying)
    return real


def test_resume_with_another_sample_batch_stops(round1, tmp_path, monkeypatch, capsys):
    """Guards against a resume that mixes two settings: --sample-batch changes the random
    draws, so completion chunks made with another value stop the resume with one sentence;
    --force starts again and gives exactly a fresh run at the new value."""
    d, fresh = copy(round1, tmp_path, "d"), copy(round1, tmp_path, "fresh")
    for f in (d, fresh):
        for name in ("rollouts_1.pt", "critic_1.pt", "actor_1.pt"):
            (f / name).unlink()
    real = kill_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_critic.main(["--run-dir", str(d)] + CRITIC)
    monkeypatch.setattr(training, "complete_chunk", real)
    small = CRITIC + ["--sample-batch", "7"]
    code, err = run(train_critic.main, ["--run-dir", str(d)] + small, capsys)
    assert code == 2 and "was made with --sample-batch 512, not 7" in err
    assert len(list((d / "rollouts_1.parts").iterdir())) == 3  # nothing thrown away
    train_critic.main(["--run-dir", str(d), "--force"] + small)
    train_critic.main(["--run-dir", str(fresh)] + small)
    a, b = (torch.load(f / "rollouts_1.pt", weights_only=True) for f in (d, fresh))
    assert torch.equal(a["rewards"], b["rewards"])
    assert torch.equal(a["continuations"]["tokens"], b["continuations"]["tokens"])


@pytest.mark.parametrize("flag, value", [("--seed", "3"), ("--K", "2"), ("--chunk", "4"),
                                         ("--problems", "10"), ("--n1", "3")])
def test_resume_after_each_flag_change_stops(round1, tmp_path, monkeypatch, capsys, flag,
                                             value):
    """Guards against resuming an interrupted completion with any flag that changes the
    rollouts: each one is named."""
    d = copy(round1, tmp_path)
    for name in ("rollouts_1.pt", "critic_1.pt", "actor_1.pt"):
        (d / name).unlink()
    kill_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train_critic.main(["--run-dir", str(d)] + CRITIC)
    code, err = run(train_critic.main, ["--run-dir", str(d)] + CRITIC + [flag, value], capsys)
    assert code == 2 and f"was made with {flag} " in err, err


# ----------------------------------------------------------------------------- flags


@pytest.mark.parametrize("main, argv, phrase", [
    (train_sft.main, ["--lr", "inf"], "--lr must be a finite number"),
    (train_sft.main, ["--lr", "nan"], "--lr must be a finite number"),
    (train_sft.main, ["--weight-decay", "nan"], "--weight-decay must be a finite number"),
    (train_sft.main, ["--decay-frac", "nan"], "--decay-frac must be in [0, 1]"),
    (train_sft.main, ["--min-steps", "0"], "--min-steps must be positive"),
    (train_sft.main, ["--max-steps", "0"], "--max-steps must be positive"),
    (train_sft.main, ["--ood-steps", "0"], "--ood-steps must be positive"),
    (train_sft.main, ["--min-steps", "4", "--max-steps", "3"], "cannot exceed --max-steps"),
    (train_sft.main, ["--max-steps", "18"], "use at most 17"),
    (train_sft.main, ["--ood-steps", "40"], "more than the model's 257"),
    (train_sft.main, ["--run-dir", ""], "--run-dir is empty"),
    (train_critic.main, ["--lm-coef", "nan"], "--lm-coef must be a finite number"),
    (train_critic.main, ["--lr", "inf"], "--lr must be a finite number"),
    (train_critic.main, ["--heldout-frac", "nan"], "--heldout-frac must be in (0, 1)"),
    (train_critic.main, ["--problems", "1"], "leaves none to train the critic on"),
    (train_actor.main, ["--beta", "nan"], "--beta must be a finite number"),
    (train_actor.main, ["--lr=-inf"], "--lr must be a finite number"),
    (train_actor.main, ["--adv-threshold", "nan"], "--adv-threshold must be a finite number"),
])
def test_bad_numbers_get_one_sentence_and_write_nothing(tmp_path, capsys, main, argv, phrase):
    """Guards against NaN and inf passing `x <= 0` checks (they saved all-NaN checkpoints),
    a zero silently becoming the default (--min-steps 0 trained on 3), problems longer than
    the model's block (an IndexError in the rotary table) and an empty --run-dir (the
    repository root)."""
    d = tmp_path / "r"
    d.mkdir()
    base = {train_sft.main: SFT, train_critic.main: CRITIC, train_actor.main: ACTOR}[main]
    code, err = run(main, ["--run-dir", str(d)] + base + argv, capsys)
    assert code == 2 and phrase in err and len(err.strip().splitlines()) == 1, err
    assert files(d) == []


def test_a_loss_that_becomes_nan_saves_nothing(tmp_path, capsys, monkeypatch):
    """Guards against a diverged run saving an all-NaN checkpoint and exiting 0."""
    real = train_sft.batch

    def poisoned(*args):
        idx, targets, mask = real(*args)
        return idx, targets, mask * float("nan")
    monkeypatch.setattr(train_sft, "batch", poisoned)
    code, err = run(train_sft.main, ["--run-dir", str(tmp_path)] + SFT, capsys)
    assert code == 2 and "the SFT loss became nan" in err and "nothing was saved" in err
    assert not (tmp_path / "sft.pt").exists()


def test_a_model_too_large_to_allocate_is_one_sentence(monkeypatch):
    """Guards against an allocator traceback for a model that does not fit in memory."""
    import common

    def too_big(cfg):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 4398046511104 bytes.")
    monkeypatch.setattr(common, "GPT", too_big)
    with pytest.raises(UserError, match="does not fit in the memory of cpu"):
        build_model(GPTConfig(n_embd=1 << 19, n_head=8), "cpu")


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("content", ["[]", "null", '{"sft": 3}', '"results"'])
def test_results_json_of_the_wrong_shape_stops_before_training(round1, tmp_path, capsys,
                                                               content):
    """Guards against tracebacks after the stage's checkpoint was written (its results were
    lost): a results.json that is valid JSON of the wrong shape stops every stage at once."""
    d = copy(round1, tmp_path)
    (d / "results.json").write_text(content)
    (d / "sft.pt").unlink()
    for main, argv in ((train_sft.main, SFT), (train_critic.main, CRITIC),
                       (train_actor.main, ACTOR)):
        code, err = run(main, ["--run-dir", str(d)] + argv, capsys)
        assert code == 2 and "results.json" in err and "move it away" in err, err
    assert not (d / "sft.pt").exists() and (d / "results.json").read_text() == content


def test_a_record_missing_a_key_is_measured_again(round1, tmp_path, capsys):
    """Guards against a KeyError when the previous stage's record lacks a field: the actor
    measures pi_ref's accuracy again instead of reading it."""
    d = copy(round1, tmp_path)
    res = json.loads((d / "results.json").read_text())
    del res["sft"]["test"]["greedy_acc"]
    (d / "results.json").write_text(json.dumps(res))
    (d / "actor_1.pt").unlink()
    rec = train_actor.main(["--run-dir", str(d)] + ACTOR)
    assert rec["test"]["greedy_acc_before"] == json.loads(
        (round1 / "results.json").read_text())["sft"]["test"]["greedy_acc"]


@pytest.mark.parametrize("content", ["[]", '{"sft": "fast"}', "{"])
def test_pipeline_times_of_the_wrong_shape(round1, tmp_path, capsys, content):
    d = copy(round1, tmp_path)
    (d / "pipeline_times.json").write_text(content)
    code, err = run(pipeline.main, ["--run-dir", str(d), "--rounds", "1"], capsys)
    assert code == 2 and "pipeline_times.json" in err and len(err.strip().splitlines()) == 1


def test_summarize_over_an_unfinished_run(round1, tmp_path, capsys):
    """Guards against a KeyError traceback from --summarize when a run has not finished."""
    d = copy(round1, tmp_path)
    res = json.loads((d / "results.json").read_text())
    del res["dapo_1"]["val"]
    (d / "results.json").write_text(json.dumps(res))
    code, err = run(pipeline.main, ["--summarize", str(round1), str(d)], capsys)
    assert code == 2 and "has not finished dapo_1" in err
    code, err = run(pipeline.main, ["--summarize", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "no results.json" in err


def test_an_inconsistent_rollout_file_is_one_sentence(round1, tmp_path):
    """Guards against index errors deep inside a stage from a rollout file whose parts do not
    fit together (here: one reward row too few)."""
    d = copy(round1, tmp_path)
    data = torch.load(d / "rollouts_1.pt", weights_only=True)
    check_rollouts(data, d / "rollouts_1.pt", "")  # the real one is consistent
    data["rewards"] = data["rewards"][:-1]
    torch.save(data, d / "rollouts_1.pt")
    with pytest.raises(UserError, match="is inconsistent"):
        load_rollouts(d, 1)


def test_wrong_paths_are_described_not_deleted(round1, tmp_path, capsys):
    """Guards against messages that advise deleting a valid file: a folder or a rollout file
    given where a checkpoint belongs is said to be what it is."""
    code, err = run(train_sft.main, ["--evaluate", str(round1)], capsys)
    assert code == 2 and "is a folder, not a policy checkpoint" in err and "delete" not in err
    code, err = run(train_sft.main, ["--evaluate", str(round1 / "rollouts_1.pt")], capsys)
    assert code == 2 and "is a rollout file, not a policy checkpoint" in err
    assert "delete" not in err


def test_a_policy_that_answers_nothing(round1, tmp_path, capsys):
    """Guards against `torch.cat(): expected a non-empty list of Tensors` when pi_ref stops at
    once on every problem: one sentence instead."""
    d = copy(round1, tmp_path)
    ckpt = torch.load(d / "sft.pt", weights_only=True)
    ckpt["model"]["wte.weight"][256] = 0  # <|endoftext|> ...
    ckpt["model"]["ln_f.weight"][:] = 0  # ... and a final hidden state that always picks it
    ckpt["model"]["ln_f.bias"][:] = ckpt["model"]["wte.weight"][256]
    ckpt["model"]["ln_f.bias"][0] = ckpt["model"]["wte.weight"][256, 0] = 50.0
    torch.save(ckpt, d / "sft.pt")
    code, err = run(train_critic.main, ["--run-dir", str(d), "--force"] + CRITIC, capsys)
    assert code == 2 and "answered every problem with nothing" in err


def test_files_get_normal_permissions_and_orphans_are_removed(round1, tmp_path):
    """Guards against 0600 files (mkstemp's) that a grader or teammate cannot read, and
    against temporary files that a kill during a write left behind forever."""
    old = os.umask(0o022)
    try:
        save_json(tmp_path / "a.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    d = copy(round1, tmp_path)
    (d / ".sft.pt.abc123.tmp").write_bytes(b"half")
    (d / "rollouts_1.parts").mkdir()
    (d / "rollouts_1.parts" / ".complete_00001.pt.x.tmp").write_bytes(b"half")
    (d / "notes.tmp").write_text("mine")  # not ours: kept
    prepare_run_dir(str(d))
    assert not (d / ".sft.pt.abc123.tmp").exists()
    assert list((d / "rollouts_1.parts").iterdir()) == [] and (d / "notes.tmp").exists()


def test_results_are_strict_json_and_negative_estimates_unavailable(tmp_path):
    """Guards against bare NaN in results.json (strict JSON readers, autograders, reject it)
    and a report that prints a negative Brier estimate and "ratio -4.00"."""
    save_json(tmp_path / "r.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": 2})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": None, "b": [1.0, None],
                                                              "c": 2}
    assert finite_json((math.nan, 1)) == [None, 1]
    h = {"brier": 0.01, "brier_const": 0.05, "brier_mc_noise": 0.02}
    assert true_v_estimates(h) is None  # 0.01 - 0.02 < 0: unavailable, not a ratio
    h["brier"] = 0.03
    assert true_v_estimates(h) == pytest.approx((0.01, 0.03))
