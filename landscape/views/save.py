r"""Writing a figure: PNG and SVG files with the data they show beside them.

:func:`save_figure` is the one place a figure of the views becomes files. For a path ``dir/name``
(a ``.png`` or ``.svg`` suffix is dropped) it writes ``dir/name.png`` and ``dir/name.svg`` (or the
``formats`` asked for) and, when ``data`` is given, ``dir/name.json``: the numbers drawn, so that
a figure can be redrawn or cited without rerunning the command that made it. Every file is
written to a temporary name first and renamed into place, so an interrupted write leaves no
half-written file; the files carry no dates, so the same figure is the same bytes.

:func:`figure_path` checks a user-given figure file before any work starts.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["FIGURE_SUFFIXES", "figure_path", "figure_base", "save_figure", "jsonable"]

FIGURE_SUFFIXES = (".png", ".svg")
"""The figure files a command writes (``--out``/``--plot`` must name one of them)."""


def figure_path(text: str | os.PathLike[str], option: str = "--out") -> Path:
    """A user-given figure file, checked before any work: a ``.png`` or ``.svg`` file in an existing folder.

    The one check of every figure option of the commands (``hessian --plot``, ``probe --plot``,
    ``slice --out``, ``verify --plot``): the folder must exist, as for every file a command writes
    (``export --out``), so that a mistyped folder is refused rather than created.

    Args:
        text: the path as given.
        option: the option's name, for the message.

    Returns:
        The path (``~`` expanded).

    Raises:
        ValueError: another suffix, an existing folder, or a folder that does not exist (or is a file).
    """
    path = Path(text).expanduser()
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"{option} must name a .png or .svg file, got {str(text)!r}")
    if path.is_dir():
        raise ValueError(f"{option} {str(text)!r} is a folder; name a file")
    if not path.parent.is_dir():
        what = "is not a folder" if path.parent.exists() else "does not exist"
        raise ValueError(f"{option} {str(text)!r}: the folder {str(path.parent)!r} {what} (name a file in an "
                         "existing folder)")
    return path


def figure_base(path: str | os.PathLike[str]) -> Path:
    """``dir/name.png`` or ``dir/name`` → ``dir/name`` (a figure suffix is dropped, other dots kept).

    >>> figure_base("out/slice.png").as_posix(), figure_base("out/run.v2").as_posix()
    ('out/slice', 'out/run.v2')
    """
    base = Path(path).expanduser()
    return base.with_suffix("") if base.suffix.lower() in FIGURE_SUFFIXES + (".json",) else base


def jsonable(obj: Any, *, strict: bool = True) -> Any:
    """``obj`` with tensors and arrays as lists, non-finite floats as ``None`` and tuples as lists.

    The one conversion to JSON values of the package: figure data (:func:`save_figure`) and the
    ``--json`` output of every command (:func:`landscape.cli.emit_json`).

    Args:
        obj: numbers, strings, ``None``, paths, tensors, arrays (and their scalars), lists, tuples, dicts.
        strict: raise on anything else (figure data); ``False`` writes it as ``str(obj)`` instead
            (command output, where a value is shown rather than read back).

    Raises:
        TypeError: with ``strict``, a value of another type.
    """
    if hasattr(obj, "detach"):
        obj = obj.detach().cpu().tolist()
    elif hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        obj = obj.tolist()
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v, strict=strict) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, strict=strict) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if not strict:
        return str(obj)
    raise TypeError(f"figure data must be numbers, strings, lists or dicts, got {type(obj).__name__}")


def _replace(tmp: Path, path: Path) -> None:
    try:
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_figure(fig: Any, path: str | os.PathLike[str], *, formats: Sequence[str] = ("png", "svg"),
                data: Mapping[str, Any] | None = None, dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``path`` in each format, and ``data`` beside it as JSON.

    Args:
        fig: a matplotlib ``Figure``.
        path: ``dir/name`` (a ``.png``/``.svg`` suffix is dropped; the folder is created).
        formats: ``"png"`` and/or ``"svg"``.
        data: the numbers the figure shows (tensors, arrays, lists, dicts; non-finite values
            become ``null``), written to ``dir/name.json``; ``None`` writes no data file.
        dpi: PNG resolution.

    Returns:
        The figure files written, in the order of ``formats`` (the data file is not listed; it is
        ``figure_base(path).with_suffix(".json")``).

    Raises:
        ValueError: no format, or one other than png and svg.
        TypeError: ``data`` holds something that is not a number, string, list or dict.
    """
    fmts = [str(f).lower().lstrip(".") for f in formats]
    if not fmts or any("." + f not in FIGURE_SUFFIXES for f in fmts):
        raise ValueError(f"formats must be png and/or svg, got {tuple(formats)!r}")
    text = None if data is None else json.dumps(jsonable(data), allow_nan=False, indent=1)
    base = figure_base(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    import matplotlib

    written = []
    for fmt in fmts:
        out = base.with_name(f"{base.name}.{fmt}")
        tmp = base.with_name(f".{base.name}.{os.getpid()}.tmp.{fmt}")
        md = {"Software": None} if fmt == "png" else {"Date": None}
        try:
            with matplotlib.rc_context({"svg.hashsalt": "landscape"}):
                fig.savefig(tmp, format=fmt, dpi=dpi, metadata=md)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _replace(tmp, out)
        written.append(out)
    if text is not None:
        out = base.with_name(f"{base.name}.json")
        tmp = base.with_name(f".{base.name}.{os.getpid()}.tmp.json")
        tmp.write_text(text + "\n", encoding="utf-8")
        _replace(tmp, out)
    return written
