"""The study file: its schema, loading with one-line errors, and dumping (the export format).

One study file is one comparison: everything but the loss is shared by every method in it,
which is how fairness is built in (docs/protocol.md). Unknown keys are errors.
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
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from dmlopt import losses
from dmlopt.errors import DmloptError
from dmlopt.losses.registry import PARAMETER_LR, LossSpec
from dmlopt.plugins import entry_points, is_import_path
from dmlopt.search_space import Param, merge, parse_param

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


#: The built-in dataset names; any other name is a user's dataset (:class:`UserData`).
BUILTIN_DATASETS = ("synthetic", "folder", "npz", "cub200", "cars196", "sop", "oml_csv")
_USER = "user"  # the union tag of user code
_BUILTIN = "builtin"
_TAGS = {_USER, _BUILTIN}  # union tags: left out of error locations (see _one_line)


def dataset_names() -> list[str]:
    """Built-in dataset names, then those installed packages register."""
    return [*BUILTIN_DATASETS, *sorted(set(entry_points("dataset")) - set(BUILTIN_DATASETS))]


class UserData(BaseModel):
    """A dataset of the user's own: ``name`` is a :class:`~dmlopt.data.base.MetricDataset`
    subclass as ``"module:Class"``, or the name an installed package registers it under;
    every other key is passed to its constructor as a keyword argument (docs/plugins.md)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if is_import_path(value) or value in entry_points("dataset"):
            return value
        raise ValueError(
            f"unknown dataset {value!r} (known: {', '.join(dataset_names())}; "
            "or a dataset class of your own as 'module:Class')"
        )

    @property
    def options(self) -> dict[str, Any]:
        """The constructor's keyword arguments: every key but ``name``."""
        return dict(self.model_extra or {})


def _dataset_kind(value: Any) -> str:
    name = value.get("name") if isinstance(value, Mapping) else getattr(value, "name", None)
    if name in ("cub200", "cars196", "sop"):
        return "benchmark"
    return name if name in BUILTIN_DATASETS else _USER


DatasetConfig = Annotated[
    Annotated[SyntheticData, Tag("synthetic")]
    | Annotated[FolderData, Tag("folder")]
    | Annotated[NpzData, Tag("npz")]
    | Annotated[BenchmarkData, Tag("benchmark")]
    | Annotated[OmlCsvData, Tag("oml_csv")]
    | Annotated[UserData, Tag(_USER)],
    Discriminator(_dataset_kind),
]


# --------------------------------------------------------------------------- the rest
class SplitConfig(Schema):
    """``paper``: first half of the sorted classes is train/val, the second half test."""

    test: Literal["paper"] = "paper"
    folds: int = Field(4, ge=2)


class ModelConfig(Schema):
    """``trunk``: a built-in or installed trunk's name, or a factory of the user's own as
    ``"module:function"`` (docs/plugins.md)."""

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
    # Lightning's ``deterministic``: true asks torch for deterministic algorithms (an error on
    # GPU ops that have none), "warn" only warns about those. CPU runs are bit-reproducible
    # either way; see docs/protocol.md for what it costs on a GPU.
    deterministic: bool | Literal["warn"] = False
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
    """``pruner: none`` is the paper's protocol (every trial trains all its folds); ``median``
    stops a trial whose folds so far score below the median of other trials on the same folds
    (docs/protocol.md explains its bias and saving)."""

    n_trials: PositiveInt = 12
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "none"] = "none"
    seed: int = Field(0, ge=0, lt=2**32)


class FinalConfig(Schema):
    """``keep``: what of the final stage stays in the output folder. ``embeddings`` (the
    default): every fold model's test embeddings and the test labels (``.npy``), enough to
    re-score or compare without retraining, and as small as the test set; ``models``: those and
    every fold model's weights with its resolved config (``dmlopt.load_model``), which for a
    large trunk is far more (BN-Inception is about 45 MB per fold model); ``none``: nothing."""

    runs: PositiveInt = 3
    keep: Literal["models", "embeddings", "none"] = "embeddings"


class WorkersConfig(Schema):
    """How workers sharing a storage watch each other and ride out database outages.

    A worker beats every ``heartbeat_seconds`` while it runs a trial; a running trial whose
    beat has not moved for three intervals is failed (and retried) by whichever worker or
    waiting command sees it first. A worker that loses its database retries for
    ``storage_retry_seconds`` (at least once per heartbeat interval, so that its beats resume
    soon after an outage) before it gives up with exit status 2."""

    heartbeat_seconds: float = Field(30.0, gt=0, le=3600)
    storage_retry_seconds: float = Field(300.0, ge=0, le=86400)


