"""What produced a result: versions, commit, device and date, for everything that leaves the
database (exports, ``final.json``, the report, kept models).

Cheap and never failing: versions come from package metadata (nothing is imported), the commit
from ``git`` when the working directory is in a repository (absent otherwise), the device from
torch only when torch is already loaded.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata as metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dmlopt

if TYPE_CHECKING:
    import optuna

    from dmlopt.config import StudyConfig

#: Distributions whose versions are recorded; the first one installed of each alternative.
PACKAGES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "lightning": ("lightning",),
    "pytorch_metric_learning": ("pytorch-metric-learning",),
    "optuna": ("optuna",),
    "faiss": ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss"),
}
GIT_TIMEOUT = 5  # seconds; a hung git must not hold up a result


def _version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT
        )
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(cwd: Path | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git working tree around ``cwd`` (the working directory:
    where the study file and user code usually live), or ``None`` outside a repository or
    without git. Untracked files do not make it dirty."""
    where = cwd or Path.cwd()
    commit = _git("rev-parse", "HEAD", cwd=where)
    if not commit:
        return None
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=where)
    return {"commit": commit, "dirty": bool(status)}


@functools.cache
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device(accelerator: str = "auto") -> str:
    """The GPU's name when training runs on one (``accelerator`` not ``cpu`` and torch, already
    imported, sees a GPU), else the CPU model."""
    torch = sys.modules.get("torch")
    if accelerator != "cpu" and torch is not None and torch.cuda.is_available():
        return str(torch.cuda.get_device_name(0))
    return _cpu_model()


def environment(accelerator: str = "auto") -> dict[str, Any]:
    """The provenance of a result produced now: dmlopt's version, the git commit, the versions
    of the libraries that shape results, Python, the device and the date (UTC)."""
    return {
        "dmlopt": dmlopt.__version__,
        "git": git_state(),
        **{key: _version(names) for key, names in PACKAGES.items()},
        "python": platform.python_version(),
        "device": device(accelerator),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- stored with a search
PROVENANCE_ATTR = "dmlopt_provenance"  # study user attribute: the search's provenance


def record_search(
    config: StudyConfig, loss: str, study: optuna.Study, *, folds_fingerprint: str | None
) -> None:
    """Store, once per study, the identity of the user code it runs (compared on every resume,
    :mod:`dmlopt.user_code`) and the provenance of the search: the environment that started
    it, that code, and the fingerprint of its folds."""
    from dmlopt.user_code import CODE_ATTR, identities

    if CODE_ATTR in study.user_attrs and PROVENANCE_ATTR in study.user_attrs:
        return
    code = identities(config, loss)
    study.set_user_attr(CODE_ATTR, code)
    study.set_user_attr(
        PROVENANCE_ATTR,
        {
            **environment(config.training.accelerator),
            "code": code,
            "fingerprints": {"folds": folds_fingerprint},
        },
    )


def search_provenance(study: optuna.Study) -> dict[str, Any] | None:
    """The provenance a study's search recorded when it started (``None`` for older studies)."""
    stored = study.user_attrs.get(PROVENANCE_ATTR)
    return dict(stored) if stored is not None else None
