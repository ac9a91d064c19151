"""experiments.sweep: the jobs each sweep runs, the tables it builds from results.json records,
and the Figure 2 step credit, by hand."""

import json

import pytest
import torch

import report
from experiments import sweep, sweep_report
import train_critic
import train_sft
from model import flat
from common import UserError
from tiny import CRITIC, SFT


def test_jobs_share_one_run_folder_per_seed_and_start_with_its_pipeline():
    """Guards against a sweep that makes its own SFT model per job (the seed's run folder is
    shared by every sweep), runs a job before the pipeline whose files it needs, or gives an
    offline baseline's second round another method's samples."""
    args = sweep.get_args(["baselines", "--seeds", "0", "1", "--root", "R"])
    jobs = [sweep.command(fn, argv) for fn, argv in sweep.jobs(args)]
    assert len(jobs) == 2 * 16 and jobs[0].startswith("python pipeline.py --run-dir R/seed0 "
                                                      "--seed 0 --rounds 2")
    assert all("R/seed1" in j or "-seed1" in j for j in jobs[16:])
    starts = ["python pipeline.py ", "python -m baselines.train_eq12 ",
              "python -m baselines.train_grpo ", "python -m baselines.train_ppo "]
    assert all(j.startswith(s) for j, s in zip(jobs[:4], starts)), jobs[:4]
    rft = jobs[4:8]
    assert rft[0] == "(share the SFT stage and round-1 rollouts of R/seed0 with R/rft-seed0)"
    assert rft[1].startswith("python -m baselines.train_rft --run-dir R/rft-seed0")
    assert "--as-pi-ref" in rft[1]
    assert rft[2].startswith("python -m baselines.rollouts ") and "R/rft-seed0" in rft[2]
    assert rft[2].endswith("--round 2")
    assert rft[3].endswith("--round 2") and "baselines.train_rft" in rft[3]
    control = sweep.get_args(["baselines", "--seeds", "0", "--fuse-prob", "0", "--root", "R"])
    assert "--run-dir R/fuse0-seed0" in sweep.command(*sweep.jobs(control)[0])
    assert "--sft-args '--fuse-prob 0'" in sweep.command(*sweep.jobs(control)[0])
    assert "R/rft-fuse0-seed0" in sweep.command(*sweep.jobs(control)[4])
    beta = [sweep.command(fn, a) for fn, a in sweep.jobs(sweep.get_args(["beta", "--seeds", "0"]))]
    assert len(beta) == 1 + len(sweep.BETAS) - 1  # the default beta is DAPO's own actor_1
    assert "--beta 0.01 --tag beta0.01" in beta[1]


def split(acc: float) -> dict:
    return {s: {"greedy_acc": acc, "n": 500} for s in ("val", "test", "ood")}


def fake_results(acc: dict) -> dict:
    res = {k: split(a) for k, a in acc.items()}
    res["critic_1"] = {"generated_tokens": 100, "wall_time_s": 10.0, "rollout_time_s": 6.0}
    res["critic_2"] = {"generated_tokens": 120, "wall_time_s": 12.0, "rollout_time_s": 7.0}
    for k in ("dapo_1", "dapo_2", "dapo_1_oracle"):
        res[k]["wall_time_s"] = 2.0
    res["grpo_1"].update(generated_tokens=230, wall_time_s=50.0,
                         curve=[{"tokens": 100, **split(0.5)["val"], "test": 0.5},
                                {"tokens": 230, "val": 0.6, "test": 0.6, "ood": 0.1}])
    return res


def fake_lineage(a1: float, a2: float) -> dict:
    """A baseline's own rounds: round-1 rollouts shared (their cost as rollouts_1), round 2's
    its own (rollouts_2)."""
    res = {"sft": split(0.4), "rft_1": split(a1), "rft_2": split(a2),
           "rollouts_1": {"generated_tokens": 100, "rollout_time_s": 6.0},
           "rollouts_2": {"generated_tokens": 110, "rollout_time_s": 5.0}}
    res["rft_1"]["wall_time_s"], res["rft_2"]["wall_time_s"] = 1.0, 1.5
    return res


