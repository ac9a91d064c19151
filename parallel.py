"""Data parallelism under torchrun: every stage's own command on N processes (docs/distributed.md).

    torchrun --standalone --nproc_per_node 2 -- pipeline.py --run-dir runs/ddp

Without torchrun (no WORLD_SIZE above 1 in the environment) every function here does what one
process would do and nothing else. Under torchrun, with gloo on CPU and NCCL on CUDA:

- A.2's Monte Carlo chunks are shared out (training.rollouts); each chunk has its own seed,
  so the rollout files are the same bit for bit whatever the number of ranks. A.1 keeps its
  one random stream, so every rank samples it whole. Greedy evaluation is shared by problem
  (evaluation.evaluate);
- SFT, critic and actor training are data-parallel (DistributedDataParallel): each rank takes
  a share of every batch, and share() weights its loss so that the averaged gradient is that of
  the whole batch;
- rank 0 alone writes files and prints; every write is a collective step (common.atomic_write:
  rank 0 writes while every rank waits), so all ranks see the run folder change at one point;
- the rest (the critic's and pi_ref's forward passes over all states, the baselines' training)
  runs the same on every rank.
"""

from __future__ import annotations

import atexit
import datetime
import os
import signal
import sys

import torch
import torch.distributed as tdist
from torch import nn

from common import UserError, lost_rank
from model import pick_device

TIMEOUT = datetime.timedelta(minutes=30)  # a collective that waits longer ends the job


def launched() -> bool:
    """True under torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world() -> int:
    return tdist.get_world_size() if tdist.is_initialized() else 1


def rank() -> int:
    return tdist.get_rank() if tdist.is_initialized() else 0


def setup(name: str) -> torch.device:
    """The stage's device (model.pick_device); under torchrun, this rank's GPU (LOCAL_RANK) and
    the process group, joined once per process: gloo for CPU tensors, NCCL for CUDA ones."""
    device = pick_device(name)
    if not launched():
        return device
    if device.type == "mps":
        raise UserError("torchrun runs on CPU (gloo) or CUDA (NCCL), not MPS; pass --device cpu")
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local} but this node has {torch.cuda.device_count()} "
                            "GPUs; start at most that many processes per node")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not tdist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        tdist.init_process_group(backend, timeout=TIMEOUT)
        atexit.register(teardown)
        signal.signal(signal.SIGTERM, stopped)
        if rank() != 0:  # one log: rank 0's (errors still reach stderr from every rank;
            sys.stdout = open(os.devnull, "w")  # common.progress shows rank 0's bars only)
    return device


def teardown() -> None:
    """Close the process group while the interpreter is still whole: left to exit, gloo's
    worker threads can outlive it and abort a rank that finished ("terminate called without an
    active exception")."""
    if tdist.is_initialized():
        tdist.destroy_process_group()


def stopped(signum, frame):
    """SIGTERM, which torchrun sends the other ranks when one fails: one sentence, not a
    traceback (the failed rank's own error and torchrun's summary come with it)."""
    raise UserError(f"torchrun stopped rank {rank()} because another process of the job "
                    "failed; what the ranks finished is saved: run the same command again to "
                    "resume")


def all_gather(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank (any picklable object)."""
    if world() == 1:
        return [obj]
    out = [None] * world()
    try:
        tdist.all_gather_object(out, obj)
    except (RuntimeError, tdist.DistError) as e:
        raise lost_rank(e) from None
    return out


def on_main(fn):
    """fn() on rank 0 only; its result, or the one sentence of its UserError, on every rank."""
    if world() == 1:
        return fn()
    out = None
    if rank() == 0:
        try:
            out = ("ok", fn())
        except UserError as e:
            out = ("error", str(e))
    box = [out]
    try:
        tdist.broadcast_object_list(box, src=0)
    except (RuntimeError, tdist.DistError) as e:
        raise lost_rank(e) from None
    if box[0][0] == "error":
        raise UserError(box[0][1])
    return box[0][1]


def shard(items: list) -> list:
    """This rank's items: every world()-th, from its rank on."""
    return items[rank()::world()]


def unshard(mine: list, n: int) -> list:
    """The n items of every rank's shard(), back in their order, on every rank."""
    if world() == 1:
        return mine
    out = [None] * n
    for r, part in enumerate(all_gather(mine)):
        out[r::world()] = part
    return out


def lockstep(items: list, fn):
    """Yield (item, fn(item)) for every item, in order, on every rank; each fn(item) is computed
    by one rank, world() items at a time (so the caller can save each result as it comes)."""
    for i in range(0, len(items), world()):
        group = items[i:i + world()]
        mine = fn(group[rank()]) if rank() < len(group) else None
        yield from zip(group, all_gather(mine))


def batch_share(b: list) -> tuple[list, int]:
    """(this rank's part of a batch, its size): the rank's shard, or the batch's first item
    with size 0 where the shard is empty (a forward pass every rank must take, weighed 0)."""
    mine = shard(b)
    return (mine, len(mine)) if mine else (b[:1], 0)


def share(mean: torch.Tensor, n: int, total: int) -> torch.Tensor:
    """A rank's loss for DDP, given the mean over its n of the batch's total items (every rank
    knows the whole batch): mean * n * world / total, so that DDP's average of the ranks'
    gradients is the gradient of the mean over every item, however unevenly they fall."""
    if world() == 1:
        return mean
    return mean * (n * world() / max(total, 1))


def mean_of(x: torch.Tensor) -> torch.Tensor:
    """x averaged over the ranks (for logging: each rank's running sums)."""
    if world() == 1:
        return x
    x = x.clone()
    try:
        tdist.all_reduce(x)
    except (RuntimeError, tdist.DistError) as e:
        raise lost_rank(e) from None
    return x / world()


class Call(nn.Module):
    """A module whose forward runs any function of the model: Call(m)(fn, *a) = fn(m, *a). DDP
    wraps it, so that a loss built from model.value_logits or from log-probs of continuations
    (not model.forward) goes through DDP's forward, which its gradient averaging needs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn, *args):
        return fn(self.model, *args)


def data_parallel(model: nn.Module):
    """A callable run(fn, *args) = fn(model, *args) whose backward averages gradients over the
    ranks (DistributedDataParallel); the plain call with one process."""
    if world() == 1:
        return Call(model)
    dev = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(
        Call(model), device_ids=[dev.index] if dev.type == "cuda" else None,
        find_unused_parameters=True)  # the critic's LM head is unused without --lm-coef
