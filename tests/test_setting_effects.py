"""Every key of the study file has a test that shows its effect on what runs.

A setting that is accepted, printed and stored but changes nothing is the worst kind of bug in a
tool whose results people must trust. So :data:`EFFECTS` maps every key of the study-file schema
to the pytest node id of a test that would fail if that key were ignored (a test that only
parses the key does not count), and :func:`test_every_schema_key_has_an_effect_test` walks the
pydantic schema of :class:`dmlopt.config.StudyConfig` and fails on a key missing from it, so a
key added later is caught without anyone remembering to list it.

Key names are dotted paths through the study file, with three conventions:

* **Dataset variants.** ``dataset`` is a union chosen by its ``name``; the name itself is the key
  ``dataset.name`` and every other field is named per value of ``name``:
  ``dataset.<name>.<field>``, e.g. ``dataset.synthetic.seed``, ``dataset.cub200.root``,
  ``dataset.folder.transform.hflip``. A variant serving several names (``cub200``, ``cars196``,
  ``sop``) has its fields listed under each name, since each has its own reader.
* **User-chosen names.** Where the study file maps names it chooses (the losses, their parameter
  groups, their parameters), the name is a placeholder: ``losses.<loss>`` (a loss is compared),
  ``losses.<loss>.<group>`` and ``losses.<loss>.<group>.<param>`` (a parameter override: a number
  fixes it), and ``losses.<loss>.<group>.<param>.<low|high|log>`` (a range override). A loss of
  the user's own has ``losses.<loss>.class``, ``.needs`` and ``.space.<group>.<param>``; a
  dataset of the user's own passes ``dataset.<user>.<option>`` to its constructor.
* **Node ids** may leave out a parametrized test's ``[...]`` part; the test then covers every key
  it is listed for through its parameters.

"""

from __future__ import annotations

import ast
import functools
import math
import os
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import numpy as np
import optuna
import pytest
import torch
import yaml
from pydantic import BaseModel, Discriminator

from dmlopt import losses
from dmlopt.cli import main
from dmlopt.config import (
    BenchmarkData,
    FolderData,
    ImageTransform,
    OmlCsvData,
    SplitConfig,
    StudyConfig,
    SyntheticData,
    nest,
    parse_study,
)
from dmlopt.data import open_dataset
from dmlopt.search_space import RANGE_KEYS, Range, Value, suggest

from .conftest import TINY_STUDY, deep_update

ROOT = Path(__file__).resolve().parents[1]
HERE = "tests/test_setting_effects.py"
BENCHMARKS = "tests/test_benchmark_datasets.py"
FINAL = "tests/test_final_stage.py"
LEAK = "tests/test_no_test_leak.py"
REGISTRY = "tests/test_losses.py"
INTEGRITY = "tests/test_search_integrity.py"
PROTOCOL = "tests/test_protocol.py"
PRUNING = "tests/test_pruning.py"
PLUGINS = "tests/test_plugins.py"
USER_LOSS_TEST = "test_a_user_loss_is_searched_scored_and_exported_like_a_builtin_one"

#: The image transform's keys that shape a sample; each image dataset reads its samples through
#: them (``cache`` must not change a sample: it has a test of its own).
TRANSFORM_KEYS = (
    "size", "resize", "augment", "scale", "ratio", "hflip", "channels", "mean", "std",
    "value_scale", "bgr",
)  # fmt: skip
#: Dataset names whose samples are images decoded from files.
IMAGE_DATASETS = ("folder", "cub200", "cars196", "sop", "oml_csv")

