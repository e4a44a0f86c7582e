"""mypy sees through the decorator and the client: typed calls are checked, results are typed."""

from __future__ import annotations

from pathlib import Path

from mypy import api

SNIPPET = """\
from collections.abc import AsyncIterator, Iterator

from blazerpc import BlazeApp, BlazeClient

app = BlazeApp()


@app.model("add")
async def add(a: int, b: int = 0) -> int:
    return a + b


@app.model("generate", streaming=True)
async def generate(prompt: str, max_tokens: int = 32) -> AsyncIterator[str]:
    yield prompt


@app.model("total")
async def total(values: AsyncIterator[float]) -> float:
    return sum([v async for v in values])


@app.model("doubles")
def doubles(values: Iterator[int]) -> Iterator[int]:
    for value in values:
        yield value * 2


async def main(client: BlazeClient) -> None:
    reveal_type(await add(1, 2))  # still the user's own function
    reveal_type(await client.predict(add, a=1, b=2))
    reveal_type(client.stream(generate, prompt="hi"))
    reveal_type(await client.send_stream(total, [1.0, 2.0]))
    reveal_type(client.exchange(doubles, [1, 2]))
    await client.predict(add, a="one")
    await client.predict(add, c=3)
"""


def test_mypy_types_results_and_rejects_bad_fields(tmp_path: Path) -> None:
    (tmp_path / "snippet.py").write_text(SNIPPET, encoding="utf-8")
    stdout, _, status = api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(tmp_path / "snippet.py"),
        ]
    )
    lines = [line.split(": ", 1)[1] for line in stdout.splitlines() if ": " in line]
    assert status == 1
    assert lines.count('note: Revealed type is "int"') == 2
    assert 'note: Revealed type is "typing.AsyncGenerator[str, None]"' in lines
    assert 'note: Revealed type is "float"' in lines
    assert 'note: Revealed type is "typing.AsyncGenerator[int, None]"' in lines
    bad_calls = [line for line in lines if 'No overload variant of "predict"' in line]
    assert len(bad_calls) == 2  # a="one" and c=3: both refused before anything is sent
    assert len([line for line in lines if line.startswith("error:")]) == 2
