"""The documentation matches the CLI: docs/cli.md is the current generated reference, and every `lapgen`
command line in docs/*.md and README.md names an existing command with options that command has."""

from __future__ import annotations

import html
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from lapgen.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "typer lapgen.cli.main utils docs --name lapgen --output docs/cli.md"
DOC_FILES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
SHELL_LANGS = {"", "bash", "sh", "shell", "console", "zsh"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = re.compile(r"^\d?[<>]{1,2}")
# `accelerate launch ... -m lapgen ...`, `torchrun ... -m lapgen ...`, `python -m lapgen ...`
LAUNCH_PREFIX = ("-m", "lapgen")


def _normalise(text: str) -> str:
    """Line-end whitespace and HTML entity escaping differ between typer releases, not the content."""
    return "\n".join(line.rstrip() for line in html.unescape(text).strip().splitlines()) + "\n"


def test_cli_reference_is_current(tmp_path):
    out = tmp_path / "cli.md"
    env = {**os.environ, "COLUMNS": "80", "TERMINAL_WIDTH": "80", "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "typer", "lapgen.cli.main", "utils", "docs", "--name", "lapgen",
           "--output", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    committed = ROOT / "docs" / "cli.md"
    assert committed.exists(), f"docs/cli.md is missing: run `{REGENERATE}`"
    assert _normalise(committed.read_text()) == _normalise(out.read_text()), (
        f"docs/cli.md is stale (typer {typer.__version__}): regenerate it with `{REGENERATE}`")


# ---------------------------------------------------------------- command lines in the docs


def shell_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, body) of every fenced code block in a shell-like language (or none)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start, body = m.group(1), m.group(2).lower(), i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        if lang in SHELL_LANGS:
            blocks.append((start + 1, "\n".join(body)))
    return blocks


def command_lines(body: str, first_line: int) -> list[tuple[int, list[str]]]:
    """The token lists of every `lapgen ...` invocation in a shell block (continuations joined)."""
    found = []
    logical, start = "", None
    for offset, raw in enumerate(body.splitlines() + [""]):
        line = re.sub(r"^\s*\$ ", "", raw)
        if start is None:
            start = first_line + offset
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        try:
            words = _SUBSTITUTION.sub("x", _PLACEHOLDER.sub(PLACEHOLDER, logical))
            tokens = shlex.split(words, comments=True)
        except ValueError:  # unbalanced quotes: not a command line (e.g. an error message)
            tokens = []
        segment: list[str] = []
        for tok in [*tokens, ";"]:
            if tok in SEPARATORS or REDIRECTS.match(tok):
                found += [(start, cmd) for cmd in [_lapgen_args(segment)] if cmd is not None]
                segment = [] if tok in SEPARATORS else ["<redirected>"]
            elif segment[:1] != ["<redirected>"]:
                segment.append(tok)
        logical, start = "", None
    return found


def _lapgen_args(segment: list[str]) -> list[str] | None:
    if segment[:1] == ["lapgen"]:
        return segment[1:]
    for i in range(len(segment) - 1):
        if tuple(segment[i:i + 2]) == LAUNCH_PREFIX:
            return segment[i + 2:]
    return None


def _is_placeholder(tok: str) -> bool:
    return tok in ("...", "…", PLACEHOLDER) or (tok.isupper() and tok.isalpha())


def _option_names(cmd) -> dict:
    names = {}
    for p in cmd.params:
        if p.param_type_name == "option":
            names.update({n: p for n in [*p.opts, *p.secondary_opts]})
    names["--help"] = None
    return names


def check_invocation(root, args: list[str], count_positionals: bool = True) -> str | None:
    """None if `lapgen ARGS` names an existing command and only its options; else what is wrong.

    Prose quotes commands loosely (`lapgen demo (tiny models)`): there only names and options count."""
    args = [a.strip("[]") for a in args]
    args = [a for a in args if a]
    cmd = root  # typer's click objects (typer may vendor its own click: duck-typed here)
    path = ["lapgen"]
    i = 0
    while hasattr(cmd, "list_commands") and i < len(args):  # walk down the command groups
        if args[i].startswith("-"):  # group options are flags (lapgen --quiet, --debug, --version)
            if args[i].split("=")[0] not in _option_names(cmd):
                return f"`{' '.join(path)}` has no option {args[i]}"
            i += 1
            continue
        name = args[i]
        if _is_placeholder(name):
            return None
        sub = cmd.get_command(None, name)
        if sub is None:
            return f"`{' '.join(path)}` has no command {name!r} (has: {', '.join(cmd.list_commands(None))})"
        cmd, path, i = sub, [*path, name], i + 1
    opts = _option_names(cmd)
    positional = [p for p in cmd.params if p.param_type_name == "argument"]
    capacity = float("inf") if any(p.nargs < 0 for p in positional) else sum(p.nargs for p in positional)
    given = 0
    while i < len(args):
        tok = args[i]
        if tok.startswith("-") and len(tok) > 1 and not re.match(r"^-\d", tok):
            name = tok.split("=")[0]
            if name not in opts:
                return f"`{' '.join(path)}` has no option {name}"
            param = opts[name]
            takes_value = param is not None and not param.is_flag and not param.count and "=" not in tok
            i += 1 + (max(param.nargs, 1) if takes_value else 0)
            continue
        if not _is_placeholder(tok) and tok.lower() != "options":
            given += 1
        i += 1
    if count_positionals and given > capacity:
        return f"`{' '.join(path)}` takes {capacity} positional argument(s), the line gives {given}"
    return None


def inline_commands(text: str) -> list[tuple[int, list[str]]]:
    """`lapgen ...` in inline code spans of the prose (fenced blocks are left to `shell_blocks`)."""
    found = []
    prose = re.sub(r"^\s*(`{3,}|~{3,}).*?^\s*\1", lambda m: "\n" * m.group(0).count("\n"), text,
                   flags=re.DOTALL | re.MULTILINE)
    for m in re.finditer(r"(?<!`)`(lapgen [^`]+)`(?!`)", prose):
        line = prose.count("\n", 0, m.start()) + 1
        found += [(line, args) for _, args in command_lines(m.group(1).replace("\\|", "|"), line)]
    return found


_PLACEHOLDER = re.compile(r"<[^<>]*>")  # <your 128 px RDV>: one word, not a shell redirection
PLACEHOLDER = "_placeholder_"
_SUBSTITUTION = re.compile(r"\$\([^()]*\)")  # $(command): one word for the checker


def doc_invocations() -> list[tuple[str, list[str], bool]]:
    """(where, args, from a fenced block) of every `lapgen` command line of the docs."""
    out = []
    for doc in DOC_FILES:
        text = doc.read_text()
        where = str(doc.relative_to(ROOT))
        out += [(f"{where}:{line}", args, True) for first, body in shell_blocks(text)
                for line, args in command_lines(body, first)]
        out += [(f"{where}:{line}", args, False) for line, args in inline_commands(text)]
    return out


def test_doc_command_lines_match_the_cli():
    root = typer.main.get_command(app)
    invocations = doc_invocations()
    assert len(invocations) > 50  # the parser found the docs' command lines
    problems = [f"{where}: lapgen {' '.join(args)}\n    -> {why}"
                for where, args, block in invocations if (why := check_invocation(root, args, block))]
    assert not problems, "doc command lines that do not match the CLI:\n" + "\n".join(problems)


FOREIGN_PROGRAMS = ("accelerate", "torchrun", "srun", "python", "ffmpeg", "pip", "hf", "typer")


def _all_lapgen_options(cmd) -> set[str]:
    names = set(_option_names(cmd))
    for name in cmd.list_commands(None) if hasattr(cmd, "list_commands") else ():
        names |= _all_lapgen_options(cmd.get_command(None, name))
    return names


def test_options_named_in_the_prose_exist():
    """Option tables and prose name options in inline code (`--lr`, `--cache-latents`): each must be an
    option of some lapgen command. Spans of other programs, their underscore options (accelerate,
    torchrun) and the benchmark scripts' own options are not lapgen's."""
    known = _all_lapgen_options(typer.main.get_command(app))
    for script in (ROOT / "benchmarks").glob("*.py"):
        known |= set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", script.read_text()))
    unknown = []
    for doc in DOC_FILES:
        prose = re.sub(r"^\s*(`{3,}|~{3,}).*?^\s*\1", "", doc.read_text(), flags=re.DOTALL | re.MULTILINE)
        for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", prose):
            if m.group(1).split()[0] in FOREIGN_PROGRAMS:
                continue
            for opt in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", m.group(1)):
                if opt not in known and "_" not in opt:
                    unknown.append(f"{doc.relative_to(ROOT)}: {opt} in `{m.group(1)}`")
    assert not unknown, "options named in the docs that no lapgen command has:\n" + "\n".join(unknown)


def test_relative_links_resolve():
    """Every relative link and image in docs/*.md and README.md points at a file of the repository."""
    broken = []
    for doc in DOC_FILES:
        prose = re.sub(r"^\s*(`{3,}|~{3,}).*?^\s*\1", "", doc.read_text(), flags=re.DOTALL | re.MULTILINE)
        for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", prose):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            if not (doc.parent / target.split("#")[0]).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


# ---------------------------------------------------------------- the checker itself


@pytest.mark.parametrize("line, expected", [
    ("lapgen prepare --cholect50 t50 --out frames", None),
    ("lapgen --quiet prepare --out x --json", None),
    ("lapgen prepare --no-such-option 3 --out x", "has no option --no-such-option"),
    ("lapgen preparee --out x", "has no command 'preparee'"),
    ("lapgen models frobnicate", "has no command 'frobnicate'"),
    ("lapgen models add NAME PATH", None),
    ("lapgen models list extra", "takes 0 positional"),
    ("lapgen eval map IMAGES [--recognizer NAME|PATH] [--out FILE [--overwrite]]", None),
    ("lapgen finetune --data DIR --out RUN [options]", None),
    ("lapgen --verbose prepare", "has no option --verbose"),
])
def test_checker(line, expected):
    why = check_invocation(typer.main.get_command(app), shlex.split(line)[1:])
    assert (why is None) if expected is None else (why is not None and expected in why), why


def test_parser_finds_commands_in_blocks():
    text = ("Text `lapgen nothing` here.\n\n```bash\n# a comment\n"
            "lapgen prepare --out a \\\n    --json  # note\n"
            "python -c 'x' && lapgen models list > out.txt; echo lapgen\n"
            "accelerate launch --multi_gpu -m lapgen finetune --data d --out o/$(basename $c).x\n```\n\n"
            "```python\nlapgen = 1\n```\n\n```\n$ lapgen --version\n```\n")
    found = [(line, args) for first, body in shell_blocks(text) for line, args in command_lines(body, first)]
    assert found == [(5, ["prepare", "--out", "a", "--json"]), (7, ["models", "list"]),
                     (8, ["finetune", "--data", "d", "--out", "o/x.x"]), (16, ["--version"])]
    more = "Then `lapgen eval map GEN --recognizer <your RDV>` and `x`, `lapgen demo && lapgen studio`.\n"
    assert inline_commands(text + more) == [
        (1, ["nothing"]), (18, ["eval", "map", "GEN", "--recognizer", PLACEHOLDER]), (18, ["demo"]),
        (18, ["studio"])]


def test_prose_quotes_are_checked_for_names_and_options_only():
    root = typer.main.get_command(app)
    assert check_invocation(root, ["models", "list", "(the", "registry)"], count_positionals=False) is None
    assert "takes 0 positional" in check_invocation(root, ["models", "list", "(the", "registry)"])
    why = check_invocation(root, ["models", "list", "--bogus"], count_positionals=False)
    assert "has no option --bogus" in why
