"""Tests of data.py: tokenizer, problem format, verifier, prompt parsing and splits."""

import doctest
import random
import socket

import pytest
import tiktoken
import torch

import data
from data import (EOT, EOT_ID, NL_ID, VOCAB_SIZE, Problem, TaskConfig, TrainProblems, decode,
                  encode, eval_split, get_tokenizer, make_problem, parse_prompt, verify)

# A hand-worked problem (the module docstring's example).
HAND = Problem(47, (("+", 38), ("-", 19), ("*", 3)))
HAND_SOLUTION = "47+38=85\n85-19=66\nA: 66*3=198\n"

# A task so small that random draws collide often: 1 step, few operands (~1.6k problems).
SMALL = TaskConfig(min_steps=1, max_steps=1, ood_steps=2, add_max=9, mul_max=3)


def some_problems():
    """A mix of in-distribution and OOD problems with the default config."""
    return eval_split("val", 150) + eval_split("test", 50) + eval_split("ood", 50)


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_is_built_in_code_without_network(monkeypatch):
    """Guards against a tokenizer that downloads BPE files (tiktoken.get_encoding), which fails
    offline: with every socket call blocked, a fresh get_tokenizer() must still work."""

    def no_network(*args, **kwargs):
        raise OSError("network access attempted during get_tokenizer()")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    get_tokenizer.cache_clear()
    try:
        enc = get_tokenizer()
        assert isinstance(enc, tiktoken.Encoding)
        assert enc.n_vocab == VOCAB_SIZE == 257
        assert enc.encode_ordinary("Q: 1+2\n") == [81, 58, 32, 49, 43, 50, 10]
    finally:
        get_tokenizer.cache_clear()


@pytest.mark.parametrize("text", [
    "",
    "Q: 47+38-19*3\n",
    HAND_SOLUTION,
    "héllo wörld — ünïcödé ✓ 日本語 🚀 \u0301",
    "tabs\tand\r\nwindows\x00nul",
    "<|endoftext|> is plain text here",
    "A: 99999999999999999",
])
def test_round_trip_arbitrary_text(text):
    """Guards against a lossy tokenizer (dropped or merged bytes, special-token handling of
    plain text): decode(encode(text)) == text, one token per UTF-8 byte."""
    ids = encode(text)
    assert decode(ids) == text
    assert len(ids) == len(text.encode("utf-8"))
    assert all(0 <= i < 256 for i in ids)


def test_round_trip_task_text():
    """Guards against the task's own text not surviving the tokenizer, and against multi-digit
    merges (every character of the task must be exactly one token)."""
    for p in some_problems():
        text = p.prompt + p.solution
        ids = encode(text)
        assert decode(ids) == text
        assert len(ids) == len(text)


def test_newline_and_eot_ids():
    """Guards against step boundaries that are not single tokens: "\\n" must be exactly one
    token (NL_ID) and <|endoftext|> the single special id EOT_ID."""
    enc = get_tokenizer()
    assert encode("\n") == [NL_ID] == [10]
    assert encode("85-19=66\n") == [56, 53, 45, 49, 57, 61, 54, 54, 10]
    assert enc.encode(EOT, allowed_special="all") == [EOT_ID] == [256]
    assert decode([EOT_ID]) == EOT
    assert encode(EOT) != [EOT_ID]  # encode() treats special tokens as plain text
    assert encode("1+2=3\nA: 3\n").count(NL_ID) == 2


def _random_ids(seed, n):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB_SIZE, (n,), generator=g).tolist()


@pytest.mark.parametrize("ids", [
    [0xFF],
    [0xC3],  # a truncated 2-byte sequence
    [0xE2, 0x82],  # a truncated 3-byte sequence
    [0x80, 0x80, 0x41],  # stray continuation bytes
    [0xF0, 0x9F, EOT_ID, 0x9A, 0x80],  # EOT inside a 4-byte sequence
    _random_ids(0, 300),
    _random_ids(1, 300),
    [],
])
def test_decode_never_raises_on_invalid_bytes(ids):
    """Guards against decode raising UnicodeDecodeError on model samples that cut a multi-byte
    character: invalid UTF-8 must be replaced, never raised."""
    text = decode(ids)
    assert isinstance(text, str)
    if ids and ids[0] in (0xFF, 0xC3, 0x80):
        assert "\ufffd" in text


