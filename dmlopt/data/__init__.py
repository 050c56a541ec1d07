"""Datasets, class splits and per-fold loaders.

Adapters are registered by import path, so validating a study does not import them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmlopt.imports import resolve

if TYPE_CHECKING:
    from dmlopt.config import DatasetConfig
    from dmlopt.data.base import MetricDataset

#: dataset name in the study file -> "module:class" of its adapter.
DATASETS: dict[str, str] = {
    "synthetic": "dmlopt.data.synthetic:SyntheticDataset",
    "folder": "dmlopt.data.folder:FolderDataset",
    "npz": "dmlopt.data.npz:NpzDataset",
    "cub200": "dmlopt.data.cub200:Cub200Dataset",
    "cars196": "dmlopt.data.cars196:Cars196Dataset",
    "sop": "dmlopt.data.sop:SopDataset",
    "oml_csv": "dmlopt.data.oml_csv:OmlCsvDataset",
}


def open_dataset(config: DatasetConfig) -> MetricDataset:
    """The adapter for ``config``: labels and names listed, no sample read yet."""
    if config.name not in DATASETS:  # a dataset of the user's own
        from dmlopt.data.user import open_user_dataset

        return open_user_dataset(config)  # type: ignore[arg-type]
    adapter: type[MetricDataset] = resolve(DATASETS[config.name])
    return adapter(config)  # type: ignore[call-arg]
