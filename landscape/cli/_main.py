"""Command-line interface: ``landscape <command> ...``.

Each command lives in ``landscape/cli/<name>.py`` and provides ``add_parser(subparsers)``
(registering itself with :func:`landscape.cli._args.add_command` and its arguments, with ``func``
set to its ``run(args) -> int``).

Errors are one line on stderr, ``landscape <command>: error: <what is wrong>`` — or, with
``--json`` anywhere on the command line, one JSON object ``{"error": ..., "kind": ...}`` on
stdout — and exit status 2. This covers bad arguments (argparse: an unknown option, ``--lr abc``,
``--noise nan``), bad values found by validation (``ValueError``/``TypeError``), the file system
(``OSError``: a read-only or full disk, ``--out`` being a file), SQLite and run-store errors, and
memory (``MemoryError``, a CUDA out-of-memory error). Any other exception is a bug: its traceback
is printed, followed by the one-line message, and the exit status is 1. ``landscape --debug ...``
or ``LANDSCAPE_DEBUG=1`` prints the traceback of every error.

Progress: long work (training, sweeps, studies, certificates) reports progress on stderr — a bar
on a terminal, a line every few seconds otherwise (:mod:`landscape._progress`). ``--quiet``
(accepted by every command, and before the command) silences it; stdout is the same either way.

Exit status: 0 success; 1 a result that fails (a failed check, a non-stationary verdict, a claim
that does not hold, every seed diverged ...: see each command's help) or an internal error; 2 bad
input or an error of the environment (file system, database, memory); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sqlite3
import sys
import traceback
from typing import Any, NoReturn, Sequence

COMMANDS = ("families", "solve", "verify", "train", "sweep", "plot", "reproduce", "check", "store", "runs", "export",
            "hessian", "slice", "probe", "llc")


def emit_json(obj: Any) -> None:
    """Print ``obj`` as one JSON line (non-finite floats become null; tensors become lists; other
    values their ``str``: :func:`landscape.views.save.jsonable` with ``strict=False``)."""
    from landscape.views.save import jsonable  # standard library only: the CLI stays light

    print(json.dumps(jsonable(obj, strict=False), allow_nan=False))


class ArgumentError(Exception):
    """An argument error found by argparse (raised instead of printing usage and exiting)."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog
        self.message = message


class _Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors are raised (:class:`ArgumentError`) so that :func:`main`
    reports them as every other error: one line, or JSON with ``--json``. Subparsers inherit it."""

    def error(self, message: str) -> NoReturn:
        # "argument --layers: must be an integer >= 1, got 0" -> "--layers must be an integer >= 1, got 0"
        message = re.sub(r"^argument (--?[\w-]+)(?:/--?[\w-]+)*: ", r"\1 ", message)
        raise ArgumentError(self.prog, message)


def _command_name(prog: str) -> str:
    """``"landscape train"`` → ``"train"`` (``""`` for the top-level parser)."""
    parts = prog.split()
    return parts[1] if len(parts) > 1 else ""


def _environment_errors() -> tuple[type[BaseException], ...]:
    """The exception types reported as one-line errors with exit 2 (see module docstring)."""
    kinds: list[type[BaseException]] = [ValueError, TypeError, OSError, sqlite3.Error, MemoryError]
    store_mod = sys.modules.get("landscape.experiment.store")
    store_error = getattr(store_mod, "StoreError", None) if store_mod is not None else None
    if isinstance(store_error, type) and issubclass(store_error, BaseException):
        kinds.append(store_error)
    torch_mod = sys.modules.get("torch")
    oom = getattr(torch_mod, "OutOfMemoryError", None) if torch_mod is not None else None
    if isinstance(oom, type) and issubclass(oom, BaseException):
        kinds.append(oom)
    return tuple(kinds)


def _raised_by_store(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``RuntimeError`` raised by :mod:`landscape.experiment.store` itself (a damaged or
    closed store): the innermost frame of its traceback is in ``landscape/experiment/store.py``."""
    if not isinstance(exc, RuntimeError):
        return False
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    return os.path.normpath(last.tb_frame.f_code.co_filename).endswith(os.path.join("landscape", "experiment", "store.py"))


