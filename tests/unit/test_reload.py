"""The reload watcher: what it reports, and the one line when watchfiles is missing."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from blazerpc.reload import ReloadUnavailableError, SourceWatcher


def test_without_watchfiles_reload_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # `import watchfiles` fails
    with pytest.raises(ReloadUnavailableError) as err:
        SourceWatcher([Path(".")])
    assert str(err.value) == (
        "blaze serve --reload needs watchfiles: pip install 'blazerpc[reload]'."
    )


def test_it_reports_changed_python_files_only(tmp_path: Path) -> None:
    watcher = SourceWatcher([tmp_path])
    watcher.start()
    try:
        (tmp_path / "notes.txt").write_text("not code")
        (tmp_path / "model.py").write_text("VERSION = 2\n")
        deadline = time.monotonic() + 10
        changed: list[str] = []
        while not changed and time.monotonic() < deadline:
            time.sleep(0.05)
            changed = watcher.changed()
    finally:
        watcher.close()
    assert changed == [str(tmp_path / "model.py")]
    assert watcher.changed() == []  # each change is reported once
