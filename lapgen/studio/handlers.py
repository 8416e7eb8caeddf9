"""The studio page's event handlers: adapters from widget values to the plain functions of
`lapgen.studio.prompting`, `authoring`, `uploads` and `generation`, returning widget updates.

They hold no widget, so `lapgen.studio.app` only lays the page out and wires these to it (the canvas size
and the `Studio` come in as keyword arguments). A LapgenError becomes a message on the page, never a crash.
Importing this module imports gradio (the `studio` extra).
"""

from __future__ import annotations

import sys
import traceback

import gradio as gr

from lapgen.errors import LapgenError
from lapgen.studio import authoring, prompting
from lapgen.studio.silhouettes import tip_position, tool_silhouette
from lapgen.studio.uploads import read_upload_image


def message(exc: BaseException) -> str:
    """One line for the page: a LapgenError's own line, else the exception's class and first line."""
    if isinstance(exc, LapgenError):
        return exc.one_line()
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__


def page_error(exc: BaseException) -> gr.Error:
    """A LapgenError (or an unexpected error, logged with its traceback) as a message on the page."""
    if not isinstance(exc, LapgenError):
        traceback.print_exception(exc, file=sys.stderr)
    return gr.Error(message(exc))


# ---------------------------------------------------------------------------------------------- action

def on_instrument(name):
    verbs = prompting.verb_choices(name)
    targets = prompting.target_choices(name, verbs[0]) if verbs else []
    return (
        gr.update(choices=verbs, value=verbs[0] if verbs else None),
        gr.update(choices=targets, value=targets[0] if targets else None),
    )


def on_verb(name, v):
    targets = prompting.target_choices(name, v)
    return gr.update(choices=targets, value=targets[0] if targets else None)


def refresh_prompt(selected, i, v, t, ph, text, fmt):
    """The prompt preview: the added triplets plus the one the dropdowns show, the phase, the spelling."""
    try:
        triplet_ids = sorted({*selected, *prompting.shown_triplet(i, v, t)})
        shown = prompting.compose_prompt(triplet_ids, ph, text, fmt or "paper")
    except LapgenError as exc:
        raise page_error(exc) from exc
    return shown.prompt, (f"**Warning:** {shown.warning}" if shown.warning else "")


def on_spelling(fmt, current):
    return gr.update(choices=prompting.phase_choices(fmt or "paper"), value=current)


def on_model(name):
    """A model whose training data says its phase spelling selects that spelling."""
    found = prompting.prompt_format_of(name)
    return gr.update() if found is None else gr.update(value=found)


def on_add_triplet(selected, i, v, t):
    try:
        updated = prompting.add_triplet(selected, i, v, t)
    except LapgenError as exc:
        raise page_error(exc) from exc
    return updated, gr.update(choices=[prompting.triplet_label(x) for x in updated], value=[])


def on_remove(selected, ticked):
    updated = prompting.remove_triplets(selected, ticked or [])
    return updated, gr.update(choices=[prompting.triplet_label(x) for x in updated], value=[])


# ----------------------------------------------------------------------------------------------- tools

def show(current, *, size: int):
    """(tracks, canvas image, summary) after a change of the tools."""
    return current, authoring.render_canvas(current, size), authoring.tracks_summary(current)


def on_silhouette(current, name, *, size: int):
    try:
        mask = tool_silhouette(name, size)
        return show(authoring.add_track(current, f"{name} silhouette", mask, size, tip=tip_position(name, size)),
                    size=size)
    except LapgenError as exc:
        raise page_error(exc) from exc


def on_upload_mask(current, upload, *, size: int):
    try:
        mask = read_upload_image(upload, mode="L") > 127
        return show(authoring.add_track(current, "uploaded mask", mask, size), size=size)
    except LapgenError as exc:
        raise page_error(exc) from exc


def on_frame(current, upload, name, *, studio, size: int):
    try:
        rgb = read_upload_image(upload, mode="RGB")
        mask = studio.mask_from_frame(rgb, name)
        return show(authoring.add_track(current, f"mask from frame ({name})", mask, size), size=size)
    except Exception as exc:
        raise page_error(exc) from exc


def on_click(current, rot, scl, where, evt: gr.SelectData, *, size: int):
    """A click on the canvas: a keyframe of the current tool, its tip (or centre) at the click."""
    x, y = authoring.display_to_canvas(evt.index[0], evt.index[1], size)
    try:
        return show(authoring.add_keyframe(current, x, y, rot, scl, where or "tip"), size=size)
    except LapgenError as exc:
        raise page_error(exc) from exc


def on_preview(current, src, upload, clip_name, n, rate, *, studio):
    try:
        return studio.preview(src, current, upload, clip_name, int(n), float(rate))
    except Exception as exc:
        raise page_error(exc) from exc