# ----------------------------------------------------------------------------- problems


def test_hand_worked_problem():
    """Guards against a wrong prompt/solution format or wrong left-to-right evaluation on the
    documented example 47+38-19*3 = 198 (no operator precedence)."""
    assert HAND.prompt == "Q: 47+38-19*3\n"
    assert HAND.values() == [85, 66, 198]
    assert HAND.answer == 198
    assert HAND.solution == HAND_SOLUTION


def test_solution_format_and_value_range():
    """Guards against solutions that break the one-step-per-line format (the step splitter
    relies on it) or leave [0, max_value]: every line ends in "\\n", step i reads
    "<prev><op><operand>=<value>", and the last step's line is marked "A: " (its value is the
    answer)."""
    cfg = TaskConfig()
    for p in some_problems():
        sol = p.solution
        assert sol.endswith("\n") and "\n\n" not in sol
        lines = sol.split("\n")[:-1]
        assert len(lines) == len(p.ops)
        prev = p.start
        assert 10 <= p.start <= 99
        for i, (line, (op, y), v) in enumerate(zip(lines, p.ops, p.values())):
            assert line == ("A: " if i == len(p.ops) - 1 else "") + f"{prev}{op}{y}={v}"
            assert 0 <= v <= cfg.max_value
            assert 2 <= y <= (cfg.add_max if op in "+-" else cfg.mul_max)
            prev = v
        assert lines[-1].startswith("A: ") and lines[-1].endswith(f"={p.answer}")
        assert encode(sol).count(NL_ID) == len(p.ops)


@pytest.mark.parametrize("cfg", [
    TaskConfig(),
    TaskConfig(max_value=100, add_max=60, mul_max=9),
    TaskConfig(min_steps=8, max_steps=8, max_value=150, add_max=120, mul_max=7),
])
def test_make_problem_stays_in_range(cfg):
    """Guards against operand choices that push a running value below 0 or above max_value
    (tight configs make every boundary case occur)."""
    rng = random.Random(1234)
    for _ in range(400):
        n = rng.randint(cfg.min_steps, cfg.max_steps)
        p = make_problem(rng, n, cfg)
        assert len(p.ops) == n
        assert all(0 <= v <= cfg.max_value for v in p.values())
        for op, y in p.ops:
            assert 2 <= y <= (cfg.add_max if op in "+-" else cfg.mul_max)


def test_write_and_demonstration_on_the_hand_example():
    """Guards against a wrong two-operation line: Problem.write skips exactly the value between
    the line's operations and marks the line that does the last one; a demonstration with
    fuse_prob 0 is the full solution; with fuse_prob 1 it pairs two additions in a row, from
    the start, and leaves every other operation on a line of its own."""
    assert HAND.write([2, 1]) == "47+38-19=66\nA: 66*3=198\n"
    assert HAND.write([1, 2]) == "47+38=85\nA: 85-19*3=198\n"
    assert HAND.write([3]) == "A: 47+38-19*3=198\n"
    for bad in ([1, 1], [2, 2], [0, 3], []):
        with pytest.raises(ValueError, match="do not cover"):
            HAND.write(bad)
    rng = random.Random(0)
    assert HAND.demonstration(rng, 1.0) == HAND_SOLUTION  # no two additions in a row
    adds = Problem(10, (("+", 2), ("+", 3), ("+", 4), ("*", 2), ("+", 1), ("+", 5)))
    assert adds.demonstration(rng, 0.0) == adds.solution
    assert adds.demonstration(rng, 1.0) == "10+2+3=15\n15+4=19\n19*2=38\nA: 38+1+5=44\n"


def test_demonstrations_are_correct_and_fuse_at_the_stated_rate():
    """Guards against demonstrations the verifier rejects, or a fuse rate other than the knob:
    every demonstration scores 1 with every line ok, lines do one or two operations, only two
    additions share a line, and the share of line starts at two additions in a row that open
    a two-operation line is fuse_prob within sampling error."""
    rng = random.Random(7)
    starts = fused = 0
    for p in some_problems():
        for _ in range(4):
            text = p.demonstration(rng, 0.3)
            v = verify(p, text)
            assert v.reward == 1.0 and all(v.line_ok) and set(v.line_ops) <= {1, 2}
            assert sum(v.line_ops) == len(p.ops)
            done = 0
            for k in v.line_ops:
                pair = [op for op, _ in p.ops[done:done + 2]]
                if k == 2:
                    assert pair == ["+", "+"]
                if pair == ["+", "+"]:  # a line that could have been fused
                    starts, fused = starts + 1, fused + (k == 2)
                done += k
    rate = fused / starts
    assert abs(rate - 0.3) < 4 * (0.3 * 0.7 / starts) ** 0.5, (rate, starts)


