"""A unary model with structured output: an image in, a list of boxes out.

blaze proto examples/detect.py:app
"""

from __future__ import annotations

import hashlib

import msgspec

from blazerpc import BlazeApp

app = BlazeApp()


class Box(msgspec.Struct, frozen=True):
    """One detected object, in pixels."""

    x: float
    y: float
    width: float
    height: float
    score: float
    label: str | None = None


@app.model("detect")
def detect(image: bytes, threshold: float = 0.5) -> list[Box]:
    """Find objects in an encoded image; only boxes scoring at least `threshold` come back.

    A stand-in for a real detector: the boxes are derived from the image's hash, so the same
    image always gives the same boxes.
    """
    digest = hashlib.sha256(image).digest()
    boxes = []
    for i in range(0, 32, 8):
        x, y, w, h, s = digest[i : i + 5]
        box = Box(x=x, y=y, width=w or 1, height=h or 1, score=s / 255, label=f"object-{i // 8}")
        if box.score >= threshold:
            boxes.append(box)
    return boxes
