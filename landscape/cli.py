"""Command-line interface: ``landscape <command> ...``.

Each command lives in ``landscape/commands/<name>.py`` and provides ``add_parser(subparsers)``
(registering its arguments, with ``func`` set to its ``run(args) -> int``). Errors from bad input
(``ValueError``/``TypeError``) are printed as one clear line — or, with ``--json``, as a JSON object
with an ``error`` field — and the command exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Sequence

COMMANDS = ("families", "solve", "verify", "train", "sweep", "plot", "reproduce", "check")


def emit_json(obj: Any) -> None:
    """Print ``obj`` as one JSON line (non-finite floats become null; tensors become lists)."""
    print(json.dumps(_jsonable(obj), allow_nan=False))


def _jsonable(obj: Any) -> Any:
    import math

    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().tolist()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return _jsonable(obj.item())
        except (TypeError, ValueError):
            pass
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="landscape",
        description="Loss landscapes of in-context-learning transformers: constructions, exact family losses, "
        "stationarity certificates, seed-parallel training and distance-to-construction analyses.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"landscape.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"landscape.commands.{name}":
                continue
            raise
        mod.add_parser(sub)
    from ._cli_args import add_threads_arg

    for command_parser in sub.choices.values():
        add_threads_arg(command_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``landscape`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    from ._cli_args import apply_threads

    try:
        apply_threads(args)
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        msg = f"{type(exc).__name__}: {exc}"
        if getattr(args, "json", False):
            emit_json({"error": msg})
        else:
            print(f"landscape {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"landscape {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
