"""The documentation cannot rot: every command runs, every reference resolves, the API page is fresh.

* ``docs/api.md`` equals a fresh ``python docs/gen_api.py`` (generated from ``__all__`` and docstrings);
* every ``tests/<file>.py::<name>`` in ``docs/theory_map.md`` names a test that exists (files parsed
  with :mod:`ast`, inherited suite methods included), and every dotted ``landscape.x.y`` written in
  backticks anywhere in ``docs/`` or the README resolves by import;
* every ``landscape ...`` command in a ``bash`` block parses with the real CLI parser, and every
  ``--flag`` quoted inline after ``landscape <command>`` belongs to that command;
* relative Markdown links point to existing files and anchors; ``docs/index.md`` links every page;
* every ``bash`` block (each line a command; heredocs and ``\\`` continuations kept whole) and every
  ``python`` block of each page runs, in document order, in a fresh temporary directory (with
  ``benchmarks/`` linked in, so repository-root commands work) — python
  blocks of a page share one namespace — and must succeed. A command may carry the trailing marker
  ``# docs-test: skip`` (for explicitly long runs); at most :data:`MAX_SKIPS` may, across all pages.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import shlex
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from limits import HANG_GUARD_S

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
TESTS = ROOT / "tests"
GENERATED = {"api.md"}
SKIP_MARKER = "# docs-test: skip"
MAX_SKIPS = 2
COMMAND_TIMEOUT_S = HANG_GUARD_S
LINKED_DIRS = ("benchmarks",)
"""Repository folders linked into the temporary working directory (read-only use by the pages)."""

_FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)


# ---------------------------------------------------------------------- parsing markdown
@dataclass(frozen=True)
class Block:
    """A fenced code block: language, body, 1-based line of its opening fence."""

    lang: str
    body: str
    line: int


@dataclass(frozen=True)
class Command:
    """One shell command of a ``bash`` block (continuations and heredocs joined)."""

    text: str
    skip: bool
    line: int


def extract_blocks(text: str) -> list[Block]:
    """Fenced code blocks in document order."""
    return [Block(m.group(1).lower(), m.group(2), text.count("\n", 0, m.start()) + 1) for m in _FENCE.finditer(text)]


def bash_commands(block: Block) -> list[Command]:
    """Split a ``bash`` block into commands: one per line, except ``\\``-continued lines and heredocs
    (``<<'EOF'`` … ``EOF``), which stay whole. Blank lines and comment lines are dropped; a command
    ending with ``# docs-test: skip`` is returned with ``skip=True``."""
    lines = block.body.splitlines()
    out: list[Command] = []
    i = 0
    while i < len(lines):
        start = i
        line = lines[i]
        i += 1
        if not line.strip() or line.strip().startswith("#"):
            continue
        parts = [line]
        while parts[-1].rstrip().endswith("\\") and i < len(lines):
            parts.append(lines[i])
            i += 1
        m = re.search(r"<<-?\s*(['\"]?)(\w+)\1", parts[0])
        if m:
            end = m.group(2)
            while i < len(lines) and lines[i].strip() != end:
                parts.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"heredoc <<{end} opened at block line {block.line + start + 1} is never closed")
            parts.append(lines[i])
            i += 1
        text = "\n".join(parts)
        first = parts[0].rstrip()
        skip = first.endswith(SKIP_MARKER)
        if skip:
            parts[0] = first[: -len(SKIP_MARKER)].rstrip()
            text = "\n".join(parts)
        out.append(Command(text, skip, block.line + start + 1))
    return out


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def _executable_pages() -> list[Path]:
    return [p for p in doc_pages() if p.name not in GENERATED
            and any(b.lang in ("bash", "python") for b in extract_blocks(p.read_text()))]


def _landscape_argvs(cmd: str) -> list[list[str]]:
    """argv (after ``landscape``) of each ``landscape`` invocation in a shell command."""
    out = []
    for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", cmd.replace("\\\n", " ")):
        try:
            argv = shlex.split(part, comments=True)
        except ValueError:
            continue
        cut = next((i for i, tok in enumerate(argv) if re.match(r"^(\d?>|>>|<|&>)", tok)), len(argv))
        argv = argv[:cut]  # drop shell redirections
        if argv and argv[0] == "landscape":
            out.append(argv[1:])
    return out