def test_method_cost_counts_what_each_method_spent():
    """Guards against an unequal budget hidden in the table: DAPO's round 2 pays for both
    rounds' rollouts and stages, RFT for its rollouts (not a critic) and itself."""
    res = fake_results({"sft": 0.4, "dapo_1": 0.5, "dapo_2": 0.6, "dapo_1_oracle": 0.55,
                        "grpo_1": 0.6})
    assert sweep_report.method_cost(res, "dapo_2") == (220, 10.0 + 2.0 + 12.0 + 2.0)
    assert sweep_report.method_cost(res, "dapo_1") == (100, 12.0)
    assert sweep_report.method_cost(res, "dapo_1_oracle") == (100, 6.0 + 2.0)
    assert sweep_report.method_cost(res, "grpo_1") == (230, 50.0)
    lineage = fake_lineage(0.5, 0.6)
    assert sweep_report.method_cost(lineage, "rft_2") == (210, 6.0 + 1.0 + 5.0 + 1.5)
    assert sweep_report.method_cost(lineage, "rft_1") == (100, 7.0)


def test_baselines_report_means_over_the_seeds_that_finished(tmp_path):
    """Guards against a mean over seeds that silently includes a missing run as 0, a change
    taken against another seed's pi_ref, or a curve that is not the method's own."""
    dirs, rft = [], []
    for i, a in enumerate((0.5, 0.7)):
        d, r = tmp_path / f"seed{i}", tmp_path / f"rft-seed{i}"
        d.mkdir()
        r.mkdir()
        (d / "results.json").write_text(json.dumps(fake_results(
            {"sft": 0.4 - 0.2 * i, "dapo_1": a, "dapo_2": a + 0.1, "dapo_1_oracle": 0.55,
             "grpo_1": 0.6})))
        lineage = fake_lineage(0.55, 0.65)
        if i == 1:
            del lineage["rft_2"]  # a seed whose RFT round 2 has not run yet
        (r / "results.json").write_text(json.dumps(lineage))
        dirs.append(d)
        rft.append(r)
    text = sweep_report.baselines_report(dirs, {"rft": rft}, tmp_path / "b.png")
    rows = {line[:41].strip(): line[41:].split() for line in text.splitlines()[2:14]}
    assert rows["+ DAPO, 1 round"][:4] == ["2", "60.0", "±", "14.1"]
    # paired: 50 - 40 and 70 - 20 (against seed 0's pi_ref both: +20.0 ± 14.1)
    assert rows["+ DAPO, 1 round"][10:16] == ["+30.0", "±", "28.3", "+30.0", "±", "28.3"]
    assert rows["+ RFT, 1 round"][:2] == ["2", "55.0"]
    assert rows["+ RFT, 2 rounds"][:2] == ["1", "65.0"]
    assert rows["+ PPO"][0] == "0" and rows["+ PPO"][1] == "-"
    pts = sweep_report.curve_points([json.loads((d / "results.json").read_text()) for d in dirs],
                              "dapo_2")
    # the change from each seed's own pi_ref: (50 - 40, 70 - 20), then (60 - 40, 80 - 20)
    assert [(p[0], round(p[1], 6)) for p in pts] == [(100, 30.0), (220, 40.0)]
    grpo = sweep_report.curve_points([json.loads((d / "results.json").read_text()) for d in dirs],
                               "grpo_1")
    assert [(p[0], round(p[1], 6)) for p in grpo] == [(100, 20.0), (230, 30.0)]


