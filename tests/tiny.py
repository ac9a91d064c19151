"""The tiny settings every smoke test runs with (a 1-layer model on 1-2 step problems keeps
each stage to seconds), and a helper that calls a stage as its __main__ does."""

from common import friendly_errors

SFT = ["--steps", "40", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--eval-n", "12",
       "--batch-size", "16", "--min-steps", "1", "--max-steps", "2", "--ood-steps", "3",
       "--log-every", "10", "--device", "cpu", "--lr", "1e-2"]
ROLLOUTS = ["--problems", "12", "--n1", "4", "--n", "2", "--K", "3", "--chunk", "5", "--device",
            "cpu"]
CRITIC = ROLLOUTS + ["--epochs", "1", "--batch-size", "8"]
ACTOR = ["--eval-n", "12", "--adv-threshold", "0", "--device", "cpu", "--log-every", "2"]


def run(main, argv, capsys=None):
    """Call a script's main as its __main__ does (friendly errors); return (code, err)."""
    try:
        with friendly_errors():
            main(argv)
    except SystemExit as e:
        return e.code, capsys.readouterr().err if capsys else ""
    return 0, capsys.readouterr().err if capsys else ""
