"""Best configs: a stored study's best trial as a study file that reproduces it on its own."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from dmlopt.config import ExportedFrom, StudyConfig
from dmlopt.errors import DmloptError
from dmlopt.provenance import environment, search_provenance
from dmlopt.search_space import Value, fix
from dmlopt.study.runner import stored_config


def best_params(
    config: StudyConfig, loss: str, study: optuna.Study
) -> tuple[dict[str, Value], optuna.trial.FrozenTrial]:
    """Every parameter of ``loss`` at the study's best trial, searched and fixed alike."""
    if not study.get_trials(states=(TrialState.COMPLETE,)):
        raise DmloptError(f"study {study.study_name} has no completed trial: run the search first")
    trial = study.best_trial
    return fix(config.loss_space(loss), trial.params), trial


def export_best(study: optuna.Study) -> StudyConfig:
    """The study file of ``study``'s best trial: that loss alone, its parameters fixed.

    ``dmlopt final`` on it retrains and scores that config without a search. The storage is
    left out (URLs may hold passwords); the study is renamed so that its test score is
    recorded apart from the original study's. ``exported_from.provenance`` is the search's
    (versions, commit, device, user code, folds fingerprint), or this environment's for a
    study that predates it.
    """
    config = stored_config(study)
    loss = study.study_name.removeprefix(f"{config.study}/")
    params, trial = best_params(config, loss, study)
    assert trial.value is not None
    return config.model_copy(
        update={
            "study": f"{config.study}-{loss}-best",
            "losses": {loss: config.fixed_loss(loss, params)},
            "storage": None,
            "exported_from": ExportedFrom(
                study=study.study_name,
                loss=loss,
                trial=trial.number,
                val_map_at_r=trial.value,
                val_map_at_r_std=trial.user_attrs.get("val_map_at_r_std"),
                provenance=search_provenance(study) or environment(),
            ),
        }
    )
