"""`module:attr` and `path/to/file.py:attr` targets -> the BlazeApp they name."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from blazerpc.app import BlazeApp
from blazerpc.errors import TargetError

__all__ = ("load_app", "source_dir")


def load_app(target: str) -> BlazeApp:
    """Import the target and return its BlazeApp; TargetError says what to fix.

    The attribute defaults to `app`. Module targets are imported from the working directory
    first, as `python -m` would. Whatever the imported code raises passes through.
    """
    location, _, attribute = target.partition(":")
    attribute = attribute or "app"
    if not location:
        raise TargetError(f"target {target!r} names no module. Write module:attr or file.py:attr.")
    if "/" in location and not location.endswith(".py"):
        raise TargetError(
            f"{location!r} is a path without .py: write {location}.py:{attribute}, or the "
            f"module's dotted name ({location.replace('/', '.')}:{attribute})."
        )
    module = _import_file(location) if location.endswith(".py") else _import_module(location)
    if not hasattr(module, attribute):
        raise TargetError(f"{location!r} has no attribute {attribute!r}.{_apps_hint(module)}")
    app = getattr(module, attribute)
    if not isinstance(app, BlazeApp):
        kind = type(app).__name__
        raise TargetError(
            f"{location}:{attribute} is a {kind}, not a BlazeApp.{_apps_hint(module)}"
        )
    return app


def source_dir(target: str) -> Path:
    """The directory of the app's file or top-level package (loaded already): what
    `blaze serve --reload` watches."""
    location = target.partition(":")[0]
    if location.endswith(".py"):
        return Path(location).resolve().parent
    top = sys.modules[location.split(".")[0]]
    return Path(top.__file__ or ".").resolve().parent


def _import_module(name: str) -> ModuleType:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and (name == err.name or name.startswith(f"{err.name}.")):
            raise TargetError(
                f"no module named {name!r}. Check the spelling, run from the project's root, "
                "or give a file path such as path/to/app.py:app."
            ) from err
        raise


def _import_file(location: str) -> ModuleType:
    path = Path(location)
    if not path.is_file():
        raise TargetError(f"file {location!r} does not exist. Check the path to the app's file.")
    name = path.stem
    taken = sys.modules.get(name)
    if taken is not None and getattr(taken, "__file__", None) != str(path.resolve()):
        raise TargetError(
            f"file {location!r} would be imported as module {name!r}, which is already "
            f"{getattr(taken, '__file__', None) or 'a built-in module'}. Rename the file, "
            "or give the target as module:attr."
        )
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    if spec is None or spec.loader is None:
        raise TargetError(f"file {location!r} cannot be imported as Python.")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # as `import` does: a failed module is not left half-made
        raise
    return module


def _apps_hint(module: ModuleType) -> str:
    found = sorted(name for name, value in vars(module).items() if isinstance(value, BlazeApp))
    if not found:
        return " The module defines no BlazeApp: create one with `app = BlazeApp()`."
    return f" BlazeApp objects in it: {', '.join(found)}."
