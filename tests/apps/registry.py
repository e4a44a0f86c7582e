"""The apps whose schemas are pinned by golden files (name -> `module:attr` target), and where
those files are: tests/golden/NAME.proto."""

from __future__ import annotations

from pathlib import Path

GOLDEN = Path(__file__).parents[1] / "golden"
GOLDEN_APPS = {
    "chat": "examples.chat:app",
    "detect": "examples.detect:app",
    "transcribe": "examples.transcribe:app",
    "tracker": "examples.tracker:app",
    "every_type": "tests.apps.every_type:app",
}