EFFECTS: dict[str, str] = {
    "study": f"{FINAL}::test_run_writes_database_best_configs_and_final_json",
    "storage": f"{FINAL}::test_stored_config_and_export_carry_no_storage",
    # ------------------------------------------------------------------ dataset
    "dataset.name": f"{HERE}::test_dataset_name_chooses_the_reader",
    "dataset.synthetic.classes": f"{HERE}::test_synthetic_setting_changes_the_data",
    "dataset.synthetic.per_class": f"{HERE}::test_synthetic_setting_changes_the_data",
    "dataset.synthetic.image_size": f"{HERE}::test_synthetic_setting_changes_the_data",
    "dataset.synthetic.channels": f"{HERE}::test_synthetic_setting_changes_the_data",
    "dataset.synthetic.seed": f"{HERE}::test_synthetic_setting_changes_the_data",
    "dataset.folder.root": f"{LEAK}::test_folder_search_never_opens_a_test_class_image",
    "dataset.npz.path": f"{LEAK}::test_npz_reads_rows_from_the_file_not_a_copy",
    "dataset.cub200.root": f"{BENCHMARKS}::test_cub_classes_sorted_by_folder",
    "dataset.cars196.root": f"{BENCHMARKS}::test_cars_numeric_class_order_and_all_images",
    "dataset.sop.root": f"{BENCHMARKS}::test_sop_reads_both_lists_with_class_ids",
    "dataset.oml_csv.root": f"{BENCHMARKS}::test_oml_ignores_split_columns",
    "dataset.oml_csv.csv": f"{BENCHMARKS}::test_oml_string_labels_and_absolute_paths",
    **{
        f"dataset.{name}.transform.{key}": f"{HERE}::test_transform_setting_changes_the_sample"
        for name in IMAGE_DATASETS
        for key in TRANSFORM_KEYS
    },
    **{
        f"dataset.{name}.transform.cache": (
            "tests/test_image_cache.py::test_cached_reads_skip_decoding_and_evaluate_identically"
        )
        for name in IMAGE_DATASETS
    },
    # ------------------------------------------------------------------ split, model
    "split.test": "tests/test_splits.py::test_search_folds_never_contain_test_classes",
    "split.folds": f"{REGISTRY}::test_one_trial_two_fold_study_completes",
    "model.trunk": f"{HERE}::test_trunk_setting_chooses_the_trained_trunk",
    "model.embedding_dim": f"{HERE}::test_embedding_dim_is_the_width_of_what_is_scored",
    "model.pretrained": f"{HERE}::test_pretrained_weights_are_the_starting_point",
    "model.freeze_batchnorm": f"{PROTOCOL}::test_freeze_batchnorm_keeps_bn_in_eval_and_stats_fixed",
    # ------------------------------------------------------------------ losses
    "losses.<loss>": f"{REGISTRY}::test_one_trial_two_fold_study_completes",
    "losses.<loss>.<group>": f"{HERE}::test_fixed_loss_parameter_reaches_what_trains",
    "losses.<loss>.<group>.<param>": f"{HERE}::test_fixed_loss_parameter_reaches_what_trains",
    **{
        f"losses.<loss>.<group>.<param>.{key}": f"{HERE}::test_range_override_bounds_the_search"
        for key in RANGE_KEYS
    },
    # ------------------------------------------------------------------ training
    "training.batch_size": f"{HERE}::test_batch_setting_shapes_the_training_batches",
    "training.m_per_class": f"{HERE}::test_batch_setting_shapes_the_training_batches",
    "training.iterations_per_epoch": f"{HERE}::test_batch_setting_shapes_the_training_batches",
    "training.max_epochs": f"{HERE}::test_max_epochs_and_eval_every_decide_when_validation_runs",
    "training.eval_every": f"{HERE}::test_max_epochs_and_eval_every_decide_when_validation_runs",
    "training.patience": f"{HERE}::test_patience_is_the_number_of_checks_without_improvement",
    "training.optimizer.name": f"{HERE}::test_optimizer_setting_reaches_the_optimizer",
    "training.optimizer.lr": f"{HERE}::test_optimizer_setting_reaches_the_optimizer",
    "training.optimizer.weight_decay": f"{HERE}::test_optimizer_setting_reaches_the_optimizer",
    "training.optimizer.momentum": f"{HERE}::test_optimizer_setting_reaches_the_optimizer",
    "training.accelerator": f"{HERE}::test_accelerator_decides_where_training_runs",
    "training.num_workers": f"{HERE}::test_num_workers_load_samples_in_worker_processes",
    "training.eval_batch_size": f"{HERE}::test_eval_batch_size_is_the_validation_batch_size",
    "training.precision": f"{PROTOCOL}::test_bf16_validation_and_test_embeddings_agree",
    "training.deterministic": f"{PROTOCOL}::test_deterministic_flag_reaches_torch",
    # ------------------------------------------------------------------ search, final
    "search.n_trials": f"{INTEGRITY}::test_a_larger_budget_resumes_without_repeating_trials",
    "search.sampler": f"{HERE}::test_sampler_setting_chooses_the_sampler",
    "search.pruner": f"{PRUNING}::test_pruner_setting_decides_whether_weak_trials_stop_early",
    "search.seed": f"{HERE}::test_search_seed_decides_sampled_values_and_training_seeds",
    "final.runs": f"{FINAL}::test_final_json_matches_the_contract",
    "final.keep": f"{PLUGINS}::test_final_keep_decides_what_is_kept",
    "workers.heartbeat_seconds": (
        "tests/test_liveness.py::test_heartbeat_seconds_sets_when_a_silent_trial_is_failed"
    ),
    "workers.storage_retry_seconds": (
        "tests/test_liveness.py::test_storage_retry_seconds_sets_how_long_an_outage_is_ridden_out"
    ),
    # ------------------------------------------------------------------ user code
    "dataset.<user>.<option>": f"{PLUGINS}::test_installed_plugins_are_listed_and_run_by_name",
    **{
        f"losses.<loss>.{key}": f"{PLUGINS}::{USER_LOSS_TEST}"
        for key in ("class", "needs", "space.<group>", "space.<group>.<param>")
    },
    **{
        f"losses.<loss>.space.<group>.<param>.{key}": f"{PLUGINS}::{USER_LOSS_TEST}"
        for key in ("low", "high", "log")
    },
    "losses.<loss>.space.<group>.<param>.int": (
        f"{PLUGINS}::test_an_integer_range_of_a_user_loss_is_searched_as_integers"
    ),
    "exported_from.provenance.<key>": (
        f"{PLUGINS}::test_scoring_an_export_with_edited_code_is_refused"
    ),
    # ------------------------------------------------------------------ exported configs
    "exported_from.study": f"{HERE}::test_exported_origin_is_recorded_as_a_reproduction",
    "exported_from.trial": f"{HERE}::test_exported_origin_is_recorded_as_a_reproduction",
    "exported_from.loss": f"{HERE}::test_exported_loss_must_be_the_scored_loss",
    "exported_from.val_map_at_r": f"{HERE}::test_exported_validation_score_is_recorded",
    "exported_from.val_map_at_r_std": f"{HERE}::test_exported_validation_score_is_recorded",
}