def test_verify_two_operation_lines():
    """Guards against a verifier that only knows one operation per line: two-operation lines
    are checked against the problem's next two operations and their exact left-to-right value;
    a slip in one is exactly one False; a line with the wrong operations, or more than are left,
    is wrong; missing lines are due one operation each."""
    v = verify(HAND, "47+38-19=66\nA: 66*3=198\n")
    assert (v.reward, v.line_ok, v.line_ops, v.answer) == (1.0, [True, True], [2, 1], 198)
    v = verify(HAND, "47+38-19=67\nA: 67*3=201\n")  # slip in the fused line, carried on
    assert v.reward == 0.0 and v.line_ok == [False, True] and v.first_error == 0
    assert v.expected == ["47+38-19=66", "A: 67*3=201"]
    v = verify(HAND, "47+38*19=1615\nA: 1615*3=4845\n")  # wrong operator, then locally right
    assert v.reward == 0.0 and v.line_ok == [False, True]
    v = verify(HAND, "47+38=85\nA: 85-19*3*2=396\n")  # more operations than are left: wrong,
    assert v.reward == 0.0 and v.line_ok == [True, False, False]  # counted as one, so the
    assert v.line_ops == [1, 1, 1] and v.expected[2] == "A: 396*3=1188"  # last one is missing
    v = verify(HAND, "47+38-19=66\n")  # stops early: the answer line is missing
    assert v.reward == 0.0 and v.line_ok == [True, False] and v.expected[1] == "A: 66*3=198"
    v = verify(HAND, "47+38-19=66\n66*3=198\n")  # the answer line lacks its mark
    assert v.reward == 0.0 and v.answer is None and v.line_ok == [True, False]
    v = verify(HAND, "A: 47+38-19*3=198\nA: 66*3=198\n")  # a line after the answer line
    assert v.reward == 0.0 and v.line_ok == [True, False] and v.expected[1] == ""


# ----------------------------------------------------------------------------- verifier


def test_verify_correct_solution():
    """Guards against a verifier that rejects right answers: the true solution gets reward 1,
    every line ok, no first error, and the parsed answer."""
    for p in [HAND] + some_problems():
        v = verify(p, p.solution)
        assert v.reward == 1.0
        assert v.line_ok == [True] * len(p.ops)
        assert v.first_error is None and v.n_wrong == 0
        assert v.answer == p.answer


def test_verify_wrong_final_answer():
    """Guards against rewarding a wrong answer: earlier steps right but the answer line's
    result off by one gives reward 0 and exactly the answer line is flagged."""
    for p in [HAND] + some_problems()[:50]:
        bad = p.solution[:-len(f"={p.answer}\n")] + f"={p.answer + 1}\n"
        v = verify(p, bad)
        n = len(p.ops)
        assert v.reward == 0.0
        assert v.line_ok == [True] * (n - 1) + [False]
        assert v.first_error == n - 1 and v.n_wrong == 1 and v.answer == p.answer + 1


def test_verify_answer_mark_only_on_the_last_step():
    """Guards against a verifier that ignores the "A: " mark: a right last step without it, or a
    right earlier step with it, is a wrong line; only the marked last step gives the answer."""
    unmarked = "47+38=85\n85-19=66\n66*3=198\n"
    v = verify(HAND, unmarked)
    assert v.reward == 0.0 and v.answer is None and v.line_ok == [True, True, False]
    early = "47+38=85\nA: 85-19=66\nA: 66*3=198\n"
    v = verify(HAND, early)
    assert v.reward == 1.0 and v.line_ok == [True, False, True]


