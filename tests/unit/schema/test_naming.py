"""Wire names: model "text-embed" is rpc PredictTextEmbed(TextEmbedRequest) -> TextEmbedResponse."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from blazerpc import BlazeApp


def test_wire_names_follow_the_blazerpc_convention() -> None:
    app = BlazeApp()

    @app.model("generate", streaming=True)
    async def generate(prompt: str) -> AsyncIterator[str]:
        yield prompt

    @app.model("text-embed")
    def text_embed(text: str) -> list[float]:
        return [0.0]

    @app.model("count.up")
    def count_up(n: int) -> Iterator[int]:
        yield from range(n)

    names = [
        (model.rpc_name, model.request.name, model.response.name) for model in app.registry.values()
    ]
    assert names == [
        ("PredictGenerate", "GenerateRequest", "GenerateResponse"),
        ("PredictTextEmbed", "TextEmbedRequest", "TextEmbedResponse"),
        ("PredictCountUp", "CountUpRequest", "CountUpResponse"),
    ]
    assert app.schema.message("TextEmbedRequest") is app.registry["text-embed"].request
