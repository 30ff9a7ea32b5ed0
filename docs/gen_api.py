"""Generate ``docs/api.md`` from the public modules' ``__all__`` and docstrings.

Usage::

    python docs/gen_api.py           # (re)write docs/api.md
    python docs/gen_api.py --check   # exit 1 if docs/api.md differs from a fresh generation

What is documented:

* every importable module of the ``landscape`` package whose dotted name has no component starting
  with ``_`` and that defines ``__all__`` (``landscape.commands.*`` are described in the CLI section
  instead), plus ``analysis._study`` (the interface a study implements);
* for each name of ``__all__``: the signature, the first paragraph of the docstring and its
  ``Args`` / ``Returns`` / ``Raises`` / ``Attributes`` sections; for a class also its public methods
  and properties; for a constant its value (when short) and its attribute docstring;
* names re-exported by a package ``__init__`` link to the module that defines them;
* the command line: every sub-command of ``landscape`` with its arguments, read from the argparse
  parsers (not from ``--help`` text, so the output does not depend on the terminal width);
* the studies of :data:`analysis.STUDIES` with the first paragraph of their module docstring.

The output depends only on the source, so ``tests/test_docs.py`` can require the committed file to
equal a fresh generation.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import importlib.util
import inspect
import pkgutil
import re
import sys
import typing
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parent.parent
API_MD = ROOT / "docs" / "api.md"
PACKAGE = "landscape"
EXTRA_MODULES = ("analysis._study",)
SECTIONS = ("Args", "Arguments", "Returns", "Yields", "Raises", "Attributes")
_SECTION_ALIASES = {"Arguments": "Args"}
_MAX_VALUE_REPR = 90

__all__ = ["public_modules", "generate", "main"]


# ---------------------------------------------------------------------- text helpers
_ROLE = re.compile(r":(?:math|func|class|meth|mod|data|attr|obj|exc|ref):`~?([^`]+)`")


def rst_to_md(text: str) -> str:
    """Light reST → Markdown: ``:math:`x``` → ``$x$``, ``:func:`~a.b``` → ```a.b```, ````x```` → ```x```."""

    def role(m: re.Match[str]) -> str:
        whole = m.group(0)
        body = m.group(1)
        if whole.startswith(":math:"):
            return f"${body}$"
        return f"`{body}`"

    text = _ROLE.sub(role, text)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    return text


def _clean_repr(value: Any) -> str:
    if isinstance(value, (set, frozenset)):  # sorted: a set's own order changes with the hash seed
        items = ", ".join(repr(v) for v in sorted(value, key=repr))
        return f"{type(value).__name__}({{{items}}})" if value else f"{type(value).__name__}()"
    r = repr(value)
    r = re.sub(r" at 0x[0-9a-fA-F]+", "", r)
    return r


def _annotation(ann: Any) -> str:
    if ann is inspect.Parameter.empty:
        return ""
    if isinstance(ann, str):
        if len(ann) >= 2 and ann[0] == ann[-1] and ann[0] in "'\"":
            return ann[1:-1]  # a quoted annotation under `from __future__ import annotations`
        return ann
    if isinstance(ann, typing.ForwardRef):
        return ann.__forward_arg__
    return inspect.formatannotation(ann)


def signature(obj: Any, name: str) -> str:
    """``name(a: int = 1, *, b: str) -> T`` with string annotations unquoted; ``name(...)`` if unknown."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{name}(...)"
    parts: list[str] = []
    seen_kwonly = False
    params = list(sig.parameters.values())
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not seen_kwonly:
            if not any(q.kind is q.VAR_POSITIONAL for q in params):
                parts.append("*")
            seen_kwonly = True
        s = p.name
        if p.kind is p.VAR_POSITIONAL:
            s = "*" + s
            seen_kwonly = True
        elif p.kind is p.VAR_KEYWORD:
            s = "**" + s
        ann = _annotation(p.annotation)
        if ann:
            s += f": {ann}"
        if p.default is not p.empty:
            default = "<factory>" if repr(p.default) == "<factory>" else _clean_repr(p.default)
            s += f" = {default}" if ann else f"={default}"
        parts.append(s)
        if p.kind is p.POSITIONAL_ONLY and (i + 1 == len(params) or params[i + 1].kind is not p.POSITIONAL_ONLY):
            parts.append("/")
    out = f"{name}({', '.join(parts)})"
    ret = _annotation(sig.return_annotation)
    if ret:
        out += f" -> {ret}"
    return out