# =========================================================================== the schema walk
#: Placeholder for the user-chosen names at each level of a mapping in the study file.
PLACEHOLDERS = {
    "losses": "<loss>",
    "losses.<loss>": "<group>",
    "losses.<loss>.<group>": "<param>",
    "losses.<loss>.space": "<group>",
    "losses.<loss>.space.<group>": "<param>",
    "exported_from.provenance": "<key>",
}
#: Leaves that also take a mapping of their own keys, validated outside pydantic.
SUBKEYS = {
    "losses.<loss>.<group>.<param>": RANGE_KEYS,
    "losses.<loss>.space.<group>.<param>": (*RANGE_KEYS, "int"),
}
#: The name of a dataset of the user's own, and its constructor's options.
USER_DATASET = "<user>"


def schema_keys(model: type[BaseModel] = StudyConfig, prefix: str = "") -> set[str]:
    """Every dotted key of ``model`` (see the module docstring for the naming)."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        tagged = [m for m in info.metadata if isinstance(m, Discriminator)]
        discriminator = info.discriminator or (tagged[0] if tagged else None)
        keys |= _keys_of(info.annotation, f"{prefix}{info.alias or name}", discriminator)
    if model.model_config.get("extra") == "allow":  # options passed on to user code
        keys.add(f"{prefix}<option>")
    return keys


def _keys_of(annotation: Any, path: str, discriminator: Any = None) -> set[str]:
    while get_origin(annotation) is Annotated:
        annotation, *metadata = get_args(annotation)
        tagged = [m for m in metadata if isinstance(m, Discriminator)]
        discriminator = tagged[0] if tagged else discriminator
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if discriminator is not None:
            return {key for variant in members for key in _variant_keys(variant, path)}
        if len(members) == 1:  # an optional section or value
            return _keys_of(members[0], path)
        return {path}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return schema_keys(annotation, f"{path}.")
    if origin is dict:
        inner = f"{path}.{PLACEHOLDERS.get(path, '<key>')}"
        return {inner} | _keys_of(get_args(annotation)[1], inner)
    return {path} | {f"{path}.{key}" for key in SUBKEYS.get(path, ())}


def _variant_keys(variant: Any, path: str) -> set[str]:
    """The keys of one member of a union chosen by a discriminator. A model chosen by its
    ``name`` has its fields under each name it takes (``dataset.<name>.<field>``), with the
    name itself as ``<path>.name``; any other member's keys sit directly under ``path``."""
    while get_origin(variant) is Annotated:
        variant = get_args(variant)[0]
    if not (isinstance(variant, type) and issubclass(variant, BaseModel)):
        return _keys_of(variant, path)
    field = variant.model_fields.get("name")
    if field is None:
        return schema_keys(variant, f"{path}.")
    names = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
    return {f"{path}.name"} | {
        key
        for value in names or (USER_DATASET,)
        for key in schema_keys(variant, f"{path}.{value}.")
        if key != f"{path}.{value}.name"
    }


@functools.cache
def _parsed(path: str) -> ast.Module | None:
    file = ROOT / path
    return ast.parse(file.read_text()) if file.is_file() else None


def _node_exists(node: str) -> bool:
    """Whether ``path::name`` (or ``path::Class::name``, ``[...]`` ignored) is a test function."""
    path, *names = node.split("[")[0].split("::")
    module = _parsed(path)
    if module is None or not names:
        return False
    current: ast.AST = module
    for name in names:
        found = [n for n in getattr(current, "body", []) if getattr(n, "name", None) == name]
        if not found:
            return False
        current = found[0]
    return isinstance(current, ast.FunctionDef) and names[-1].startswith("test")


def test_schema_walk_finds_nested_union_and_mapping_keys() -> None:
    keys = schema_keys()
    for key in (
        "study", "storage", "dataset.name", "dataset.synthetic.seed",
        "dataset.folder.transform.hflip", "dataset.sop.transform.bgr", "training.optimizer.lr",
        "search.pruner", "final.runs", "exported_from.trial", "losses.<loss>.<group>.<param>",
        "losses.<loss>.<group>.<param>.log",
    ):  # fmt: skip
        assert key in keys, key
    assert "dataset.synthetic.name" not in keys  # the discriminator is dataset.name
    assert not {k for k in keys if k.endswith((".transform", ".optimizer", "exported_from"))}

    class Grown(StudyConfig):  # a section added later is found without listing it anywhere
        novel: SplitConfig | None = None

    assert schema_keys(Grown) - keys == {"novel.test", "novel.folds"}


