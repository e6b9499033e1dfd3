"""Find the Chalice app and its handlers the way Lambda would, for the local children."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

from chalice import Chalice

__all__ = ["APP_MODULE_ENV", "load_app", "handler_for", "lambda_function"]

APP_MODULE_ENV = "SKYMESH_APP_MODULE"
"""Module holding the Chalice ``app`` (default ``app``, i.e. the repository's app.py)."""


def load_app(module_name: str | None = None) -> tuple[ModuleType, Chalice]:
    """Import the app module and return it with its ``app`` object."""
    name = module_name or os.environ.get(APP_MODULE_ENV) or "app"
    module = importlib.import_module(name)
    app = getattr(module, "app", None)
    if not isinstance(app, Chalice):
        raise RuntimeError(f"module {name!r} has no Chalice object named 'app'")
    return module, app


def handler_for(module: ModuleType, handler_string: str) -> Any:
    """The callable Lambda would invoke for ``handler_string`` (``"app.func"``)."""
    attr = handler_string.rsplit(".", 1)[-1]
    try:
        return getattr(module, attr)
    except AttributeError:
        raise RuntimeError(f"{module.__name__} has no handler {attr!r}") from None


def lambda_function(module: ModuleType, app: Chalice, name: str) -> Any:
    """The handler of ``@app.lambda_function(name=name)``."""
    for fn in app.pure_lambda_functions:
        if fn.name == name:
            return handler_for(module, fn.handler_string)
    raise RuntimeError(f"the app has no @app.lambda_function(name={name!r})")
