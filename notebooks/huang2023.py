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
# # Huang, Cheng, Liang (2023): training dynamics of one softmax attention layer
#
# One softmax attention layer without residual, value fixed to read out the label, trained key–query
# block $Q$: $\hat y_q = \sum_{i\le N} y_i\,\mathrm{softmax}_i(x_i^\top Q x_q)$ (the query is not in its
# own softmax). Tokens are $K$ orthonormal features drawn with probabilities $p_k$, $y = \langle w, x\rangle$.
# GD from $Q = 0$; the task vector is integrated out exactly,
# $\mathbb E_w(\sum_i a_i y_i - y_q)^2 = \lVert \sum_i a_i x_i - x_q\rVert^2$, and the per-feature
# population loss $\tfrac12\mathbb E[(1-\mathrm{mass}_k)^2 + \sum_{m\ne k}\mathrm{mass}_m^2 \mid k]$ is an
# exact sum over the multinomial feature counts of the context.
#
# Paper's claims checked: balanced features converge to near-zero error; with one dominant feature
# the convergence is stage-wise (dominant-feature queries first). Source: `analysis/huang2023.py`.

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
from analysis.huang2023 import run

# %% [markdown]
# ## Run the study (quick size)
#
# The run store, `report.md` and the figures go to a temporary directory; use
# `python -m analysis.huang2023 --quick --out DIR` to keep them (drop `--quick` for the full-size run).

# %%
out = Path(tempfile.mkdtemp(prefix="huang2023-"))
result, report = execute("huang2023", run, StudyContext(quick=True, out=out, seed=0))
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
