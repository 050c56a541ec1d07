"""The study file: its schema, loading with one-line errors, and dumping (the export format).

One study file is one comparison: everything but the loss is shared by every method in it,
which is how fairness is built in (DESIGN.md section 2). Unknown keys are errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dmlopt import losses
from dmlopt.errors import DmloptError
from dmlopt.search_space import Param, merge

PositiveInt = Annotated[int, Field(ge=1)]


class Schema(BaseModel):
    """Base of every section: frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- datasets
class ImageTransform(Schema):
    """Image preprocessing, without torchvision.

    Training: random resized crop (``scale``, ``ratio``) to ``size`` and a horizontal flip.
    Evaluation: resize the shorter side to ``resize`` and center-crop ``size``.
    The paper: resize 256, crop 227, scale (0.16, 1), ratio (3/4, 4/3), flip.
    """

    size: PositiveInt = 64
    resize: PositiveInt | None = None
    augment: bool = True
    scale: tuple[float, float] = (0.16, 1.0)
    ratio: tuple[float, float] = (0.75, 4 / 3)
    hflip: bool = True
    channels: Literal[1, 3] = 3
    # Normalisation after scaling pixels to [0, value_scale]: ImageNet statistics by default;
    # Caffe-converted weights (the paper's BN-Inception) want bgr, value_scale 255, std 1.
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    value_scale: float = Field(1.0, gt=0)
    bgr: bool = False
    # A folder for decoded images (uint8 at the resize resolution, memory-mapped), shared by
    # loader workers, trials and studies; null decodes every read. Training crops then come
    # from the shrunk image rather than the original (see the README's performance section).
    cache: Path | None = None


class SyntheticData(Schema):
    """The built-in dataset: classes of small grayscale images generated from a seed."""

    name: Literal["synthetic"]
    classes: int = Field(48, ge=4)
    per_class: int = Field(30, ge=2)
    image_size: int = Field(32, ge=8)
    channels: Literal[1, 3] = 1  # 3 repeats the gray image, for trunks made for RGB
    seed: int = 0


class FolderData(Schema):
    """``root/<class>/<image>``; classes sorted by folder name."""

    name: Literal["folder"]
    root: Path
    transform: ImageTransform = ImageTransform()


class NpzData(Schema):
    """Precomputed features ``X`` (n, d) and labels ``y`` in an uncompressed ``.npz``."""

    name: Literal["npz"]
    path: Path


class BenchmarkData(Schema):
    """CUB-200-2011, Cars196 or Stanford Online Products in their official layouts."""

    name: Literal["cub200", "cars196", "sop"]
    root: Path
    transform: ImageTransform = ImageTransform(size=227, resize=256)


class OmlCsvData(Schema):
    """Open Metric Learning's CSV layout; its own split columns are ignored (see README)."""

    name: Literal["oml_csv"]
    root: Path
    csv: str = "df.csv"
    transform: ImageTransform = ImageTransform(size=227, resize=256)


DatasetConfig = Annotated[
    SyntheticData | FolderData | NpzData | BenchmarkData | OmlCsvData,
    Field(discriminator="name"),
]


# --------------------------------------------------------------------------- the rest
class SplitConfig(Schema):
    """``paper``: first half of the sorted classes is train/val, the second half test."""

    test: Literal["paper"] = "paper"
    folds: int = Field(4, ge=2)


class ModelConfig(Schema):
    trunk: str = "small_cnn"
    embedding_dim: PositiveInt = 64
    pretrained: Path | None = None
    freeze_batchnorm: bool = False


class OptimizerConfig(Schema):
    name: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # used by rmsprop and sgd


class TrainingConfig(Schema):
    batch_size: PositiveInt = 32
    m_per_class: PositiveInt = 4
    iterations_per_epoch: PositiveInt = 50
    max_epochs: PositiveInt = 8
    eval_every: PositiveInt = 1
    patience: PositiveInt = 3  # validation checks without improvement, as the paper counts
    optimizer: OptimizerConfig = OptimizerConfig()
    precision: Literal["32-true", "bf16-mixed"] = "32-true"
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    num_workers: int = Field(0, ge=0)
    eval_batch_size: PositiveInt = 256

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        if self.batch_size % self.m_per_class:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of m_per_class {self.m_per_class}"
            )
        if self.eval_every > self.max_epochs:
            raise ValueError(
                f"eval_every {self.eval_every} > max_epochs {self.max_epochs}: "
                "no validation would run"
            )
        return self


