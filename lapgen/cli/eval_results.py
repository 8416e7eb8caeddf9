"""Publishing an `lapgen eval` result, shared by `lapgen/cli/eval.py` and `lapgen/cli/eval_map.py`: the
`--out` check before any work, the JSON file with its card, and the `--json` print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def publish(payload: Any, results: list[dict[str, Any]], out: Path | None, as_json: bool,
            **card_fields: Any) -> bool:
    """Write `payload` as JSON to `out` (atomically, with an `eval-result` card holding `card_fields`), record
    `results` in the cards of the models that made the sets, and print the JSON when `as_json`.
    Returns whether it printed (else the command prints its human summary)."""
    from lapgen.metrics.evaluate import save_result
    from lapgen.progress import notice
    from lapgen.registry import record_metrics

    text = json.dumps(payload, indent=1)
    updated = save_result(out, payload, results, **card_fields) if out is not None else record_metrics(results)
    if updated:
        notice(f"recorded in the card of {', '.join(updated)} (lapgen models show NAME)")
    if as_json:
        typer.echo(text)
    return as_json


def check_out(out: Path | None, overwrite: bool) -> None:
    """Fail before any work when `--out` exists (without --overwrite) or cannot be written."""
    from lapgen.errors import LapgenError
    from lapgen.outputs import check_writable_parent

    if out is None:
        return
    if out.exists() and not overwrite:
        raise LapgenError("output already exists", path=out, hint="pass --overwrite or choose another --out")
    check_writable_parent(out)
