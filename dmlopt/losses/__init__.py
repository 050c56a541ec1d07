"""Metric-learning methods, one module each, collected in a registry.

Importing this package registers every method, in the paper's order; see
:mod:`dmlopt.losses.registry`.
"""

import importlib

from dmlopt.losses.registry import LossSpec, get, names, register

#: One module per method, in the order of the paper's tables.
METHODS = (
    "contrastive",
    "triplet",
    "ntxent",
    "proxy_nca",
    "margin",  # also registers margin_per_class
    "normalized_softmax",
    "cosface",
    "arcface",
    "fastap",
    "snr_contrastive",
    "multi_similarity",
    "multi_similarity_miner",
    "soft_triple",
)

for _module in METHODS:
    importlib.import_module(f"dmlopt.losses.{_module}")

__all__ = ["METHODS", "LossSpec", "get", "names", "register"]