def test_versus_dapo_pairs_each_method_with_dapo_on_its_own_seed():
    """Guards against a method compared with another seed's DAPO, or with a DAPO that started
    from another pi_ref: seed 0 pairs (RFT 65 - DAPO 60), seed 1 pairs (65 - 80), seed 2's
    RFT folder holds another pi_ref and is left out."""
    results, lineage = [], []
    for sft, dapo in ((0.4, 0.6), (0.2, 0.8), (0.3, 0.5)):
        results.append(fake_results({"sft": sft, "dapo_1": 0.5, "dapo_2": dapo,
                                     "dapo_1_oracle": 0.5, "grpo_1": 0.7}))
        lineage.append(fake_lineage(0.55, 0.65))
        lineage[-1]["sft"] = split(sft)
    lineage[2]["sft"] = split(0.31)
    text = sweep_report.versus_dapo({None: results, "rft": lineage})
    rows = {line[:41].strip(): line[41:].split() for line in text.splitlines()[2:]}
    assert rows["+ RFT, 2 rounds"][:4] == ["2", "-5.0", "±", "14.1"]
    assert rows["+ RFT, 2 rounds"][-3:] == ["+5.0", "/", "-15.0"]
    assert rows["+ GRPO"][:4] == ["3", "+6.7", "±", "15.3"]  # 70 - 60, 70 - 80, 70 - 50
    assert rows["+ PPO"][:2] == ["0", "-"]
    assert "+ DAPO, 2 rounds" not in rows and "pi_ref (SFT)" not in rows


def test_step_credit_by_hand():
    """Guards against Figure 2's advantages read off the wrong states, or wrong responses
    counted: one correct response of three steps with a dip, one wrong response (ignored)."""
    data = {"resp_states": flat([[0, 1, 2], [0, 3]]), "resp_reward": torch.tensor([1.0, 0.0])}
    values = torch.tensor([0.5, 0.75, 0.25, 0.1])
    c = sweep_report.step_credit(data, values)
    assert c["correct"] == 1 and c["steps"] == 3
    assert c["responses"][0]["adv"] == pytest.approx([0.25, -0.5, 0.75])
    assert c["negative_step_frac"] == pytest.approx(1 / 3) and c["with_negative_frac"] == 1.0


def test_figure2_report_on_a_tiny_run(tmp_path, capsys):
    """Guards against the figure2 sweep failing on real rollouts and critics (--report-only:
    nothing is trained, the saved round-1 files are read)."""
    d = tmp_path / "seed0"
    train_sft.main(["--run-dir", str(d)] + SFT)
    train_critic.main(["--run-dir", str(d)] + CRITIC)
    sweep.main(["figure2", "--root", str(tmp_path), "--seeds", "0", "--report-only",
                "--device", "cpu"])
    out = capsys.readouterr().out
    assert "seed0" in out and (tmp_path / "sweeps" / "figure2.txt").exists()


def test_figure2_report_averages_the_seeds_shares(tmp_path, monkeypatch):
    """Guards against a mean row that averages the wrong column or counts a seed without
    correct responses (its shares are None) as 0 %, and a plot of another seed's or the MC
    targets' advantages."""
    credits = iter([(0.1, 0.5, [-0.25, 0.5]), (0.2, 0.6, [9.0]),  # by the critic, by MC; per seed
                    (0.3, 0.7, [0.75]), (None, None, [])])

    def credit(data, values):
        neg, with_neg, adv = next(credits)
        return {"correct": 0 if neg is None else 4, "steps": 12, "negative_step_frac": neg,
                "with_negative_frac": with_neg, "responses": [{"adv": adv}]}
    monkeypatch.setattr(sweep_report, "load_rollouts",
                        lambda d, r: {"states": [], "mc": torch.zeros(1)})
    monkeypatch.setattr(sweep_report, "load_critic", lambda d, r, dev: (torch.nn.Identity(),))
    monkeypatch.setattr(sweep_report, "state_values", lambda *a: torch.zeros(1))
    monkeypatch.setattr(sweep_report, "unflat", lambda x: x)
    monkeypatch.setattr(sweep_report, "step_credit", credit)
    monkeypatch.setattr(sweep_report, "credit_example", lambda *a: "")
    plotted, plot = [], sweep_report.plot_step_advantages
    monkeypatch.setattr(sweep_report, "plot_step_advantages",
                        lambda advs, path: plotted.append(advs) or "plot")
    dirs = [tmp_path / "seed0", tmp_path / "seed1"]
    text = sweep_report.figure2_report(dirs, "cpu", tmp_path / "f")
    assert plotted == [{"seed0": [-0.25, 0.5], "seed1": [0.75]}]
    assert "seed0 0.0% above -0.25, the lowest -0.25; seed1 none" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line.startswith(("seed", "mean"))}
    assert rows["seed0"][3:] == ["10.0", "50.0", "20.0", "60.0"]
    assert rows["seed1"][3:] == ["30.0", "70.0", "-", "-"]
    assert rows["mean"][1:] == ["20.0", "±", "14.1", "60.0", "±", "14.1", "20.0", "60.0"]
    if report.pyplot() is not None:
        assert plot({"seed0": [-0.25, 0.5]}, tmp_path / "f2.png") == f"plot: {tmp_path / 'f2.png'}"
        assert (tmp_path / "f2.png").stat().st_size > 0


