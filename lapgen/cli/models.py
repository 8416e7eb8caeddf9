"""`lapgen models list|show|add|remove|use`: the checkpoint registry from the command line.

None of these commands imports torch: they read `$LAPGEN_HOME/registry.yaml`, the built-in table and the
provenance cards of registered folders.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from lapgen.registry import KINDS


def _entry_dict(entry, defaults: dict[str, str | None]) -> dict:
    return {
        "name": entry.name,
        "kind": entry.kind,
        "source": entry.source,
        "path": None if entry.path is None else str(entry.path),
        "present": entry.present(),
        "builtin": entry.builtin,
        "user": entry.user,
        "default": defaults.get(entry.kind) == entry.name,
        "description": entry.description,
    }


def _defaults() -> dict[str, str | None]:
    from lapgen.registry import default_for

    return {kind: default_for(kind) for kind in KINDS}


def list_models(
    kind: Optional[str] = typer.Option(None, "--kind", "-k", help=f"Only this kind: {', '.join(KINDS)}."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """List built-in and registered models: name, kind, source, whether the weights are on this machine."""
    from rich.table import Table

    from lapgen.progress import stdout
    from lapgen.registry import check_kind, list_entries

    if kind is not None:
        check_kind(kind)
    defaults = _defaults()
    rows = [_entry_dict(e, defaults) for e in list_entries(kind)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="lapgen models", show_lines=False)
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("source", overflow="fold")
    table.add_column("local", no_wrap=True)
    table.add_column("description", overflow="fold", ratio=1)
    for r in rows:
        name = r["name"] + (" (default)" if r["default"] else "")
        local = "yes" if r["present"] else "no"
        table.add_row(name, r["kind"], r["path"] or r["source"], local, r["description"])
    stdout.print(table)


def show(
    name: str = typer.Argument(..., help="Registry name, local path or hf:ORG/NAME."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """Show one model: where its weights come from, and its provenance card."""
    import yaml

    from lapgen.registry import resolve

    entry = resolve(name)
    info = _entry_dict(entry, _defaults())
    info["card"] = entry.card
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    card = info.pop("card")
    typer.echo(yaml.safe_dump(info, sort_keys=False, allow_unicode=True).rstrip())
    if card:
        typer.echo("card:")
        text = yaml.safe_dump(card, sort_keys=False, allow_unicode=True).rstrip()
        typer.echo("  " + text.replace("\n", "\n  "))
    else:
        typer.echo("card: none (not an artefact written by lapgen)")


def add(
    name: str = typer.Argument(..., help="Name to register (a built-in name points it at local weights)."),
    source: str = typer.Argument(..., help="Local file/folder or hf:ORG/NAME."),
    kind: Optional[str] = typer.Option(None, "--kind", "-k",
                                       help=f"One of {', '.join(KINDS)} (guessed for folders)."),
    description: Optional[str] = typer.Option(None, "--description", "-d", help="One-line description."),
    use: bool = typer.Option(False, "--use", help="Also make it the default of its kind."),
) -> None:
    """Register a local weights file/folder or a hub id under NAME."""
    from lapgen.progress import notice
    from lapgen.registry import add_entry, set_default

    entry = add_entry(name, source, kind=kind, description=description)
    if use:
        set_default(entry.name)
    notice(f"registered {entry.name} ({entry.kind}) -> {entry.weights_location()}")


def remove(
    name: str = typer.Argument(..., help="A user entry added with `models add` or trained by lapgen."),
) -> None:
    """Remove a user entry (weights on disk are left alone; a built-in name reverts to its own source)."""
    from lapgen.progress import notice
    from lapgen.registry import remove_entry

    remove_entry(name)
    notice(f"removed {name} from the registry")


def use(name: str = typer.Argument(..., help="Registered name to make the default of its kind.")) -> None:
    """Make NAME the default model of its kind (used when a command gets no --model/--controlnet/...)."""
    from lapgen.progress import notice
    from lapgen.registry import set_default

    entry = set_default(name)
    notice(f"{entry.name} is now the default {entry.kind}")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The checkpoint registry: built-in and trained models, defaults, local weights.",
                        no_args_is_help=True)
    group.command("list")(list_models)
    group.command("show")(show)
    group.command("add")(add)
    group.command("remove")(remove)
    group.command("use")(use)
    app.add_typer(group, name="models")
