"""The apps whose schemas are pinned by golden files: name -> `module:attr` target."""

from __future__ import annotations

GOLDEN_APPS = {
    "chat": "examples.chat:app",
    "detect": "examples.detect:app",
    "transcribe": "examples.transcribe:app",
    "tracker": "examples.tracker:app",
    "every_type": "tests.apps.every_type:app",
}