def test_k_sweep_shares_the_seed_s_pi_ref_and_scales_problems_for_the_budget():
    """Guards against a K sweep that trains a pi_ref per K (K would not be the only
    difference) or compares at unequal budgets in its budget half."""
    jobs = [sweep.command(fn, a) for fn, a in sweep.jobs(sweep.get_args(
        ["K", "--seeds", "1", "--root", "R"]))]
    assert jobs[0].startswith("python pipeline.py --run-dir R/seed1 --seed 1 --rounds 1")
    assert "(share the SFT stage of R/seed1 with R/K2-seed1)" in jobs
    assert any("--run-dir R/K16-budget-seed1" in j and "--K 16 --problems 432" in j
               for j in jobs)  # 1728 * 4 / 16
    assert any("--run-dir R/K2-seed1" in j and "--K 2 --problems 1728" in j for j in jobs)
    assert not any("train_sft.py" in j for j in jobs)


def test_share_sft_makes_the_sft_stage_a_no_op(tmp_path, capsys):
    """Guards against a shared pi_ref that train_sft.py trains again (or refuses)."""
    from artifacts import share_sft
    from common import UserError
    src, dst = tmp_path / "a", tmp_path / "b"
    train_sft.main(["--run-dir", str(src)] + SFT)
    capsys.readouterr()
    share_sft(src, dst)
    train_sft.main(["--run-dir", str(dst)] + SFT)
    assert "up to date with these flags: skipped" in capsys.readouterr().out
    with pytest.raises(UserError, match="has no finished SFT stage to share"):
        share_sft(tmp_path / "nothing", tmp_path / "c")


def test_tune_gives_every_method_five_trials_and_chooses_on_val(tmp_path):
    """Guards against unequal tuning effort, and against a choice made on test: every method
    gets 5 trials, each changing one setting from its defaults (RFT, with no beta or KL, 5
    learning rates), the online ones at one round's budget."""
    trials = sweep.tune_trials()
    methods = [t[0] for t in trials]
    assert all(methods.count(m) == 5 for m in set(methods)) and len(set(methods)) == 6
    assert [t[4] for t in trials if t[0] == "rft"] == [
        "lr 1e-05", "lr 3e-05", "lr 0.0001", "lr 0.0003", "lr 0.001"]
    assert [t[4] for t in trials if t[0] == "dapo"] == [
        "lr 1e-05", "lr 3e-05", "lr 0.0001", "beta 0.03", "beta 0.3"]
    assert [t[4] for t in trials if t[0] == "ppo"][3:] == ["kl 0.003", "kl 0.03"]
    assert all("--budget-rounds" in t[3] for t in trials if t[0] in ("grpo", "ppo"))
    assert len({t[1] for t in trials}) == len(trials)  # no two trials share a results key
    d = tmp_path / "seed0"
    d.mkdir()
    res = {"rft_1_lr3e-05": {"val": {"greedy_acc": 0.5}, "test": {"greedy_acc": 0.9},
                             "ood": {"greedy_acc": 0.0}},
           "rft_1_lr0.0001": {"val": {"greedy_acc": 0.6}, "test": {"greedy_acc": 0.1},
                              "ood": {"greedy_acc": 0.0}}}
    (d / "results.json").write_text(json.dumps(res))
    two = [("rft", "rft_1_lr3e-05", "lr 3e-05"), ("rft", "rft_1_lr0.0001", "lr 0.0001")]
    assert "chosen on val: rft lr 0.0001" in sweep_report.tune_report([d], two, {})
    text = sweep_report.tune_report([d], two + [("ppo", "ppo_1_lr1e-05", "lr 1e-05")], {})
    assert text.endswith("chosen on val: rft lr 0.0001 (grid unfinished: ppo)")