class ExportedFrom(Schema):
    """Where an exported config came from; its presence makes ``dmlopt final`` skip the search."""

    study: str
    loss: str
    trial: int
    val_map_at_r: float
    val_map_at_r_std: float | None = None
    # Versions, commit, device and the identity of user code of the search it came from
    # (dmlopt.provenance); "code" is compared with the code that scores it.
    provenance: dict[str, Any] | None = None


LossOverrides = dict[str, dict[str, Any]]
#: The groups a loss's parameters live in, as the first part of their dotted names.
PARAM_GROUPS = ("loss", "miner", "loss_optimizer")
_USER_GROUPS = ("loss", "loss_optimizer")


class UserLoss(Schema):
    """A loss of the user's own: a ``torch.nn.Module`` class as ``"module:Class"``, called as
    pytorch-metric-learning's losses are, ``loss(embeddings, labels, indices_tuple)``.

    ``needs`` names what dmlopt passes to its constructor (``num_classes``: the fold's training
    classes; ``embedding_size``), ``space`` its searched (``{low, high, log, int}``) and fixed
    (a number) keyword arguments under ``loss``, and the learning rate of its own parameters
    under ``loss_optimizer.lr``."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True
    )

    loss_class: str = Field(alias="class")
    needs: tuple[Literal["num_classes", "embedding_size"], ...] = ()
    space: LossOverrides = {}

    @field_validator("loss_class")
    @classmethod
    def _import_path(cls, value: str) -> str:
        if not is_import_path(value):
            raise ValueError(f"expected a class as 'module:Class', got {value!r}")
        return value

    @model_validator(mode="after")
    def _valid_space(self) -> UserLoss:
        self.spec("loss")  # raises on unknown groups or malformed ranges
        return self

    def spec(self, key: str) -> LossSpec:
        """The registry entry this loss stands for under the name ``key``."""
        for group, params in self.space.items():
            if group not in _USER_GROUPS or not isinstance(params, Mapping):
                raise ValueError(
                    f"space: expected groups {', '.join(_USER_GROUPS)} mapping names to values, "
                    f"got {group!r}"
                )
        optimizer = self.space.get("loss_optimizer", {})
        if set(optimizer) - {"lr"}:
            raise ValueError(f"space.loss_optimizer: only lr is searched, got {sorted(optimizer)}")

        def param(group: str, name: str, value: Any) -> Param:
            try:
                return parse_param(value)
            except ValueError as e:
                raise ValueError(f"space.{group}.{name}: {e}") from None

        lr = optimizer.get("lr")
        return LossSpec(
            key=key,
            loss_class=self.loss_class,
            space={k: param("loss", k, v) for k, v in self.space.get("loss", {}).items()},
            summary=f"{self.loss_class}, from the study file",
            needs_num_classes="num_classes" in self.needs,
            needs_embedding_size="embedding_size" in self.needs,
            has_parameters="lr" in optimizer,
            parameter_lr=PARAMETER_LR if lr is None else param("loss_optimizer", "lr", lr),
        )


def _loss_kind(value: Any) -> str:
    if isinstance(value, UserLoss):
        return _USER
    return _USER if isinstance(value, Mapping) and "class" in value else _BUILTIN


#: A loss of the study: overrides of a registered loss's space, or a loss of the user's own.
LossEntry = Annotated[
    Annotated[UserLoss, Tag(_USER)] | Annotated[LossOverrides, Tag(_BUILTIN)],
    Discriminator(_loss_kind),
]


class StudyConfig(Schema):
    """A whole comparison. Optuna studies are named ``<study>/<loss>``."""

    study: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: DatasetConfig
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    losses: dict[str, LossEntry]
    training: TrainingConfig = TrainingConfig()
    search: SearchConfig = SearchConfig()
    final: FinalConfig = FinalConfig()
    workers: WorkersConfig = WorkersConfig()
    storage: str | None = None
    exported_from: ExportedFrom | None = None

    @field_validator("losses", mode="before")
    @classmethod
    def _list_means_defaults(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not all(isinstance(name, str) for name in value):
                raise ValueError("expected a list of loss names or a mapping name -> overrides")
            return {name: {} for name in value}
        if isinstance(value, Mapping):
            return {name: ({} if v is None else v) for name, v in value.items()}
        return value

    @field_validator("losses")
    @classmethod
    def _known_losses_and_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("at least one loss is needed")
        for name, entry in value.items():
            if isinstance(entry, UserLoss):
                if name in losses.names():
                    raise ValueError(
                        f"{name}: a loss of your own needs a name of its own ({name!r} is "
                        "registered)"
                    )
                continue
            if name not in losses.names():
                raise ValueError(
                    f"unknown loss {name!r} (known: {', '.join(losses.names())}; or a loss of "
                    "your own as {class: 'module:Class', needs: [...], space: {...}})"
                )
            _loss_space(name, entry)  # raises on unknown parameters or bad ranges
        return value

    @field_validator("model")
    @classmethod
    def _known_trunk(cls, value: ModelConfig) -> ModelConfig:
        from dmlopt.models import trunk_names

        if value.trunk not in trunk_names() and not is_import_path(value.trunk):
            raise ValueError(
                f"unknown trunk {value.trunk!r} (known: {', '.join(trunk_names())}; or a "
                "factory of your own as 'module:function')"
            )
        return value

    @model_validator(mode="after")
    def _exported_loss_is_scored(self) -> StudyConfig:
        # An exported config reproduces one trial of one loss; scoring another loss under its
        # name would record a reproduction of something that never ran.
        exported = self.exported_from
        if exported is not None and list(self.losses) != [exported.loss]:
            raise ValueError(
                f"exported_from.loss is {exported.loss!r} but losses are "
                f"{', '.join(self.losses)}: an exported config scores the one loss it was "
                "exported for"
            )
        return self

    def loss_spec(self, loss: str) -> LossSpec:
        """The registry entry of ``loss``: built in, installed, or this file's own."""
        entry = self.losses[loss]
        return entry.spec(loss) if isinstance(entry, UserLoss) else losses.get(loss)

    def loss_space(self, loss: str) -> dict[str, Param]:
        """The search space of ``loss``: the registry's with this file's overrides, or the one
        this file gives a loss of its own."""
        entry = self.losses[loss]
        if isinstance(entry, UserLoss):
            return entry.spec(loss).search_space()
        return _loss_space(loss, entry)

    def fixed_loss(self, loss: str, values: Mapping[str, Any]) -> Any:
        """The ``losses`` entry of ``loss`` with every parameter fixed at ``values`` (an
        export): overrides, or this file's own loss with a space of fixed values."""
        entry = self.losses[loss]
        if isinstance(entry, UserLoss):
            return entry.model_copy(update={"space": nest(values)})
        return nest(values)

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


