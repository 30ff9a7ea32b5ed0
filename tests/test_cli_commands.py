"""Registering commands: every ``landscape`` command is set up by :func:`landscape.cli._args.add_command`.

References: the command modules' own docstrings (the description shown by ``--help`` is one of
their paragraphs, shown as written) and the source of each module (no command registers itself
another way).
"""

from __future__ import annotations

import argparse
import importlib
import inspect

import pytest

from landscape.cli import build_parser
from landscape.cli._args import add_command
from landscape.cli._main import COMMANDS


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_is_registered_with_add_command() -> None:
    commands = _commands()
    assert set(commands) == set(COMMANDS)
    for name in COMMANDS:
        source = inspect.getsource(importlib.import_module(f"landscape.cli.{name}"))
        assert "subparsers.add_parser(" not in source, f"landscape {name} registers itself without add_command"
        assert "add_command(" in source, name


@pytest.mark.parametrize("name", COMMANDS)
def test_description_is_a_docstring_paragraph_shown_as_written_or_prose(name: str) -> None:
    p = _commands()[name]
    doc = importlib.import_module(f"landscape.cli.{name}").__doc__ or ""
    assert p.description and p.description.strip(), f"landscape {name} has no description"
    if p.description in doc.split("\n\n") or (p.epilog and p.description + "\n\n" + p.epilog == doc):
        # from the docstring: kept as written (examples, aligned lists)
        assert p.formatter_class is argparse.RawDescriptionHelpFormatter, name
    else:
        # a literal one-paragraph description, re-wrapped by argparse
        assert p.description not in doc and "\n" not in p.description, name
        assert p.formatter_class is argparse.HelpFormatter, name
        assert p.epilog is None, name


def test_solve_splits_its_docstring_at_the_examples() -> None:
    import landscape.cli.solve as solve

    p = _commands()["solve"]
    assert p.epilog.startswith("Examples::") and "Examples" not in p.description
    assert p.description + "\n\n" + p.epilog == solve.__doc__


DOC = "cmd: summary.\n\nSecond paragraph\nof two lines.\n\nExamples::\n\n    cmd x\n\nExit status: 0.\n"


def _sub() -> argparse._SubParsersAction:
    return argparse.ArgumentParser(prog="landscape").add_subparsers()


def test_add_command_takes_a_paragraph_of_the_docstring() -> None:
    p = add_command(_sub(), "cmd", help="h", doc=DOC)
    assert p.description == "cmd: summary." and p.epilog is None
    assert p.formatter_class is argparse.RawDescriptionHelpFormatter
    p = add_command(_sub(), "cmd", help="h", doc=DOC, paragraph=1)
    assert p.description == "Second paragraph\nof two lines."
    assert "Second paragraph\nof two lines." in p.format_help()  # line break kept


def test_add_command_splits_off_the_epilog() -> None:
    p = add_command(_sub(), "cmd", help="h", doc=DOC, epilog_from="Examples")
    assert p.description == "cmd: summary.\n\nSecond paragraph\nof two lines."
    assert p.epilog == "Examples::\n\n    cmd x\n\nExit status: 0.\n"
    p = add_command(_sub(), "cmd", help="h", doc=DOC, paragraph=1, epilog_from="Exit")
    assert p.description == "Second paragraph\nof two lines.\n\nExamples::\n\n    cmd x"
    assert p.epilog == "Exit status: 0.\n"
    p = add_command(_sub(), "cmd", help="h", doc=DOC, epilog_from="Nowhere")
    assert p.description == DOC and p.epilog is None


def test_add_command_literal_description_is_rewrapped() -> None:
    sub = _sub()
    p = add_command(sub, "cmd", help="the summary", description="word " * 40)
    assert p.formatter_class is argparse.HelpFormatter and p.description == "word " * 40
    assert sub._choices_actions[0].help == "the summary"
    assert max(len(line) for line in p.format_help().splitlines()) < len("word " * 40)
    assert add_command(_sub(), "cmd", help="h").description is None  # python -OO: no docstring


def test_add_command_bad_arguments() -> None:
    with pytest.raises(TypeError, match="not both"):
        add_command(_sub(), "cmd", help="h", doc=DOC, description="x")
    with pytest.raises(ValueError, match="has 5 paragraphs, no paragraph 5"):
        add_command(_sub(), "cmd", help="h", doc=DOC, paragraph=5)