def test_a_tag_names_the_files_and_refuses_odd_characters(tmp_path, capsys):
    from common import tag_suffix
    from tiny import run
    assert tag_suffix("lr1e-05") == "_lr1e-05" and tag_suffix("") == ""
    code, err = run(sweep.train_rft.main, ["--run-dir", str(tmp_path), "--tag", "a/b"], capsys)
    assert code == 2 and "--tag may hold letters" in err


def test_a_baseline_s_own_second_round_samples_from_its_own_actor(tmp_path, capsys):
    """Guards against a baseline's round 2 trained on DAPO's samples, or on samples whose cost
    the table does not count: --as-pi-ref makes the baseline's actor the next pi_ref, and
    baselines/rollouts.py rolls out from it, with no critic and a cost record."""
    from artifacts import file_hash, share_round1
    from baselines import rollouts, train_eq12
    from tiny import ACTOR, ROLLOUTS
    seed, own = tmp_path / "seed0", tmp_path / "step-mc-seed0"
    train_sft.main(["--run-dir", str(seed)] + SFT)
    train_critic.main(["--run-dir", str(seed)] + CRITIC)
    share_round1(seed, own)
    argv = ["--run-dir", str(own), "--advantage", "step-mc"] + ACTOR
    train_eq12.main(argv + ["--as-pi-ref"])
    assert (own / "actor_1.pt").exists() and not (own / "actor_1_step_mc.pt").exists()
    rollouts.main(["--run-dir", str(own), "--round", "2"] + ROLLOUTS)
    assert not (own / "critic_2.pt").exists()
    rolls = torch.load(own / "rollouts_2.pt", weights_only=True)
    assert rolls["made_by"]["inputs"]["actor_1.pt"] == file_hash(own / "actor_1.pt")
    train_eq12.main(argv + ["--round", "2"])
    res = json.loads((own / "results.json").read_text())
    assert res["rollouts_2"]["generated_tokens"] == (rolls["generated_tokens"]
                                                     + rolls["completion_tokens"])
    tokens, _ = sweep_report.method_cost(res, "dapo_2_step_mc")
    assert tokens == res["rollouts_1"]["generated_tokens"] + res["rollouts_2"]["generated_tokens"]
    capsys.readouterr()
    rollouts.main(["--run-dir", str(own), "--round", "2"] + ROLLOUTS)
    assert "up to date with these flags: skipped" in capsys.readouterr().out


def test_archive_outlives_the_run_folders_and_gives_the_same_table(tmp_path):
    """Guards against records that cannot rebuild the table they were archived from, or an
    archive that loses a stage an earlier session recorded."""
    root, keep = tmp_path / "runs", tmp_path / "records"
    for name, res in (("seed0", fake_results({"sft": 0.4, "dapo_1": 0.5, "dapo_2": 0.6,
                                              "dapo_1_oracle": 0.55, "grpo_1": 0.6})),
                      ("rft-seed0", fake_lineage(0.55, 0.65))):
        (root / name).mkdir(parents=True)
        (root / name / "results.json").write_text(json.dumps(res))
    (keep / "seed0").mkdir(parents=True)  # an earlier session's record of another stage
    (keep / "seed0" / "results.json").write_text(json.dumps({"dapo_1_beta1": split(0.3)}))
    argv = ["baselines", "--seeds", "0", "--report-only"]
    sweep.main(argv + ["--root", str(root), "--archive", str(keep)])
    kept = json.loads((keep / "seed0" / "results.json").read_text())
    assert set(kept) == set(json.loads((root / "seed0" / "results.json").read_text())) | {
        "dapo_1_beta1"}
    assert (keep / "rft-seed0" / "results.json").exists()
    sweep.main(argv + ["--root", str(keep)])
    tables = [(d / "sweeps" / "baselines.txt").read_text().replace(str(d), "ROOT")
              for d in (root, keep)]
    assert tables[0] == tables[1]  # the same table, but for where its plot went