@dataclasses.dataclass(frozen=True)
class ParsedDoc:
    """A Google-style docstring split into its first paragraph and named sections."""

    summary: str
    sections: tuple[tuple[str, tuple[str, ...]], ...]


def parse_docstring(doc: str | None) -> ParsedDoc:
    """Split a cleaned docstring (``inspect.getdoc``) into summary and ``Args/Returns/...`` sections.

    Section bodies are kept as lists of entries: an entry starts at the section's base indentation
    and continues over more indented lines (joined with spaces).
    """
    if not doc:
        return ParsedDoc("", ())
    lines = doc.splitlines()
    summary: list[str] = []
    i = 0
    while i < len(lines) and lines[i].strip():
        if lines[i].strip().rstrip(":") in SECTIONS and lines[i].strip().endswith(":"):
            break
        summary.append(lines[i].strip())
        i += 1
    sections: list[tuple[str, tuple[str, ...]]] = []
    while i < len(lines):
        head = lines[i].strip()
        indent0 = len(lines[i]) - len(lines[i].lstrip())
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        is_header = (head.endswith(":") and indent0 == 0 and len(head) > 1
                     and (head[:-1] in SECTIONS
                          or (head[0].isupper()
                              and nxt.startswith((" ", "\t")) and bool(nxt.strip()))))
        if is_header:
            name = _SECTION_ALIASES.get(head[:-1], head[:-1])
            i += 1
            body: list[str] = []
            base = None
            while i < len(lines):
                ln = lines[i]
                if not ln.strip():
                    # a blank line ends the section unless the next line is still indented
                    if i + 1 < len(lines) and lines[i + 1].startswith((" ", "\t")) and lines[i + 1].strip():
                        i += 1
                        continue
                    break
                ind = len(ln) - len(ln.lstrip())
                if ind == 0:
                    break
                if base is None:
                    base = ind
                if ind <= base or not body:
                    body.append(ln.strip())
                else:
                    body[-1] = body[-1] + " " + ln.strip()
                i += 1
            sections.append((name, tuple(body)))
            continue
        i += 1
    return ParsedDoc(" ".join(summary), tuple(sections))


def _render_doc(doc: str | None) -> list[str]:
    parsed = parse_docstring(doc)
    out: list[str] = []
    if parsed.summary:
        out += [rst_to_md(parsed.summary), ""]
    for name, body in parsed.sections:
        if not body:
            continue
        out.append(f"**{rst_to_md(name)}**")
        out.append("")
        listed = name not in ("Returns", "Yields")
        for entry in body:
            head, sep, rest = entry.partition(":")
            if listed and sep and re.fullmatch(r"[\w., *]+", head.strip()):
                out.append(f"- `{head.strip()}`:{rst_to_md(rest)}")
            else:
                out.append(f"- {rst_to_md(entry)}" if listed else rst_to_md(entry))
        out.append("")
    return out


# ---------------------------------------------------------------------- discovery
def public_modules() -> list[str]:
    """Dotted names of the modules documented (sorted, packages before their children)."""
    pkg = importlib.import_module(PACKAGE)
    names = [PACKAGE]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=PACKAGE + "."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts):
            continue
        if info.name.startswith(f"{PACKAGE}.commands"):
            continue
        names.append(info.name)
    out = []
    for name in sorted(names):
        mod = importlib.import_module(name)
        if isinstance(getattr(mod, "__all__", None), (list, tuple)):
            out.append(name)
    for extra in EXTRA_MODULES:
        if importlib.util.find_spec(extra) is not None:
            out.append(extra)
    return out


def _attribute_docs(mod: ModuleType) -> dict[str, str]:
    """Module-level ``NAME = value`` followed by a string literal: NAME → that string."""
    try:
        src = inspect.getsource(mod)
    except (OSError, TypeError):
        return {}
    tree = ast.parse(src)
    out: dict[str, str] = {}
    body = tree.body
    for a, b in zip(body, body[1:]):
        target = None
        if isinstance(a, ast.Assign) and len(a.targets) == 1 and isinstance(a.targets[0], ast.Name):
            target = a.targets[0].id
        elif isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name):
            target = a.target.id
        if target and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
            out[target] = inspect.cleandoc(b.value.value)
    return out


