"""dmlopt: the "Metric Learning Reality Check" protocol as Optuna studies.

Class-disjoint k-fold cross-validation on the train/val classes, one scoring of the held-out
test set with MAP@R, R-Precision and P@1, and reports that compare methods fairly.
"""

__version__ = "0.1.0"
