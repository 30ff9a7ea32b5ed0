"""Runnable studies, one per paper claim: ``python -m analysis.<name> [--quick]`` or
``landscape reproduce <name>``.

Each study module exposes ``run(ctx) -> StudyResult`` (see :mod:`analysis._study`).
"""

STUDIES: dict[str, str] = {
    "ahn2023": "Ahn, Cheng, Daneshmand, Sra 2023 — preconditioned GD in linear attention",
    "cheng2024": "Cheng, Chen, Sra 2024 — functional GD in kernel attention",
    "giannou2024": "Giannou et al. 2024 — Newton's method in context",
    "huang2023": "Huang, Cheng, Liang 2023 — training dynamics of one softmax layer",
    "zhangcao2026": "Zhang, Cao 2026 — softmax transformers do normalised GD for classification",
}
"""Study name → what it reproduces."""