# ---------------------------------------------------------------------- the extractor itself
def test_extractor_on_a_sample() -> None:
    sample = (
        "Intro\n\n```bash\n# a comment\nlandscape families\n\nlandscape train --out runs/a \\\n"
        "    --steps 5\ncat > f.toml <<'EOF'\nname = \"x\"\n# not a comment here\nEOF\n"
        "landscape reproduce ahn2023  # docs-test: skip\n```\n\n```python\nx = 1\n```\n\n```text\nout\n```\n"
    )
    blocks = extract_blocks(sample)
    assert [(b.lang, b.line) for b in blocks] == [("bash", 3), ("python", 16), ("text", 20)]
    cmds = bash_commands(blocks[0])
    assert [c.text for c in cmds] == [
        "landscape families",
        "landscape train --out runs/a \\\n    --steps 5",
        "cat > f.toml <<'EOF'\nname = \"x\"\n# not a comment here\nEOF",
        "landscape reproduce ahn2023",
    ]
    assert [c.skip for c in cmds] == [False, False, False, True]
    assert [c.line for c in cmds] == [5, 7, 9, 13]
    assert _landscape_argvs(cmds[1].text) == [["train", "--out", "runs/a", "--steps", "5"]]
    assert _landscape_argvs("landscape solve pgd --json > out.json || test $? -eq 1") == [["solve", "pgd", "--json"]]
    with pytest.raises(ValueError, match="never closed"):
        bash_commands(Block("bash", "cat > f <<EOF\nline\n", 1))


def test_at_most_two_skipped_commands() -> None:
    skipped = [(p.name, c.line, c.text) for p in doc_pages() if p.name not in GENERATED
               for b in extract_blocks(p.read_text()) if b.lang == "bash" for c in bash_commands(b) if c.skip]
    assert len(skipped) <= MAX_SKIPS, f"more than {MAX_SKIPS} commands carry '{SKIP_MARKER}': {skipped}"