def test_archive_keeps_the_jobs_that_finished_before_a_failure(tmp_path, monkeypatch):
    """Guards against an archive written only at the end, which a sweep cut short (a session
    that ends, a failing job) would lose with its run folders."""
    root, keep = tmp_path / "runs", tmp_path / "records"

    def finished_job(argv):
        (root / "seed0").mkdir(parents=True)
        (root / "seed0" / "results.json").write_text(json.dumps({"sft": split(0.4)}))

    def failing_job(argv):
        raise UserError("the second job failed")

    monkeypatch.setattr(sweep, "jobs", lambda args: [(finished_job, []), (failing_job, [])])
    with pytest.raises(UserError, match="second job"):
        sweep.main(["rounds", "--seeds", "0", "--root", str(root), "--archive", str(keep)])
    assert json.loads((keep / "seed0" / "results.json").read_text()) == {"sft": split(0.4)}


def test_archive_refuses_to_mix_two_pi_refs_of_one_seed(tmp_path):
    """Guards against one record holding two pi_refs: the same seed trains other weights on
    another machine, and merging that run into the seed's archived record would put its
    baselines beside the other pi_ref's DAPO in one table row."""
    root, keep = tmp_path / "runs", tmp_path / "records"
    sft = {**split(0.4), "made_by": {"file": "sft.pt", "sha256": "a" * 64}}
    for seed in (0, 1):
        (root / f"seed{seed}").mkdir(parents=True)
        (root / f"seed{seed}" / "results.json").write_text(json.dumps(
            {"sft": sft, "dapo_1": split(0.5)}))
    (keep / "seed1").mkdir(parents=True)  # seed 0's archive is new; seed 1's of another pi_ref
    other = {"sft": {**sft, "made_by": {"sha256": "b" * 64}}}
    (keep / "seed1" / "results.json").write_text(json.dumps(other))
    argv = ["rounds", "--seeds", "0", "1", "--root", str(root), "--report-only"]
    with pytest.raises(UserError, match="seed1 holds results of another pi_ref"):
        sweep.main(argv + ["--archive", str(keep)])
    assert json.loads((keep / "seed1" / "results.json").read_text()) == other
    assert not (keep / "seed0").exists()  # nothing written, not even the seed that matched
    sweep.main(argv + ["--archive", str(tmp_path / "elsewhere")])  # another folder takes it
    assert "dapo_1" in json.loads((tmp_path / "elsewhere" / "seed1" / "results.json").read_text())


def test_a_tuning_trial_in_the_archive_is_skipped_for_the_same_pi_ref_only(tmp_path, capsys,
                                                                          monkeypatch):
    """Guards against a tuning sweep resumed in a new session (its run folder remade from
    nothing) that reruns every trial the archive already holds, that skips a trial whose
    archived result is another trial's (response's lr trials end in dapo's flags) or came from
    another pi_ref, or whose table then lacks the skipped trials."""
    root, keep = tmp_path / "runs", tmp_path / "records"
    trials, ran = sweep.tune_trials(), []
    monkeypatch.setattr(sweep, "jobs", lambda args: [
        (module.main, sweep.stage_argv(args, 0) + flags) for _, _, module, flags, _ in trials])
    for m in {t[2] for t in trials}:
        monkeypatch.setattr(m, "main", lambda argv: ran.append(argv))
    sft = {**split(0.4), "made_by": {"file": "sft.pt", "sha256": "a" * 64}}
    (root / "seed0").mkdir(parents=True)
    (root / "seed0" / "results.json").write_text(json.dumps({"sft": sft}))
    (keep / "seed0").mkdir(parents=True)
    dapo = {k: split(0.5) for m, k, *_ in trials if m == "dapo"}
    (keep / "seed0" / "results.json").write_text(json.dumps({"sft": sft, **dapo}))
    argv = ["tune", "--seeds", "0", "--root", str(root), "--archive", str(keep)]
    sweep.main(argv)
    common = sweep.stage_argv(sweep.get_args(argv), 0)
    assert ran == [common + flags for m, _, _, flags, _ in trials if m != "dapo"]
    assert capsys.readouterr().out.count("for this pi_ref: skipped") == 5
    rows = [line.split() for line in (root / "sweeps" / "tune.txt").read_text().splitlines()]
    assert ["dapo", "lr", "1e-05", "1", "50.0", "50.0"] in rows  # the skipped trial's record
    other = {**sft, "made_by": {"sha256": "b" * 64}}
    (root / "seed0" / "results.json").write_text(json.dumps({"sft": other}))
    ran.clear()
    with pytest.raises(UserError, match="another pi_ref"):  # runs it, then refuses to merge
        sweep.main(argv)
    assert len(ran) == 1


