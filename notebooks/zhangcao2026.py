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
# # Zhang, Cao (2026): a looped softmax layer runs normalised GD for in-context classification
#
# Context tokens $(u_i, 0)$ with $u_i = y_i x_i$, a state token $(0, w)$; one softmax head with
# score $u_i^\top B_{11}^\top C_{12} w$ and value $V_{21}u_i$. The exact construction
# ($B_{11} = I$, $C_{12} = -cI$, $V_{21} = n\eta I$) is normalised GD on
# $L(w) = \sum_i e^{-c\,y_i x_i^\top w}$. Here the three blocks are **trained** on one NGD step from
# random states, then the layer is looped with shared weights and compared with explicit NGD
# (iterates, direction vs the max-margin separator, query accuracy), in and out of distribution.
# Source: `analysis/zhangcao2026.py`.

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
from analysis.zhangcao2026 import run

# %% [markdown]
# ## Run the study (quick size)
#
# The run store, `report.md` and the figures go to a temporary directory; use
# `python -m analysis.zhangcao2026 --quick --out DIR` to keep them (drop `--quick` for the full-size run).

# %%
out = Path(tempfile.mkdtemp(prefix="zhangcao2026-"))
result, report = execute("zhangcao2026", run, StudyContext(quick=True, out=out, seed=0))
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
