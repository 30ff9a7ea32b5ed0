"""Every notebook in ``notebooks/`` executes top to bottom at quick size.

Notebooks are jupytext *percent* scripts (``notebooks/*.py``, cells separated by ``# %%``) or
``.ipynb`` files. Each is converted with jupytext and run with nbclient on a ``python3`` kernel in a
temporary working directory, with ``MPLBACKEND=Agg`` and ``LANDSCAPE_QUICK=1`` in the environment
(the notebooks run their study at quick size — ``StudyContext(quick=True)`` — so the variable is
only a hint for notebooks that want one). A failing cell fails the test with the cell's traceback.

On a fresh machine without any Jupyter kernelspec, :func:`ensure_kernel` installs one for the
running interpreter into a temporary prefix (``python -m ipykernel install --prefix``) and points
``JUPYTER_PATH`` at it; ``test_kernel_fallback_installs_a_private_kernelspec`` exercises exactly
that path with a kernel name no machine has.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from limits import HANG_GUARD_S

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
CELL_TIMEOUT_S = HANG_GUARD_S
QUICK_ENV = {"LANDSCAPE_QUICK": "1", "MPLBACKEND": "Agg"}

nbformat = pytest.importorskip("nbformat", reason="notebook tests need the dev extra: pip install -e '.[dev]'")
jupytext = pytest.importorskip("jupytext", reason="notebook tests need the dev extra: pip install -e '.[dev]'")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need the dev extra: pip install -e '.[dev]'")


def notebook_paths() -> list[Path]:
    """Percent scripts and ``.ipynb`` files under ``notebooks/`` (checkpoints and private files skipped)."""
    if not NOTEBOOK_DIR.is_dir():
        return []
    out = []
    for p in sorted(NOTEBOOK_DIR.iterdir()):
        if p.name.startswith(("_", ".")) or not p.is_file():
            continue
        if p.suffix == ".ipynb" or (p.suffix == ".py" and "# %%" in p.read_text()):
            out.append(p)
    return out


def kernel_available(name: str) -> bool:
    """Whether Jupyter can find a kernelspec called ``name`` (honours ``JUPYTER_PATH``)."""
    from jupyter_client.kernelspec import KernelSpecManager

    return name in KernelSpecManager().find_kernel_specs()


def ensure_kernel(prefix: Path, name: str = "python3") -> dict[str, str]:
    """Make kernel ``name`` findable; return the environment variables to set for that.

    If the kernelspec exists nothing is installed and ``{}`` is returned. Otherwise a kernelspec for
    this interpreter is installed under ``prefix`` and ``{"JUPYTER_PATH": <prefix>/share/jupyter}``
    is returned (prepended to any existing ``JUPYTER_PATH``).

    Raises:
        RuntimeError: ``ipykernel install`` failed (its stderr is in the message).
    """
    if kernel_available(name):
        return {}
    proc = subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", name],
        capture_output=True, text=True, timeout=HANG_GUARD_S,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"python -m ipykernel install --prefix {prefix} --name {name} failed:\n{proc.stderr}")
    share = str(prefix / "share" / "jupyter")
    old = os.environ.get("JUPYTER_PATH")
    return {"JUPYTER_PATH": share + (os.pathsep + old if old else "")}


def read_notebook(path: Path) -> "nbformat.NotebookNode":
    """A notebook object from a percent script or an ``.ipynb`` file."""
    if path.suffix == ".ipynb":
        return nbformat.read(path, as_version=4)
    return jupytext.read(path, fmt="py:percent")


def execute(nb: "nbformat.NotebookNode", cwd: Path, kernel_name: str = "python3",
            timeout: int = CELL_TIMEOUT_S) -> "nbformat.NotebookNode":
    """Run every cell of ``nb`` in ``cwd``; raises ``nbclient.exceptions.CellExecutionError`` on failure."""
    client = nbclient.NotebookClient(nb, kernel_name=kernel_name, timeout=timeout,
                                     resources={"metadata": {"path": str(cwd)}}, allow_errors=False)
    client.execute()
    return nb


def _stdout(nb: "nbformat.NotebookNode") -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text.append(out.get("text", ""))
            elif out.get("output_type") in ("execute_result", "display_data"):
                text.append(out.get("data", {}).get("text/plain", ""))
    return "".join(text)


def test_kernel_fallback_installs_a_private_kernelspec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fresh-machine path: no such kernel → install into a tmp prefix → run a notebook on it."""
    name = "landscape-test-fallback-py3"
    assert not kernel_available(name)
    env = ensure_kernel(tmp_path / "prefix", name)
    assert set(env) == {"JUPYTER_PATH"}
    assert (tmp_path / "prefix" / "share" / "jupyter" / "kernels" / name / "kernel.json").is_file()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert kernel_available(name)
    nb = jupytext.reads("# %%\nimport os, sys\nprint(sum(k * k for k in range(1, 11)))\n"
                        "# %%\nprint(sys.executable)\nprint(os.getcwd())\n", fmt="py:percent")
    execute(nb, tmp_path, kernel_name=name, timeout=HANG_GUARD_S)
    lines = _stdout(nb).split()
    assert lines[0] == "385"  # 1^2 + ... + 10^2
    assert Path(lines[1]).resolve() == Path(sys.executable).resolve()
    assert Path(lines[2]).resolve() == tmp_path.resolve()
    assert ensure_kernel(tmp_path / "other", name) == {}  # found now: nothing installed twice
    assert not (tmp_path / "other").exists()


def test_a_failing_cell_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ensure_kernel(tmp_path / "prefix").items():
        monkeypatch.setenv(k, v)
    nb = jupytext.reads("# %%\nx = 1\n# %%\nraise ValueError('cell two fails')\n# %%\nprint('never')\n",
                        fmt="py:percent")
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="cell two fails"):
        execute(nb, tmp_path, timeout=HANG_GUARD_S)
    assert "never" not in _stdout(nb)


@pytest.mark.slow
@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.name)
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {**QUICK_ENV, **ensure_kernel(tmp_path / "kernel-prefix")}.items():
        monkeypatch.setenv(k, v)
    pythonpath = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + (os.pathsep + pythonpath if pythonpath else ""))
    nb = read_notebook(path)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells, f"{path.name} has no code cells"
    work = tmp_path / "work"
    work.mkdir()
    execute(nb, work)
    assert all(c.get("execution_count") for c in code_cells if c.source.strip())


def test_notebook_tables_render_claims_and_rows() -> None:
    from analysis._notebook import claims_markdown, table_markdown
    from analysis._study import Claim, StudyResult

    result = StudyResult("toy", (Claim("a", "x > y", True, {"x": 2.0, "y": 1.0}, "x > y"),
                                 Claim("b", "x < y", False, {"x": 2.0}, "x < y")))
    assert claims_markdown(result).splitlines()[2:] == [
        "| x > y | yes | x > y | x = 2, y = 1 |", "| x < y | **no** | x < y | x = 2 |"]
    assert table_markdown([{"L": 1, "loss": 0.123456}, {"L": 2}]).splitlines() == [
        "| L | loss |", "|---|---|", "| 1 | 0.1235 |", "| 2 |  |"]
    assert table_markdown([]) == ""