def test_rounds_report_says_what_errors_remain(tmp_path):
    """Guards against a rounds table that stops at accuracy: issue 15 asks where the rounds
    stop and why, so the failures by wrong lines and each round's sampled accuracy are in it."""
    dirs = []
    for seed, (one_wrong, sampled) in enumerate(((0.7, 0.30), (0.9, 0.40))):
        res = {k: split(a) for k, a in (("sft", 0.4), ("dapo_1", 0.5), ("dapo_2", 0.55))}
        res["dapo_2"]["test"].update(fail_1_wrong=one_wrong, fail_2_wrong=1 - one_wrong,
                                     fail_more_wrong=0.0, two_op_lines=0.01)
        res["critic_2"] = {"gen_accuracy": sampled, "heldout": {}}
        (tmp_path / f"seed{seed}").mkdir()
        (tmp_path / f"seed{seed}" / "results.json").write_text(json.dumps(res))
        dirs.append(str(tmp_path / f"seed{seed}"))
    text = sweep_report.rounds_report(dirs, tmp_path / "rounds.png")
    row = next(line.split() for line in text.splitlines()[::-1] if line.startswith("dapo_2"))
    assert row == ["dapo_2", "1.0", "±", "0.0", "80.0", "±", "14.1", "20.0", "±", "14.1",
                   "0.0", "±", "0.0", "35.0", "±", "7.1"]
    assert text.splitlines()[-3].split()[:2] == ["sft", "-"]  # no failure breakdown recorded


def test_an_archived_run_s_wall_times_come_from_its_stage_records(tmp_path):
    """Guards against a rounds table rebuilt from docs/records that prints 0 s for every stage
    (an archived folder has results.json but no pipeline_times.json), or a total that adds
    the walls of stages outside the pipeline (a baseline's, a beta trial's)."""
    res = fake_results({"sft": 0.4, "dapo_1": 0.5, "dapo_2": 0.6, "dapo_1_oracle": 0.55,
                        "grpo_1": 0.6})
    res["sft"]["wall_time_s"] = 30.0
    (tmp_path / "results.json").write_text(json.dumps(res))
    text = report.summarize([str(tmp_path)])
    rows = {}
    for line in text.splitlines():  # the first table's rows: accuracy and wall seconds
        rows.setdefault(line.split()[0] if line.strip() else "", line.split())
    assert rows["sft"][-1] == "30" and rows["dapo_1"][-1] == "12"  # critic_1 10 + dapo_1 2
    assert rows["dapo_2"][-1] == "14"
    assert "total wall time 56 ± 0 s" in text  # not grpo_1's 50 s or the oracle's 2 s
    (tmp_path / "pipeline_times.json").write_text(json.dumps({"sft": 99.0}))
    text = report.summarize([str(tmp_path)])  # pipeline.py's timing wins where there is one
    assert next(line for line in text.splitlines() if line.startswith("sft")).split()[-1] == "99"


