r"""Metric keys of the run store: the one schema, built and parsed here only.

Training logs per-seed scalars under string keys (:meth:`landscape.experiment.store.RunStore.log_metrics`).
A key is a *name*, optionally followed by a layer and a head index::

    NAME[.layer{l}][.head{h}]          e.g.  dist_identity.layer1.head0,  eval_loss,  family.a0

The names :func:`landscape.experiment.train.train` writes are in :data:`METRICS` (with a human
label each); ``family.{symbol}`` and ``family_whitened.{symbol}`` hold the fitted family scalars
(:func:`family_key`). :func:`metric_key` builds a key, :func:`parse_metric_key` splits one back,
:func:`metric_label` says in words what it measures, and :func:`metric_sort_key` orders keys so that
``layer2`` comes before ``layer10``.

Keys logged by other code are read with the same rule, slightly more leniently: an index part
``layer{l}`` / ``head{h}`` may follow any of ``.``, ``_``, ``/``, ``-`` and is case-insensitive
(``my_dist/Layer3`` is the name ``my_dist`` at layer 3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from landscape._checks import check_int

__all__ = [
    "METRICS",
    "MetricKey",
    "metric_key",
    "parse_metric_key",
    "metric_label",
    "metric_sort_key",
    "is_distance_key",
    "family_key",
    "parse_family_key",
]

METRICS: dict[str, str] = {
    "loss": "training-batch loss",
    "eval_loss": "held-out loss",
    "grad_norm": "gradient norm (before clipping)",
    "lr": "learning rate",
    "diverged": "diverged (1) or live (0)",
    "dist_identity": "Dist(M, I)",
    "dist_identity_whitened": "Dist(Σ^½ M Σ^½, I) (whitened)",
    "family_distance": "relative distance to the family",
}
"""Name of every metric training logs → a human label (``dist_identity*`` carry layer and head)."""

_FAMILY_PREFIX = {False: "family.", True: "family_whitened."}
_INDEX = re.compile(r"[._/-](layer|head)(\d+)", re.IGNORECASE)
_DIST = re.compile(r"dist", re.IGNORECASE)


@dataclass(frozen=True)
class MetricKey:
    """A parsed metric key.

    Attributes:
        name: the key without its layer/head parts (``"dist_identity"``, ``"family.a0"``, ``"loss"``).
        layer: the layer index, or ``None``.
        head: the head index, or ``None``.
    """

    name: str
    layer: int | None = None
    head: int | None = None

    def __str__(self) -> str:
        return metric_key(self.name, layer=self.layer, head=self.head)


def metric_key(name: str, *, layer: int | None = None, head: int | None = None) -> str:
    """Build the key ``NAME[.layer{l}][.head{h}]``.

    Args:
        name: the metric's name (non-empty, without layer/head parts of its own).
        layer: layer index ``>= 0`` or ``None``.
        head: head index ``>= 0`` or ``None``.

    Returns:
        The key, e.g. ``metric_key("dist_identity", layer=1, head=0) == "dist_identity.layer1.head0"``.

    Raises:
        TypeError: a non-string name or non-integer index.
        ValueError: an empty name, a name that already holds a layer/head part, a negative index.
    """
    if not isinstance(name, str):
        raise TypeError(f"metric name must be a str, got {type(name).__name__}")
    if not name or _INDEX.search(name):
        raise ValueError(f"metric name must be non-empty and hold no layer/head part, got {name!r}")
    out = name
    if layer is not None:
        out += f".layer{check_int('layer', layer, minimum=0)}"
    if head is not None:
        out += f".head{check_int('head', head, minimum=0)}"
    return out


def parse_metric_key(key: str) -> MetricKey:
    """Split a key into its name and layer/head indices (inverse of :func:`metric_key`).

    Args:
        key: a metric key (module docstring for the lenient rule on foreign keys).

    Returns:
        The :class:`MetricKey`; indices the key does not hold are ``None``.

    Raises:
        TypeError: a non-string key.
    """
    if not isinstance(key, str):
        raise TypeError(f"metric key must be a str, got {type(key).__name__}")
    idx: dict[str, int] = {}
    for part, value in _INDEX.findall(key):
        idx.setdefault(part.lower(), int(value))
    return MetricKey(_INDEX.sub("", key), idx.get("layer"), idx.get("head"))


def family_key(symbol: str, *, whitened: bool = False) -> str:
    """The key of a fitted family scalar: ``family.{symbol}`` (raw fit) or ``family_whitened.{symbol}``."""
    return _FAMILY_PREFIX[bool(whitened)] + symbol


def parse_family_key(key: str) -> tuple[str, bool] | None:
    """``(symbol, whitened)`` of a :func:`family_key`, or ``None`` for any other key."""
    for whitened, prefix in _FAMILY_PREFIX.items():
        if key.startswith(prefix) and len(key) > len(prefix):
            return key[len(prefix):], whitened
    return None


def metric_label(key: str) -> str:
    """What a key measures, in words: ``"Dist(M, I), layer 1, head 0"``; unknown names as they are."""
    k = parse_metric_key(key)
    fam = parse_family_key(k.name)
    if fam is not None:
        label = f"step size {fam[0]} (whitened fit)" if fam[1] else f"family scalar {fam[0]} (raw fit)"
    else:
        label = METRICS.get(k.name, k.name)
    if k.layer is not None:
        label += f", layer {k.layer}"
    if k.head is not None:
        label += f", head {k.head}"
    return label


def metric_sort_key(key: str) -> tuple[str, int, int, str]:
    """Order keys by name, then layer, then head (numerically: ``layer2`` before ``layer10``)."""
    k = parse_metric_key(key)
    return (k.name, -1 if k.layer is None else k.layer, -1 if k.head is None else k.head, key)


def is_distance_key(key: str) -> bool:
    """Whether a key is a distance to a construction or family (its name contains ``dist``, any case)."""
    return bool(_DIST.search(key))
