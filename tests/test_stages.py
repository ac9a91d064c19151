"""Smoke runs of every script with a tiny budget, resume after an interruption, and the
one-sentence errors on bad input. A tiny model on 1-2 step problems keeps each run to seconds."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import artifacts
import pipeline
import train_actor
import train_critic
import training
from baselines import train_eq12
import train_sft
from tiny import ACTOR, CRITIC, SFT, run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    record = train_sft.main(["--run-dir", str(d)] + SFT)
    return d, record


def test_sft_smoke(sft_dir):
    """Guards against train_sft.py not producing a loadable checkpoint, its config, or the
    documented results.json keys."""
    d, record = sft_dir
    ckpt = torch.load(d / "sft.pt", weights_only=True)
    assert {"model", "model_config", "step", "args"} <= set(ckpt)
    assert json.loads((d / "sft.json").read_text())["model_config"]["n_embd"] == 32
    res = json.loads((d / "results.json").read_text())["sft"]
    for split in ("val", "test", "ood"):
        assert set(res[split]) >= {"greedy_acc", "sampled_acc", "n"}
        assert 0.0 <= res[split]["greedy_acc"] <= 1.0 and res[split]["n"] == 12
    assert record["train_tokens"] > 0
    machine = {k: v for k, v in res["machine"].items() if k != "cuda"}  # set by a GPU test
    assert machine == {"torch": torch.__version__, "processes": 1,
                       "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                       "cpu": artifacts.cpu_model(), "threads": torch.get_num_threads()}
    lines = (d / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[-1])["step"] == 40


def test_cpu_model_reads_name_family_and_model(tmp_path):
    """Guards against a machine record that cannot tell two CPUs of one name apart, or that
    fails where there is no /proc/cpuinfo."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"
                    "flags\t\t: fpu avx512f\n\nprocessor\t: 1\nmodel name\t: other\n")
    assert artifacts.cpu_model(info) == "AMD EPYC, family 26 model 2"
    assert artifacts.cpu_model(tmp_path / "none") != ""


def test_critic_and_actor_smoke(sft_dir, tmp_path, capsys):
    """Guards against stage A or B crashing on real rollouts, or not writing their files and
    the documented results keys (critic_1.heldout.{bce,bce_const,brier,brier_const}, dapo_1)."""
    d = tmp_path / "run"
    shutil.copytree(sft_dir[0], d)
    rec = train_critic.main(["--run-dir", str(d)] + CRITIC)
    assert {"bce", "bce_const", "brier", "brier_const", "calibration", "brier_by_depth",
            "brier_error_aware"} <= set(rec["heldout"])
    data = torch.load(d / "rollouts_1.pt", weights_only=True)
    assert data["rewards"].shape[1] == 3
    assert torch.equal(data["mc"], data["rewards"].mean(1))
    assert not (d / "rollouts_1.parts").exists()
    out = capsys.readouterr().out
    assert "Brier" in out and "calibration" in out and "tokens" in out
    # --report-only reports on the saved critic again: same numbers, no training, no new files
    stamp = (d / "critic_1.pt").stat().st_mtime_ns
    before = json.loads((d / "results.json").read_text())["critic_1"]
    again = train_critic.main(["--run-dir", str(d), "--report-only"] + CRITIC)
    assert (d / "critic_1.pt").stat().st_mtime_ns == stamp
    assert again["heldout"] == before["heldout"]
    assert again["wall_time_s"] == before["wall_time_s"]
    assert "critic step" not in capsys.readouterr().out
    code, err = run(train_critic.main, ["--run-dir", str(d), "--report-only",
                                        "--heldout-frac", "0.5"] + CRITIC, capsys)
    assert code == 2 and "pass the same value" in err
    rec = train_actor.main(["--run-dir", str(d)] + ACTOR)
    assert set(rec) >= {"val", "test", "ood", "filter"}
    assert (d / "actor_1.pt").exists()
    for variant in ("step-mc", "response", "oracle"):  # the baselines and the ablation
        rec = train_eq12.main(["--run-dir", str(d), "--advantage", variant] + ACTOR)
        name = variant.replace("-", "_")
        assert (d / f"actor_1_{name}.pt").exists() and rec["advantage"] == variant
        assert f"dapo_1_{name}" in json.loads((d / "results.json").read_text())
    res = json.loads((d / "results.json").read_text())
    assert {"sft", "critic_1", "dapo_1"} <= set(res)
    # a second round starts from the actor and the previous critic, whose head it keeps: asking
    # for the other head fails at once, before any rollout is made
    assert torch.load(d / "critic_1.pt", weights_only=True)["model_config"]["value_surprisal"]
    code, err = run(train_critic.main, ["--run-dir", str(d), "--round", "2", "--head", "plain"]
                    + CRITIC, capsys)
    assert code == 2 and "has the surprisal head; pass --head surprisal" in err
    assert not list(d.glob("rollouts_2*"))
    train_critic.main(["--run-dir", str(d), "--round", "2"] + CRITIC)
    assert "critic_2" in json.loads((d / "results.json").read_text())


