"""The user code a study runs: checked before anything runs, and identified for the
search-integrity check.

A study may name user code in three places: a loss (``losses.<name>.class``, or an installed
package's loss), the trunk (``model.trunk``) and the dataset (``dataset.name``).
:func:`verify` imports each and checks it can be called as the study file says, so a typo fails
before anything is stored. :func:`identities` records what identifies that code (import path,
source hash, distribution); a search resumed, joined or scored with other code is refused like
a changed setting (:func:`check_same_code`).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from dmlopt import losses
from dmlopt.config import StudyConfig, UserData, UserLoss
from dmlopt.errors import DmloptError
from dmlopt.plugins import changes, check_call, code_identity, entry_points, is_import_path

if TYPE_CHECKING:
    import optuna

CODE_ATTR = "dmlopt_code"  # study user attribute: {role: code identity} of the searched code

Identities = dict[str, dict[str, str]]


def _user_loss_paths(config: StudyConfig, loss: str) -> dict[str, str]:
    """``{role: import path}`` of the user code behind ``loss`` (none for a built-in one)."""
    entry = config.losses[loss]
    if not isinstance(entry, UserLoss) and losses.registry.is_builtin(loss):
        return {}
    paths = {}
    if not isinstance(entry, UserLoss):  # an installed package's: its spec's module too
        paths[f"loss {loss} (entry point)"] = str(entry_points("loss")[loss].value)
    spec = config.loss_spec(loss)
    if is_import_path(spec.loss_class):
        paths[f"loss {loss}"] = spec.loss_class
    return paths


def _shared_paths(config: StudyConfig) -> dict[str, str]:
    """``{role: import path}`` of the user trunk and dataset, which every loss shares."""
    from dmlopt.models import is_user_trunk, trunk_import_path
    from dmlopt.plugins import import_path_of

    paths = {}
    if is_user_trunk(config.model.trunk):
        paths["trunk"] = trunk_import_path(config.model.trunk)
    if isinstance(config.dataset, UserData):
        paths["dataset"] = import_path_of("dataset", config.dataset.name)
    return paths


def identities(config: StudyConfig, loss: str | None = None) -> Identities:
    """``{role: code identity}`` of the user code the study of ``loss`` runs (every loss's when
    ``loss`` is ``None``); empty when it runs dmlopt's own code only."""
    paths = _shared_paths(config)
    for name in config.losses if loss is None else [loss]:
        paths.update(_user_loss_paths(config, name))
    return {role: code_identity(path, role) for role, path in paths.items()}


def verify(config: StudyConfig) -> None:
    """Import every piece of user code ``config`` names and check it can be used as named: a
    loss class taking the arguments its space and ``needs`` give and called with
    ``(embeddings, labels, indices_tuple)``, a trunk factory of the input shape, a dataset class
    taking the study file's keys; and for an exported config, the same code as its search ran
    (:func:`check_exported_code`). Nothing is imported when the study names no user code."""
    for loss in config.losses:
        if _user_loss_paths(config, loss):
            _verify_loss(config, loss)
    shared = _shared_paths(config)
    if "dataset" in shared:
        from dmlopt.data.user import user_dataset_class

        assert isinstance(config.dataset, UserData)
        user_dataset_class(config.dataset)
    if "trunk" in shared:
        from dmlopt.plugins import load

        what = f"model.trunk {shared['trunk']}"
        if not callable(load(shared["trunk"], what)):
            raise DmloptError(f"{what}: not callable (expected a function of the input shape)")
    check_exported_code(config)


def _verify_loss(config: StudyConfig, loss: str) -> None:
    from torch import nn

    spec = config.loss_spec(loss)
    cls = spec.loss_type()
    what = f"loss {loss} ({spec.loss_class})"
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise DmloptError(f"{what}: not a torch.nn.Module class")
    values = {name.partition(".")[2]: 1 for name in config.loss_space(loss) if name[:5] == "loss."}
    kwargs = spec.constructor_kwargs(
        {f"loss.{k}": v for k, v in values.items()}, num_classes=2, embedding_dim=2
    )
    check_call(cls, (), kwargs, what)
    try:
        check_call(cls.forward, (None, "embeddings", "labels", "indices_tuple"), {}, what)
    except DmloptError as e:
        raise DmloptError(
            f"{what}: forward must take (embeddings, labels, indices_tuple) as "
            f"pytorch-metric-learning's losses do; {str(e).partition(': ')[2]}"
        ) from None


def check_same_code(config: StudyConfig, loss: str, study: optuna.Study) -> None:
    """Refuse to resume, join or score the study of ``loss`` with other user code than the one
    it was searched with, naming what changed."""
    stored = study.user_attrs.get(CODE_ATTR)
    if stored is None:
        return
    changed = changes(stored, identities(config, loss))
    if changed:
        raise DmloptError(
            f"the code differs from the one {study.study_name} was searched with "
            f"({'; '.join(changed)}): restore it or use a new study name"
        )


def record_code(config: StudyConfig, loss: str, study: optuna.Study) -> None:
    """Store the identity of the user code of a new study (once: it never changes after)."""
    if CODE_ATTR not in study.user_attrs:
        study.set_user_attr(CODE_ATTR, identities(config, loss))


def check_exported_code(config: StudyConfig) -> None:
    """Refuse to score an exported config with other user code than its search ran."""
    exported = config.exported_from
    if exported is None or exported.provenance is None or "code" not in exported.provenance:
        return
    changed = changes(exported.provenance["code"], identities(config))
    if changed:
        raise DmloptError(
            f"the code differs from the one {exported.study} was searched with "
            f"({'; '.join(changed)}): restore it to reproduce that search's config"
        )
