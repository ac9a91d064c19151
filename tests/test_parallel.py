"""torchrun with 2 CPU processes (gloo) against one process: the same rollouts bit for bit, the
same parameters after training within float32 rounding, a dead rank that ends the job with one
sentence and a stage that resumes; and parallel.py's pieces with one process."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import parallel
from model import GPT, GPTConfig
import train_actor
import train_critic
from baselines import train_grpo
import train_sft
from tiny import ACTOR, CRITIC, SFT

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "torchrun_worker.py"
# Parameters after a few steps on 2 ranks against 1: the same up to float32 summation order.
# The distance between the two runs, relative to how far training moved the weights, is
# about 1e-5 on these tests; each rank's plain mean (parallel.share left out) gives 0.2 for
# the critic.
RTOL = 1e-3


def torchrun(stage: str, argv: list[str], n: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={n}", "--", str(WORKER), stage] + argv
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def one_process(fn):
    """fn() with one thread, as each rank of torchrun has, so that the numbers compare."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def relative_diff(a: dict, b: dict, start: dict) -> float:
    """|theta_b - theta_a| / |theta_a - theta_start| over all weights: the distance between
    two runs against the distance training moved the weights."""
    assert a.keys() == b.keys()
    apart = sum(float((a[k] - b[k]).double().square().sum()) for k in a)
    moved = sum(float((a[k] - start[k]).double().square().sum()) for k in a if k in start)
    return (apart / moved) ** 0.5


def with_rewards(src: Path, dst: Path) -> None:
    """dst: src's pi_ref and rollouts, with half the continuations made right (the tiny pi_ref
    gets nothing right, which would leave eq. 12 nothing to learn)."""
    dst.mkdir()
    for name in ("sft.pt", "sft.json", "results.json"):
        shutil.copy(src / name, dst)
    data = torch.load(src / "rollouts_1.pt", weights_only=True)
    data["rewards"] = (torch.arange(data["rewards"].numel()) % 2).float().view_as(
        data["rewards"])
    data["mc"] = data["rewards"].mean(1)
    torch.save(data, dst / "rollouts_1.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny pi_ref, round 1's critic on 2 ranks (folder two) and on one process (folder one);
    then a critic on rollouts with rewards (folder three), and its actor on 2 ranks (four) and
    on one process (three)."""
    base = tmp_path_factory.mktemp("par")
    one, two, three, four = (base / n for n in ("one", "two", "three", "four"))
    one_process(lambda: train_sft.main(["--run-dir", str(one)] + SFT))
    shutil.copytree(one, two)
    critic = CRITIC + ["--epochs", "2"]
    one_process(lambda: train_critic.main(["--run-dir", str(one)] + critic))
    with_rewards(one, three)
    one_process(lambda: train_critic.main(["--run-dir", str(three)] + critic))
    shutil.copytree(three, four)
    one_process(lambda: train_actor.main(["--run-dir", str(three)] + ACTOR))
    procs = [torchrun("critic", ["--run-dir", str(two)] + critic),
             torchrun("actor", ["--run-dir", str(four)] + ACTOR)]
    return base, procs


def test_two_ranks_make_the_same_rollouts_bit_for_bit(runs):
    """Guards against sharded sampling that depends on the number of ranks: A.1's states and
    A.2's continuations, rewards and MC values must equal one process's exactly."""
    base, procs = runs
    one, two = base / "one", base / "two"
    assert procs[0].returncode == 0, procs[0].stderr[-2000:]
    ra = torch.load(one / "rollouts_1.pt", weights_only=True)
    rb = torch.load(two / "rollouts_1.pt", weights_only=True)
    for key in ("states", "responses", "continuations"):
        assert torch.equal(ra[key]["tokens"], rb[key]["tokens"]), key
        assert torch.equal(ra[key]["offsets"], rb[key]["offsets"]), key
    assert torch.equal(ra["rewards"], rb["rewards"]) and torch.equal(ra["mc"], rb["mc"])
    assert ra["generated_tokens"] == rb["generated_tokens"]


def test_two_ranks_train_the_same_critic_and_actor(runs):
    """Guards against DDP losses that are not the whole batch's (a rank's mean instead of the
    batch mean) and against ranks that drift apart: the critic and actor of 2 ranks match one
    process's within ATOL, and only rank 0 wrote the log."""
    base, procs = runs
    assert procs[0].returncode == 0 and procs[1].returncode == 0, procs[1].stderr[-2000:]
    start = weights(base / "one" / "sft.pt")
    for a, b, name in (("one", "two", "critic_1.pt"), ("three", "four", "actor_1.pt")):
        assert relative_diff(weights(base / a / name), weights(base / b / name), start) < RTOL
    for a, b in (("one", "two"), ("three", "four")):  # rank 0 alone logs
        assert (base / a / "metrics.jsonl").read_text().count("\n") == \
            (base / b / "metrics.jsonl").read_text().count("\n")
    assert procs[0].stdout.count("critic_1 done") == 1  # rank 1 prints nothing