def test_resume_after_interrupted_completion_gives_same_mc(sft_dir, tmp_path, monkeypatch):
    """Guards against resume bugs: a completion killed after two chunks, run again, must end
    with exactly the MC values of an uninterrupted run (same seeds per chunk, no chunk lost or
    done twice)."""
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(sft_dir[0], a)
    shutil.copytree(sft_dir[0], b)
    argv = CRITIC + ["--epochs", "1"]
    train_critic.main(["--run-dir", str(a)] + argv)
    calls = {"n": 0}
    real = training.complete_chunk

    def dying(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if Ctrl-C arrived during the third chunk
        return real(*args, **kw)
    monkeypatch.setattr(training, "complete_chunk", dying)
    with pytest.raises(KeyboardInterrupt):
        train_critic.main(["--run-dir", str(b)] + argv)
    parts = sorted(p.name for p in (b / "rollouts_1.parts").iterdir())
    assert parts == ["complete_00000.pt", "complete_00001.pt", "generate.pt"]
    assert not (b / "rollouts_1.pt").exists()
    monkeypatch.setattr(training, "complete_chunk", real)
    train_critic.main(["--run-dir", str(b)] + argv)
    ra = torch.load(a / "rollouts_1.pt", weights_only=True)
    rb = torch.load(b / "rollouts_1.pt", weights_only=True)
    assert torch.equal(ra["mc"], rb["mc"]) and torch.equal(ra["rewards"], rb["rewards"])
    assert torch.equal(ra["continuations"]["tokens"], rb["continuations"]["tokens"])


def test_pipeline_smoke(tmp_path, capsys):
    """Guards against the one-command pipeline breaking between stages: from nothing to two
    DAPO rounds and a results table."""
    d = tmp_path / "p"
    pipeline.main(["--run-dir", str(d), "--rounds", "2", "--device", "cpu",
                   "--sft-args", " ".join(SFT), "--critic-args", " ".join(CRITIC),
                   "--actor-args", " ".join(ACTOR)])
    out = capsys.readouterr().out
    res = json.loads((d / "results.json").read_text())
    assert {"sft", "critic_1", "dapo_1", "critic_2", "dapo_2"} <= set(res)
    assert "dapo_2" in out and "wall s" in out
    # everything exists, made by these flags: a second invocation skips every stage
    pipeline.main(["--run-dir", str(d), "--rounds", "2", "--device", "cpu",
                   "--sft-args", " ".join(SFT), "--critic-args", " ".join(CRITIC),
                   "--actor-args", " ".join(ACTOR)])
    assert capsys.readouterr().out.count("up to date with these flags: skipped") == 5
    pipeline.main(["--summarize", str(d), str(d)])
    out = capsys.readouterr().out
    assert "2 runs" in out and "± " in out
    rows = [ln.split() for ln in out.splitlines() if ln.startswith("dapo_")]
    # accuracy, change from sft, two-operation lines, then critic diagnostics
    assert [r[0] for r in rows] == ["dapo_1", "dapo_2"] * 4
    assert all(len(r) == 1 + 3 * 3 for r in rows[2:6]), rows[2:6]  # 3 cells "m ± sd"
    # 6 cells "m ± sd"; the rank accuracy is "-" when no (right, wrong) sibling pair exists
    ranked = [res[f"dapo_{r}"]["filter"]["sibling_pairs"] > 0 for r in (1, 2)]
    assert [len(r) for r in rows[6:]] == [1 + 5 * 3 + (3 if k else 1) for k in ranked], rows[6:]
    sft_rows = [ln.split() for ln in out.splitlines() if ln.startswith("sft ")]
    assert len(sft_rows) == 2 and len(sft_rows[1]) == 1 + 3 * 3  # accuracy, two-op lines


def test_sft_evaluate_reproduces_and_writes_nothing(sft_dir, tmp_path, capsys):
    """Guards against --evaluate drifting from the numbers the run recorded (it must use the
    run's task, seed and splits) or writing into the run folder."""
    d, _ = sft_dir
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir() if p.name != ".lock"}
    record = train_sft.main(["--evaluate", str(d / "sft.pt"), "--eval-n", "12", "--device",
                             "cpu", "--run-dir", str(tmp_path / "unused")])
    res = json.loads((d / "results.json").read_text())["sft"]
    for split in ("val", "test", "ood"):
        assert record[split] == res[split]
    assert "two-op lines" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir() if p.name != ".lock"} == before
    assert not (tmp_path / "unused").exists()
    code, err = run(train_sft.main, ["--evaluate", str(tmp_path / "none.pt")], capsys)
    assert code == 2 and "no policy checkpoint at" in err


