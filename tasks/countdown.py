"""The countdown game: a task whose steps are choices, and a correct step can be a dead end.

A prompt gives a pool of numbers and a target. Each line takes two numbers of the current pool,
combines them with + - * or / (division only where exact), and writes the result, which
replaces the two in the pool; the last line, marked "A: ", must produce the target:

    Q: 7 23 41 5 -> 120     <- the prompt: the pool, then the target
    41-23=18                <- pool 7 18 5: a legal, right line, but 120 is out of reach now

    Q: 7 23 41 5 -> 120
    7*23=161                <- pool 161 41 5
    A: 161-41=120           <- the target: solved

The verifier recomputes every line: its arithmetic, whether its operands are in the pool, and
whether the target can still be reached from the pool after it (an exact search over the pool,
reachable). So it knows, line by line, what no single line shows: that a legal, right line has
made the problem unsolvable. It never raises, whatever text it is given.

Every problem comes from its own seed (split, seed, index) and is solvable: its target is the
value of a random expression over the pool. Demonstrations come from a solver (solve).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from functools import lru_cache

OPS = ("+", "-", "*", "/")
_LINE = re.compile(r"(A: )?(-?[0-9]{1,7})([+\-*/])(-?[0-9]{1,7})=(-?[0-9]{1,9})")
_PROMPT = re.compile(r"Q: ((?:[0-9]{1,4} ){1,7}[0-9]{1,4}) -> ([0-9]{1,7})\n?")


def combine(a: int, op: str, b: int) -> int | None:
    """a op b, or None where it is not allowed: every number stays a positive integer, so a
    subtraction must leave more than 0 and a division must be exact.

        >>> combine(41, "-", 23), combine(23, "-", 41), combine(12, "/", 4), combine(12, "/", 5)
        (18, None, 3, None)
    """
    if a <= 0 or b <= 0:
        return None
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a > b else None
    if op == "*":
        return a * b
    return a // b if a % b == 0 else None


def moves(pool: tuple[int, ...]):
    """(a, op, b, result, the pool after) of every legal line on a pool (sorted tuples)."""
    for i in range(len(pool)):
        for j in range(len(pool)):
            if i == j:
                continue
            for op in OPS:
                r = combine(pool[i], op, pool[j])
                if r is not None:
                    rest = [x for k, x in enumerate(pool) if k not in (i, j)]
                    yield pool[i], op, pool[j], r, tuple(sorted(rest + [r]))


@lru_cache(maxsize=200_000)
def reachable(pool: tuple[int, ...], target: int) -> bool:
    """Can some sequence of lines from this pool (sorted) end with a line that makes target?

        >>> reachable((5, 7, 18), 120), reachable((5, 7, 23, 41), 120), reachable((3, 4), 12)
        (False, True, True)
    """
    return any(r == target or (len(after) > 1 and reachable(after, target))
               for _, _, _, r, after in moves(pool))


def solve(pool: tuple[int, ...], target: int) -> list[tuple[int, str, int, int]] | None:
    """One sequence of lines (a, op, b, result) that makes target, the last line making it,
    or None: depth first, in the order moves lists them, so the same problem always gets the
    same demonstration."""
    for a, op, b, r, after in moves(tuple(sorted(pool))):
        if r == target:
            return [(a, op, b, r)]
        if len(after) > 1 and reachable(after, target):
            return [(a, op, b, r)] + solve(after, target)
    return None


@dataclass(frozen=True)
class Countdown:
    pool: tuple[int, ...]
    target: int

    @property
    def prompt(self) -> str:
        return f"Q: {' '.join(map(str, self.pool))} -> {self.target}\n"

    @property
    def solution(self) -> str:
        """The solver's lines, the last one marked "A: "; "" if there is none."""
        steps = solve(self.pool, self.target) or []
        lines = [f"{a}{op}{b}={r}\n" for a, op, b, r in steps]
        return "".join(lines[:-1]) + ("A: " + lines[-1] if lines else "")


def make_problem(rng: random.Random, n_numbers: int, high: int = 25,
                 max_target: int = 999) -> Countdown:
    """n_numbers numbers in 1..high and a target made from them by random lines (positive,
    exact, at most max_target, not in the pool): solvable by construction."""
    while True:
        pool = tuple(rng.randint(1, high) for _ in range(n_numbers))
        cur = list(pool)
        for _ in range(rng.randint(1, n_numbers - 1)):
            a, b = rng.sample(range(len(cur)), 2)
            r = combine(cur[a], rng.choice(OPS), cur[b])
            if r is None:
                break
            cur = [x for k, x in enumerate(cur) if k not in (a, b)] + [r]
        else:
            if 0 < cur[-1] <= max_target and cur[-1] not in pool:
                return Countdown(pool, cur[-1])


@dataclass
class Verdict:
    reward: float  # 1.0 if an "A: " line makes the target with legal, right arithmetic
    line_ok: list[bool] = field(default_factory=list)  # legal, right, and the target reachable
    legal: list[bool] = field(default_factory=list)  # operands in the pool, arithmetic right
    reachable: list[bool] = field(default_factory=list)  # target reachable after the line


def parse_prompt(prompt: str) -> Countdown | None:
    """The problem of a prompt (None if it is not a well-formed question)."""
    m = _PROMPT.fullmatch(prompt)
    return Countdown(tuple(int(x) for x in m[1].split()), int(m[2])) if m else None


def verify(problem: Countdown, response: str) -> Verdict:
    """The reward and the truth of every line (see Verdict). A line that is not of the form
    a op b = c, uses a number the pool does not hold, or computes wrongly is illegal, and
    every line after it is judged on the pool as it was before it."""
    pool, v = list(problem.pool), Verdict(0.0)
    for line in response.split("\n"):
        if not line:
            continue
        m = _LINE.fullmatch(line.strip())
        a, op, b, c = (int(m[2]), m[3], int(m[4]), int(m[5])) if m else (None, None, None, None)
        ok = m is not None and combine(a, op, b) == c and _takes(pool, a, b)
        if ok:
            pool.remove(a)
            pool.remove(b)
            pool.append(c)
        if m and m[1]:  # an answer line: right only if it makes the target
            alive = ok and c == problem.target
        else:
            alive = ok and len(pool) > 1 and reachable(tuple(sorted(pool)), problem.target)
        v.legal.append(ok)
        v.reachable.append(alive)
        v.line_ok.append(ok and alive)
        if m and m[1]:  # the answer line ends the solution
            v.reward = float(ok and c == problem.target)
            break
    return v


def _takes(pool: list[int], a: int, b: int) -> bool:
    """Are a and b two numbers of the pool (two copies if a == b)?"""
    return pool.count(a) >= 1 + (a == b) and pool.count(b) >= 1