def with_slip(p: Problem, i: int, delta: int = 1) -> str:
    """p's solution with step i's result off by delta and every later step (and the answer)
    computed correctly from the wrong value."""
    lines, v = [], p.start
    for j, (op, y) in enumerate(p.ops):
        nxt = data.OPS[op](v, y) + (delta if j == i else 0)
        lines.append(("A: " if j == len(p.ops) - 1 else "") + f"{v}{op}{y}={nxt}")
        v = nxt
    return "".join(line + "\n" for line in lines)


@pytest.mark.parametrize("i", [0, 1, 2])
def test_verify_single_slip_hand(i):
    """Guards against errors that propagate in the per-step truth: one slip whose later steps
    are computed from the wrong value is exactly one False, at the slip."""
    resp = with_slip(HAND, i)
    expected = {0: "47+38=86\n86-19=67\nA: 67*3=201\n",
                1: "47+38=85\n85-19=67\nA: 67*3=201\n",
                2: "47+38=85\n85-19=66\nA: 66*3=199\n"}[i]
    assert resp == expected
    v = verify(HAND, resp)
    assert v.reward == 0.0
    assert v.line_ok == [j != i for j in range(3)]
    assert v.first_error == i and v.n_wrong == 1


def test_verify_single_slip_random_problems():
    """Guards against the per-step truth of fail_1_wrong statistics: for many problems and every
    step i, a +1 slip at i (later steps consistent with it) has exactly one False at i."""
    for p in some_problems()[::5]:
        for i in range(len(p.ops)):
            v = verify(p, with_slip(p, i))
            assert v.reward == 0.0
            assert v.first_error == i and v.n_wrong == 1 and not v.line_ok[i]


def test_verify_single_slip_through_negative_value():
    """Guards against the documented promise "a solution with one slip has exactly one False"
    breaking when the slip makes a running value negative: 10-8=1, 1-2=-1, A: -1+5=4."""
    p = Problem(10, (("-", 8), ("-", 2), ("+", 5)))
    resp = with_slip(p, 0, delta=-1)
    assert resp == "10-8=1\n1-2=-1\nA: -1+5=4\n"
    v = verify(p, resp)
    assert v.line_ok == [False, True, True]


def _garbage_cases():
    p = HAND
    g = torch.Generator().manual_seed(7)
    rand = decode(torch.randint(0, VOCAB_SIZE, (500,), generator=g).tolist())
    lines = p.solution.split("\n")
    return [
        ("empty", ""),
        ("random bytes", rand),
        ("very long", "47+38=85\n" * 20000 + "x" * 100000),
        ("huge answer", "A: 99999999999999999"),
        ("huge answer nl", "A: 99999999999999999\n"),
        ("huge step", "47+38=999999999999999999999\n" * 2 + "A: 9*9=999999999999999999999\n"),
        ("missing line", "\n".join(lines[:1] + lines[2:])),
        ("only answer", "A: 198\n"),
        ("extra after answer", p.solution + "A: 66*3=198\n"),
        ("blank after answer", p.solution + "\n"),
        ("newlines", "\n" * 10),
        ("crlf", p.solution.replace("\n", "\r\n")),
        ("spaces", p.solution.replace("=", " = ").replace("198", "199")),
        ("prompt echoed", p.prompt + p.solution),
        ("unicode", "４７+３８=８５\n☃\n\ud7ff\n" + EOT),
        ("eot text", p.solution + EOT),
        ("negative", "-47+38=-9\nA: -9+1=-8\n"),
    ]


@pytest.mark.parametrize("name,response", _garbage_cases(), ids=[c[0] for c in _garbage_cases()])
def test_verify_garbage_never_raises(name, response):
    """Guards against a verifier that crashes a rollout or rewards malformed text: garbage gets
    reward 0, at least one wrong line and a first_error."""
    v = verify(HAND, response)
    assert v.reward == 0.0
    assert len(v.line_ok) >= len(HAND.ops)
    assert v.first_error is not None and v.n_wrong >= 1
    assert v.first_error == v.line_ok.index(False)


def test_reward_is_the_outcome_line_ok_is_the_process():
    """Guards against mixing the two signals: the reward is the final answer only (a last line
    "A: ...=198" on line n earns 1 even after malformed steps), while line_ok flags every
    malformed step line."""
    v = verify(HAND, "47 + 38 = 85\n85 - 19 = 66\nA: 66*3=198\n")
    assert v.reward == 1.0 and v.answer == 198
    assert v.line_ok == [False, False, False]  # and "66" follows no written result
    v = verify(HAND, "47+38=999999999999999999999\n85-19=66\nA: 66*3=198\n")
    assert v.reward == 1.0
    assert v.line_ok == [False, False, True]