MAX_STUDY_BYTES = 1 << 20  # a study file is a few hundred lines; more is a mistake or an attack


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: an alias can expand a few hundred bytes into gigabytes (a "billion
    laughs"), so one is refused when it is met, before anything is expanded."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(
                f"line {event.start_mark.line + 1}: YAML aliases (*name) are not allowed"
            )
        return super().compose_node(parent, index)


def load_study(path: str | os.PathLike[str], *, verify_code: bool = True) -> StudyConfig:
    """Read and validate a study file: at most 1 MiB of UTF-8 YAML without aliases. With
    ``verify_code``, also import the user code it names and check that it can be called as the
    file says (:func:`dmlopt.user_code.verify`)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_STUDY_BYTES + 1)
    except OSError as e:
        raise DmloptError(f"cannot read study file {path}: {e.strerror}") from None
    if len(raw) > MAX_STUDY_BYTES:
        raise DmloptError(f"{path}: larger than {MAX_STUDY_BYTES // 1024} KiB, not a study file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DmloptError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = shorten(str(getattr(e, "problem", None) or e))
        raise DmloptError(f"{path}:{where} malformed YAML: {problem}") from None
    config = parse_study(data, source=str(path))
    if verify_code:
        from dmlopt.user_code import verify

        verify(config)
    return config


def dump_study(config: StudyConfig) -> str:
    """The study file text of ``config``; loading it gives back an equal config."""
    data = config.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


MAX_MESSAGE = 160  # characters of any one value or message shown in an error


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line, cut to ``limit`` characters: an error never echoes a whole value."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(
            str(p) for p in item["loc"] if not str(p).startswith("function-") and p not in _TAGS
        )
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(shorten(f"{loc}: {msg}" if loc else msg))
    return shorten("; ".join(parts), 4 * MAX_MESSAGE)