def test_every_schema_key_has_an_effect_test() -> None:
    keys = schema_keys()
    missing = sorted(keys - set(EFFECTS))
    stale = sorted(set(EFFECTS) - keys)
    assert not missing, f"keys without an effect test in EFFECTS: {missing}"
    assert not stale, f"EFFECTS lists keys that are not in the schema: {stale}"


def test_every_listed_effect_test_exists() -> None:
    missing = {key: node for key, node in EFFECTS.items() if not _node_exists(node)}
    assert not missing, f"EFFECTS names tests that do not exist: {missing}"


# =========================================================================== helpers
def study(changes: dict[str, Any] | None = None) -> StudyConfig:
    return parse_study(deep_update(TINY_STUDY, changes or {}))


def differs(a: Any, b: Any) -> bool:
    """Whether two observations differ: tensors by shape or value, containers item by item."""
    if isinstance(a, torch.Tensor | np.ndarray) or isinstance(b, torch.Tensor | np.ndarray):
        a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
        return a.shape != b.shape or not torch.equal(a, b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) != len(b) or any(differs(x, y) for x, y in zip(a, b, strict=True))
    return bool(a != b)


# =========================================================================== dataset
def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder holding every image dataset's layout, each with its own classes: the
    ``folder`` reader sees ``bicycle_final`` and ``car_ims`` (the class folders of its layout)."""
    from scipy.io import savemat

    root = tmp_path_factory.mktemp("layouts")
    for c, name in enumerate(["002.Bird_b", "001.Bird_a"]):  # CUB-200-2011
        for k in range(2):
            write_image(root / "CUB_200_2011" / "images" / name / f"{k}.jpg", 10 * c + k)
    annotations = np.zeros((1, 4), dtype=[("relative_im_path", "O"), ("class", "O")])
    for i, cls in enumerate([7, 7, 3, 3]):  # Cars196
        rel = f"car_ims/{i:06d}.jpg"
        write_image(root / rel, 100 + i)
        annotations[0, i] = (rel, np.array([[cls]], dtype=np.uint8))
    savemat(root / "cars_annos.mat", {"annotations": annotations})
    for name, classes in [("Ebay_train.txt", [21, 20]), ("Ebay_test.txt", [31, 30])]:  # SOP
        rows = ["image_id class_id super_class_id path"]
        for cls in classes:
            rel = f"bicycle_final/{cls}.jpg"
            write_image(root / rel, 200 + cls)
            rows.append(f"{cls} {cls} 1 {rel}")
        (root / name).write_text("\n".join(rows) + "\n")
    lines = ["label,path"] + [f"oml_{i % 2},car_ims/{i:06d}.jpg" for i in range(4)]  # OML CSV
    (root / "df.csv").write_text("\n".join(lines) + "\n")
    return root


def image_dataset(name: str, root: Path, transform: ImageTransform) -> Any:
    config: FolderData | BenchmarkData | OmlCsvData
    if name == "folder":
        config = FolderData(name="folder", root=root, transform=transform)
    elif name == "oml_csv":
        config = OmlCsvData(name="oml_csv", root=root, transform=transform)
    else:
        config = BenchmarkData(name=name, root=root, transform=transform)  # type: ignore[arg-type]
    return open_dataset(config)


def test_dataset_name_chooses_the_reader(layouts: Path) -> None:
    """The same root read under each name gives that name's classes, and samples."""
    transform = ImageTransform(size=16)
    expected = {
        "folder": ["bicycle_final", "car_ims"],
        "cub200": ["001.Bird_a", "002.Bird_b"],
        "cars196": ["3", "7"],
        "sop": ["20", "21", "30", "31"],
        "oml_csv": ["oml_0", "oml_1"],
    }
    assert set(expected) == set(IMAGE_DATASETS)
    for name, classes in expected.items():
        dataset = image_dataset(name, layouts, transform)
        assert dataset.class_names == classes, name
        assert dataset.read(0, train=False).shape == (3, 16, 16)


SYNTHETIC_CHANGES: dict[str, Any] = {
    "classes": 20,
    "per_class": 9,
    "image_size": 24,
    "channels": 3,
    "seed": 1,
}


@pytest.mark.parametrize("key", list(SYNTHETIC_CHANGES))
def test_synthetic_setting_changes_the_data(key: str) -> None:
    assert set(SYNTHETIC_CHANGES) == set(SyntheticData.model_fields) - {"name"}

    def observe(config: StudyConfig) -> list[Any]:
        dataset = open_dataset(config.dataset)
        return [dataset.labels, [dataset.read(i, train=True) for i in (0, 17, len(dataset) - 1)]]

    base = study()
    changed = study({"dataset": {key: SYNTHETIC_CHANGES[key]}})
    assert getattr(base.dataset, key) != SYNTHETIC_CHANGES[key]
    assert differs(observe(base), observe(changed))
    assert not differs(observe(base), observe(study()))  # the observation itself is repeatable


