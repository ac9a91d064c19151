from dapo import first_step, prefix_states, step_spans
from data import NL_ID, decode, encode


def fresh_response(rng) -> str:
    lines = [f"{rng.randint(2, 99)}+{rng.randint(2, 99)}={rng.randint(2, 999)}"
             for _ in range(rng.randint(1, 5))]
    return "".join(x + "\n" for x in lines) + ("" if rng.random() < 0.5 else "A: 12")


def test_spans_and_states_on_fresh_responses(rng):
    for _ in range(30):
        text = fresh_response(rng)
        tokens, prompt = encode(text), encode("Q: 1+2\n")
        spans = step_spans(tokens)
        assert "".join(decode(tokens[a:b]) for a, b in spans) == text
        assert all(tokens[b - 1] == NL_ID for a, b in spans[:-1])
        states = prefix_states(prompt, tokens)
        assert len(states) == len(spans) and states[0] == prompt
        assert [len(s) - len(prompt) for s in states] == [a for a, _ in spans]
        assert first_step(tokens) == tokens[:spans[0][1]]
