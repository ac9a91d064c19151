"""The graders' checks (never in a student copy): the exercise tests' properties again on fresh
random inputs, so that an answer hard-coded to the visible tests' numbers fails. Each run
draws its own seed and prints it, so a failure can be replayed (HIDDEN_SEED=N)."""

import os
import random

import pytest


@pytest.fixture
def rng():
    seed = int(os.environ.get("HIDDEN_SEED", random.SystemRandom().randrange(2 ** 31)))
    print(f"hidden seed {seed}")
    return random.Random(seed)
