"""A stage's main under torchrun, for tests/test_parallel.py: python -m torch.distributed.run
... tests/torchrun_worker.py STAGE [--die-at-chunk N] ARGS. With --die-at-chunk N, rank 1
exits (as if killed) when it starts its N-th Monte Carlo chunk."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import train_actor  # noqa: E402
import train_critic  # noqa: E402
import training  # noqa: E402
from baselines import train_grpo  # noqa: E402
import train_sft  # noqa: E402
from common import friendly_errors  # noqa: E402

STAGES = {"sft": train_sft, "critic": train_critic, "actor": train_actor, "grpo": train_grpo}


def die_at(n: int) -> None:
    real, calls = training.complete_chunk, []

    def dying(*args, **kw):
        calls.append(1)
        if len(calls) == n:
            os._exit(3)
        return real(*args, **kw)
    training.complete_chunk = dying


if __name__ == "__main__":
    torch.set_num_threads(1)
    stage, argv = sys.argv[1], sys.argv[2:]
    if argv[:1] == ["--die-at-chunk"]:
        if os.environ.get("RANK") == "1":
            die_at(int(argv[1]))
        argv = argv[2:]
    with friendly_errors():
        STAGES[stage].main(argv)
