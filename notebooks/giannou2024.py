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
# # Giannou et al. (2024): Newton's method in context
#
# 1. A two-head linear-attention layer performs one Newton–Schulz step $X \leftarrow X(2I - AX)$;
#    the residual $\lVert I - AX_t\rVert$ squares layer by layer.
# 2. The least-squares prediction $a_{\rm test}^\top X_T A^\top y$ converges to the exact one.
# 3. Linear transformers trained with $L$ layers are compared with Newton–Schulz least squares with
#    $T = L$ steps and with GD with $L$ tuned steps.
#
# Source: `analysis/giannou2024.py`.

# %%
import sys
import tempfile
from pathlib import Path

try:
    import analysis  # noqa: F401  (installed with the package)
except ModuleNotFoundError:  # running from a plain checkout: the repository root is one level up
    sys.path.insert(0, str(Path.cwd().parent))

from analysis._notebook import show_claims, show_figures, show_notes, show_tables
from analysis._study import StudyContext, execute
from analysis.giannou2024 import run

# %% [markdown]
# ## Run the study (quick size)
#
# The run store, `report.md` and the figures go to a temporary directory; use
# `python -m analysis.giannou2024 --quick --out DIR` to keep them (drop `--quick` for the full-size run).

# %%
out = Path(tempfile.mkdtemp(prefix="giannou2024-"))
result, report = execute("giannou2024", run, StudyContext(quick=True, out=out, seed=0))
print(f"report: {report}; all claims hold: {result.all_hold}")

# %% [markdown]
# ## Claims

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
