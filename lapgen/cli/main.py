"""The one `lapgen` Typer app: global options, the error handler and the command groups.

Each command module under `lapgen/cli/` defines `register(app)`, parses options, builds a config and calls
one library function. Command modules import torch, diffusers and ultralytics only inside command bodies,
so `lapgen --help` and `lapgen <command> --help` stay fast and light.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup, TyperOption

from lapgen import __version__
from lapgen.cli import demo, masks, models, prepare, sample, sample_video, segment, studio, synthetic, train, video
from lapgen.cli import eval as eval_group
from lapgen.errors import LapgenError

# Command modules, in the order their commands appear in `lapgen --help`. They are imported above, by name:
# a command module that is missing or fails to import stops `lapgen` with its traceback, never a command
# that silently disappears.
COMMAND_MODULES = (prepare, segment, train, sample, video, sample_video, masks, synthetic, eval_group, models, demo,
                   studio)

_state = {"debug": False}


# Typer >= 0.2x vendors click as `typer._click`; older versions use click itself. Find the classes it raises.
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_NO_ARGS_IS_HELP = getattr(sys.modules[_USAGE_ERROR.__module__], "NoArgsIsHelpError", ())


def _usage_error(exc) -> None:
    """A bad command line (unknown option, a value of the wrong type, a missing argument) as one line and
    exit code 2, like every other user error; `--help` still shows the full usage."""
    where = exc.ctx.command_path if exc.ctx is not None else "lapgen"
    message = " ".join(exc.format_message().split()).rstrip(".")
    typer.echo(f"lapgen: error: {where}: {message}; see '{where} --help'", err=True)
    raise typer.Exit(exc.exit_code)


class LapgenGroup(TyperGroup):
    """Top-level group: turns a `LapgenError` or a usage error into one line on stderr and exit code 2."""

    def list_commands(self, ctx: typer.Context) -> list[str]:  # keep registration order, not alphabetical
        return list(self.commands)

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _NO_ARGS_IS_HELP:
            raise
        except _USAGE_ERROR as exc:  # bad global options
            _usage_error(exc)

    def invoke(self, ctx: typer.Context):
        from lapgen import progress

        try:
            result = super().invoke(ctx)
            progress.flush_notices()  # held notices of a command that printed nothing else
            return result
        except _NO_ARGS_IS_HELP:
            raise
        except _USAGE_ERROR as exc:  # bad options of a command (parsed inside the group's invoke)
            progress.drop_notices()
            _usage_error(exc)
        except LapgenError as exc:
            if _state["debug"]:
                raise
            progress.drop_notices()  # a failed command prints its one error line only
            typer.echo(f"lapgen: error: {exc.one_line()}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            progress.drop_notices()
            typer.echo("lapgen: interrupted; re-run the same command to resume", err=True)
            ctx.exit(130)
        finally:
            progress.hold_notices(False)


app = typer.Typer(
    name="lapgen",
    cls=LapgenGroup,
    help="Generate and evaluate laparoscopic surgery images and videos with diffusion models "
    "(Iliash et al., 2024).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lapgen {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or notices."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    from lapgen import progress, registry

    _state["debug"] = debug
    progress.set_quiet(quiet)
    progress.hold_notices(True)  # until the command prints, succeeds or fails (LapgenGroup.invoke)
    registry.reset_announcements()  # every command names the defaults it falls back to


def _flag_display_type(self: TyperOption, ctx: typer.Context) -> str | None:
    """An on/off flag (`--overwrite`, `--cache/--no-cache`) takes no value, so its help shows no value type
    (typer >= 0.2x shows `<bool>` for it, as if it took one)."""
    if self.is_flag and self.metavar is None:
        return None
    return _TYPER_DISPLAY_TYPE(self, ctx)


_TYPER_DISPLAY_TYPE = getattr(TyperOption, "display_type_rich", None)
if _TYPER_DISPLAY_TYPE is not None:  # older typer versions show no value type for flags anyway
    TyperOption.display_type_rich = _flag_display_type

for _module in COMMAND_MODULES:
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="lapgen")


if __name__ == "__main__":
    main()
    sys.exit(0)
