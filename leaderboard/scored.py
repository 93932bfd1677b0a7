"""The pages ``evaluate`` scores, as arrays: what scoring collects and plots draws."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Scored:
    y_true: np.ndarray  # 0 normal, 1 atypical, per page
    y_pred: np.ndarray  # the class each output named
    y_score: np.ndarray  # the output's confidence, P(atypical)
    tumour_domains: np.ndarray  # the ground truth's tumordomains number of each page
    n_jobs: int
    warnings: list[str]