def _one_line(exc: BaseException) -> str:
    """The exception as one line: its message (first line) or, for an empty one, its type; OS
    errors name the path and the reason (``[Errno 28] No space left on device: 'x'``)."""
    if isinstance(exc, MemoryError):
        text = str(exc).strip() or "out of memory"
        return f"{text} (MemoryError: reduce the sizes, e.g. --batch, --seeds, --samples)"
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    lines = text.splitlines()
    return lines[0] + (" ..." if len(lines) > 1 else "")


def _debug(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get("LANDSCAPE_DEBUG", "").strip() not in ("", "0")


def _report(command: str, message: str, *, as_json: bool, kind: str) -> None:
    prog = f"landscape {command}".strip()
    if as_json:
        emit_json({"error": message, "kind": kind, "command": command or None})
    else:
        print(f"{prog}: error: {message}", file=sys.stderr)


def build_parser(*, raise_errors: bool = False) -> argparse.ArgumentParser:
    """The ``landscape`` parser with every command's subparser.

    Args:
        raise_errors: argument errors raise :class:`ArgumentError` (what :func:`main` uses, to
            report them in one line or as JSON) instead of argparse's usage message and exit 2.
    """
    parser = (_Parser if raise_errors else argparse.ArgumentParser)(
        prog="landscape",
        description="Loss landscapes of in-context-learning transformers: constructions, exact family losses, "
        "stationarity certificates, seed-parallel training and distance-to-construction analyses.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of every error (accepted anywhere; also LANDSCAPE_DEBUG=1)")
    parser.add_argument("--quiet", action="store_true", dest="quiet_all",
                        help="no progress on stderr, for every command (also accepted after the command)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"landscape.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"landscape.cli.{name}":
                continue
            raise
        mod.add_parser(sub)
    from landscape.cli._args import add_threads_arg

    for command_parser in sub.choices.values():
        add_threads_arg(command_parser)
        _add_quiet_arg(command_parser)
    return parser


def _add_quiet_arg(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` on a command: silence its progress lines and bars (stderr); stdout is unchanged."""
    parser.add_argument("--quiet", action="store_true",
                        help="no progress on stderr (bars, periodic lines); results on stdout are unchanged")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``landscape`` console script.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status (module docstring): the command's own status, 2 on a bad argument or an
        error of the environment, 1 on an internal error, 130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    debug = _debug(argv)
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the command line
    parser = build_parser(raise_errors=True)
    try:
        args = parser.parse_args(argv)
    except ArgumentError as exc:
        command = _command_name(exc.prog)
        hint = f" (see landscape {command} --help)".replace("  ", " ") if not as_json else ""
        _report(command, exc.message + hint, as_json=as_json, kind="argument")
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    command = args.command
    as_json = bool(getattr(args, "json", False)) or as_json
    from landscape._progress import quieted
    from landscape.cli._args import apply_threads

    try:
        apply_threads(args)
        with quieted(bool(getattr(args, "quiet", False) or getattr(args, "quiet_all", False))):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"landscape {command}: interrupted", file=sys.stderr)
        return 130
    except _environment_errors() as exc:
        if debug:
            traceback.print_exc()
        msg = _one_line(exc)
        if not isinstance(exc, (ValueError, TypeError)) and not debug:
            msg += " (rerun with --debug for the traceback)"
        _report(command, msg, as_json=as_json, kind=type(exc).__name__)
        return 2
    except Exception as exc:
        if _raised_by_store(exc):
            if debug:
                traceback.print_exc()
            _report(command, _one_line(exc) + ("" if debug else " (rerun with --debug for the traceback)"),
                    as_json=as_json, kind="store")
            return 2
        # a bug: keep the traceback
        traceback.print_exc()
        msg = (f"internal error {type(exc).__name__}: {_one_line(exc)} (a bug in landscape; the traceback is above; "
               "please report it)")
        _report(command, msg, as_json=as_json, kind="internal")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
