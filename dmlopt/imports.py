"""Lazy lookups for the registries: a ``"module:attribute"`` path is imported only when used,
so validating a study or listing the registries does not import torch."""

from __future__ import annotations

import importlib
from typing import Any


def resolve(path: str) -> Any:
    """The object named by ``"package.module:attribute"``."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