def anchor(qualname: str) -> str:
    """HTML anchor id of a documented object (its dotted path)."""
    return qualname


def _defining_module(obj: Any) -> str | None:
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return getattr(obj, "__module__", None)
    return None


def _class_members(cls: type) -> Iterable[tuple[str, Any, str]]:
    """Public methods/properties defined on ``cls`` itself: (name, object, kind)."""
    for name, raw in cls.__dict__.items():
        if name.startswith("_"):
            continue
        if isinstance(raw, property):
            yield name, raw, "property"
        elif isinstance(raw, (classmethod, staticmethod)):
            yield name, raw.__func__, "classmethod" if isinstance(raw, classmethod) else "staticmethod"
        elif inspect.isfunction(raw):
            yield name, raw, "method"


def _render_class(modname: str, name: str, cls: type) -> list[str]:
    qual = f"{modname}.{name}"
    out = [f'<a id="{anchor(qual)}"></a>', "", f"### class `{name}`", ""]
    sig = signature(cls, name)
    if sig.endswith(" -> None"):
        sig = sig[: -len(" -> None")]
    out += ["```python", sig, "```", ""]
    out += _render_doc(inspect.getdoc(cls) if cls.__doc__ else None)
    members = list(_class_members(cls))
    for mname, obj, kind in members:
        if kind == "property":
            doc = inspect.getdoc(obj)
            head = f"#### property `{name}.{mname}`"
            out += [head, ""]
            out += _render_doc(doc) if doc else []
            continue
        sig = signature(obj, f"{name}.{mname}")
        if kind in ("method", "classmethod"):
            # drop the bound first argument from the display
            sig = re.sub(r"\((self|cls)(: [^,)]*)?(, )?", "(", sig, count=1)
        prefix = "classmethod " if kind == "classmethod" else "staticmethod " if kind == "staticmethod" else ""
        out += [f"#### {prefix}`{name}.{mname}`", "", "```python", sig, "```", ""]
        doc = inspect.getdoc(obj) if obj.__doc__ else None
        out += _render_doc(doc)
    return out


def _render_function(modname: str, name: str, fn: Callable[..., Any]) -> list[str]:
    qual = f"{modname}.{name}"
    out = [f'<a id="{anchor(qual)}"></a>', "", f"### `{name}`", ""]
    out += ["```python", signature(fn, name), "```", ""]
    out += _render_doc(inspect.getdoc(fn) if fn.__doc__ else None)
    return out


def _render_constant(modname: str, name: str, value: Any, attr_docs: dict[str, str]) -> list[str]:
    qual = f"{modname}.{name}"
    out = [f'<a id="{anchor(qual)}"></a>', "", f"### `{name}`", ""]
    r = _clean_repr(value)
    if len(r) <= _MAX_VALUE_REPR and "\n" not in r:
        out += ["```python", f"{name} = {r}", "```", ""]
    else:
        out += [f"`{name}`: `{type(value).__name__}`", ""]
    doc = attr_docs.get(name)
    if doc:
        out += _render_doc(doc)
    return out


