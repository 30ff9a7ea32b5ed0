r"""``landscape families``: list the built-in parameter families and the statement each encodes.

Examples::

    landscape families
    landscape families --json

With ``--json`` one object ``{"families": [{"name", "attention", "statement"}, ...]}`` is printed.
A user family is a Python function ``NAME(problem) -> dict[str, sympy.Matrix]`` given to other
commands as ``path/to/file.py:NAME``.
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``landscape families``."""
    from landscape.cli._args import add_command

    p = add_command(
        subparsers, "families",
        help="list the built-in parameter families and the paper statement each encodes",
        doc=__doc__,
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print the families (one per line, or JSON)."""
    from landscape.cli import emit_json
    from landscape.theory.families import FAMILY_ATTENTION, known_families

    fams = known_families()
    rows = [{"name": name, "attention": FAMILY_ATTENTION.get(name, "?"), "statement": st} for name, st in fams.items()]
    if args.json:
        emit_json({"families": rows})
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  [{r['attention']}]  {r['statement']}")
    print("\nuser families: path/to/file.py:NAME with NAME(problem) -> dict[str, sympy.Matrix]")
    return 0
