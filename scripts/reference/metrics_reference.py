#!/usr/bin/env python3
"""Writes tests/fixtures/metrics/reference.json: McNemar exact p-values, Wilson intervals,
Fisher exact p-values (two-sided), Welch's t-test p-values, Benjamini-Hochberg adjusted p-values
and the smallest nfr
McNemar's test detects at 80% power, from scipy and statsmodels, which the Rust tests in
src/metrics/reference_tests.rs must match.

Usage: python scripts/reference/metrics_reference.py   (pins in metrics-requirements.txt)
"""

import json
import math
import platform
from pathlib import Path

import numpy
import scipy
import statsmodels
from scipy.optimize import brentq
from scipy.stats import binom, binomtest, false_discovery_control, fisher_exact, norm, ttest_ind
from statsmodels.stats.multitest import multipletests
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


# 2x2 tables [[a, b], [c, d]]: per-instance k of K correct samples (old vs new), and a slice's
# negative flips against the rest's.
FISHER_TABLES = [
    (0, 10, 0, 10), (10, 0, 0, 10), (10, 0, 10, 0), (7, 3, 2, 8), (3, 7, 8, 2), (5, 5, 5, 5),
    (9, 1, 4, 6), (1, 9, 0, 10), (0, 1, 1, 0), (2, 0, 0, 2), (12, 188, 40, 1760),
    (30, 170, 90, 1710), (0, 50, 37, 913), (45, 955, 300, 8700), (1, 2, 3, 4),
    (400, 600, 350, 650), (3, 1997, 0, 2000),
]

BH_SETS = [
    [0.01],
    [0.01, 0.04, 0.03, 0.005],
    [0.5, 0.2, 0.9, 0.01, 0.04, 0.04, 0.001, 0.3, 1.0, 0.07],
    [1.0, 1.0, 1.0],
    [0.0, 0.0, 0.02, 0.8],
    [0.049, 0.05, 0.051, 0.0001, 0.3, 0.12, 0.6, 0.0009, 0.0123, 0.99, 0.2, 0.013],
]


def fisher_p(a: int, b: int, c: int, d: int) -> float:
    return float(fisher_exact([[a, b], [c, d]], alternative="two-sided").pvalue)


def bh(pvalues: list) -> list:
    adjusted = false_discovery_control(pvalues, method="bh")
    check = multipletests(pvalues, alpha=0.05, method="fdr_bh")[1]
    assert all(math.isclose(x, y, rel_tol=1e-12) for x, y in zip(adjusted, check)), (adjusted, check)
    return [float(x) for x in adjusted]


# Sampled scores of one instance (old draws, new draws), continuous (ROUGE-like).
WELCH_SAMPLES = [
    ([0.9, 0.8, 0.85, 0.95, 0.7], [0.4, 0.5, 0.45, 0.3, 0.6]),
    ([0.5, 0.6, 0.4, 0.55, 0.45, 0.5, 0.52, 0.48, 0.51, 0.49], [0.5, 0.61, 0.42, 0.5, 0.47, 0.5, 0.55, 0.44, 0.53, 0.5]),
    ([0.1, 0.9, 0.2, 0.8, 0.5], [0.3, 0.35, 0.4, 0.32, 0.38]),
    ([1.0, 0.0, 1.0, 0.25], [0.75, 0.5, 0.5, 0.5, 0.6, 0.4]),
    ([0.33, 0.67], [0.1, 0.2, 0.15]),
]


def welch_p(a: list, b: list) -> float:
    return float(ttest_ind(a, b, equal_var=False).pvalue)


# (instances, observed positive flip rate)
POWER_CASES = [(60, 0.0), (60, 1 / 60), (200, 0.0), (200, 0.02), (1000, 0.05), (2000, 0.01),
               (5000, 0.1), (20000, 0.02), (12, 0.25)]


def mcnemar_power(n: int, nfr: float, pfr: float, alpha: float = 0.05) -> float:
    """Connor (1987): the normal approximation with the variance under the alternative."""
    z = norm.ppf(1 - alpha / 2)
    d, delta = nfr + pfr, nfr - pfr
    return float(norm.cdf((delta * math.sqrt(n) - z * math.sqrt(d)) / math.sqrt(d - delta**2)))


def exact_mcnemar_power(n: int, nfr: float, pfr: float) -> float:
    """The rejection rate of statsmodels' exact McNemar test when flips are drawn with these
    rates (enumerated, not simulated), to show what the approximation means."""
    total = 0.0
    d = nfr + pfr
    for m in range(n + 1):
        pm = binom.pmf(m, n, d)
        if pm < 1e-12:
            continue
        for k in range(m + 1):
            pk = binom.pmf(k, m, nfr / d)
            if pk < 1e-12 or k <= m - k:
                continue
            if mcnemar([[0, k], [m - k, 0]], exact=True).pvalue < 0.05:
                total += pm * pk
    return total


def detectable_nfr(n: int, pfr: float):
    high = 1 - pfr - 1e-12
    if high <= pfr or mcnemar_power(n, high, pfr) < 0.8:
        return None
    return float(brentq(lambda x: mcnemar_power(n, x, pfr) - 0.8, pfr + 1e-12, high, xtol=1e-15))


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
    data["fisher"] = [
        {"table": [a, b, c, d], "p_value": fisher_p(a, b, c, d)} for a, b, c, d in FISHER_TABLES
    ]
    data["benjamini_hochberg"] = [{"p_values": ps, "q_values": bh(ps)} for ps in BH_SETS]
    data["welch"] = [{"old": a, "new": b, "p_value": welch_p(a, b)} for a, b in WELCH_SAMPLES]
    data["power"] = []
    for n, pfr in POWER_CASES:
        x = detectable_nfr(n, pfr)
        exact = exact_mcnemar_power(n, x, pfr) if x is not None and n <= 2000 else None
        data["power"].append({"n": n, "pfr": pfr, "nfr_detectable": x, "exact_power_there": exact})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
