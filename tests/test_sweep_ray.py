"""The Ray executor of sweeps against the local one, on a real local Ray cluster.

The cluster (2 CPUs, no dashboard) is started by a fixture and shut down afterwards. Two grid
points run as two concurrent Ray tasks writing into one SQLite store; the reference is the same
sweep run in-process into another store: every metric, result and final weight must be equal bit
for bit (training is deterministic given the config; both sides use one intra-op thread — tests
set it in conftest, Ray workers get ``OMP_NUM_THREADS=1`` for 1-CPU tasks).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape.experiment.store import RunStore
from landscape.experiment.sweep import load_sweep, run_sweep

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]

SWEEP = """
name = "tiny-ray"
seeds = 2

[base]
task = "linear"
d = 2
n = 4
steps = 20
batch = 16
eval_batch = 64
log_every = 5
lr = 0.02
dtype = "float64"
device = "cpu"
checkpoint_every = 10

[grid]
layers = [1, 2]
"""


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster whose workers can import this checkout."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        yield
    finally:
        ray.shutdown()


def _snapshot(root: Path) -> dict[str, dict]:
    """Everything a run stores, by run name: config, metrics, results, final weights."""
    out = {}
    with RunStore(root) as store:
        for r in store.list_runs():
            final = store.load_final(r)
            out[r.name] = {
                "config": r.config,
                "status": r.status,
                "metrics": {k: (m.steps, m.seeds, m.values) for k, m in store.metrics(r).items()},
                "results": store.results(r),
                "params": final["params"],
            }
    return out


def test_ray_executor_equals_local_executor(ray_cluster, tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text(textwrap.dedent(SWEEP))
    spec = load_sweep(f)
    local = run_sweep(spec, tmp_path / "local")
    remote = run_sweep(spec, tmp_path / "ray", executor="ray")
    assert remote.ok, [p.error for p in remote.points]
    assert remote.counts() == {"trained": 2, "skipped": 0, "failed": 0}
    assert [p.run for p in remote.points] == [p.run for p in local.points]
    assert [p.summary["final_loss"] for p in remote.points] == [p.summary["final_loss"] for p in local.points]

    a, b = _snapshot(tmp_path / "local"), _snapshot(tmp_path / "ray")
    assert sorted(a) == sorted(b) and len(a) == 2
    for name in a:
        assert b[name]["status"] == "finished"
        assert b[name]["config"] == a[name]["config"]
        assert b[name]["results"] == a[name]["results"]
        assert sorted(b[name]["metrics"]) == sorted(a[name]["metrics"])
        for key, (steps, seeds, values) in a[name]["metrics"].items():
            s2, se2, v2 = b[name]["metrics"][key]
            np.testing.assert_array_equal(s2, steps)
            np.testing.assert_array_equal(se2, seeds)
            np.testing.assert_array_equal(v2, values)  # NaN-aware, bit-for-bit numbers
        for key, v in a[name]["params"].items():
            assert torch.equal(b[name]["params"][key], v)

    # Resume through Ray: every point is finished, nothing is submitted.
    again = run_sweep(spec, tmp_path / "ray", executor="ray")
    assert again.counts() == {"trained": 0, "skipped": 2, "failed": 0}
