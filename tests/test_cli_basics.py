"""The CLI shell: help, version, the error handler, and that help stays light."""

from __future__ import annotations

import subprocess
import sys

import typer
from typer.testing import CliRunner

from lapgen.cli import main as cli_main
from lapgen.errors import LapgenError

runner = CliRunner()


def test_help_lists_commands():
    import importlib.util
    import re

    result = runner.invoke(cli_main.app, ["--help"])
    assert result.exit_code == 0
    listed = re.findall(r"^[│|] ([a-z][a-z-]*)\s", result.output, re.M)  # first column of the Commands box
    mission = ["prepare", "segment", "finetune", "train-controlnet", "video", "eval", "models", "masks", "sample"]
    if importlib.util.find_spec("lapgen.cli.demo") is not None:  # `lapgen demo` joins once its module lands
        mission.append("demo")
    assert sorted(set(mission) - set(listed)) == []
    assert len(listed) == len(set(listed))


def test_version():
    result = runner.invoke(cli_main.app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("lapgen ")


def _probe_app():
    app = typer.Typer(cls=cli_main.LapgenGroup, pretty_exceptions_enable=False)

    @app.callback()
    def _cb(debug: bool = typer.Option(False, "--debug")):
        cli_main._state["debug"] = debug

    @app.command()
    def boom():
        raise LapgenError("frames folder is missing", path="/data/x", hint="pass --data")

    return app


def test_lapgen_error_is_one_line_exit_2():
    result = runner.invoke(_probe_app(), ["boom"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["lapgen: error: /data/x: frames folder is missing; pass --data"]
    assert "Traceback" not in result.output


def test_debug_shows_traceback():
    result = runner.invoke(_probe_app(), ["--debug", "boom"])
    assert isinstance(result.exception, LapgenError)
    cli_main._state["debug"] = False


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from lapgen.cli.main import app\n"
        "r = CliRunner()\n"
        "for cmd in [['--help']] + [[c.name, '--help'] for c in app.registered_commands]"
        " + [[g.name, '--help'] for g in app.registered_groups]:\n"
        "    assert r.invoke(app, cmd).exit_code == 0, cmd\n"
        "heavy = [m for m in ('torch', 'diffusers', 'ultralytics', 'transformers', 'open_clip', 'cv2')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"help imported: {out.stdout.strip()}"


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "lapgen", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("lapgen ")


def test_readme_quick_start_and_the_ci_script_agree():
    """README's Quick start is one ```bash block of exactly two one-line commands (install + the main job,
    install + tests), and `.ci/run` extracts and runs the second one."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.S)
    assert len(blocks) == 1 and blocks[0][0] == "bash"
    commands = [line for line in blocks[0][1].splitlines() if line.strip()]
    assert len(commands) == 2 and not any(line.rstrip().endswith("\\") for line in commands)
    main_job, tests = commands
    assert "pip install" in main_job and re.search(r"lapgen (demo|prepare)\b", main_job)
    assert "pip install" in tests and '".[test]"' in tests and "pytest" in tests
    script = (root / ".ci" / "run").read_text()
    extract = next(line for line in script.splitlines() if line.startswith("test_command="))
    done = subprocess.run(["bash", "-c", f'{extract}\nprintf %s "$test_command"'], cwd=root,
                          capture_output=True, text=True, check=True)
    assert done.stdout == tests


def test_long_lines_are_not_hard_wrapped_when_piped():
    """Notices and results printed through lapgen's consoles stay one line in a pipe (rich would wrap at 80)."""
    import os

    long = "/some/very/long/path/" + "x" * 150 + " end"
    code = f"from lapgen.progress import notice, stdout; notice({long!r}); stdout.print({long!r})"
    env = {**os.environ, "COLUMNS": "80"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert r.stderr.strip() == long and r.stdout.strip() == long


def test_card_command_line_is_shell_quoted(monkeypatch):
    """The card's `command` re-runs as written: a prompt with spaces stays one argument."""
    import shlex

    from lapgen.cards import make_card

    argv = ["/venv/bin/lapgen", "video", "--prompt", "grasper retract liver", "--out", "my video"]
    monkeypatch.setattr(sys, "argv", argv)
    command = make_card("video")["command"]
    assert shlex.split(command) == ["lapgen", *argv[1:]]
    monkeypatch.setattr(sys, "argv", ["pytest"])
    assert make_card("video")["command"] is None


def test_a_command_module_that_fails_to_import_stops_lapgen_loudly(tmp_path):
    """A broken command module is a bug: `lapgen` fails with its traceback, never without the command."""
    import os

    code = (
        "import sys, importlib.abc\n"
        "class Broken(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'lapgen.cli.masks':\n"
        "            raise ImportError('masks module is broken')\n"
        "sys.meta_path.insert(0, Broken())\n"
        "from lapgen.cli.main import main\n"
        "sys.argv = ['lapgen', '--help']\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode != 0
    assert "ImportError: masks module is broken" in out.stderr and "Usage" not in out.stdout


def test_flags_show_no_value_type_in_help():
    import re

    result = runner.invoke(cli_main.app, ["prepare", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "<bool>" not in result.output
    assert re.search(r"--overwrite\s+Replace an existing --out", result.output)  # no value column for a flag
    assert re.search(r"--size\s+<int>", result.output)  # options with a value keep theirs
    eval_help = runner.invoke(cli_main.app, ["eval", "fid", "--help"], env={"COLUMNS": "200"}).output
    assert "<bool>" not in eval_help and "--cache" in eval_help


def test_piped_tables_are_not_cut():
    """`lapgen models list | cat`: every cell whole, however narrow the terminal the pipe started in."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run([sys.executable, "-m", "lapgen", "models", "list"], capture_output=True, text=True,
                         env=env, check=True)
    assert "clip-vit-l-14-336" in out.stdout and "…" not in out.stdout
    assert "hf:stable-diffusion-v1-5/stable-diffusion-v1-5" in out.stdout
    narrow = subprocess.run([sys.executable, "-m", "lapgen", "models", "list"], capture_output=True, text=True,
                            env={**env, "COLUMNS": "60"}, check=True)
    assert max(map(len, narrow.stdout.splitlines())) <= 60 < max(map(len, out.stdout.splitlines()))  # COLUMNS rules