@pytest.mark.parametrize("argv, phrase", [
    (["--steps", "0"], "--steps must be positive"),
    (["--batch-size", "-3"], "--batch-size must be positive"),
    (["--n-embd", "0"], "--n-embd must be positive"),
    (["--device", "nonsense"], "unknown device"),
    (["--lr", "0"], "--lr must be positive"),
    (["--decay-frac", "1.5"], "--decay-frac must be in [0, 1]"),
    (["--fuse-prob", "-0.2"], "--fuse-prob must be in [0, 1]"),
])
def test_sft_bad_input(tmp_path, capsys, argv, phrase):
    """Guards against tracebacks or half-written files on bad flags."""
    code, err = run(train_sft.main, ["--run-dir", str(tmp_path / "r")] + argv, capsys)
    assert code == 2 and phrase in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "sft.pt").exists()


def test_unwritable_run_dir(tmp_path, capsys):
    """Guards against a traceback when the run folder cannot be created."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run(train_sft.main, ["--run-dir", str(blocker / "sub")] + SFT, capsys)
    assert code == 2 and "writable --run-dir" in err


def test_critic_bad_input(sft_dir, tmp_path, capsys):
    """Guards against unclear failures: missing or corrupt pi_ref, nonsense K/n1/n, a corrupt
    rollout file; each gives one sentence, and nothing is written."""
    empty = tmp_path / "empty"
    code, err = run(train_critic.main, ["--run-dir", str(empty)] + CRITIC, capsys)
    assert code == 2 and "no run folder" in err and not empty.exists()  # nothing created
    empty.mkdir()
    code, err = run(train_critic.main, ["--run-dir", str(empty)] + CRITIC, capsys)
    assert code == 2 and "run train_sft.py first" in err
    fresh = tmp_path / "fresh"
    shutil.copytree(sft_dir[0], fresh)
    code, err = run(train_critic.main, ["--run-dir", str(fresh), "--report-only"] + CRITIC,
                    capsys)
    assert code == 2 and "--report-only needs" in err and not (fresh / "rollouts_1.pt").exists()
    for argv, phrase in [(["--K", "0"], "--K must be positive"),
                         (["--n1", "-1"], "--n1 must be positive"),
                         (["--n", "9", "--n1", "4"], "cannot exceed"),
                         (["--lm-coef", "-1"], "--lm-coef must be zero or more"),
                         (["--surprisal-lr", "0"], "--surprisal-lr must be positive")]:
        code, err = run(train_critic.main, ["--run-dir", str(empty)] + CRITIC + argv, capsys)
        assert code == 2 and phrase in err, err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "sft.pt").write_bytes(b"not a checkpoint")
    code, err = run(train_critic.main, ["--run-dir", str(bad)] + CRITIC, capsys)
    assert code == 2 and "not a readable" in err
    assert sorted(p.name for p in bad.iterdir() if p.name != ".lock") == ["sft.pt"]
    d = tmp_path / "run"
    shutil.copytree(sft_dir[0], d)
    (d / "rollouts_1.pt").write_bytes(b"\x80\x02truncated")
    code, err = run(train_critic.main, ["--run-dir", str(d)] + CRITIC, capsys)
    assert code == 2 and "rollouts_1.pt" in err and "delete it" in err
    assert not (d / "critic_1.pt").exists()


def test_actor_bad_input(sft_dir, tmp_path, capsys):
    """Guards against unclear failures in stage B: beta <= 0, missing critic, rollouts from
    another pi_ref (an incompatible run folder)."""
    d = tmp_path / "run"
    shutil.copytree(sft_dir[0], d)
    code, err = run(train_actor.main, ["--run-dir", str(d), "--beta", "0"] + ACTOR, capsys)
    assert code == 2 and "--beta must be positive" in err
    code, err = run(train_actor.main, ["--run-dir", str(d)] + ACTOR, capsys)
    assert code == 2 and "rollout" in err and "train_critic.py" in err
    train_critic.main(["--run-dir", str(d)] + CRITIC)
    (d / "critic_1.pt").unlink()
    code, err = run(train_actor.main, ["--run-dir", str(d)] + ACTOR, capsys)
    assert code == 2 and "critic" in err
    # rollouts made from another pi_ref: retrain the SFT model with another step count
    train_sft.main(["--run-dir", str(d), "--force"] + SFT[:1] + ["30"] + SFT[2:])
    code, err = run(train_actor.main, ["--run-dir", str(d)] + ACTOR, capsys)
    assert code == 2 and "rollouts_1.pt was not made from the sft.pt now in" in err


def test_script_error_has_no_traceback(tmp_path):
    """Guards against the __main__ path printing a traceback instead of one sentence."""
    r = subprocess.run([sys.executable, "train_actor.py", "--run-dir", str(tmp_path),
                        "--beta", "-1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.startswith("error: --beta")


def test_critic_step_loss_language_model_term_by_hand():
    """Guards against a wrong auxiliary loss: with --lm-coef c the critic's loss is eq. 14-15
    plus c times the mean next-token loss over the response tokens only (after the prompt's
    "\n", padding excluded), computed here from the plain LM forward."""
    from data import EOT_ID, NL_ID
    from model import GPT, GPTConfig
    assert GPTConfig().prompt_end_id == NL_ID  # the surprisal head's prompt boundary
    torch.manual_seed(0)
    critic = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, value_head=True,
                           value_surprisal=True))
    examples = [([65, 66, NL_ID, 49, 50, NL_ID, 51], [(2, 0.5), (5, 1.0)]),
                ([70, NL_ID, 52, 53], [(1, 0.25)])]
    plain, bce0, lm0 = training.critic_step_loss(critic, examples, torch.device("cpu"))
    both, bce, lm = training.critic_step_loss(critic, examples, torch.device("cpu"),
                                                  lm_coef=0.7)
    assert float(plain) == float(bce0) == pytest.approx(float(bce)) and float(lm0) == 0
    nll = []
    for seq, _ in examples:
        logp = torch.log_softmax(critic(torch.tensor([seq]))[0][0], dim=-1)
        start = seq.index(NL_ID) + 1
        nll += [-float(logp[j - 1, seq[j]]) for j in range(start, len(seq))]
    assert EOT_ID not in examples[0][0] + examples[1][0] and len(nll) == 6
    assert float(lm) == pytest.approx(sum(nll) / len(nll), rel=1e-5)
    assert float(both) == pytest.approx(float(plain) + 0.7 * sum(nll) / len(nll), rel=1e-5)


def test_every_checkpoint_records_its_own_configuration(sft_dir, tmp_path):
    """Guards against a checkpoint recording another stage's settings (the actor once saved
    pi_ref's arguments over its own, so its args said lr 3e-3, SFT's, not its own 3e-5): each
    checkpoint stores its own resolved arguments, and the task and data seed explicitly."""
    d = tmp_path / "run"
    shutil.copytree(sft_dir[0], d)
    train_critic.main(["--run-dir", str(d)] + CRITIC)
    train_actor.main(["--run-dir", str(d), "--lr", "2e-5"] + ACTOR)
    sft, critic, actor = (torch.load(d / f, weights_only=True)
                          for f in ("sft.pt", "critic_1.pt", "actor_1.pt"))
    assert sft["args"]["lr"] == 1e-2 and sft["args"]["steps"] == 40
    assert critic["args"]["lr"] == 1e-3 and critic["args"]["K"] == 3
    assert actor["args"]["lr"] == 2e-5 and actor["args"]["beta"] == 0.1
    assert "steps" not in actor["args"] and "K" not in actor["args"]
    task = {"min_steps": 1, "max_steps": 2, "ood_steps": 3, "max_value": 999, "add_max": 99,
            "mul_max": 9, "fuse_prob": 0.75}
    for ckpt, name in ((sft, "sft"), (critic, "critic_1"), (actor, "actor_1")):
        assert ckpt["task"] == task and ckpt["data_seed"] == 0, name
        side = json.loads((d / f"{name}.json").read_text())
        assert side["task"] == task and side["args"] == ckpt["args"], name


def test_paper_flag_is_the_papers_critic_recipe(tmp_path, capsys):
    """Guards against --paper drifting from the paper's critic (a plain linear head, BCE only,
    (s, MC(s)) pairs only) or silently losing to a contradicting flag."""
    paper = train_critic.get_args(["--paper"])
    assert (paper.head, paper.lm_coef, paper.targets) == ("plain", 0.0, "states")
    ours = train_critic.get_args([])
    assert (ours.head, ours.lm_coef, ours.targets) == ("surprisal", 1.0, "continuations")
    mixed = train_critic.get_args(["--head", "plain"])
    assert (mixed.head, mixed.lm_coef, mixed.targets) == ("plain", 1.0, "continuations")
    assert train_critic.get_args(["--paper", "--head", "plain"]).head == "plain"
    code, err = run(train_critic.main, ["--run-dir", str(tmp_path), "--paper", "--lm-coef",
                                        "1"], capsys)
    assert code == 2 and "--paper sets --lm-coef 0.0" in err
    args = pipeline.get_args(["--paper", "--run-dir", str(tmp_path)])
    argvs = {name: argv for name, _, argv in pipeline.stages(args, tmp_path)}
    assert [n for n, a in argvs.items() if "--paper" in a] == ["critic_1", "critic_2"]


def test_gpu_preset_is_one_definition_and_flags_still_win():
    """Guards against the presets drifting apart between scripts: --preset gpu gives every
    script common.PRESETS["gpu"] as defaults, an explicit flag wins, and cpu changes nothing."""
    from experiments import bench
    from common import PRESETS
    gpu = PRESETS["gpu"]
    sft = train_sft.get_args(["--preset", "gpu"])
    assert (sft.n_layer, sft.n_embd, sft.steps, sft.max_steps) == (8, 512, 6000, 8)
    assert train_sft.get_args(["--preset", "gpu", "--steps", "5"]).steps == 5
    assert train_sft.get_args([]).n_layer == 4 and train_sft.get_args([]).steps == 1200
    critic = train_critic.get_args(["--preset", "gpu"])
    assert all(getattr(critic, k) == v for k, v in gpu["critic"].items())
    assert train_actor.get_args(["--preset", "gpu"]).batch_pairs == gpu["actor"]["batch_pairs"]
    b = bench.get_args(["--preset", "gpu"])
    assert (b.n_layer, b.batch, b.train_batch) == (8, 1024, 256)
    args = pipeline.get_args(["--preset", "gpu"])
    assert all(argv[argv.index("--preset") + 1] == "gpu"
               for _, _, argv in pipeline.stages(args, Path("x")))
