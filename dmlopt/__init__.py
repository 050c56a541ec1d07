"""dmlopt: the "Metric Learning Reality Check" protocol as Optuna studies.

Class-disjoint k-fold cross-validation on the train/val classes, one scoring of the held-out
test set with MAP@R, R-Precision and P@1, and reports that compare methods fairly.
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``dmlopt.load_model``, imported on first use (it needs torch; the command line must
    start without it)."""
    if name == "load_model":
        from dmlopt.kept import load_model

        return load_model
    raise AttributeError(f"module 'dmlopt' has no attribute {name!r}")