# ---------------------------------------------------------------------- the API page
def _gen_api():
    spec = importlib.util.spec_from_file_location("landscape_docs_gen_api", DOCS / "gen_api.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_docstring_parser_on_a_sample() -> None:
    gen = _gen_api()
    doc = ("Solve it :math:`Ax = b` with ``method``.\n\nMore text.\n\nArgs:\n    A: the matrix,\n"
           "        continued.\n    b: the rhs.\n\nReturns:\n    The solution\n    ``x``.\n\n"
           "Raises:\n    ValueError: bad shapes.\n")
    parsed = gen.parse_docstring(doc)
    assert parsed.summary == "Solve it :math:`Ax = b` with ``method``."
    assert parsed.sections == (("Args", ("A: the matrix, continued.", "b: the rhs.")),
                               ("Returns", ("The solution", "``x``.")), ("Raises", ("ValueError: bad shapes.",)))
    assert gen.rst_to_md(parsed.summary) == "Solve it $Ax = b$ with `method`."

    def f(a: int, b: "str" = "x", *, c: float = 1.0) -> "int":
        return a

    assert gen.signature(f, "f") == "f(a: int, b: str = 'x', *, c: float = 1.0) -> int"


def test_api_md_is_up_to_date() -> None:
    gen = _gen_api()
    fresh = gen.generate()
    current = (DOCS / "api.md").read_text()
    if current != fresh:
        cur, new = current.splitlines(), fresh.splitlines()
        first = next((i for i, (a, b) in enumerate(zip(cur, new)) if a != b), min(len(cur), len(new)))
        pytest.fail(f"docs/api.md is stale (first difference at line {first + 1}: "
                    f"{cur[first] if first < len(cur) else '<end>'!r} vs {new[first] if first < len(new) else '<end>'!r});"
                    " run: python docs/gen_api.py")
    documented = set(re.findall(r'<a id="(landscape\.[\w.]+)"></a>', current))
    import landscape

    for name in landscape.__all__:  # the top-level public surface is all documented
        home = getattr(landscape, name).__module__
        assert f"{home}.{name}" in documented, f"landscape.{name} is missing from docs/api.md"


# ---------------------------------------------------------------------- references
_TEST_REF = re.compile(r"tests/([\w/]+\.py)::([\w:]+)(?:\[[^\]\s`]*\])?")
_DOTTED = re.compile(r"`((?:landscape|analysis)(?:\.\w+)+)(?:\([^`]*\))?`")
_STUDY_REF = re.compile(r"analysis/(\w+)\.py::(\w+)")


def _classes_and_functions(path: Path) -> tuple[dict[str, ast.ClassDef], set[str]]:
    tree = ast.parse(path.read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    funcs = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return classes, funcs


def _all_test_classes() -> dict[str, ast.ClassDef]:
    out: dict[str, ast.ClassDef] = {}
    for p in TESTS.glob("*.py"):
        out.update(_classes_and_functions(p)[0])
    return out


def _class_has_method(cls: ast.ClassDef, method: str, index: dict[str, ast.ClassDef], depth: int = 0) -> bool:
    if any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == method for n in cls.body):
        return True
    if depth > 10:
        return False
    for base in cls.bases:
        name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else None
        if name in index and _class_has_method(index[name], method, index, depth + 1):
            return True
    return False


def check_test_reference(file: str, name: str) -> str | None:
    """``None`` if ``tests/<file>::<name>`` exists, else why not."""
    path = TESTS / file
    if not path.is_file():
        return f"tests/{file} does not exist"
    classes, funcs = _classes_and_functions(path)
    parts = name.split("::")
    if len(parts) == 1:
        return None if parts[0] in funcs or parts[0] in classes else f"tests/{file} has no test {parts[0]!r}"
    if len(parts) == 2:
        cls = classes.get(parts[0])
        if cls is None:
            return f"tests/{file} has no class {parts[0]!r}"
        return None if _class_has_method(cls, parts[1], _all_test_classes()) else \
            f"class {parts[0]} in tests/{file} has no method {parts[1]!r}"
    return f"cannot read test id {name!r}"


def test_reference_checker_rejects_missing_tests() -> None:
    assert check_test_reference("test_docs.py", "test_reference_checker_rejects_missing_tests") is None
    assert check_test_reference("test_docs.py", "test_no_such_thing") is not None
    assert check_test_reference("no_such_file.py", "test_x") is not None
    assert _resolve("landscape.core.model.forward") is None
    assert _resolve("landscape.core.model.no_such_function") is not None


def test_theory_map_test_references_exist() -> None:
    text = (DOCS / "theory_map.md").read_text()
    refs = _TEST_REF.findall(text)
    assert len(refs) >= 20, f"theory_map.md cites only {len(refs)} tests"
    bad = [f"tests/{f}::{n}: {why}" for f, n in refs if (why := check_test_reference(f, n))]
    assert not bad, "theory_map.md cites tests that do not exist:\n" + "\n".join(bad)


def _resolve(dotted: str) -> str | None:
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        modname = ".".join(parts[:k])
        try:
            obj = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name and modname.startswith(exc.name) and exc.name != modname.split(".")[0]:
                continue
            if exc.name == modname:
                continue
            raise
        for attr in parts[k:]:
            if not hasattr(obj, attr):
                return f"{'.'.join(parts[:parts.index(attr)])} has no attribute {attr!r}"
            obj = getattr(obj, attr)
        return None
    return f"no module {parts[0]!r}"


@pytest.mark.parametrize("page", [p for p in doc_pages() if p.name not in GENERATED] + [README], ids=lambda p: p.name)
def test_dotted_references_resolve(page: Path) -> None:
    refs = sorted(set(_DOTTED.findall(page.read_text())))
    bad = [f"{r}: {why}" for r in refs if (why := _resolve(r))]
    assert not bad, f"{page.name} names objects that do not exist:\n" + "\n".join(bad)


def study_claims(study: str) -> set[str]:
    """Names of the claims a study records: first arguments of ``Claim(...)`` in ``analysis/<study>.py``."""
    path = ROOT / "analysis" / f"{study}.py"
    if not path.is_file():
        return set()
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Claim":
            first = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                out.add(first.value)
    return out


def test_theory_map_study_claims_exist() -> None:
    refs = _STUDY_REF.findall((DOCS / "theory_map.md").read_text())
    assert len(refs) >= 20, f"theory_map.md cites only {len(refs)} study claims"
    bad = [f"analysis/{s}.py::{c}" for s, c in refs if c not in study_claims(s)]
    assert not bad, "theory_map.md cites study claims that do not exist:\n" + "\n".join(bad)
    assert "construction_is_ngd" in study_claims("zhangcao2026")  # the parser sees real claims


def test_theory_map_references_code() -> None:
    refs = set(_DOTTED.findall((DOCS / "theory_map.md").read_text()))
    assert len(refs) >= 20, f"theory_map.md names only {len(refs)} functions"


# ---------------------------------------------------------------------- CLI usage in the docs
def _subparsers():
    import argparse

    from landscape.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


@pytest.mark.parametrize("page", [p for p in doc_pages() if p.name not in GENERATED] + [README], ids=lambda p: p.name)
def test_documented_landscape_commands_parse(page: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser, subs = _subparsers()
    text = page.read_text()
    problems = []
    for block in extract_blocks(text):
        if block.lang != "bash":
            continue
        for cmd in bash_commands(block):
            for argv in _landscape_argvs(cmd.text):
                try:
                    parser.parse_args(argv)
                except SystemExit as exc:
                    if exc.code != 0:
                        problems.append(f"line {cmd.line}: landscape {' '.join(argv)}: {capsys.readouterr().err.strip()}")
    # inline code: `landscape CMD ... --flag ...`
    for span in re.findall(r"`(landscape [^`]+)`", text):
        argv = span.split()[1:]
        if not argv or not re.fullmatch(r"[a-z]+", argv[0]):
            continue
        if argv[0] not in subs:
            problems.append(f"inline `{span}`: no command {argv[0]!r} (have {sorted(subs)})")
            continue
        known = {s for a in subs[argv[0]]._actions for s in a.option_strings}
        for tok in argv[1:]:
            flag = tok.split("=")[0]
            if flag.startswith("--") and flag not in known:
                problems.append(f"inline `{span}`: landscape {argv[0]} has no option {flag}")
    assert not problems, f"{page.name}:\n" + "\n".join(problems)


# ---------------------------------------------------------------------- links
def _slug(heading: str) -> str:
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text()
    ids = set(re.findall(r'<a id="([^"]+)"></a>', text))
    ids |= {_slug(h) for h in re.findall(r"^#+\s+(.*)$", text, re.M)}
    return ids


@pytest.mark.parametrize("page", doc_pages() + [README], ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    text = _FENCE.sub("", page.read_text())
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        file, _, frag = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest}")
        elif frag and dest.suffix == ".md" and frag not in _anchors(dest):
            bad.append(f"{target}: no anchor #{frag} in {dest.name}")
    assert not bad, f"{page.name} has broken links:\n" + "\n".join(bad)


def test_index_links_every_page() -> None:
    index = (DOCS / "index.md").read_text()
    missing = [p.name for p in doc_pages() if p.name != "index.md" and f"({p.name}" not in index]
    assert not missing, f"docs/index.md does not link {missing}"


# ---------------------------------------------------------------------- running the examples
def _shim_dir(tmp: Path) -> Path:
    """``landscape``, ``python`` and ``python3`` on PATH, all meaning this interpreter."""
    bin_dir = tmp / ".docs-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (("landscape", f'exec "{sys.executable}" -m landscape.cli "$@"'),
                       ("python", f'exec "{sys.executable}" "$@"'), ("python3", f'exec "{sys.executable}" "$@"')):
        f = bin_dir / name
        f.write_text(f"#!/bin/sh\n{body}\n")
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def run_page(page: Path, work: Path) -> list[str]:
    """Run the page's bash and python blocks in order in ``work``; return a log; raise on failure."""
    text = page.read_text()
    bin_dir = _shim_dir(work)
    for name in LINKED_DIRS:  # pages say "from the repository root" for these
        if not (work / name).exists():
            (work / name).symlink_to(ROOT / name, target_is_directory=True)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", MPLBACKEND="Agg",
               PYTHONPATH=str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    log: list[str] = []
    old_cwd = os.getcwd()
    os.chdir(work)
    try:
        for block in extract_blocks(text):
            if block.lang == "bash":
                for cmd in bash_commands(block):
                    if cmd.skip:
                        log.append(f"skipped (marked long): {cmd.text}")
                        continue
                    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", cmd.text], cwd=work, env=env,
                                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
                    log.append(f"$ {cmd.text}\n{proc.stdout[-2000:]}")
                    if proc.returncode != 0:
                        raise AssertionError(f"{page.name}:{cmd.line}: `{cmd.text}` exited {proc.returncode}\n"
                                             f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
            elif block.lang == "python":
                code = compile(block.body, f"{page.name}:python-block@line{block.line}", "exec")
                try:
                    exec(code, namespace)
                except Exception as exc:
                    raise AssertionError(f"{page.name}: python block at line {block.line} raised "
                                         f"{type(exc).__name__}: {exc}") from exc
                log.append(f">>> python block at line {block.line}: ok")
    finally:
        os.chdir(old_cwd)
    return log


def test_run_page_reports_the_failing_command(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```bash\necho ok > a.txt\nlandscape --no-such-flag\n```\n")
    with pytest.raises(AssertionError, match=r"page.md:3: `landscape --no-such-flag` exited 2"):
        run_page(page, tmp_path)
    assert (tmp_path / "a.txt").read_text() == "ok\n"
    page.write_text("```python\nimport pathlib\nvalue = 6 * 7\n```\n\n```bash\ntest -f a.txt\n```\n\n"
                    "```python\npathlib.Path('b.txt').write_text(str(value))\n```\n")
    run_page(page, tmp_path)
    assert (tmp_path / "b.txt").read_text() == "42"


@pytest.mark.slow
@pytest.mark.parametrize("page", _executable_pages(), ids=lambda p: p.name)
def test_doc_examples_run(page: Path, tmp_path: Path) -> None:
    log = run_page(page, tmp_path)
    assert log, f"{page.name} has code blocks but nothing ran"