#: A transform key -> (changed value, whether the change shows in training or evaluation reads).
TRANSFORM_CHANGES: dict[str, tuple[Any, bool]] = {
    "size": (12, False),
    "resize": (32, False),
    "augment": (False, True),
    "scale": ((0.9, 1.0), True),
    "ratio": ((1.0, 1.0), True),
    "hflip": (False, True),
    "channels": (1, False),
    "mean": ((0.0, 0.0, 0.0), False),
    "std": ((1.0, 1.0, 1.0), False),
    "value_scale": (255.0, False),
    "bgr": (True, False),
}


@pytest.mark.parametrize("key", TRANSFORM_KEYS)
@pytest.mark.parametrize("name", IMAGE_DATASETS)
def test_transform_setting_changes_the_sample(name: str, key: str, layouts: Path) -> None:
    assert {*TRANSFORM_KEYS, "cache"} == set(ImageTransform.model_fields)
    assert set(TRANSFORM_KEYS) == set(TRANSFORM_CHANGES)
    value, train = TRANSFORM_CHANGES[key]
    base = ImageTransform(size=16, resize=20)
    assert getattr(base, key) != value

    def samples(transform: ImageTransform) -> list[torch.Tensor]:
        dataset = image_dataset(name, layouts, transform)
        out = []
        for seed in range(8):  # the same random crops and flips for both transforms
            torch.manual_seed(seed)
            out.append(dataset.read(0, train=train))
        return out

    assert differs(samples(base), samples(base.model_copy(update={key: value})))
    assert not differs(samples(base), samples(base))


# =========================================================================== model
def test_trunk_setting_chooses_the_trained_trunk() -> None:
    from dmlopt.study.fold import build_module

    def trunk_of(trunk: str) -> tuple[set[str], int]:
        config = study({"model": {"trunk": trunk}})
        module = build_module(config, "contrastive", {}, open_dataset(config.dataset), 4)
        kinds = {type(m).__name__ for m in module.trunk.modules()}
        return kinds, sum(p.numel() for p in module.trunk.parameters())

    small, resnet = trunk_of("small_cnn"), trunk_of("resnet50")
    assert "Bottleneck" in resnet[0] and "Bottleneck" not in small[0]
    assert resnet[1] > 100 * small[1]


@pytest.fixture
def tiny_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(16, 1, 16, 16, generator=generator), torch.arange(4).repeat_interleave(4)


