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
# # Cheng, Chen, Sra (2024): transformers implement functional gradient descent
#
# Kernel attention $\mathrm{Attn}_{V,B,C}(Z) = V Z M \tilde h(BZ, CZ)$ with linear, ReLU, exp and softmax
# activations, on prompts whose labels are a Gaussian process on whitened inputs. With
# $V_l = \mathrm{diag}(0, -r_l)$, $B_l = C_l = I$ every layer is one step of functional GD in the RKHS of
# $\tilde h$ (Prop. 1); with $\tilde h$ equal to the data kernel the construction tends to the Bayes predictor
# as depth grows (Prop. 2); heads add kernels (Prop. 3). Trained transformers: the activation matching the data
# kernel wins, and the weights approach the functional-GD family
# ($\Sigma^{1/2}B_l^\top C_l\Sigma^{1/2} \propto I$).
#
# Source: `analysis/cheng2024.py`; the same run from the command line is
# `landscape reproduce cheng2024 --quick --out runs/cheng2024` (drop `--quick` for the paper's sizes).

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
from analysis.cheng2024 import run

QUICK = os.environ.get("LANDSCAPE_QUICK", "1") != "0"  # LANDSCAPE_QUICK=0: the paper's sizes (long)



# %% [markdown]
# ## Run the study
#
# The run store (every training run, its per-seed metrics and final weights), `report.md` and the
# figures go to a temporary directory.

# %%
out = Path(tempfile.mkdtemp(prefix="cheng2024-"))
result, report = execute("cheng2024", run, StudyContext(quick=QUICK, out=out, seed=0))
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
