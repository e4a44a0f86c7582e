"""A real classifier: scikit-learn's RandomForest on the digits data set it ships, trained when
the server starts, served one call at a time and with adaptive batching.

    pip install 'blazerpc[examples]'
    blaze serve examples/digits.py:app --http-port 8000

Each call sends one 8x8 image, flattened to 64 float32 pixels (0 to 16), as a numpy Tensor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import numpy as np

from blazerpc import Batching, BlazeApp, Tensor

app = BlazeApp()
Image = Annotated[np.ndarray, Tensor("float32", (64,))]
forest: dict[str, Any] = {}


@app.lifespan
def train() -> Iterator[None]:
    """Fit the forest once per server process, before the first call (about a second)."""
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier

    digits = load_digits()
    forest["model"] = RandomForestClassifier(n_estimators=100, random_state=0).fit(
        digits.data, digits.target
    )
    yield
    forest.clear()


@app.model("digit")
def digit(pixels: Image) -> int:
    """The digit in one image, one call at a time."""
    return int(forest["model"].predict(pixels.reshape(1, -1))[0])


@app.model("digit-batched", batch=Batching(max_size=64))
def digit_batched(pixels: list[Image]) -> list[int]:
    """The same forest, given every image that arrived together in one predict call."""
    return [int(label) for label in forest["model"].predict(np.stack(pixels))]