def test_embedding_dim_is_the_width_of_what_is_scored(
    tiny_data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    from dmlopt.study.fold import build_module, embed

    for dim in (16, 24):
        config = study({"model": {"embedding_dim": dim}})
        dataset = open_dataset(config.dataset)
        module = build_module(config, "contrastive", {}, dataset, 4)
        assert module(tiny_data[0]).shape == (16, dim)  # what the loss trains
        assert embed(module, dataset.view([0, 1], train=False), config).shape == (16, dim)


def test_pretrained_weights_are_the_starting_point(tmp_path: Path) -> None:
    from dmlopt.models.small_cnn import small_cnn
    from dmlopt.study.fold import build_module

    torch.manual_seed(123)
    weights, _ = small_cnn((1, 16, 16))
    for p in weights.parameters():
        torch.nn.init.normal_(p)
    torch.save(weights.state_dict(), tmp_path / "trunk.pt")

    def trunk_state(changes: dict[str, Any]) -> dict[str, torch.Tensor]:
        config = study({"model": changes})
        torch.manual_seed(0)
        module = build_module(config, "contrastive", {}, open_dataset(config.dataset), 4)
        return module.trunk.state_dict()

    loaded = trunk_state({"pretrained": str(tmp_path / "trunk.pt")})
    fresh = trunk_state({})
    for name, tensor in weights.state_dict().items():
        assert torch.equal(loaded[name], tensor), name
    assert any(not torch.equal(fresh[n], t) for n, t in weights.state_dict().items())


# =========================================================================== losses
def _at(p: Range | Value, fraction: float) -> Value:
    """A value ``fraction`` of the way through a range (on its scale); a fixed value as it is."""
    if not isinstance(p, Range):
        return p
    if p.log:
        value = math.exp(math.log(p.low) + fraction * (math.log(p.high) - math.log(p.low)))
    else:
        value = p.low + fraction * (p.high - p.low)
    return round(value) if p.integer else value


LOSS_PARAMETERS = [
    (loss, name) for loss in losses.names() for name in losses.get(loss).search_space()
]


@pytest.mark.parametrize(
    ("loss", "name"), LOSS_PARAMETERS, ids=[f"{a}-{b}" for a, b in LOSS_PARAMETERS]
)
def test_fixed_loss_parameter_reaches_what_trains(
    loss: str, name: str, tiny_data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """A number in ``losses.<loss>.<group>.<param>`` fixes the parameter: it is not searched, and
    the module a trial trains computes another loss (or, for ``loss_optimizer.lr``, has another
    learning rate) than with another number there."""
    from dmlopt.study.fold import build_module

    defaults = losses.get(loss).search_space()
    middle = {n: _at(p, 0.5) for n, p in defaults.items()}

    # Spread-out embeddings as well as the untrained network's (which are nearly parallel, so a
    # miner's threshold can select the same pairs over much of its range).
    noise = torch.randn(16, 16, generator=torch.Generator().manual_seed(1))
    spread = torch.nn.functional.normalize(noise, dim=1)

    def trained_with(value: Value) -> tuple[float, float, list[int], float | None]:
        config = study({"losses": {loss: nest({name: value})}})
        # A trial that can answer every parameter but this one: it is never asked for it.
        trial = optuna.trial.FixedTrial({n: v for n, v in middle.items() if n != name})
        params = suggest(config.loss_space(loss), trial)
        assert params[name] == value
        torch.manual_seed(0)
        module = build_module(config, loss, params, open_dataset(config.dataset), 4)
        optimizer = module.configure_optimizers()
        lr = optimizer.param_groups[1]["lr"] if len(optimizer.param_groups) > 1 else None
        labels = tiny_data[1]
        with torch.no_grad():
            on_batch = float(module.compute_loss(tiny_data))
            tuples = None if module.miner is None else module.miner(spread, labels)
            on_spread = float(module.loss_fn(spread, labels, tuples))
        mined = [] if tuples is None else [len(t) for t in tuples]
        return on_batch, on_spread, mined, lr

    low, high = _at(defaults[name], 0.25), _at(defaults[name], 0.75)
    assert low != high
    first, second = trained_with(low), trained_with(high)
    if name == "loss_optimizer.lr":
        assert (first[3], second[3]) == (pytest.approx(low), pytest.approx(high))
    else:
        assert first[:3] != second[:3], (first, second)


@pytest.mark.parametrize(
    ("loss", "name"), LOSS_PARAMETERS, ids=[f"{a}-{b}" for a, b in LOSS_PARAMETERS]
)
def test_range_override_bounds_the_search(loss: str, name: str) -> None:
    """``{low, high, log}`` in ``losses.<loss>.<group>.<param>`` is the range trials sample."""
    default = losses.get(loss).search_space()[name]
    assert isinstance(default, Range)
    low, high = _at(default, 0.4), _at(default, 0.6)
    if default.integer:
        high = max(high, low + 1)
    log = not default.log and low > 0
    config = study({"losses": {loss: nest({name: {"low": low, "high": high, "log": log}})}})
    search = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = search.ask()
        value = suggest(config.loss_space(loss), trial)[name]
        assert low <= value <= high
        distribution = trial.distributions[name]
        assert (distribution.low, distribution.high, distribution.log) == (low, high, log)


# =========================================================================== training
@dataclass
class Ran:
    """What one fold's training did, recorded from inside the Lightning loop."""

    batches: list[tuple[tuple[int, ...], list[int]]] = field(default_factory=list)
    val_batch_sizes: list[int] = field(default_factory=list)
    validations: list[int] = field(default_factory=list)  # 0-based epochs
    devices: set[str] = field(default_factory=set)
    epochs: int = 0


CONTRASTIVE = {"loss.pos_margin": 0.2, "loss.neg_margin": 0.8}


@pytest.fixture
def train_once(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Ran]:
    """``train_once(changes)``: train fold 0 of the tiny study with ``changes`` as a search
    trial does (``train_fold``), recording the batches and validations it ran."""
    from dmlopt.lit.module import MetricLearningModule
    from dmlopt.study.cross_validation import search_folds
    from dmlopt.study.fold import train_fold

    ran = Ran()
    train_batch, validation_step = (
        MetricLearningModule.train_batch,
        MetricLearningModule.validation_step,
    )

    def recording_train_batch(self: Any, batch: Any, optimizer: Any) -> Any:
        x, y = batch
        ran.batches.append((tuple(x.shape), y.tolist()))
        ran.devices.add(x.device.type)
        return train_batch(self, batch, optimizer)

    def recording_validation_step(self: Any, batch: Any, batch_idx: int) -> Any:
        ran.val_batch_sizes.append(len(batch[0]))
        return validation_step(self, batch, batch_idx)

    monkeypatch.setattr(MetricLearningModule, "train_batch", recording_train_batch)
    monkeypatch.setattr(MetricLearningModule, "validation_step", recording_validation_step)

    def train(changes: dict[str, Any]) -> Ran:
        nonlocal ran
        ran = Ran()
        config = study(changes)
        dataset = open_dataset(config.dataset)
        train_classes, val_classes = search_folds(config, dataset)[0]
        result = train_fold(
            config, "contrastive", CONTRASTIVE, dataset, train_classes, val_classes, seed=0,
            listener=lambda epoch, _: ran.validations.append(epoch),
        )  # fmt: skip
        ran.epochs = result.epochs
        return ran

    return train


def test_batch_setting_shapes_the_training_batches(train_once: Callable[..., Ran]) -> None:
    """Every training batch is ``batch_size`` samples, ``m_per_class`` from each class, and an
    epoch is ``iterations_per_epoch`` of them."""
    one_epoch = {"max_epochs": 1, "eval_every": 1}
    for batch_size, m, iterations in [(8, 2, 3), (4, 2, 3), (8, 4, 3), (8, 2, 5)]:
        changes = {"batch_size": batch_size, "m_per_class": m, "iterations_per_epoch": iterations}
        ran = train_once({"training": {**one_epoch, **changes}})
        assert len(ran.batches) == iterations
        for shape, labels in ran.batches:
            assert shape[0] == batch_size
            assert sorted(np.bincount(labels)[np.bincount(labels) > 0]) == [m] * (batch_size // m)


def test_max_epochs_and_eval_every_decide_when_validation_runs(
    train_once: Callable[..., Ran],
) -> None:
    for max_epochs, eval_every, validated in [(2, 1, [0, 1]), (4, 1, [0, 1, 2, 3]), (4, 2, [1, 3])]:
        changes = {"max_epochs": max_epochs, "eval_every": eval_every, "patience": 10}
        ran = train_once({"training": changes})
        assert ran.epochs == max_epochs
        assert len(ran.batches) == max_epochs * TINY_STUDY["training"]["iterations_per_epoch"]
        assert ran.validations == validated


def test_patience_is_the_number_of_checks_without_improvement(
    train_once: Callable[..., Ran], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a validation score that never improves after the first check, training stops after
    ``1 + patience`` checks."""
    import dmlopt.lit.module

    monkeypatch.setattr(
        dmlopt.lit.module,
        "retrieval_scores_or_zero",
        lambda *_: {"map_at_r": 0.5, "r_precision": 0.5, "precision_at_1": 0.5},
    )
    for patience in (1, 3):
        changes = {"max_epochs": 8, "eval_every": 1, "patience": patience}
        ran = train_once({"training": changes})
        assert ran.validations == list(range(1 + patience))
        assert ran.epochs == 1 + patience


def test_eval_batch_size_is_the_validation_batch_size(train_once: Callable[..., Ran]) -> None:
    from dmlopt.data.datamodule import eval_loader

    val_samples = 4 * TINY_STUDY["dataset"]["per_class"]  # a tiny fold validates on 4 classes
    for size, batches in [(64, [32]), (10, [10, 10, 10, 2])]:
        assert sum(batches) == val_samples
        ran = train_once({"training": {"max_epochs": 1, "eval_batch_size": size}})
        assert ran.val_batch_sizes == batches
    # the final stage embeds the test set through the same loader
    config = study({"training": {"eval_batch_size": 10}})
    samples = open_dataset(config.dataset).view([8, 9, 10], train=False)
    assert [len(x) for x, _ in eval_loader(samples, config.training)] == [10, 10, 4]


def test_num_workers_load_samples_in_worker_processes(
    train_once: Callable[..., Ran], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dmlopt.data.synthetic import SyntheticDataset

    read = SyntheticDataset.read

    def recording_read(self: SyntheticDataset, index: int, *, train: bool) -> torch.Tensor:
        (tmp_path / f"{os.getpid()}-{'train' if train else 'val'}").touch()
        return read(self, index, train=train)

    monkeypatch.setattr(SyntheticDataset, "read", recording_read)
    for workers in (0, 2):
        for path in tmp_path.iterdir():
            path.unlink()
        train_once({"training": {"max_epochs": 1, "num_workers": workers}})
        readers = {
            stage: {p.name.split("-")[0] for p in tmp_path.glob(f"*-{stage}")}
            for stage in ("train", "val")
        }
        for stage, pids in readers.items():
            if workers:  # the loader's own processes, never the trainer's
                assert str(os.getpid()) not in pids and 0 < len(pids) <= workers, (stage, pids)
            else:
                assert pids == {str(os.getpid())}, (stage, pids)
        if workers:
            assert len(readers["train"]) == workers


def test_accelerator_decides_where_training_runs(train_once: Callable[..., Ran]) -> None:
    """``cpu`` trains on the CPU even beside a GPU; ``auto`` takes the GPU when there is one and
    ``gpu`` demands one (refused without, see test_search_integrity)."""
    from dmlopt.hardware import check_hardware

    gpu = torch.cuda.is_available()
    train = {"max_epochs": 1}
    assert train_once({"training": {**train, "accelerator": "cpu"}}).devices == {"cpu"}
    auto = train_once({"training": {**train, "accelerator": "auto"}}).devices
    assert auto == ({"cuda"} if gpu else {"cpu"})
    if gpu:
        assert train_once({"training": {**train, "accelerator": "gpu"}}).devices == {"cuda"}
    else:
        from dmlopt.errors import DmloptError

        with pytest.raises(DmloptError, match="no GPU"):
            check_hardware(study({"training": {"accelerator": "gpu"}}).training)


OPTIMIZER_CHANGES: dict[str, dict[str, Any]] = {
    "name": {"name": "sgd"},
    "lr": {"lr": 0.0123},
    "weight_decay": {"weight_decay": 0.0456},
    "momentum": {"name": "sgd", "momentum": 0.42},
}


def test_optimizer_setting_reaches_the_optimizer() -> None:
    """The optimizer Lightning gets from the module (``configure_optimizers``) is the one named,
    with the learning rate, weight decay and (for sgd and rmsprop) momentum given."""
    from dmlopt.config import OptimizerConfig
    from dmlopt.study.fold import build_module

    assert set(OPTIMIZER_CHANGES) == set(OptimizerConfig.model_fields)

    def optimizer(changes: dict[str, Any]) -> torch.optim.Optimizer:
        config = study({"training": {"optimizer": changes}})
        module = build_module(config, "contrastive", CONTRASTIVE, open_dataset(config.dataset), 4)
        return module.configure_optimizers()

    default = optimizer({})
    assert type(default) is torch.optim.Adam
    assert type(optimizer({"name": "sgd"})) is torch.optim.SGD
    assert type(optimizer({"name": "adamw"})) is torch.optim.AdamW
    assert type(optimizer({"name": "rmsprop"})) is torch.optim.RMSprop
    for key, value in [("lr", 0.0123), ("weight_decay", 0.0456)]:
        assert default.param_groups[0][key] != value
        assert optimizer({key: value}).param_groups[0][key] == value
    for name in ("sgd", "rmsprop"):
        low, high = (optimizer({"name": name, "momentum": m}) for m in (0.1, 0.42))
        assert (low.param_groups[0]["momentum"], high.param_groups[0]["momentum"]) == (0.1, 0.42)


# =========================================================================== search
def test_sampler_setting_chooses_the_sampler() -> None:
    from dmlopt.study.runner import open_study

    for name, kind in [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
    ]:
        config = study({"search": {"sampler": name}})
        opened = open_study(config, "contrastive", optuna.storages.InMemoryStorage(), seed=0)
        assert type(opened.sampler) is kind


def test_search_seed_decides_sampled_values_and_training_seeds(tmp_path: Path) -> None:
    """``dmlopt run`` with the same seed repeats the trial's parameters and training seeds; with
    another seed both change."""

    def first_trial(seed: int, name: str) -> optuna.trial.FrozenTrial:
        changes = {
            "training": {"max_epochs": 1, "iterations_per_epoch": 1},
            "search": {"n_trials": 1, "seed": seed},
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(deep_update(TINY_STUDY, changes)))
        out = tmp_path / name
        assert main(["run", str(path), "--no-final", "--out", str(out)]) == 0
        url = f"sqlite:///{out}/study.db"
        return optuna.load_study(study_name="tiny/contrastive", storage=url).trials[0]

    a, again, b = first_trial(0, "a"), first_trial(0, "again"), first_trial(1, "b")
    assert (a.params, a.user_attrs["seeds"]) == (again.params, again.user_attrs["seeds"])
    assert a.params != b.params
    assert a.user_attrs["seeds"] != b.user_attrs["seeds"]


# =========================================================================== exported configs
EXPORTED_FROM = {
    "study": "origin/contrastive",
    "loss": "contrastive",
    "trial": 7,
    "val_map_at_r": 0.4321,
    "val_map_at_r_std": 0.0123,
}


def exported_study(tmp_path: Path, **changes: Any) -> Path:
    data = deep_update(
        TINY_STUDY,
        {
            "study": "origin-contrastive-best",
            "losses": {"contrastive": nest(CONTRASTIVE)},
            "training": {"max_epochs": 1, "iterations_per_epoch": 1},
            "final": {"runs": 1},
            "exported_from": EXPORTED_FROM,
            **changes,
        },
    )
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """final.json of ``dmlopt final`` on an exported config (no search)."""
    root = tmp_path_factory.mktemp("exported")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DMLOPT_STORAGE", raising=False)
        assert main(["final", str(exported_study(root)), "--out", str(root / "out")]) == 0
    import json

    return dict(json.loads((root / "out" / "final.json").read_text())["contrastive"])


def test_exported_validation_score_is_recorded(reproduced: dict[str, Any]) -> None:
    assert reproduced["val_map_at_r"] == EXPORTED_FROM["val_map_at_r"]
    assert reproduced["val_map_at_r_std"] == EXPORTED_FROM["val_map_at_r_std"]


def test_exported_origin_is_recorded_as_a_reproduction(reproduced: dict[str, Any]) -> None:
    assert reproduced["reproduction_of"] == {"study": "origin/contrastive", "trial": 7}


def test_exported_loss_must_be_the_scored_loss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exported config records the loss it was exported for; one whose ``losses`` were edited
    to another loss would be recorded as a reproduction of a trial it does not reproduce."""
    path = exported_study(tmp_path, losses={"triplet": {"loss": {"margin": 0.1}}})
    capsys.readouterr()
    assert main(["final", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "exported_from.loss" in err[0], err
    assert not (tmp_path / "out").exists()  # the consistent file runs: see `reproduced`