def test_verify_extra_lines_flagged_at_their_position():
    """Guards against ignoring text after the answer: the answer line stays ok but each extra
    line is False and the reward is 0."""
    v = verify(HAND, HAND.solution + "A: 66*3=198\nbye\n")
    assert v.reward == 0.0
    assert v.line_ok == [True, True, True, False, False]
    assert v.first_error == 3


def test_verify_missing_lines_count_where_due():
    """Guards against a truncated solution being scored on its present lines only: missing
    lines are False where they were due."""
    v = verify(HAND, "47+38=85\n")
    assert v.reward == 0.0
    assert v.line_ok == [True, False, False]
    assert v.first_error == 1 and v.answer is None


# ----------------------------------------------------------------------------- prompts


def test_parse_prompt_round_trip():
    """Guards against prompt parsing that loses operands or operators (the critic stage
    recovers problems from prompt text)."""
    assert parse_prompt(HAND.prompt) == HAND
    for p in some_problems():
        assert parse_prompt(p.prompt) == p
        assert parse_prompt(p.prompt.rstrip("\n")) == p


@pytest.mark.parametrize("text", [
    "", "hello", "Q: \n", "Q: 12\n", "Q: 12+\n", "Q: -5+3\n", "Q: 5+3\nextra", "Q:5+3\n",
    "Q: 5+3\n\n", "q: 5+3\n", "Q: 5/3\n", HAND_SOLUTION, "Q: 1" + "+1" * 40 + "\n",
])
def test_parse_prompt_garbage_returns_none(text):
    """Guards against parse_prompt raising or inventing a problem from malformed text."""
    assert parse_prompt(text) is None


# ----------------------------------------------------------------------------- splits


@pytest.mark.parametrize("split", ["val", "test", "ood"])
def test_eval_split_deterministic(split):
    """Guards against hidden global randomness: the same (split, n, seed) gives the same
    problems on every call."""
    a = eval_split(split, 200, seed=3)
    b = eval_split(split, 200, seed=3)
    assert a == b and len(a) == 200
    assert len({p.prompt for p in a}) == 200  # no duplicates inside a split


@pytest.mark.parametrize("split", ["val", "ood"])
def test_eval_split_prefix_stable(split):
    """Guards against a split that depends on how many problems are asked for: the first 50
    of 400 are the 50 you get when asking for 50."""
    assert eval_split(split, 50, seed=0) == eval_split(split, 400, seed=0)[:50]
    assert eval_split(split, 50, seed=0, cfg=SMALL) == \
        eval_split(split, 400, seed=0, cfg=SMALL)[:50]


def test_test_split_prefix_stable():
    """Guards against a test split whose items change with n (on a small task, where draws
    collide): the first 50 of eval_split('test', 300) must equal eval_split('test', 50)."""
    assert eval_split("test", 50, seed=0, cfg=SMALL) == \
        eval_split("test", 300, seed=0, cfg=SMALL)[:50]


@pytest.mark.parametrize("cfg,n", [(TaskConfig(), 2000), (SMALL, 300)])
def test_val_and_test_disjoint(cfg, n):
    """Guards against evaluating on validation problems: val and test share no prompt, also on
    a small task where independent draws would collide (checked, so the test has teeth)."""
    val = {p.prompt for p in eval_split("val", n, 0, cfg)}
    test = {p.prompt for p in eval_split("test", n, 0, cfg)}
    assert not val & test
    assert {data.bucket(q) for q in val} == {0} and {data.bucket(q) for q in test} == {1}
    if cfg is SMALL:  # raw draws do collide here, so the buckets are what keep them apart
        assert {raw_draw("test", i, cfg) for i in range(n)} & val


def test_train_disjoint_from_heldout_default():
    """Guards against training on held-out problems: the first 3000 training items share no
    prompt with the first 2000 of val, test and ood."""
    heldout = {p.prompt for s in ("val", "test", "ood") for p in eval_split(s, 2000)}
    train = TrainProblems(0).take(0, 3000)
    assert not {p.prompt for p in train} & heldout


