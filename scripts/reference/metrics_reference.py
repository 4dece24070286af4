#!/usr/bin/env python3
"""Writes tests/fixtures/metrics/reference.json: McNemar exact p-values and Wilson intervals
from scipy/statsmodels, which the Rust tests in src/metrics/reference_tests.rs must match.

Usage: python scripts/reference/metrics_reference.py   (pins in metrics-requirements.txt)
"""

import json
import math
import platform
from pathlib import Path

import numpy
import scipy
import statsmodels
from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "metrics" / "reference.json"

MCNEMAR_PAIRS = [
    (0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (5, 0), (3, 7), (10, 2), (25, 14), (14, 25),
    (50, 50), (116, 115), (100, 60), (30, 0), (0, 200), (400, 350), (400, 300), (1000, 900),
    (1000, 500), (3000, 2800), (20000, 19500), (20000, 19000),
]

WILSON_PAIRS = [
    (0, 1), (1, 1), (0, 2), (1, 2), (1, 3), (3, 7), (0, 10), (5, 10), (10, 10), (2, 20),
    (13, 20), (7, 50), (116, 1000), (999, 1000), (0, 40000), (1, 40000), (412, 40000),
    (20000, 40000), (39999, 40000), (40000, 40000),
]


def mcnemar_p(nf: int, pf: int) -> float:
    # Rows: old correct / old wrong; columns: new correct / new wrong. NF = [0][1], PF = [1][0].
    p = float(mcnemar([[0, nf], [pf, 0]], exact=True).pvalue)
    if nf + pf > 0:
        check = float(binomtest(nf, nf + pf, 0.5).pvalue)
        assert math.isclose(p, check, rel_tol=1e-9), (nf, pf, p, check)
    return p


def main() -> None:
    data = {
        "generated_by": "scripts/reference/metrics_reference.py",
        "versions": {
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "scipy": scipy.__version__,
            "statsmodels": statsmodels.__version__,
        },
        "mcnemar": [
            {"negative_flips": nf, "positive_flips": pf, "p_value": mcnemar_p(nf, pf)}
            for nf, pf in MCNEMAR_PAIRS
        ],
        "wilson": [],
    }
    for k, n in WILSON_PAIRS:
        lower, upper = proportion_confint(k, n, alpha=0.05, method="wilson")
        data["wilson"].append({"k": k, "n": n, "lower": float(lower), "upper": float(upper)})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
