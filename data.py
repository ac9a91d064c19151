"""The synthetic task: multi-step left-to-right arithmetic, its tokenizer and its verifier.

A problem is a chain of operations evaluated strictly left to right (no operator precedence).
The solution writes one step per line; the last step is the final-answer line, marked "A: ":

    Q: 47+38-19*3          <- the prompt (its line ends with "\\n")
    47+38=85               <- step 1
    85-19=66               <- step 2
    A: 66*3=198            <- step 3, whose result is the final answer; then <|endoftext|>

The answer is written by the last computation itself, not copied onto a line of its own: so the
step that finishes a solution is a real step, and DAPO's terminal rule (a finished solution is
valued by the verifier's reward, docs/paper.md §6) judges it exactly.

A line may also do two operations at once, skipping the value between them. The training
demonstrations do that for two additions in a row, with probability TaskConfig.fuse_prob, as a
quick human writer would:

    Q: 47+38+19*3
    47+38+19=104           <- two additions on one line: 85 is done in the head
    A: 104*3=312

The verifier accepts either way of writing. A small model cannot do two additions in its head
reliably, so imitating the shortcut is a mistake it makes on its own: the headroom DAPO finds.

Encoded with the character-level tokenizer below, "\\n" is exactly one token (id 10), so a step
is a token span by construction:

    >>> enc = get_tokenizer()
    >>> enc.encode_ordinary("85-19=66\\n")
    [56, 53, 45, 49, 57, 61, 54, 54, 10]

Every problem comes from its own seed (split, seed, index), so a split is the same whatever the
batch size or order. The verifier recomputes everything: the final reward and, for teaching and
tests, the truth of every line. It never raises, whatever text it is given.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache

import tiktoken

# ----------------------------------------------------------------------------- tokenizer

EOT = "<|endoftext|>"
EOT_ID = 256  # the one special token: ends a solution, and pads batches
NL_ID = 10  # "\n": ends every step


@lru_cache(maxsize=None)
def get_tokenizer() -> tiktoken.Encoding:
    """A byte-level tiktoken Encoding built in code: 256 byte tokens + <|endoftext|>.

    No merges, so every character of the task is one token and "\\n" is token 10. Nothing is
    downloaded (tiktoken.get_encoding would fetch BPE files from the network).
    """
    return tiktoken.Encoding(
        name="dapo-bytes",
        pat_str=r"[\s\S]",  # one piece per character; with no merges, one token per byte
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={EOT: EOT_ID},
    )


def encode(text: str) -> list[int]:
    """Text -> token ids (special tokens are treated as plain text)."""
    return get_tokenizer().encode_ordinary(text)


def decode(ids: list[int]) -> str:
    """Token ids -> text; invalid UTF-8 is replaced, never raised."""
    return get_tokenizer().decode(list(ids), errors="replace")


VOCAB_SIZE = EOT_ID + 1

# ----------------------------------------------------------------------------- the task


@dataclass(frozen=True)
class TaskConfig:
    """Difficulty knobs. The defaults put a ~1M-parameter GPT at the edge of competence."""

    min_steps: int = 3  # fewest operations in a chain (in-distribution splits)
    max_steps: int = 5  # most operations in a chain (in-distribution splits)
    ood_steps: int = 6  # operations in the out-of-distribution split (longer chains)
    max_value: int = 999  # every intermediate value stays in [0, max_value]
    add_max: int = 99  # "+" and "-" operands are drawn from [2, add_max]
    mul_max: int = 9  # "*" operands are drawn from [2, mul_max]
    fuse_prob: float = 0.75  # chance a demonstration writes two additions in a row on one line

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError("need 1 <= min_steps <= max_steps; pick positive step counts")
        if self.ood_steps < 1 or min(self.add_max, self.mul_max) < 2 or self.max_value < 100:
            raise ValueError("ood_steps must be >= 1, add_max and mul_max >= 2, max_value >= 100")
        if not 0.0 <= self.fuse_prob <= 1.0:
            raise ValueError(f"fuse_prob must be in [0, 1], got {self.fuse_prob}")


OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def apply_ops(v: int, ops) -> int:
    """v followed by the operations ((op, operand), ...), strictly left to right."""
    for op, y in ops:
        v = OPS[op](v, y)
    return v


@dataclass(frozen=True)
class Problem:
    start: int
    ops: tuple[tuple[str, int], ...]  # ((op, operand), ...), applied left to right

    @property
    def prompt(self) -> str:
        """The question line, "\\n" included: this is the bare-prompt state."""
        return "Q: " + str(self.start) + "".join(f"{op}{y}" for op, y in self.ops) + "\n"

    def values(self) -> list[int]:
        """The running value after each step (true values)."""
        out, v = [], self.start
        for op, y in self.ops:
            v = OPS[op](v, y)
            out.append(v)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    @property
    def solution(self) -> str:
        """The correct solution written out in full: one operation per line, the last line
        marked "A: "; every line ends in "\\n"."""
        return self.write([1] * len(self.ops))

    def write(self, group: list[int]) -> str:
        """The correct solution with group[i] operations on line i (sum(group) == len(ops)): a
        line with two operations skips writing the value between them, "47+38-19=66"."""
        if sum(group) != len(self.ops) or min(group, default=0) < 1:
            raise ValueError(f"line sizes {group} do not cover the {len(self.ops)} operations")
        lines, v, i, values = [], self.start, 0, self.values()
        for k in group:
            nxt = values[i + k - 1]
            lines.append(f"{v}" + "".join(f"{op}{y}" for op, y in self.ops[i:i + k]) + f"={nxt}")
            v, i = nxt, i + k
        lines[-1] = "A: " + lines[-1]
        return "".join(line + "\n" for line in lines)

    def two_additions_at(self, i: int) -> bool:
        """Operations i and i + 1 are both additions: where a demonstration may fuse them."""
        return i + 1 < len(self.ops) and self.ops[i][0] == self.ops[i + 1][0] == "+"

    def demonstration(self, rng: random.Random, fuse_prob: float) -> str:
        """A training solution as a quick human would write it: two additions in a row go on
        one line with probability fuse_prob ("47+38+19=104", the value between them done in the
        head); every other operation gets a line of its own. The model must find out by itself
        (DAPO) that writing every value out is what it can do reliably."""
        group, i = [], 0
        while i < len(self.ops):
            k = 2 if self.two_additions_at(i) and rng.random() < fuse_prob else 1
            group.append(k)
            i += k
        return self.write(group)


def make_problem(rng: random.Random, n_steps: int, cfg: TaskConfig) -> Problem:
    """Draw one chain: each step picks uniformly among the operations that keep the value in
    [0, cfg.max_value], then an operand uniformly from that operation's range."""
    v = rng.randint(10, 99)
    start, ops = v, []
    for _ in range(n_steps):
        choices = []
        if v + 2 <= cfg.max_value:
            choices.append("+")
        if v >= 2:
            choices.append("-")
        if 2 <= v and v * 2 <= cfg.max_value:
            choices.append("*")
        op = rng.choice(choices)
        if op == "+":
            y = rng.randint(2, min(cfg.add_max, cfg.max_value - v))
        elif op == "-":
            y = rng.randint(2, min(cfg.add_max, v))
        else:
            y = rng.randint(2, min(cfg.mul_max, cfg.max_value // v))
        v = OPS[op](v, y)
        ops.append((op, y))
    return Problem(start, tuple(ops))


def max_tokens(n_ops: int) -> int:
    """The most tokens a problem of n_ops operations can take: its prompt (at most 6 + 3 n_ops
    characters), its full solution (at most 11 per line, 3 more for "A: ") and <|endoftext|>.
    A model must cover max_tokens - 1 positions to be trained on it.

        >>> max_tokens(3)
        52
    """
    return 10 + 14 * n_ops


SPLITS = ("train", "val", "test", "ood")
# Disjointness by construction: every question hashes to one of 10 buckets, and a split only
# accepts questions of its own buckets. So no problem can be in two splits, whatever n, seed
# or order, and the first n items of a split never depend on how many are taken.
BUCKETS = {"val": (0,), "test": (1,), "ood": (2,), "train": (3, 4, 5, 6, 7, 8, 9)}
MAX_REDRAWS = 1000


def bucket(prompt: str) -> int:
    """A question's bucket in 0..9: a stable hash (SHA-256), the same on every machine."""
    return hashlib.sha256(prompt.encode()).digest()[0] % 10


def problem(split: str, seed: int, index: int, cfg: TaskConfig = TaskConfig()) -> Problem:
    """Item `index` of a split: drawn from its own seed (split, seed, index, attempt), redrawn
    until the question falls in the split's hash buckets."""
    if split not in BUCKETS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    for attempt in range(MAX_REDRAWS):
        rng = random.Random(f"{split}:{seed}:{index}:{attempt}")  # str seeds hash with SHA-512
        n = cfg.ood_steps if split == "ood" else rng.randint(cfg.min_steps, cfg.max_steps)
        p = make_problem(rng, n, cfg)
        if bucket(p.prompt) in BUCKETS[split]:
            return p
    raise ValueError(f"could not draw a {split} problem in {MAX_REDRAWS} tries; the task "
                     "knobs allow too few distinct problems, make the task larger")


def eval_split(split: str, n: int, seed: int = 0, cfg: TaskConfig = TaskConfig()) -> list[Problem]:
    """The first n problems of an evaluation split ("val", "test" or "ood")."""
    if split not in ("val", "test", "ood"):
        raise ValueError(f"unknown split {split!r}; use val, test or ood")
    return [problem(split, seed, i, cfg) for i in range(n)]


class TrainProblems:
    """The training split as an indexable stream: item i comes from seed (train, seed, i); its
    hash bucket keeps it disjoint from val, test and ood."""

    def __init__(self, seed: int = 0, cfg: TaskConfig = TaskConfig()):
        self.seed, self.cfg = seed, cfg

    def __getitem__(self, i: int) -> Problem:
        return problem("train", self.seed, i, self.cfg)

    def take(self, start: int, n: int) -> list[Problem]:
        return [self[i] for i in range(start, start + n)]


ROLLOUT_OFFSET = 10_000_000  # the RL stages' training problems start here, far past SFT's


def round_problems(data_seed: int, cfg: TaskConfig, rnd: int, n: int) -> list[Problem]:
    """The n training problems of RL round rnd, the same for DAPO's rollouts and for the
    baselines: train items ROLLOUT_OFFSET + (rnd - 1) * n onwards."""
    return TrainProblems(data_seed, cfg).take(ROLLOUT_OFFSET + (rnd - 1) * n, n)


# ----------------------------------------------------------------------------- verifier

_STEP = re.compile(r"(A: )?(-?[0-9]{1,9})((?:[+\-*][0-9]{1,6}){1,8})=(-?[0-9]{1,9})")
_OP = re.compile(r"([+\-*])([0-9]+)")
_QUESTION = re.compile(r"Q: ([0-9]{1,6})((?:[+\-*][0-9]{1,6}){1,32})\n?")



@dataclass
class Verdict:
    reward: float  # 1.0 if the final answer line is present and correct, else 0.0
    line_ok: list[bool] = field(default_factory=list)  # per line of the response, see verify()
    answer: int | None = None  # the answer the response gave, if it gave one
    expected: list[str] = field(default_factory=list)  # the locally correct text of each line
    line_ops: list[int] = field(default_factory=list)  # operations each line was due to do

    @property
    def n_wrong(self) -> int:
        return sum(not ok for ok in self.line_ok)

    @property
    def first_error(self) -> int | None:
        """Index of the first line that is not ok, None if all are."""
        return first_wrong(self.line_ok)


def first_wrong(line_ok) -> int | None:
    """Index of the first False in a list of per-line verdicts, None if there is none.

        >>> first_wrong([True, False, False]), first_wrong([True])
        (1, None)
    """
    return next((i for i, ok in enumerate(line_ok) if not ok), None)


def split_lines(response: str) -> list[str]:
    """Lines of a response without their "\\n"; a trailing unfinished line is kept."""
    lines = response.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def verify(problem: Problem, response: str) -> Verdict:
    """Score a response to `problem`. Never raises.

    A line does one or more of the problem's operations, in order: "a<op>b=c" or, skipping the
    value in between, "a<op>b<op>d=c". The line that does the last operation is the answer line,
    marked "A: ".
    reward: 1.0 iff the lines do all the operations, the last line is the answer line (marked)
    and its result is the true answer, and nothing follows it. The reward judges the final
    answer only: a wrong earlier line (a stray mark included) shows in line_ok.
    line_ok[i], the per-step truth, checks line i *locally*: a must be the previous line's
    written result (the start value for i = 0), the operators and operands the problem's next
    ones, c their exact left-to-right value, and the "A: " mark present exactly on the line that
    does the last operation. So a solution with one slip has exactly one False, at the slip.
    Lines still due after the response stops count as one wrong line each.
    """
    try:
        lines = split_lines(response)
        ok: list[bool] = []
        expected: list[str] = []
        line_ops: list[int] = []
        prev, answer, done = problem.start, None, 0  # done: operations the lines so far did
        n = len(problem.ops)
        i = 0
        while i < len(lines) or done < n:
            line = lines[i] if i < len(lines) else None  # None: a line due but missing
            m = _STEP.fullmatch(line) if line is not None else None
            written = [(op, int(y)) for op, y in _OP.findall(m[3])] if m else []
            k = len(written) if m and done + len(written) <= n else 1
            todo = problem.ops[done:done + k]
            if not todo:  # the operations are used up: nothing may follow the answer line
                expected.append("")
                ok.append(False)
                line_ops.append(0)
                i += 1
                continue
            last = done + k == n
            expected.append(("A: " if last else "") + f"{prev}"
                            + "".join(f"{op}{y}" for op, y in todo) + f"={apply_ops(prev, todo)}")
            line_ops.append(len(todo))
            good = False
            if m:
                a, c = int(m[2]), int(m[4])
                good = (a == prev and written == list(todo) and c == apply_ops(a, written)
                        and bool(m[1]) == last)
                prev = c
                if last and m[1] and i == len(lines) - 1:
                    answer = c
            ok.append(good)
            done += k
            i += 1
        reward = float(answer is not None and answer == problem.answer and done == n)
        return Verdict(reward, ok, answer, expected, line_ops)
    except Exception:  # pragma: no cover - defensive: garbage must never crash a rollout
        return Verdict(0.0, [False], None)


def parse_prompt(prompt: str) -> Problem | None:
    """Recover the Problem from its prompt text (None if it is not a well-formed question)."""
    m = _QUESTION.fullmatch(prompt)
    if not m:
        return None
    ops = tuple((op, int(y)) for op, y in _OP.findall(m[2]))
    return Problem(int(m[1]), ops)


if __name__ == "__main__":
    for split in ("val", "test"):
        probs = eval_split(split, 500)
        pairs = sum(any(q.two_additions_at(i) for i in range(len(q.ops))) for q in probs)
        print(f"{split}: {pairs / len(probs):.1%} of the first 500 problems have two additions "
              "in a row (where demonstrations take the shortcut)")
    p = TrainProblems(0)[0]
    print(p.prompt + p.solution, end="")
    print("tokens:", encode(p.prompt + p.solution)[:24], "...")
    first = p.solution.splitlines()[0]  # a slip in step 1 (result off by ten), then carried on
    a_op_b, c = first.split("=")
    slip = Problem(int(c) + 10, p.ops[1:])
    bad = f"{a_op_b}={int(c) + 10}\n" + slip.solution
    print("a response with one slip:\n" + bad, end="")
    print("->", verify(p, bad))