def test_two_ranks_train_the_same_sft_policy(tmp_path):
    """Guards against SFT's DDP share being wrong (rows of different lengths per rank):
    a few steps on 2 ranks reach one process's parameters within ATOL."""
    argv = SFT[:SFT.index("--steps")] + ["--steps", "6"] + SFT[SFT.index("--steps") + 2:]
    one_process(lambda: train_sft.main(["--run-dir", str(tmp_path / "one")] + argv))
    proc = torchrun("sft", ["--run-dir", str(tmp_path / "two")] + argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    torch.manual_seed(0)  # train_sft.py's initialisation, --seed 0
    cfg = torch.load(tmp_path / "one" / "sft.pt", weights_only=True)["model_config"]
    start = GPT(GPTConfig(**cfg)).state_dict()
    assert relative_diff(weights(tmp_path / "one" / "sft.pt"),
                         weights(tmp_path / "two" / "sft.pt"), start) < RTOL


def test_a_stage_every_rank_runs_whole_gives_one_process_s_model(runs, tmp_path):
    """Guards against the baselines drifting under torchrun (they run whole on every rank,
    only their evaluation shared): GRPO on 2 ranks writes one process's weights bit for bit."""
    one = runs[0] / "one"
    argv = ["--G", "4", "--batch-problems", "4", "--budget", "400", "--eval-every", "200",
            "--eval-n", "12", "--device", "cpu"]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for f in ("sft.pt", "sft.json", "results.json"):
            shutil.copy(one / f, tmp_path / name)
    one_process(lambda: train_grpo.main(["--run-dir", str(tmp_path / "a")] + argv))
    proc = torchrun("grpo", ["--run-dir", str(tmp_path / "b")] + argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wa, wb = (weights(tmp_path / n / "actor_1_grpo.pt") for n in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_dead_rank_ends_the_job_and_the_stage_resumes(runs, tmp_path):
    """Guards against a job that hangs or leaves a half-written file when a rank dies: the job
    stops with an error, the finished chunks stay, and the same command resumes to the
    rollouts of one process."""
    one = runs[0] / "one"
    d = tmp_path / "run"
    d.mkdir()
    shutil.copy(one / "sft.pt", d)
    shutil.copy(one / "sft.json", d)
    argv = ["--run-dir", str(d)] + CRITIC
    died = torchrun("critic", ["--die-at-chunk", "2"] + argv)
    assert died.returncode != 0
    assert "exitcode  : 3" in died.stderr  # torchrun's summary names the dead rank
    assert "run the same command again to resume" in died.stderr  # rank 0's one sentence
    assert not list(d.rglob(".*.tmp")) and not (d / "rollouts_1.pt").exists()
    assert len(list((d / "rollouts_1.parts").glob("complete_*.pt"))) >= 1
    again = torchrun("critic", argv)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming" in again.stdout
    ra = torch.load(one / "rollouts_1.pt", weights_only=True)
    rb = torch.load(d / "rollouts_1.pt", weights_only=True)
    assert torch.equal(ra["mc"], rb["mc"])
    assert torch.equal(ra["continuations"]["tokens"], rb["continuations"]["tokens"])


def test_one_process_pieces_are_the_identity():
    """Guards against the single-process path changing anything: shards are everything,
    shares weigh 1, and lockstep computes each item once, in order."""
    assert parallel.world() == 1 and parallel.rank() == 0
    assert parallel.shard([3, 1, 2]) == [3, 1, 2]
    assert parallel.unshard([3, 1, 2], 3) == [3, 1, 2]
    assert parallel.batch_share([4, 5]) == ([4, 5], 2)
    x = torch.tensor(2.5)
    assert parallel.share(x, 7, 9) is x and parallel.mean_of(x) is x
    assert list(parallel.lockstep([1, 2, 3], lambda i: i * 10)) == [(1, 10), (2, 20), (3, 30)]
    model = torch.nn.Linear(2, 1)
    assert torch.equal(parallel.data_parallel(model)(lambda m, v: m(v), torch.ones(1, 2)),
                       model(torch.ones(1, 2)))


def test_bench_torchrun_smoke(tmp_path, capsys):
    """Guards against experiments.bench_torchrun breaking: both runs of a tiny pipeline, its table
    of parts, and the rollouts check from the one-process pi_ref (which must say the same)."""
    from experiments import bench_torchrun
    tiny = (f"--rounds 1 --sft-args '{' '.join(SFT)}' --critic-args '{' '.join(CRITIC)}' "
            f"--actor-args '{' '.join(ACTOR)}'")
    bench_torchrun.main(["--out", str(tmp_path / "b"), "--pipeline-args", tiny])
    out = capsys.readouterr().out
    assert "round 1: A.2 completion" in out and "whole pipeline" in out
    assert "the same bit for bit: yes" in out
    code = subprocess.run([sys.executable, "-m", "experiments.bench_torchrun", "--out",
                           str(tmp_path / "b")], capture_output=True, text=True, cwd=ROOT)
    assert code.returncode == 2 and "is not empty" in code.stderr