def _render_module(modname: str, documented: set[str]) -> list[str]:
    mod = importlib.import_module(modname)
    out = [f'<a id="{anchor(modname)}"></a>', "", f"## `{modname}`", ""]
    doc = inspect.getdoc(mod)
    if doc:
        out += [rst_to_md(parse_docstring(doc).summary), ""]
    attr_docs = _attribute_docs(mod)
    reexports: list[tuple[str, str]] = []
    for name in mod.__all__:
        if not hasattr(mod, name):
            raise AttributeError(f"{modname}.__all__ names {name!r}, which the module does not define")
        obj = getattr(mod, name)
        home = _defining_module(obj)
        if home is not None and home != modname and home in documented:
            reexports.append((name, home))
            continue
        if inspect.isclass(obj):
            out += _render_class(modname, name, obj)
        elif callable(obj) and (inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            out += _render_function(modname, name, obj)
        else:
            out += _render_constant(modname, name, obj, attr_docs)
    if reexports:
        out += ["Re-exported here:", ""]
        out += [f"- [`{n}`](#{anchor(f'{h}.{n}')}) (from `{h}`)" for n, h in reexports]
        out.append("")
    return out


# ---------------------------------------------------------------------- CLI and studies
def _action_row(action: argparse.Action) -> str:
    if action.option_strings:
        flags = ", ".join(f"`{s}`" for s in action.option_strings)
        if action.nargs != 0:
            metavar = action.metavar or action.dest.upper()
            if isinstance(metavar, tuple):
                metavar = " ".join(metavar)
            flags += f" `{metavar}`"
    else:
        metavar = action.metavar or action.dest
        flags = f"`{metavar}`" + (" (repeatable)" if action.nargs in ("*", "+") else "")
    help_text = action.help or ""
    if "%(" in help_text:
        fmt = dict(vars(action))
        for k, v in list(fmt.items()):
            if isinstance(v, (list, tuple)):
                fmt[k] = ", ".join(map(str, v))
        try:
            help_text = help_text % fmt
        except (KeyError, TypeError, ValueError):
            pass
    extra = []
    if action.choices is not None and not isinstance(action.choices, dict):
        extra.append("choices: " + ", ".join(f"`{c}`" for c in action.choices))
    if (action.option_strings and action.nargs != 0 and action.default is not None
            and "default" not in help_text
            and action.default is not argparse.SUPPRESS and action.default != []):
        extra.append(f"default: `{action.default}`")
    cell = help_text.replace("|", "\\|").replace("\n", " ")
    if extra:
        cell = (cell + " " if cell else "") + "(" + "; ".join(extra) + ")"
    return f"| {flags} | {cell} |"


def _render_cli() -> list[str]:
    import landscape.cli._main as cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = ['<a id="cli"></a>', "", "## Command line: `landscape COMMAND`", "",
           "Every command accepts `--help`. Bad arguments exit with status 2 and a one-line message "
           "(a JSON object `{\"error\": ...}` with `--json`).", ""]
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name in cli.COMMANDS:
        if name not in sub.choices:
            continue
        p = sub.choices[name]
        out += [f'<a id="cli-{name}"></a>', "", f"### `landscape {name}`", ""]
        desc = p.description or helps.get(name) or ""
        if desc:
            out += [rst_to_md(desc.strip().replace("\n", " ")), ""]
        rows = [a for a in p._actions if not isinstance(a, argparse._HelpAction)]
        if rows:
            out += ["| argument | meaning |", "|---|---|"]
            out += [_action_row(a) for a in rows]
            out.append("")
    return out


def _render_studies() -> list[str]:
    try:
        import analysis
    except ImportError:
        return []
    out = ['<a id="studies"></a>', "", "## Studies (`analysis/`)", "",
           "Run one with `landscape reproduce NAME [--quick]` or `python -m analysis.NAME [--quick]`.", ""]
    out += ["| study | reproduces | module summary |", "|---|---|---|"]
    for name, what in analysis.STUDIES.items():
        spec = importlib.util.find_spec(f"analysis.{name}")
        if spec is None:
            summary = "(module not present)"
        else:
            mod = importlib.import_module(f"analysis.{name}")
            summary = rst_to_md(parse_docstring(inspect.getdoc(mod)).summary) if mod.__doc__ else ""
        out.append(f"| `{name}` | {what} | {summary.replace('|', '/')} |")
    out.append("")
    return out


# ---------------------------------------------------------------------- assembly
def generate() -> str:
    """The full text of ``docs/api.md``."""
    mods = public_modules()
    documented = set(mods)
    out = [
        "# API reference",
        "",
        "<!-- Generated by docs/gen_api.py from __all__ and the docstrings; do not edit by hand. -->",
        "<!-- Regenerate with: python docs/gen_api.py -->",
        "",
        "Contents:",
        "",
    ]
    out += [f"- [`{m}`](#{anchor(m)})" for m in mods]
    out += ["- [Command line](#cli)", "- [Studies](#studies)", ""]
    for m in mods:
        out += _render_module(m, documented)
    out += _render_cli()
    out += _render_studies()
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"
    return text


def main(argv: list[str] | None = None) -> int:
    """Write ``docs/api.md``, or with ``--check`` compare it with a fresh generation."""
    p = argparse.ArgumentParser(prog="python docs/gen_api.py", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is out of date")
    p.add_argument("--out", type=Path, default=API_MD, help="output file (default docs/api.md)")
    args = p.parse_args(argv)
    text = generate()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run python docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
