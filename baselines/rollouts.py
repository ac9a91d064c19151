"""The rollouts of a baseline's own round: A.1-A.2 from its pi_ref, with no critic.

    python -m baselines.rollouts --run-dir runs/rft-seed0 --round 2

A baseline with rounds of its own (RFT, the eq. 12 baselines: experiments/sweep.py's lineages)
writes its round-R actor as actor_R.pt (--as-pi-ref) in a run folder of its own; round R + 1
then needs rollouts of that actor. This makes them exactly as train_critic.py makes DAPO's
(training.rollouts: the same flags, seeds and resumable parts), trains no critic, and records
their cost (generated tokens and seconds) as results.json["rollouts_R"].
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from artifacts import load_pi_ref, open_stage, rollouts_path
from common import add_round_args, friendly_errors, parse_with_preset
from training import add_rollout_args, check_rollout_args, existing_rollouts, make_rollouts


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_round_args(p, "seed for rollouts")
    add_rollout_args(p)
    args = parse_with_preset(p, argv, "critic")
    check_rollout_args(args)
    return args


def main(argv=None):
    args = get_args(argv)
    stage = open_stage(args, f"rollouts_{args.round}",
                       rollouts_path(Path(args.run_dir), args.round))
    data = existing_rollouts(args, stage.run_dir)
    if data is not None:
        record = stage.current_record()
        if record is not None:
            print(f"{stage.out} and its record are up to date with these flags: skipped")
            return record
        seconds = stage.previous_record(f"critic_{args.round}").get("rollout_time_s")
    else:
        policy, cfg, data_seed = load_pi_ref(stage.run_dir, args.round, stage.device)
        data = make_rollouts(policy, args, stage.run_dir, stage.device, cfg, data_seed)
        seconds = time.time() - stage.t_start
    return stage.finish({"generated_tokens": data["generated_tokens"] + data["completion_tokens"],
                         "gen_accuracy": data["gen_accuracy"], "states": len(data["mc"]),
                         "rollout_time_s": seconds})


if __name__ == "__main__":
    with friendly_errors():
        main()