class SearchConfig(Schema):
    n_trials: PositiveInt = 12
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "none"] = "median"
    seed: int = Field(0, ge=0, lt=2**32)


class FinalConfig(Schema):
    runs: PositiveInt = 3


class ExportedFrom(Schema):
    """Where an exported config came from; its presence makes ``dmlopt final`` skip the search."""

    study: str
    loss: str
    trial: int
    val_map_at_r: float
    val_map_at_r_std: float | None = None


LossOverrides = dict[str, dict[str, Any]]
#: The groups a loss's parameters live in, as the first part of their dotted names.
PARAM_GROUPS = ("loss", "miner", "loss_optimizer")


class StudyConfig(Schema):
    """A whole comparison. Optuna studies are named ``<study>/<loss>``."""

    study: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: DatasetConfig
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    losses: dict[str, LossOverrides]
    training: TrainingConfig = TrainingConfig()
    search: SearchConfig = SearchConfig()
    final: FinalConfig = FinalConfig()
    storage: str | None = None
    exported_from: ExportedFrom | None = None

    @field_validator("losses", mode="before")
    @classmethod
    def _list_means_defaults(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {name: {} for name in value}
        if isinstance(value, Mapping):
            return {name: ({} if v is None else v) for name, v in value.items()}
        return value

    @field_validator("losses")
    @classmethod
    def _known_losses_and_params(cls, value: dict[str, LossOverrides]) -> dict[str, LossOverrides]:
        if not value:
            raise ValueError("at least one loss is needed")
        for name, overrides in value.items():
            if name not in losses.names():
                raise ValueError(f"unknown loss {name!r} (known: {', '.join(losses.names())})")
            _loss_space(name, overrides)  # raises on unknown parameters or bad ranges
        return value

    @field_validator("model")
    @classmethod
    def _known_trunk(cls, value: ModelConfig) -> ModelConfig:
        from dmlopt.models import trunk_names

        if value.trunk not in trunk_names():
            raise ValueError(f"unknown trunk {value.trunk!r} (known: {', '.join(trunk_names())})")
        return value

    def loss_space(self, loss: str) -> dict[str, Param]:
        """The search space of ``loss``: the registry's, with this file's overrides."""
        return _loss_space(loss, self.losses[loss])

    def study_name(self, loss: str) -> str:
        return f"{self.study}/{loss}"


def _loss_space(loss: str, overrides: LossOverrides) -> dict[str, Param]:
    flat: dict[str, Any] = {}
    for group, params in overrides.items():
        if group not in PARAM_GROUPS or not isinstance(params, Mapping):
            raise ValueError(
                f"{loss}: expected groups {', '.join(PARAM_GROUPS)} mapping names to values, "
                f"got {group!r}"
            )
        flat.update({f"{group}.{k}": v for k, v in params.items()})
    return merge(losses.get(loss).search_space(), flat, what=loss)


def nest(values: Mapping[str, Any]) -> LossOverrides:
    """Dotted parameter names back into the study file's nested groups."""
    nested: LossOverrides = {}
    for name, value in values.items():
        group, _, key = name.partition(".")
        nested.setdefault(group, {})[key] = value
    return nested


# --------------------------------------------------------------------------- load / dump
def parse_study(data: Any, *, source: str = "study file") -> StudyConfig:
    """Validate a parsed YAML document; errors become one :class:`DmloptError` line."""
    if not isinstance(data, Mapping):
        raise DmloptError(f"{source}: expected a mapping at the top level")
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as e:
        raise DmloptError(f"{source}: {_one_line(e)}") from None


def load_study(path: str | os.PathLike[str]) -> StudyConfig:
    """Read and validate a study file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise DmloptError(f"cannot read study file {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise DmloptError(f"{path}:{where} malformed YAML: {getattr(e, 'problem', e)}") from None
    return parse_study(data, source=str(path))


def dump_study(config: StudyConfig) -> str:
    """The study file text of ``config``; loading it gives back an equal config."""
    data = config.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def _one_line(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
