"""User code: losses, trunks and datasets named by import path or registered by a package.

A study file names user code as ``"package.module:attribute"``; an installed package can also
register it under a name, in the entry-point groups ``dmlopt.losses``, ``dmlopt.trunks`` and
``dmlopt.datasets`` (docs/plugins.md). Listing entry points reads package metadata only, so
``dmlopt losses`` and study validation import nothing until an object is used.

Every failure to find or import user code is a :class:`~dmlopt.errors.DmloptError` naming what
failed, and every user object has a :func:`code_identity` (import path, hash of its source file,
the distribution it was installed from), which the search-integrity check compares.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata as metadata
import inspect
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dmlopt.errors import DmloptError

#: kind of user object -> its entry-point group.
GROUPS = {"loss": "dmlopt.losses", "trunk": "dmlopt.trunks", "dataset": "dmlopt.datasets"}
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_import_path(name: str) -> bool:
    """``"package.module:attribute"`` (a name with a colon), as opposed to a registered name."""
    return bool(_IMPORT_PATH.match(name))


@functools.cache
def entry_points(kind: str) -> dict[str, metadata.EntryPoint]:
    """The installed entry points of ``kind`` (``loss``, ``trunk`` or ``dataset``), by name;
    nothing is imported."""
    return {ep.name: ep for ep in metadata.entry_points(group=GROUPS[kind])}


def refresh() -> None:
    """Forget the entry points seen so far (a package was installed meanwhile, e.g. in tests)."""
    entry_points.cache_clear()
    _distributions.cache_clear()


def import_path_of(kind: str, name: str) -> str:
    """The import path ``name`` stands for: itself, or the value of its entry point."""
    if is_import_path(name):
        return name
    points = entry_points(kind)
    if name not in points:
        raise DmloptError(f"no {kind} {name!r} is registered under {GROUPS[kind]}")
    return str(points[name].value)


def load(path: str, what: str) -> Any:
    """The object at ``"module:attribute"``; a module that fails to import or a missing
    attribute is a user error that says which, for ``what`` (e.g. ``"loss my_margin"``)."""
    module_name, _, attribute = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # any error in user code while importing it
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DmloptError(
            f"{what}: cannot import module {module_name!r} ({type(e).__name__}"
            + (f": {reason})" if reason else ")")
        ) from None
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise DmloptError(
                f"{what}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    return obj


def load_named(kind: str, name: str, what: str) -> Any:
    """:func:`load` for a name that is an import path or an entry-point name of ``kind``."""
    return load(import_path_of(kind, name), what)


def check_call(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], what: str) -> None:
    """Refuse a callable that cannot be called with ``args`` and keyword names ``kwargs``,
    naming the argument at fault and the ones it takes."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as e:
        takes = [
            p.name
            for p in signature.parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        raise DmloptError(f"{what}: {e} (it takes: {', '.join(takes) or 'no arguments'})") from None


# --------------------------------------------------------------------------- code identity
@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


def _source_file(obj: Any, module_name: str) -> Path | None:
    try:
        source = inspect.getsourcefile(obj)
    except TypeError:  # an instance (e.g. a LossSpec): its module's file
        source = None
    if source is None:
        source = getattr(sys.modules.get(module_name), "__file__", None)
    return Path(source) if source else None


def code_identity(path: str, what: str) -> dict[str, str]:
    """What identifies the code at ``path``: the import path, the sha256 of the source file
    that defines it, and ``"name version"`` of the installed distribution it comes from.

    Only the defining file is hashed: code it imports from other files of the package is
    identified by the distribution's version, when there is one."""
    obj = load(path, what)
    module_name = path.partition(":")[0]
    identity = {"import_path": path}
    source = _source_file(obj, module_name)
    if source is not None and source.is_file():
        identity["sha256"] = hashlib.sha256(source.read_bytes()).hexdigest()
    top = module_name.partition(".")[0]
    names = _distributions().get(top)
    if names:
        identity["distribution"] = f"{names[0]} {metadata.version(names[0])}"
    return identity


def changes(stored: dict[str, dict[str, str]], current: dict[str, dict[str, str]]) -> list[str]:
    """What differs between two ``{role: code identity}`` records, one phrase per role, e.g.
    ``"loss mine pkg.losses:Mine (sha256 3f1c0e4b9a2d -> 8be71a0c55f2)"``."""

    def shown(key: str, value: str | None) -> str:
        return str(value)[:12] if key == "sha256" and value else str(value)

    out = []
    for role in sorted(set(stored) | set(current)):
        old, new = stored.get(role), current.get(role)
        if old == new:
            continue
        if old is None or new is None:
            out.append(f"{role} {'added' if old is None else 'removed'}")
            continue
        detail = ", ".join(
            f"{key} {shown(key, old.get(key))} -> {shown(key, new.get(key))}"
            for key in ("import_path", "sha256", "distribution")
            if old.get(key) != new.get(key)
        )
        out.append(f"{role} {new.get('import_path')} ({detail})")
    return out
