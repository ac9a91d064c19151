"""tasks/countdown.py by hand: reachability against brute force, solvable problems whose
demonstrations the verifier accepts, dead ends a right line can walk into, and a verifier that
never raises."""

import itertools
import random

from tasks.countdown import (Countdown, combine, make_problem, parse_prompt, reachable, solve,
                             verify)


def brute_force(pool: list[int], target: int) -> bool:
    """Every ordered pair, every operation, recursively: an independent check of reachable."""
    for i, j in itertools.permutations(range(len(pool)), 2):
        for op in "+-*/":
            r = combine(pool[i], op, pool[j])
            if r is None:
                continue
            rest = [x for k, x in enumerate(pool) if k not in (i, j)] + [r]
            if r == target or (len(rest) > 1 and brute_force(rest, target)):
                return True
    return False


def test_reachable_agrees_with_brute_force_on_small_pools():
    """Guards against a search that misses a way to the target, or finds one that is not."""
    rng = random.Random(0)
    for _ in range(300):
        pool = [rng.randint(1, 9) for _ in range(rng.randint(2, 4))]
        target = rng.randint(1, 60)
        assert reachable(tuple(sorted(pool)), target) == brute_force(pool, target), (pool, target)


def test_every_problem_is_solvable_and_its_demonstration_is_right():
    """Guards against unsolvable problems and demonstrations the verifier would reject."""
    rng = random.Random(1)
    for n in (3, 4, 5):
        for _ in range(20):
            p = make_problem(rng, n)
            assert len(p.pool) == n and p.target not in p.pool
            assert solve(p.pool, p.target) is not None
            v = verify(p, p.solution)
            assert v.reward == 1.0 and all(v.line_ok) and len(v.line_ok) <= n - 1
            assert parse_prompt(p.prompt) == p


def test_a_right_line_can_be_a_dead_end():
    """Guards against per-line truth that only checks arithmetic: 41-23=18 is legal and right,
    yet 120 cannot be made from 7 18 5; 7*23=161 keeps it reachable (161-41=120)."""
    p = Countdown((7, 23, 41, 5), 120)
    dead = verify(p, "41-23=18\n")
    assert dead.legal == [True] and dead.reachable == [False] and dead.line_ok == [False]
    good = verify(p, "7*23=161\nA: 161-41=120\n")
    assert good.reward == 1.0 and good.line_ok == [True, True]
    assert verify(p, p.solution).reward == 1.0


def test_illegal_lines_and_answers():
    """Guards against credit for numbers not in the pool, wrong arithmetic, reused numbers, or
    an answer line that misses the target."""
    p = Countdown((2, 3, 4), 24)
    assert verify(p, "A: 6*4=24\n").legal == [False]  # 6 is not in the pool yet
    assert verify(p, "2*3=6\nA: 6*4=24\n").reward == 1.0
    assert verify(p, "2*3=7\n").legal == [False]  # wrong arithmetic
    assert verify(p, "2*2=4\n").legal == [False]  # one 2 only
    v = verify(p, "2+3=5\nA: 5*4=20\n")
    assert v.reward == 0.0 and v.line_ok == [False, False]


def test_the_verifier_never_raises_on_junk():
    """Guards against a verifier that a sampled response can crash."""
    rng = random.Random(2)
    p = Countdown((7, 23, 41, 5), 158)
    chars = "0123456789+-*/=A: \nQx"
    for _ in range(500):
        text = "".join(rng.choice(chars) for _ in range(rng.randint(0, 40)))
        v = verify(p, text)
        assert v.reward in (0.0, 1.0) and len(v.legal) == len(v.line_ok) == len(v.reachable)
    assert verify(p, "12/0=0\n").legal == [False]
    assert verify(p, "5-7=-2\n").legal == [False]  # numbers stay positive