def test_beta_and_k_reports_give_their_tables_and_plots(tmp_path, monkeypatch):
    """Guards against a beta or K table that reads another round's key, a K gain taken
    against another seed's pi_ref, or a sweep that writes no plot (issue 15 asks for both)."""
    d = tmp_path / "seed0"
    d.mkdir()
    res = fake_results({"sft": 0.4, "dapo_1": 0.5, "dapo_1_beta0.01": 0.2, "grpo_1": 0.6,
                        "dapo_1_oracle": 0.5, "dapo_2": 0.6})
    res["critic_1"]["heldout"] = {"brier": 0.07, "brier_const": 0.1}
    res["dapo_1"]["filter"] = {"kept_state_frac": 0.3, "sibling_rank_acc": 0.8}
    res["dapo_1"]["val"]["greedy_acc"] = 0.45  # val and test apart, to tell them apart
    (d / "results.json").write_text(json.dumps(res))
    text = sweep_report.beta_report([d], (0.01, 0.1), 0.1, tmp_path / "beta.png")
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:5]}
    assert rows["0.01"][1:4] == ["1", "20.0", "20.0"] and rows["0.1"][1:4] == ["1", "45.0", "50.0"]
    assert rows["0.01"][-2:] == ["-20.0", "-20.0"] and rows["0.1"][-2:] == ["+5.0", "+10.0"]
    text = sweep_report.k_report({(4, False): [d], (8, False): []}, tmp_path / "K.png")
    row = next(line.split() for line in text.splitlines() if line.startswith("4 "))
    assert row == ["4", "1", "0.00", "0.70", "30.0", "80.0", "+5.0", "+10.0"]
    if report.pyplot() is not None:
        assert (tmp_path / "beta.png").stat().st_size > 0 and (tmp_path / "K.png").exists()
    plotted = []
    monkeypatch.setattr(sweep_report, "plot_lines", lambda series, *a: plotted.append(series) or "")
    sweep_report.beta_report([d], (0.01, 0.1), 0.1, tmp_path / "beta.png")
    sweep_report.k_report({(4, False): [d], (8, True): []}, tmp_path / "K.png")
    rounded = [{k: [tuple(round(x, 6) for x in p) for p in v] for k, v in s.items()}
               for s in plotted]
    assert rounded[0] == {"val": [(0.01, -20.0, 0.0), (0.1, 5.0, 0.0)],
                          "test": [(0.01, -20.0, 0.0), (0.1, 10.0, 0.0)]}
    assert rounded[1] == {"same problems": [(4, 10.0, 0.0)], "same generated tokens": []}


def test_baselines_tuned_from_a_tuning_grid_run_each_method_at_its_val_choice(tmp_path):
    """Guards against a comparison at the defaults when the grid chose otherwise, a choice
    made on test, a method given another method's setting, or a choice from a partial grid."""
    tune = tmp_path / "tune" / "seed0"
    tune.mkdir(parents=True)
    trials = sweep.tune_trials()
    res = {key: split(0.5) for _, key, _, _, _ in trials}
    res["grpo_1_lr3e-05"] = {**split(0.6), "test": {"greedy_acc": 0.1}}  # best on val only
    res["dapo_1_response_lr0.0001"] = split(0.55)
    res["dapo_1_lr1e-05"]["test"]["greedy_acc"] = 0.9  # best on test only: not chosen
    (tune / "results.json").write_text(json.dumps(res))
    args = sweep.get_args(["baselines", "--seeds", "0", "--root", "R",
                           "--tuned-from", str(tmp_path / "tune")])
    flags = sweep.tuned_flags(args)
    assert flags["grpo"] == ["--lr", "3e-05"] and flags["response"] == ["--lr", "0.0001"]
    assert flags["dapo"] == ["--lr", "3e-05"]  # all tie on val: its default lr
    jobs = [sweep.command(fn, a) for fn, a in sweep.jobs(args)]
    assert jobs[0].endswith("--actor-args '--lr 3e-05'")
    assert "baselines.train_grpo" in jobs[2] and jobs[2].endswith("--lr 3e-05")
    response = [j for j in jobs if "--advantage response" in j]
    assert len(response) == 2 and all("--advantage response --lr 0.0001" in j for j in response)
    del res["ppo_1_kl0.03"]
    (tune / "results.json").write_text(json.dumps(res))
    with pytest.raises(UserError, match="no finished tuning grid of ppo"):
        sweep.jobs(args)
