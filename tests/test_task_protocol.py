"""The Task protocol (landscape.core.tasks.Task) is what every prompt distribution provides."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

import landscape.core.tasks as tasks
from landscape.core.tasks import (
    KernelGP,
    LinearClassification,
    LinearRegression,
    NormalsTask,
    OrthonormalFeatures,
    PromptBatch,
    Task,
)

F64 = torch.float64
BUILT_IN = [LinearRegression(2, 5), KernelGP(2, 5), LinearClassification(2, 5), OrthonormalFeatures(2, 5)]


def test_every_sampler_class_of_the_module_is_listed_here() -> None:
    samplers = {obj for _, obj in inspect.getmembers(tasks, inspect.isclass)
                if obj.__module__ == tasks.__name__ and callable(getattr(obj, "sample", None))
                and obj not in (Task, NormalsTask, tasks.BufferedSampler)}  # the last wraps a task
    assert samplers == {type(t) for t in BUILT_IN}


@pytest.mark.parametrize("task", BUILT_IN, ids=lambda t: type(t).__name__)
def test_built_in_tasks_are_tasks_and_sample_what_the_protocol_says(task) -> None:
    assert isinstance(task, Task)
    batch = task.sample(7, torch.Generator().manual_seed(0))
    assert isinstance(batch, PromptBatch)
    assert tuple(batch.Z.shape) == (7, task.d + 1, task.n + 1) and batch.Z.dtype == task.dtype
    assert (batch.d, batch.n) == (task.d, task.n)


def test_normals_tasks_rebuild_their_samples_from_the_draws() -> None:
    assert [isinstance(t, NormalsTask) for t in BUILT_IN] == [True, True, False, False]
    for task in BUILT_IN[:2]:
        g = torch.Generator().manual_seed(3)
        draws = {k: torch.randn(*shape, generator=g, dtype=task.dtype) for k, shape in task.normal_shapes(4).items()}
        a, b = task.from_normals(draws), task.from_normals({k: v.clone() for k, v in draws.items()})
        assert torch.equal(a.Z, b.Z) and tuple(a.Z.shape) == (4, task.d + 1, task.n + 1)
        assert set(draws) - {"xi"} <= set(task.label_normals)  # every draw but the inputs is a label draw


def test_a_class_without_sample_is_not_a_task_and_a_user_dataclass_is() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSample:
        d: int = 2
        n: int = 3
        dtype: torch.dtype = F64

    @dataclasses.dataclass(frozen=True)
    class Constant(NoSample):
        def sample(self, batch: int, generator: torch.Generator) -> PromptBatch:
            X = torch.ones(batch, self.d, self.n + 1, dtype=self.dtype)
            y = X[:, 0, :]
            return PromptBatch(tasks.embed(X, y), y[:, -1], X, y)

    @dataclasses.dataclass(frozen=True)
    class NoSizes:
        def sample(self, batch: int, generator: torch.Generator) -> PromptBatch:  # pragma: no cover
            raise NotImplementedError

    assert not isinstance(NoSample(), Task)
    assert not isinstance(NoSizes(), Task)
    assert isinstance(Constant(), Task) and not isinstance(Constant(), NormalsTask)
