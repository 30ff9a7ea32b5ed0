"""Tests of landscape/experiment/metrics.py, the one metric-key schema.

References: keys written out by hand (``"dist_identity.layer1.head0"`` ...), the round trip
build → parse over a grid of names and indices, the labels spelled out, the numeric order of
indices (``layer2`` before ``layer10``), and the keys a real training run stores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import landscape.views.plots as plots
from landscape.experiment.metrics import (
    METRICS,
    MetricKey,
    family_key,
    is_distance_key,
    metric_key,
    metric_label,
    metric_sort_key,
    parse_family_key,
    parse_metric_key,
)
from landscape.experiment.store import RunStore
from landscape.experiment.train import TrainConfig, train


def test_build_written_out_keys() -> None:
    assert metric_key("dist_identity", layer=1, head=0) == "dist_identity.layer1.head0"
    assert metric_key("dist_identity_whitened", layer=12, head=3) == "dist_identity_whitened.layer12.head3"
    assert metric_key("dist", layer=0) == "dist.layer0"
    assert metric_key("eval_loss") == "eval_loss"
    assert family_key("a0") == "family.a0" and family_key("a0", whitened=True) == "family_whitened.a0"


@pytest.mark.parametrize("name", ["dist_identity", "dist_identity_whitened", "loss", "family.a0", "x-y_z"])
def test_round_trip(name: str) -> None:
    for layer in (None, 0, 2, 10):
        for head in (None, 0, 7):
            key = metric_key(name, layer=layer, head=head)
            assert parse_metric_key(key) == MetricKey(name, layer, head)
            assert str(parse_metric_key(key)) == key


def test_parse_foreign_keys_leniently() -> None:
    assert parse_metric_key("my_dist/Layer3") == MetricKey("my_dist", 3, None)
    assert parse_metric_key("d-head2_layer1") == MetricKey("d", 1, 2)
    assert parse_metric_key("layer1") == MetricKey("layer1")  # no separator in front: part of the name
    assert parse_family_key("family.b1") == ("b1", False)
    assert parse_family_key("family_whitened.a0") == ("a0", True)
    assert parse_family_key("family_distance") is None and parse_family_key("family.") is None


def test_labels() -> None:
    assert metric_label("dist_identity.layer1.head0") == "Dist(M, I), layer 1, head 0"
    assert metric_label("dist_identity_whitened.layer0.head2") == "Dist(Σ^½ M Σ^½, I) (whitened), layer 0, head 2"
    assert metric_label("eval_loss") == "held-out loss"
    assert metric_label("family.a0") == "family scalar a0 (raw fit)"
    assert metric_label("family_whitened.a1") == "step size a1 (whitened fit)"
    assert metric_label("custom.layer4") == "custom, layer 4"
    assert len(set(METRICS.values())) == len(METRICS)


def test_sort_order_is_numeric() -> None:
    keys = ["d.layer10", "d.layer2", "c", "d.layer2.head1", "d.layer2.head0", "b.head3"]
    assert sorted(keys, key=metric_sort_key) == ["b.head3", "c", "d.layer2", "d.layer2.head0", "d.layer2.head1",
                                                 "d.layer10"]
    assert is_distance_key("family_distance") and is_distance_key("My_DIST") and not is_distance_key("loss")


def test_bad_keys() -> None:
    with pytest.raises(ValueError, match=r"metric name must be non-empty and hold no layer/head part, got 'x.layer1'"):
        metric_key("x.layer1", layer=2)
    with pytest.raises(ValueError, match=r"metric name must be non-empty"):
        metric_key("")
    with pytest.raises(ValueError, match=r"layer must be an int >= 0, got -1"):
        metric_key("d", layer=-1)
    with pytest.raises(TypeError, match=r"head must be an int >= 0, got float"):
        metric_key("d", head=1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"metric key must be a str, got int"):
        parse_metric_key(3)  # type: ignore[arg-type]


def test_training_writes_schema_keys_and_plots_read_them(tmp_path: Path) -> None:
    """Every key a run stores parses to a known name (or a family scalar); plots group them by name."""
    cfg = TrainConfig(task="linear", d=2, n=4, seeds=2, steps=2, batch=8, eval_batch=16, dtype="float64",
                      device="cpu", log_every=1, checkpoint_every=0, layers=2, family="pgd", attention="linear")
    res = train(cfg, tmp_path, progress=False)
    with RunStore(tmp_path) as s:
        keys = set(s.metrics(res.run_name))
        for key in keys:
            k = parse_metric_key(key)
            assert k.name in METRICS or parse_family_key(k.name) is not None, key
        expected = {metric_key(n, layer=l, head=0) for n in ("dist_identity", "dist_identity_whitened")
                    for l in range(2)}
        assert expected <= keys and {"family.a0", "family.a1"} <= keys
        dk = plots.distance_keys(s, res.run_name)
        assert dk == ["dist_identity.layer0.head0", "dist_identity.layer1.head0",
                      "dist_identity_whitened.layer0.head0", "dist_identity_whitened.layer1.head0",
                      "family_distance"]
        saved = plots.plot_distance(s, res.run_name)
        titles = [ax.get_title() for ax in saved.figure.axes]
        assert titles == ["Dist(M, I)", "Dist(Σ^½ M Σ^½, I) (whitened)", "relative distance to the family"]
        # the final result stacks the logged per-layer distances
        logged = s.metrics(res.run_name, "dist_identity.layer1.head0")["dist_identity.layer1.head0"]
        assert torch.equal(res.identity_distance[:, 1, 0], torch.as_tensor(logged.values[-1]))