def test_train_disjoint_from_heldout_small_task():
    """Guards against the redraw of colliding training items not working: on a small task
    (where raw draws hit held-out problems), training items never equal val/test/ood ones."""
    tp = TrainProblems(0, SMALL)
    heldout = {p.prompt for s in ("val", "test", "ood") for p in eval_split(s, 300, 0, SMALL)}
    train = {p.prompt for p in tp.take(0, 1000)}
    assert not train & heldout
    raw = {raw_draw("train", i, SMALL) for i in range(1000)}
    assert raw & heldout


def test_train_items_from_per_item_seeds():
    """Guards against a training stream whose items depend on batch size or order: take(5, 3)
    equals [tp[5], tp[6], tp[7]], and a fresh stream gives the same items in any order."""
    tp = TrainProblems(0)
    items = tp.take(5, 3)
    assert items == [tp[5], tp[6], tp[7]]
    other = TrainProblems(0)
    assert [other[7], other[5], other[6]] == [items[2], items[0], items[1]]
    assert tp.take(0, 40)[5:8] == items
    assert len({p.prompt for p in tp.take(0, 40)}) == 40


def test_different_seed_different_problems():
    """Guards against a seed that is ignored: seeds 0 and 1 give (almost all) different
    problems in every split."""
    for split in ("val", "test", "ood"):
        a, b = eval_split(split, 100, seed=0), eval_split(split, 100, seed=1)
        assert sum(x == y for x, y in zip(a, b)) <= 2
    a, b = TrainProblems(0).take(0, 100), TrainProblems(1).take(0, 100)
    assert sum(x == y for x, y in zip(a, b)) <= 2


def test_split_step_counts():
    """Guards against an OOD split that is not out of distribution: every OOD problem has
    exactly cfg.ood_steps operations; in-distribution splits use every count in
    [min_steps, max_steps] and nothing else."""
    for cfg in (TaskConfig(), TaskConfig(min_steps=2, max_steps=3, ood_steps=9)):
        assert {len(p.ops) for p in eval_split("ood", 100, 0, cfg)} == {cfg.ood_steps}
        steps = set(range(cfg.min_steps, cfg.max_steps + 1))
        assert {len(p.ops) for p in eval_split("val", 200, 0, cfg)} == steps
        assert {len(p.ops) for p in TrainProblems(0, cfg).take(0, 200)} == steps


@pytest.mark.parametrize("kwargs", [
    {"min_steps": 0},
    {"min_steps": -1},
    {"min_steps": 5, "max_steps": 4},
    {"ood_steps": 0},
    {"add_max": 1},
    {"mul_max": 1},
    {"mul_max": -3},
    {"max_value": 99},
    {"fuse_prob": -0.1},
    {"fuse_prob": 1.5},
])
def test_task_config_rejects_bad_knobs(kwargs):
    """Guards against silently accepting knobs that make problems impossible to generate."""
    with pytest.raises(ValueError):
        TaskConfig(**kwargs)


@pytest.mark.parametrize("split", ["train", "validation", "", "VAL", "oodd"])
def test_eval_split_rejects_unknown_split(split):
    """Guards against a typo in a split name silently producing some other split."""
    with pytest.raises(ValueError, match="unknown split"):
        eval_split(split, 10)


def test_split_that_cannot_be_drawn_raises_instead_of_hanging(monkeypatch):
    """Guards against an endless redraw loop: a split whose buckets no problem can reach must
    raise ValueError with advice after a bounded number of tries."""
    monkeypatch.setitem(data.BUCKETS, "val", ())
    with pytest.raises(ValueError, match="make the task larger"):
        eval_split("val", 1, 0)


def raw_draw(split: str, i: int, cfg: TaskConfig) -> str:
    """A problem drawn like item i of a split but without the bucket rule (attempt 0)."""
    rng = random.Random(f"{split}:0:{i}:0")
    n = cfg.ood_steps if split == "ood" else rng.randint(cfg.min_steps, cfg.max_steps)
    return data.make_problem(rng, n, cfg).prompt


def test_module_docstring_example():
    """Guards against the documented token ids (module docstring doctest) drifting from the
    tokenizer."""
    res = doctest.testmod(data, verbose=False)
    assert res.attempted >= 2 and res.failed == 0
