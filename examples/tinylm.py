"""A tiny character-level language model that really generates text, trained when the server
starts (about a second, numpy only) on the project's own docs, served with continuous
batching and as the OpenAI API.

    pip install 'blazerpc[examples]'
    blaze serve examples/tinylm.py:app --http-port 8000

The model is a seeded random-feature network: the last 8 characters, one-hot, go through a
fixed random projection into 1024 hidden units (tanh), and a ridge-regression readout, solved
once, scores the next character. One decoding step for every active stream is one gather and
one matrix product, which is why continuous batching pays off.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from blazerpc import BlazeApp, Continuous, Skip, Step, Stop
from blazerpc.openai import ChatMessage

CONTEXT = 8
HIDDEN = 1024
SAMPLES = 30_000
RIDGE = 1e-2
CORPUS = Path(__file__).resolve().parent.parent / "docs"

app = BlazeApp()
lm: dict[str, TinyLM] = {}


class TinyLM:
    """Next-character scores from the last CONTEXT characters; trained in one linear solve."""

    def __init__(self, text: str, seed: int = 0) -> None:
        self.chars = sorted(set(text))
        self.codes = {char: code for code, char in enumerate(self.chars)}
        size = len(self.chars)
        rng = np.random.default_rng(seed)
        scale = 1 / np.sqrt(CONTEXT)
        self.project = rng.normal(0, scale, (CONTEXT, size, HIDDEN)).astype(np.float32)
        codes = np.array(self.encode(text), dtype=np.int64)
        starts = rng.integers(0, len(codes) - CONTEXT - 1, SAMPLES)
        contexts = codes[starts[:, None] + np.arange(CONTEXT)]
        targets = np.zeros((SAMPLES, size), dtype=np.float32)
        targets[np.arange(SAMPLES), codes[starts + CONTEXT]] = 1.0
        hidden = self.hidden(contexts)
        gram = hidden.T @ hidden + RIDGE * np.eye(HIDDEN, dtype=np.float32)
        self.readout = np.linalg.lstsq(gram, hidden.T @ targets, rcond=None)[0]

    def encode(self, text: str) -> list[int]:
        space = self.codes.get(" ", 0)
        return [self.codes.get(char, space) for char in text]

    def hidden(self, contexts: np.ndarray) -> np.ndarray:
        """(streams, CONTEXT) character codes -> (streams, HIDDEN) features."""
        features: np.ndarray = np.tanh(self.project[np.arange(CONTEXT), contexts].sum(axis=1))
        return features

    def scores(self, contexts: np.ndarray) -> np.ndarray:
        """One decoding step for every stream at once."""
        scores: np.ndarray = self.hidden(contexts) @ self.readout
        return scores


@app.lifespan
def train() -> Iterator[None]:
    text = "\n".join(path.read_text(encoding="utf-8") for path in sorted(CORPUS.glob("*.md")))
    lm["model"] = TinyLM(text)
    yield
    lm.clear()


def _generate(
    prompts: list[str],
    max_tokens: list[int | None],
    temperature: list[float | None],
    seed: list[int | None],
    stop: list[list[str]],
    steps: list[Step],
) -> list[str | Stop | Skip]:
    """One character for each active stream: one matrix product for all of them. Characters
    that may begin a stop sequence are held back (Skip) until they turn out not to."""
    model = lm["model"]
    for prompt, given_seed, step in zip(prompts, seed, steps, strict=True):
        if step.is_first:
            context = [model.codes.get(" ", 0)] * CONTEXT + model.encode(prompt)
            step.state = {
                "context": context[-CONTEXT:],
                "rng": np.random.default_rng(given_seed),
                "held": "",
                "made": 0,
            }
    contexts = np.array([step.state["context"] for step in steps], dtype=np.int64)
    scores = model.scores(contexts)
    out: list[str | Stop | Skip] = []
    for row, limit, heat, stops, step in zip(
        scores, max_tokens, temperature, stop, steps, strict=True
    ):
        state: dict[str, Any] = step.state
        if state["made"] >= (16 if limit is None else limit):
            out.append(Stop(state["held"]) if state["held"] else Stop())
            continue
        code = _sample(row, 1.0 if heat is None else heat, state["rng"])
        state["context"] = [*state["context"][1:], code]
        state["made"] += 1
        held = state["held"] + model.chars[code]
        words = [word for word in stops if word]
        if any(word in held for word in words):  # a stop sequence: none of it is sent
            cut = min(held.index(word) for word in words if word in held)
            out.append(Stop(held[:cut]) if cut else Stop())
        elif any(word.startswith(held[i:]) for word in words for i in range(len(held))):
            state["held"] = held  # it may be the start of a stop sequence: wait and see
            out.append(Skip())
        else:
            state["held"] = ""
            out.append(held)
    return out


def _sample(scores: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """A character code: the best at temperature 0, else drawn from the scores sharpened
    (squared at temperature 1: the readout's scores are too flat to draw from as they are)."""
    if temperature <= 0:
        return int(np.argmax(scores))
    weights = np.clip(scores, 1e-6, None) ** (2.0 / temperature)
    return int(rng.choice(len(weights), p=weights / weights.sum()))


@app.model("tinylm", streaming=True, openai="chat", batch=Continuous(max_size=32))
def chat(
    messages: list[list[ChatMessage]],
    max_tokens: list[int | None],
    temperature: list[float | None],
    seed: list[int | None],
    stop: list[list[str]],
    steps: list[Step],
) -> list[str | Stop | Skip]:
    """Continue the conversation's last message, one character per step."""
    prompts = [conversation[-1].content if conversation else "" for conversation in messages]
    return _generate(prompts, max_tokens, temperature, seed, stop, steps)


@app.model("tinylm-complete", streaming=True, openai="completions", batch=Continuous(max_size=32))
def complete(
    prompt: list[str],
    max_tokens: list[int | None],
    temperature: list[float | None],
    seed: list[int | None],
    stop: list[list[str]],
    steps: list[Step],
) -> list[str | Stop | Skip]:
    """Continue a prompt, one character per step."""
    return _generate(prompt, max_tokens, temperature, seed, stop, steps)
