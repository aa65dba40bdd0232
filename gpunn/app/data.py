"""Datasets for ``gpunn train``: scikit-learn's digits (classification) and diabetes (regression).

Both ship with scikit-learn (no download). The split is stratified for digits, seeded, and the features are
standardised with the training split's mean and standard deviation only (the test split never leaks into them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Dataset:
    name: str
    task: str                 # "classification" or "regression"
    x_train: np.ndarray       # (n_train, features), float dtype
    y_train: np.ndarray       # int64 class indices (n_train,) or float targets (n_train, 1)
    x_test: np.ndarray
    y_test: np.ndarray
    n_outputs: int            # classes, or 1 for regression

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def _standardise(train, test):
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0  # constant pixels (the digits' borders) stay 0 instead of becoming NaN
    return (train - mean) / std, (test - mean) / std


def load(task: str = "classification", *, test_size: float = 0.2, seed: int = 0, dtype=np.float32,
         max_samples: int | None = None) -> Dataset:
    """The digits (``task="classification"``) or diabetes (``task="regression"``) data, split and standardised.

    ``max_samples`` keeps a seeded random subset first (tiny runs for tests and the simulator)."""
    from sklearn.datasets import load_diabetes, load_digits
    from sklearn.model_selection import train_test_split

    if task == "classification":
        x, y = load_digits(return_X_y=True)
        y = y.astype(np.int64)
        name = "digits"
    elif task == "regression":
        x, y = load_diabetes(return_X_y=True)
        name = "diabetes"
    else:
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    x = x.astype(np.float64)
    rng = np.random.default_rng(seed)
    if max_samples is not None and max_samples < len(x):
        keep = np.sort(rng.choice(len(x), size=max_samples, replace=False))
        x, y = x[keep], y[keep]
    stratify = y if task == "classification" and np.bincount(y).min() >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_size, random_state=seed,
                                                        stratify=stratify)
    x_train, x_test = _standardise(x_train, x_test)
    if task == "regression":
        mean, std = y_train.mean(), y_train.std()
        std = std if std > 0 else 1.0  # a single training target (or all equal): centre only
        y_train = ((y_train - mean) / std).reshape(-1, 1)
        y_test = ((y_test - mean) / std).reshape(-1, 1)
        y_train, y_test = y_train.astype(dtype), y_test.astype(dtype)
        n_outputs = 1
    else:
        n_outputs = 10
    return Dataset(name, task, x_train.astype(dtype), y_train, x_test.astype(dtype), y_test, n_outputs)
