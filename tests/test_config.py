"""The study file (dmlopt.config) and search spaces (dmlopt.search_space)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution, IntDistribution

from dmlopt.config import (
    BenchmarkData,
    StudyConfig,
    SyntheticData,
    dump_study,
    load_study,
    nest,
    parse_study,
)
from dmlopt.errors import DmloptError
from dmlopt.losses import registry
from dmlopt.losses.registry import LossSpec
from dmlopt.search_space import Range, fix, is_fixed, merge, suggest
from tests.conftest import TINY_STUDY, deep_update

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(changes: dict[str, Any] | None = None) -> dict[str, Any]:
    return deep_update(copy.deepcopy(TINY_STUDY), changes or {})


def _error(data: Any) -> str:
    """The message of the DmloptError that parsing ``data`` raises; it must be one line."""
    with pytest.raises(DmloptError) as info:
        parse_study(data)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- load / dump
def test_parse_tiny_study() -> None:
    config = parse_study(_study())
    assert isinstance(config, StudyConfig)
    assert config.study == "tiny"
    assert isinstance(config.dataset, SyntheticData)
    assert (config.dataset.classes, config.dataset.per_class) == (16, 8)
    assert config.split.folds == 2
    assert config.model.embedding_dim == 16
    assert config.losses == {"contrastive": {}}
    assert (config.training.batch_size, config.training.m_per_class) == (8, 2)
    assert config.search.n_trials == 2
    assert config.final.runs == 2
    assert config.study_name("contrastive") == "tiny/contrastive"


def test_load_study_from_file(write_study) -> None:
    path = write_study({"search": {"n_trials": 5}})
    config = load_study(path)
    assert config.search.n_trials == 5
    assert config == parse_study(_study({"search": {"n_trials": 5}}))


def test_defaults_fill_missing_sections() -> None:
    config = parse_study({"study": "s", "dataset": {"name": "synthetic"}, "losses": ["triplet"]})
    assert config.split.folds == 4
    assert config.training.batch_size == 32
    assert config.training.m_per_class == 4
    assert config.search.sampler == "tpe"
    assert config.storage is None


def _round_trip(config: StudyConfig, tmp_path: Path) -> StudyConfig:
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_study(config))
    return load_study(path)


def test_dump_round_trips_tiny_study(tmp_path: Path) -> None:
    config = parse_study(_study())
    assert _round_trip(config, tmp_path) == config


def test_dump_round_trips_overrides_paths_and_storage(tmp_path: Path) -> None:
    data = _study(
        {
            "study": "cub.v2",
            "losses": {
                "contrastive": {
                    "loss": {"pos_margin": 0.1, "neg_margin": {"low": 0.3, "high": 1.5}}
                },
                "multi_similarity": {"loss": {"alpha": {"low": 0.5, "high": 50, "log": True}}},
                "triplet": None,
            },
            "storage": "sqlite:///studies.db",
            "training": {"optimizer": {"name": "rmsprop", "lr": 3e-5}},
        }
    )
    data["dataset"] = {
        "name": "cub200",
        "root": str(tmp_path / "CUB_200_2011"),
        "transform": {"size": 227, "resize": 256, "ratio": [0.75, 4 / 3]},
    }
    config = parse_study(data)
    assert isinstance(config.dataset, BenchmarkData)
    assert config.losses["triplet"] == {}
    back = _round_trip(config, tmp_path)
    assert back == config
    assert back.dataset.transform.ratio == (0.75, 4 / 3)
    assert back.loss_space("multi_similarity") == config.loss_space("multi_similarity")


def test_dump_is_yaml_with_the_schema_keys() -> None:
    data = yaml.safe_load(dump_study(parse_study(_study())))
    assert data["study"] == "tiny"
    assert data["losses"] == {"contrastive": {}}
    assert "storage" not in data  # None is left out
    assert data["dataset"]["name"] == "synthetic"


def test_loss_list_equals_mapping_with_empty_overrides() -> None:
    as_list = parse_study(_study({"losses": ["contrastive", "triplet"]}))
    as_mapping = parse_study(_study({"losses": {"contrastive": {}, "triplet": None}}))
    assert as_list == as_mapping
    assert list(as_list.losses) == ["contrastive", "triplet"]


# --------------------------------------------------------------------------- errors
def test_unknown_top_level_key() -> None:
    message = _error(_study({"colour": "blue"}))
    assert "colour" in message
    assert "unknown key" in message


def test_unknown_nested_key() -> None:
    message = _error(_study({"training": {"foo": 1}}))
    assert "training.foo" in message
    assert "unknown key" in message


def test_unknown_loss() -> None:
    message = _error(_study({"losses": ["contrastive", "no_such_loss"]}))
    assert "unknown loss 'no_such_loss'" in message
    assert "contrastive" in message  # the known ones are listed


def test_no_loss() -> None:
    data = _study()
    data["losses"] = []
    assert "at least one loss" in _error(data)


def test_unknown_loss_parameter() -> None:
    message = _error(_study({"losses": {"contrastive": {"loss": {"foo": 1}}}}))
    assert "contrastive" in message
    assert "loss.foo" in message
    assert "loss.pos_margin" in message  # the known ones are listed


def test_unknown_parameter_group() -> None:
    message = _error(_study({"losses": {"contrastive": {"optimiser": {"lr": 1}}}}))
    assert "contrastive" in message
    assert "'optimiser'" in message


def test_override_that_is_not_a_number() -> None:
    message = _error(_study({"losses": {"contrastive": {"loss": {"pos_margin": "big"}}}}))
    assert "contrastive.loss.pos_margin" in message
    assert "'big'" in message


def test_override_that_is_a_bool() -> None:
    message = _error(_study({"losses": {"contrastive": {"loss": {"pos_margin": True}}}}))
    assert "contrastive.loss.pos_margin" in message


def test_range_with_unknown_key() -> None:
    bad = {"low": 0, "high": 1, "step": 0.1}
    message = _error(_study({"losses": {"contrastive": {"loss": {"pos_margin": bad}}}}))
    assert "contrastive.loss.pos_margin" in message
    assert "step" in message


def test_range_without_high() -> None:
    message = _error(_study({"losses": {"contrastive": {"loss": {"pos_margin": {"low": 0}}}}}))
    assert "contrastive.loss.pos_margin" in message


def test_range_low_above_high() -> None:
    bad = {"low": 2, "high": 1}
    message = _error(_study({"losses": {"contrastive": {"loss": {"pos_margin": bad}}}}))
    assert "losses" in message
    assert "low 2.0 is above high 1.0" in message


def test_log_range_with_nonpositive_low() -> None:
    bad = {"low": 0, "high": 1, "log": True}
    message = _error(_study({"losses": {"contrastive": {"loss": {"pos_margin": bad}}}}))
    assert "losses" in message
    assert "low > 0" in message


@pytest.mark.parametrize(
    "bad",
    [{"low": 2, "high": 1}, {"low": 0, "high": 1, "log": True}, {"low": "a", "high": 1}],
)
def test_bad_range_message_names_the_parameter(bad: dict[str, Any]) -> None:
    message = _error(_study({"losses": {"contrastive": {"loss": {"pos_margin": bad}}}}))
    assert "pos_margin" in message


def test_batch_size_not_a_multiple_of_m_per_class() -> None:
    message = _error(_study({"training": {"batch_size": 10, "m_per_class": 4}}))
    assert "batch_size 10" in message
    assert "m_per_class 4" in message


def test_unknown_trunk() -> None:
    message = _error(_study({"model": {"trunk": "vgg_imaginary"}}))
    assert "unknown trunk 'vgg_imaginary'" in message
    assert "small_cnn" in message


@pytest.mark.parametrize("name", ["a/b", "with space", ""])
def test_bad_study_name(name: str) -> None:
    message = _error(_study({"study": name}))
    assert message.startswith("study file: study:")


def test_unknown_dataset_name() -> None:
    message = _error(_study({"dataset": {"name": "imagenet"}}))
    assert "dataset" in message
    assert "imagenet" in message


def test_too_few_folds() -> None:
    message = _error(_study({"split": {"folds": 1}}))
    assert "split.folds" in message


@pytest.mark.parametrize("data", [[1, 2], "study: x", None, 3])
def test_top_level_not_a_mapping(data: Any) -> None:
    assert "mapping at the top level" in _error(data)


def test_several_problems_on_one_line() -> None:
    message = _error(_study({"training": {"foo": 1}, "search": {"bar": 2}}))
    assert "training.foo" in message
    assert "search.bar" in message


def test_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("study: tiny\nlosses: [contrastive\ndataset: {name: synthetic}\n")
    with pytest.raises(DmloptError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert "malformed YAML" in message
    assert "line " in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(DmloptError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert "cannot read" in message


def test_top_level_list_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- study\n- tiny\n")
    with pytest.raises(DmloptError, match="mapping at the top level") as info:
        load_study(path)
    assert str(path) in str(info.value)


def test_error_names_the_source_file(write_study) -> None:
    path = write_study({"training": {"foo": 1}})
    with pytest.raises(DmloptError) as info:
        load_study(path)
    assert str(info.value).startswith(f"{path}: training.foo")


def test_config_is_frozen() -> None:
    config = parse_study(_study())
    with pytest.raises(Exception, match="frozen"):
        config.study = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------- overrides
def test_default_loss_space_is_the_registry_space() -> None:
    config = parse_study(_study())
    assert config.loss_space("contrastive") == {
        "loss.pos_margin": Range(-0.2, 2.0),
        "loss.neg_margin": Range(-0.2, 2.0),
    }


def test_number_fixes_a_parameter() -> None:
    config = parse_study(_study({"losses": {"contrastive": {"loss": {"pos_margin": 0}}}}))
    space = config.loss_space("contrastive")
    assert space["loss.pos_margin"] == 0.0
    assert isinstance(space["loss.pos_margin"], float)
    assert space["loss.neg_margin"] == Range(-0.2, 2.0)


def test_mapping_replaces_bounds() -> None:
    bounds = {"low": 0.5, "high": 1.5}
    config = parse_study(_study({"losses": {"contrastive": {"loss": {"neg_margin": bounds}}}}))
    assert config.loss_space("contrastive")["loss.neg_margin"] == Range(0.5, 1.5)


def test_mapping_sets_log_scale() -> None:
    bounds = {"low": 0.1, "high": 10, "log": True}
    config = parse_study(_study({"losses": {"multi_similarity": {"loss": {"alpha": bounds}}}}))
    assert config.loss_space("multi_similarity")["loss.alpha"] == Range(0.1, 10.0, log=True)


@pytest.fixture
def int_loss(monkeypatch: pytest.MonkeyPatch) -> str:
    """A registered loss with an integer parameter, removed after the test."""
    spec = LossSpec(
        key="toy_int",
        loss_class="ContrastiveLoss",
        space={"k": Range(1, 10, integer=True), "m": Range(0.0, 1.0), "n": 3},
        summary="test-only",
    )
    monkeypatch.setitem(registry._REGISTRY, spec.key, spec)
    return spec.key


def test_range_override_keeps_integer_from_registry(int_loss: str) -> None:
    bounds = {"low": 2, "high": 5}
    config = parse_study(_study({"losses": {int_loss: {"loss": {"k": bounds, "m": bounds}}}}))
    space = config.loss_space(int_loss)
    assert space["loss.k"] == Range(2.0, 5.0, integer=True)
    assert space["loss.m"] == Range(2.0, 5.0, integer=False)


def test_fixed_override_keeps_integer_from_registry(int_loss: str) -> None:
    config = parse_study(_study({"losses": {int_loss: {"loss": {"k": 4.0, "m": 1, "n": 7}}}}))
    space = config.loss_space(int_loss)
    assert space["loss.k"] == 4
    assert isinstance(space["loss.k"], int)
    assert isinstance(space["loss.m"], float)
    assert space["loss.n"] == 7
    assert isinstance(space["loss.n"], int)


def test_overrides_of_one_loss_leave_another_alone() -> None:
    config = parse_study(
        _study(
            {"losses": {"contrastive": {"loss": {"pos_margin": 0.0}}, "triplet": {}}},
        )
    )
    assert config.loss_space("triplet") == {"loss.margin": Range(-0.2, 2.0)}


# --------------------------------------------------------------------------- nest
def test_nest_inverts_dotted_names() -> None:
    flat = {"loss.margin": 0.1, "miner.epsilon": 0.2, "loss.alpha": 3, "loss_optimizer.lr": 1e-4}
    assert nest(flat) == {
        "loss": {"margin": 0.1, "alpha": 3},
        "miner": {"epsilon": 0.2},
        "loss_optimizer": {"lr": 1e-4},
    }


def test_nest_splits_at_the_first_dot_only() -> None:
    assert nest({"loss.a.b": 1}) == {"loss": {"a.b": 1}}


def test_nest_round_trips_through_the_study_file() -> None:
    overrides = {"loss": {"pos_margin": 0.25, "neg_margin": 1.25}}
    config = parse_study(_study({"losses": {"contrastive": overrides}}))
    assert nest(config.loss_space("contrastive")) == overrides
    again = parse_study(_study({"losses": {"contrastive": nest(config.loss_space("contrastive"))}}))
    assert again == config


def test_nest_empty() -> None:
    assert nest({}) == {}


# --------------------------------------------------------------------------- search_space
SPACE = {
    "loss.margin": Range(0.0, 1.0),
    "loss.scale": Range(1e-3, 10.0, log=True),
    "loss.k": Range(2, 9, integer=True),
    "loss.j": Range(1, 1024, log=True, integer=True),
    "loss.fixed_f": 0.5,
    "loss.fixed_i": 3,
}


def test_merge_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"toy has no parameter 'loss\.nope'") as info:
        merge(SPACE, {"loss.nope": 1}, what="toy")
    assert "loss.margin" in str(info.value)


def test_merge_without_overrides_copies() -> None:
    merged = merge(SPACE, {}, what="toy")
    assert merged == SPACE
    assert merged is not SPACE


def test_merge_does_not_mutate_defaults() -> None:
    defaults = dict(SPACE)
    merge(defaults, {"loss.margin": 0.3}, what="toy")
    assert defaults == SPACE


def test_merge_number_and_range() -> None:
    merged = merge(
        SPACE,
        {
            "loss.margin": 0.3,
            "loss.k": {"low": 3, "high": 4},
            "loss.fixed_i": {"low": 1, "high": 8},
        },
        what="toy",
    )
    assert merged["loss.margin"] == 0.3
    assert merged["loss.k"] == Range(3.0, 4.0, log=False, integer=True)
    assert merged["loss.fixed_i"] == Range(1.0, 8.0, log=False, integer=True)
    assert merged["loss.scale"] == SPACE["loss.scale"]


def test_merge_range_keeps_default_log_unless_given() -> None:
    kept = merge(SPACE, {"loss.scale": {"low": 0.1, "high": 1}}, what="toy")
    assert kept["loss.scale"] == Range(0.1, 1.0, log=True)
    dropped = merge(SPACE, {"loss.scale": {"low": 0.1, "high": 1, "log": False}}, what="toy")
    assert dropped["loss.scale"] == Range(0.1, 1.0, log=False)


@pytest.mark.parametrize(
    "value", [{"low": 1}, {"high": 1}, {"low": 0, "high": 1, "lo": 2}, "x", True, None, [0, 1]]
)
def test_merge_rejects_bad_values(value: Any) -> None:
    with pytest.raises(ValueError, match=r"toy\.loss\.margin"):
        merge(SPACE, {"loss.margin": value}, what="toy")


def test_range_validation() -> None:
    with pytest.raises(ValueError, match="above high"):
        Range(2.0, 1.0)
    with pytest.raises(ValueError, match="low > 0"):
        Range(0.0, 1.0, log=True)
    with pytest.raises(ValueError, match="low > 0"):
        Range(-1.0, 1.0, log=True)
    assert Range(1.0, 1.0).low == 1.0  # a degenerate interval is allowed


def test_range_str() -> None:
    assert str(Range(-0.2, 2.0)) == "[-0.2, 2] lin"
    assert str(Range(1e-6, 1.0, log=True)) == "[1e-06, 1] log"
    assert str(Range(2, 9, integer=True)) == "[2, 9] int"


def test_suggest_with_fixed_trial() -> None:
    trial = optuna.trial.FixedTrial(
        {"loss.margin": 0.25, "loss.scale": 0.5, "loss.k": 7, "loss.j": 64}
    )
    values = suggest(SPACE, trial)
    assert values == {
        "loss.margin": 0.25,
        "loss.scale": 0.5,
        "loss.k": 7,
        "loss.j": 64,
        "loss.fixed_f": 0.5,
        "loss.fixed_i": 3,
    }


def test_suggest_fixed_trial_missing_a_searched_value() -> None:
    trial = optuna.trial.FixedTrial({"loss.margin": 0.25})
    with pytest.raises(ValueError, match=r"loss\.scale"):
        suggest(SPACE, trial)


def test_suggest_samples_within_bounds_with_the_right_distributions() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: dict[str, list[float]] = {name: [] for name in SPACE}
    for _ in range(40):
        trial = study.ask()
        values = suggest(SPACE, trial)
        study.tell(trial, 0.0)
        for name, value in values.items():
            seen[name].append(value)
        assert trial.distributions == {
            "loss.margin": FloatDistribution(0.0, 1.0),
            "loss.scale": FloatDistribution(1e-3, 10.0, log=True),
            "loss.k": IntDistribution(2, 9),
            "loss.j": IntDistribution(1, 1024, log=True),
        }
    assert set(seen["loss.fixed_f"]) == {0.5}
    assert set(seen["loss.fixed_i"]) == {3}
    assert all(0.0 <= v <= 1.0 for v in seen["loss.margin"])
    assert all(1e-3 <= v <= 10.0 for v in seen["loss.scale"])
    assert all(isinstance(v, int) and 2 <= v <= 9 for v in seen["loss.k"])
    assert all(isinstance(v, int) and 1 <= v <= 1024 for v in seen["loss.j"])
    # a log scale over 4 decades puts about half the samples below 0.1; linear would put 1%
    below = sum(v < 0.1 for v in seen["loss.scale"])
    assert below >= 10
    assert len(set(seen["loss.margin"])) == 40  # sampled, not fixed


def test_suggest_all_fixed_does_not_touch_the_trial() -> None:
    study = optuna.create_study()
    trial = study.ask()
    assert suggest({"a": 1.5, "b": 2}, trial) == {"a": 1.5, "b": 2}
    assert trial.distributions == {}


def test_fix_takes_searched_values_and_keeps_fixed_ones() -> None:
    values = {"loss.margin": 0.4, "loss.scale": 2.0, "loss.k": 5, "loss.j": 8, "loss.fixed_f": 9.0}
    assert fix(SPACE, values) == {
        "loss.margin": 0.4,
        "loss.scale": 2.0,
        "loss.k": 5,
        "loss.j": 8,
        "loss.fixed_f": 0.5,  # the space's fixed value wins over a stray trial value
        "loss.fixed_i": 3,
    }


def test_fix_missing_searched_values() -> None:
    with pytest.raises(ValueError, match=r"loss\.scale") as info:
        fix(SPACE, {"loss.margin": 0.4, "loss.k": 5})
    assert "loss.j" in str(info.value)
    assert "loss.margin" not in str(info.value)


def test_fix_result_is_fixed() -> None:
    values = {"loss.margin": 0.4, "loss.scale": 2.0, "loss.k": 5, "loss.j": 8}
    assert is_fixed(fix(SPACE, values))


def test_is_fixed() -> None:
    assert not is_fixed(SPACE)
    assert is_fixed({"a": 1, "b": 0.5})
    assert is_fixed({})
    assert not is_fixed({"a": 1, "b": Range(0.0, 1.0)})


def test_export_style_round_trip_fixes_every_parameter() -> None:
    """A study's best values, nested back into a study file, make a fully fixed space."""
    config = parse_study(_study({"losses": ["multi_similarity"]}))
    space = config.loss_space("multi_similarity")
    trial = optuna.trial.FixedTrial({"loss.alpha": 2.0, "loss.beta": 40.0, "loss.base": 0.5})
    best = fix(space, suggest(space, trial))
    exported = parse_study(_study({"losses": {"multi_similarity": nest(best)}}))
    fixed_space = exported.loss_space("multi_similarity")
    assert is_fixed(fixed_space)
    assert fixed_space == {"loss.alpha": 2.0, "loss.beta": 40.0, "loss.base": 0.5}


def test_integer_range_override_refuses_fractional_bounds() -> None:
    # Truncating 1.5 to 1 would sample below the given low: refuse instead of rounding.
    with pytest.raises(ValueError, match=r"toy\.k: expected an integer"):
        merge({"k": Range(1, 10, integer=True)}, {"k": {"low": 1.5, "high": 3.7}}, what="toy")
    space = merge({"k": Range(1, 10, integer=True)}, {"k": {"low": 2, "high": 3}}, what="toy")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = {suggest(space, study.ask())["k"] for _ in range(30)}
    assert values == {2, 3}
