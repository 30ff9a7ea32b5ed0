# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Ahn, Cheng, Daneshmand, Sra (2023): transformers learn preconditioned GD
#
# Linear attention $P Z M (Z^\top Q Z)$ on linear-regression prompts $x \sim N(0, \Sigma)$,
# $\Sigma = U^\top D U$, $D = \mathrm{diag}(1, 1, 0.25, 0.0625, 1)$, $d = 5$, $n = 20$. One layer
# (Theorem 1): the optimum is $A^* = (\frac{n+1}{n}\Sigma + \frac{\operatorname{tr}\Sigma}{n}I)^{-1}$.
# Several layers with $w^* \sim N(0, \Sigma^{-1})$ (Theorems 3–4): the family $A_l = a_l\Sigma^{-1}$ holds
# stationary points, and training finds them — $\mathrm{Dist}(\Sigma^{1/2}A_l\Sigma^{1/2}, I) \to 0$ while
# $\mathrm{Dist}(A_l, I)$ stays large; the transformer then is optimally preconditioned GD (Lemma 1).
#
# Source: `analysis/ahn2023.py`; the same run from the command line is
# `landscape reproduce ahn2023 --quick --out runs/ahn2023` (drop `--quick` for the paper's sizes).

# %%
import os
import sys
import tempfile
from pathlib import Path

try:
    import analysis  # noqa: F401  (installed with the package)
except ModuleNotFoundError:  # running from a plain checkout: the repository root is one level up
    sys.path.insert(0, str(Path.cwd().parent))

from analysis._notebook import show_claims, show_figures, show_notes, show_tables
from analysis._study import StudyContext, execute
from analysis.ahn2023 import run

QUICK = os.environ.get("LANDSCAPE_QUICK", "1") != "0"  # LANDSCAPE_QUICK=0: the paper's sizes (long)



# %% [markdown]
# ## Run the study
#
# The run store (every training run, its per-seed metrics and final weights), `report.md` and the
# figures go to a temporary directory.

# %%
out = Path(tempfile.mkdtemp(prefix="ahn2023-"))
result, report = execute("ahn2023", run, StudyContext(quick=QUICK, out=out, seed=0))
print(f"report: {report}; all claims hold: {result.all_hold}")

# %% [markdown]
# ## Claims
#
# Each row is one paper statement, the criterion applied to the measured numbers, and the numbers.
# A **no** is a finding (the numbers are there), not an error.

# %%
show_claims(result)

# %% [markdown]
# ## Tables

# %%
show_tables(result)

# %% [markdown]
# ## Figures

# %%
show_figures(result)

# %% [markdown]
# ## Notes (settings and disagreements with the paper)

# %%
show_notes(result)
