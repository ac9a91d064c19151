"""Exercise "steps": step spans, prefix states, actions and completion (dapo.step_spans,
dapo.prefix_states, dapo.first_step, dapo.complete; docs/paper.md §3.1, §6, App. A.2). Run:
python -m course.exercise test --set steps."""

import torch

from dapo import complete, first_step, prefix_states, step_spans
from data import EOT_ID, NL_ID, Problem, decode, encode

RESPONSE = encode("7+5=12\n12*3=36\nA: 36-6=30\n")


def test_step_spans_end_with_their_newline():
    spans = step_spans(RESPONSE)
    assert [decode(RESPONSE[a:b]) for a, b in spans] == ["7+5=12\n", "12*3=36\n",
                                                         "A: 36-6=30\n"], (
        "likely mistake: a step is a line with its '\\n' token (the '\\n' belongs to the "
        "step); spans are [start, end) and each starts where the last ended")
    assert spans[0][0] == 0 and all(b == c for (_, b), (c, _) in zip(spans, spans[1:]))


def test_a_trailing_piece_without_newline_is_a_last_step():
    tokens = encode("7+5=12\nA: 12*3")
    assert step_spans(tokens)[-1] == (len(encode("7+5=12\n")), len(tokens)), (
        "likely mistake: a response cut off mid-line still ends with a (last) step")
    assert step_spans([]) == []


def test_prefix_states_start_at_the_bare_prompt():
    prompt = encode("Q: 7+5*3-6\n")
    states = prefix_states(prompt, RESPONSE)
    assert [decode(s) for s in states] == ["Q: 7+5*3-6\n", "Q: 7+5*3-6\n7+5=12\n",
                                           "Q: 7+5*3-6\n7+5=12\n12*3=36\n"], (
        "likely mistake: the states are the bare prompt, then the prompt with the first t "
        "steps for t = 1 .. steps - 1; the finished response is terminal, not a state")


def test_first_step_keeps_the_newline():
    assert first_step(encode("12*3=36\nA: 36-6=30\n") + [EOT_ID]) == encode("12*3=36\n"), (
        "likely mistake: the action is the continuation up to and including its first "
        "'\\n' token (log-probs must count the decision to end the line)")
    assert first_step(encode("A: 36-6")) == encode("A: 36-6")
    assert first_step([NL_ID]) == [NL_ID]


def test_complete_scores_the_state_with_its_continuation():
    p = Problem(7, (("+", 5), ("*", 3)))  # 7+5=12, 12*3=36
    prompt = encode(p.prompt)
    state = prompt + encode("7+5=12\n")
    right, wrong = encode("A: 12*3=36\n") + [EOT_ID], encode("A: 12*3=35\n") + [EOT_ID]

    def sample(states, K):  # a stand-in policy: K continuations per state, in order
        return [right, wrong, right][:K] * len(states)
    conts, rewards = complete(sample, [state, prompt], [p, p], K=3)
    assert len(conts) == 6 and rewards.shape == (2, 3)
    assert rewards[0].tolist() == [1.0, 0.0, 1.0], (
        "likely mistake: a continuation's reward is the verifier's score of the whole response, "
        "the state's steps followed by the continuation (its <|endoftext|> left out), "
        "continuation k of state i at i * K + k")
    assert torch.equal(rewards[1], torch.zeros(3))  # from the bare prompt, a line is missing
