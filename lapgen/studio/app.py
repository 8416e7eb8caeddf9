"""The studio page (Gradio Blocks): layout and event wiring only, and `launch`.

The handlers live in `lapgen.studio.handlers`: thin adapters from widget values to the plain functions of
`lapgen.studio.prompting`, `authoring`, `uploads` and `generation` (tested without a browser); a LapgenError
becomes a message on the page, never a crash. Importing this module imports gradio (the `studio` extra).
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from a local tool

import gradio as gr

from lapgen.data import vocab
from lapgen.errors import LapgenError
from lapgen.studio import authoring, handlers, prompting
from lapgen.studio.generation import (
    LONG_MODES,
    METHODS,
    GenerationRequest,
    Studio,
    clip_choices,
    model_choices,
)
from lapgen.studio.handlers import message as _message
from lapgen.studio.silhouettes import SILHOUETTES
from lapgen.studio.uploads import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

SOURCE_LABELS = {
    "authored": "tools placed on the canvas",
    "video": "uploaded mask video",
    "clip": "real clip (lapgen masks clips)",
}
# System fonts only: the default theme would fetch web fonts, and the studio must work offline.
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
)
CSS = "#canvas img {cursor: crosshair;} #status {min-height: 1.5em;}"


def build_app(studio: Studio) -> gr.Blocks:
    """The Blocks app of one studio server (queue: one generation at a time)."""
    cfg = studio.config
    size = cfg.resolution
    models, default_model = model_choices("pipeline")
    controlnets, default_controlnet = model_choices("controlnet")
    adapters, default_adapter = model_choices("motion-adapter")
    segmenters, default_segmenter = model_choices("segmenter")
    first_instrument = vocab.INSTRUMENTS[0]
    first_verbs = prompting.verb_choices(first_instrument)
    first_triplet = prompting.shown_triplet(
        first_instrument, first_verbs[0], prompting.target_choices(first_instrument, first_verbs[0])[0]
    )
    first_format = prompting.prompt_format_of(default_model) or "paper"

    with gr.Blocks(title="lapgen studio") as demo:
        triplets = gr.State([])
        tracks = gr.State([])
        history = gr.State([])
        gr.Markdown(
            "# lapgen studio\nSay what surgical action happens and where the tools go; get a video "
            "(ControlVideo over your Stage-1 model and Stage-2 ControlNet, or AnimateDiff with a motion "
            "module). Every result shows the `lapgen` commands that reproduce it."
        )
        with gr.Row():
            with gr.Column(scale=1):
                gr.Markdown("## Model")
                model = gr.Dropdown(
                    models, value=cfg.model or default_model, label="Stage-1 pipeline", elem_id="model"
                )
                controlnet = gr.Dropdown(
                    controlnets,
                    value=cfg.controlnet or default_controlnet,
                    label="Stage-2 ControlNet",
                    elem_id="controlnet",
                )
                gr.Markdown("## Action")
                instrument = gr.Dropdown(
                    prompting.instrument_choices(),
                    value=first_instrument,
                    label="Instrument",
                    elem_id="instrument",
                )
                verb = gr.Dropdown(first_verbs, value=first_verbs[0], label="Verb", elem_id="verb")
                target = gr.Dropdown(
                    prompting.target_choices(first_instrument, first_verbs[0]),
                    value=prompting.target_choices(first_instrument, first_verbs[0])[0],
                    label="Target",
                    elem_id="target",
                )
                add_triplet = gr.Button("Add triplet", elem_id="add-triplet")
                chosen = gr.CheckboxGroup(
                    [], label="Triplets in the prompt (tick to remove)", elem_id="triplets"
                )
                remove = gr.Button("Remove ticked", size="sm")
                phase = gr.Dropdown(
                    prompting.phase_choices(first_format), value=prompting.DEFAULT_PHASE, label="Phase",
                    elem_id="phase",
                )
                spelling = gr.Radio(
                    [("carlot-… (the dataset's spelling; lapgen prepare's default)", "paper"),
                     ("calot-… (a dataset prepared with --normalize-phase-names)", "paper-calot")],
                    value=first_format,
                    label="Phase spelling in the prompt: as in the chosen model's training prompts",
                    elem_id="prompt-format",
                )
                override = gr.Textbox(
                    label="Free-text prompt (overrides the composed one)", elem_id="override"
                )
                preview = gr.Textbox(
                    prompting.compose_prompt(first_triplet, prompting.DEFAULT_PHASE, "", first_format).prompt,
                    label="Prompt (the paper's template): the triplets added and the one shown above",
                    interactive=False,
                    elem_id="prompt-preview",
                )
                warning = gr.Markdown("", elem_id="prompt-warning")
            with gr.Column(scale=1):
                gr.Markdown("## Tools")
                with gr.Tab("Silhouette"):
                    silhouette = gr.Dropdown(
                        list(SILHOUETTES), value=SILHOUETTES[0], label="Built-in tool", elem_id="silhouette"
                    )
                    add_silhouette = gr.Button("Add tool", elem_id="add-silhouette")
                with gr.Tab("Upload mask"):
                    mask_upload = gr.File(
                        label="Binary mask image", file_types=list(IMAGE_EXTENSIONS), elem_id="mask-upload"
                    )
                    add_upload = gr.Button("Add uploaded mask")
                with gr.Tab("From a frame"):
                    frame_upload = gr.File(label="Real frame (RGB image)", file_types=list(IMAGE_EXTENSIONS))
                    segmenter = gr.Dropdown(segmenters, value=default_segmenter, label="Segmenter")
                    add_frame = gr.Button("Extract tool mask")
                gr.Markdown(
                    "Click the canvas to place a keyframe of the current tool (the rotation and "
                    "scale below apply to the next click)."
                )
                anchor = gr.Radio(
                    [("its tip (a mask without a border entry: its centre)", "tip"), ("its centre", "centre")],
                    value="tip", label="A click places the tool's", elem_id="anchor",
                )
                canvas = gr.Image(
                    authoring.render_canvas([], size),
                    label="Canvas",
                    interactive=False,
                    elem_id="canvas",
                    buttons=[],
                    height=authoring.DISPLAY_SIZE,
                )
                with gr.Row():
                    rotation = gr.Slider(-180, 180, value=0, step=5, label="Rotation (deg)")
                    scale = gr.Slider(0.25, 3, value=1, step=0.05, label="Scale")
                with gr.Row():
                    undo = gr.Button("Undo", size="sm")
                    clear = gr.Button("Clear tools", size="sm")
                summary = gr.Markdown(authoring.tracks_summary([]), elem_id="tools-summary")
                source = gr.Radio(
                    [(v, k) for k, v in SOURCE_LABELS.items()],
                    value="authored",
                    label="Masks from",
                    elem_id="mask-source",
                )
                mask_video = gr.File(
                    label="Mask video (for 'uploaded mask video')", file_types=list(VIDEO_EXTENSIONS)
                )
                clip = gr.Dropdown(clip_choices(cfg.clips), label="Real clip", elem_id="clip")
                with gr.Row():
                    frames = gr.Slider(1, cfg.max_frames, value=16, step=1, label="Frames", elem_id="frames")
                    fps = gr.Slider(1, 30, value=8, step=1, label="fps", elem_id="fps")
                preview_masks = gr.Button("Preview masks", elem_id="preview-masks")
                mask_preview = gr.Image(
                    label="Mask sequence preview",
                    type="filepath",
                    interactive=False,
                    elem_id="mask-preview",
                    height=192,
                )
            with gr.Column(scale=1):
                gr.Markdown("## Generate")
                steps = gr.Slider(1, cfg.max_steps, value=20, step=1, label="Steps", elem_id="steps")
                guidance = gr.Slider(1, 10, value=3, step=0.5, label="Guidance")
                seed = gr.Number(0, precision=0, label="Seed")
                method = gr.Radio(
                    [("ControlVideo (training-free, the paper)", METHODS[0]),
                     ("AnimateDiff (a learned motion module)", METHODS[1])],
                    value="controlvideo",
                    label="Method",
                    elem_id="method",
                )
                motion_adapter = gr.Dropdown(
                    adapters,
                    value=cfg.motion_adapter or default_adapter,
                    label="Motion adapter (AnimateDiff)",
                    elem_id="motion-adapter",
                )
                long = gr.Radio(list(LONG_MODES), value="auto", label="Long-video (hierarchical) mode, ControlVideo")
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
                status = gr.Markdown("", elem_id="status")
                video = gr.Video(label="Result", interactive=False, elem_id="result-video", loop=True)
                side = gr.Video(label="Mask | video", interactive=False, elem_id="side-by-side", loop=True)
                downloads = gr.File(
                    label="Downloads (mp4, gif, frames, card)",
                    file_count="multiple",
                    interactive=False,
                    elem_id="downloads",
                )
                commands = gr.Code(
                    label="Equivalent CLI commands",
                    language="shell",
                    interactive=False,
                    elem_id="commands",
                    wrap_lines=True,
                )
                card = gr.Code(
                    label="Provenance card", language="yaml", interactive=False, elem_id="card", max_lines=18
                )
                gallery = gr.Gallery(label="This session's generations", columns=3, elem_id="gallery")

        # ------------------------------------------------------------ action
        prompt_inputs = [triplets, instrument, verb, target, phase, override, spelling]
        refresh_prompt, on_verb = handlers.refresh_prompt, handlers.on_verb
        instrument.change(handlers.on_instrument, instrument, [verb, target], queue=False).then(
            refresh_prompt, prompt_inputs, [preview, warning], queue=False
        )
        verb.change(on_verb, [instrument, verb], target, queue=False).then(
            refresh_prompt, prompt_inputs, [preview, warning], queue=False
        )
        target.change(refresh_prompt, prompt_inputs, [preview, warning], queue=False)
        model.change(handlers.on_model, model, spelling, queue=False)
        spelling.change(handlers.on_spelling, [spelling, phase], phase, queue=False).then(
            refresh_prompt, prompt_inputs, [preview, warning], queue=False
        )
        add_triplet.click(
            handlers.on_add_triplet, [triplets, instrument, verb, target], [triplets, chosen], queue=False
        ).then(refresh_prompt, prompt_inputs, [preview, warning], queue=False)
        remove.click(handlers.on_remove, [triplets, chosen], [triplets, chosen], queue=False).then(
            refresh_prompt, prompt_inputs, [preview, warning], queue=False
        )
        phase.change(refresh_prompt, prompt_inputs, [preview, warning], queue=False)
        override.change(refresh_prompt, prompt_inputs, [preview, warning], queue=False)

        # ------------------------------------------------------------ tools
        tool_outputs = [tracks, canvas, summary]

        def show(current):
            return handlers.show(current, size=size)

        def on_silhouette(current, name):
            return handlers.on_silhouette(current, name, size=size)

        def on_upload_mask(current, upload):
            return handlers.on_upload_mask(current, upload, size=size)

        def on_frame(current, upload, name):
            return handlers.on_frame(current, upload, name, studio=studio, size=size)

        def on_click(current, rot, scl, where, evt: gr.SelectData):  # gradio passes the click by this annotation
            return handlers.on_click(current, rot, scl, where, evt, size=size)

        add_silhouette.click(on_silhouette, [tracks, silhouette], tool_outputs, queue=False)
        add_upload.click(on_upload_mask, [tracks, mask_upload], tool_outputs, queue=False)
        add_frame.click(
            on_frame,
            [tracks, frame_upload, segmenter],
            tool_outputs,
            concurrency_id="gpu",
            concurrency_limit=1,
        )
        canvas.select(on_click, [tracks, rotation, scale, anchor], tool_outputs, queue=False)
        undo.click(lambda current: show(authoring.undo_keyframe(current)), tracks, tool_outputs, queue=False)
        clear.click(lambda: show([]), None, tool_outputs, queue=False)

        def on_preview(current, src, upload, clip_name, n, rate):
            return handlers.on_preview(current, src, upload, clip_name, n, rate, studio=studio)

        preview_masks.click(
            on_preview,
            [tracks, source, mask_video, clip, frames, fps],
            mask_preview,
            concurrency_id="preview",
            concurrency_limit=1,
        )

        # ------------------------------------------------------------ generate
        def on_generate(  # Gradio injects the progress tracker through the default below
            prompt, m, c, src, current, upload, clip_name, n, rate, s, g, sd, lm, how, ad, past,
            progress=gr.Progress(),  # noqa: B008
        ):
            request = GenerationRequest(
                prompt=prompt,
                model=m,
                controlnet=c,
                source=src,
                frames=int(n),
                fps=float(rate),
                steps=int(s),
                guidance=float(g),
                seed=int(sd or 0),
                long=lm,
                method=how,
                motion_adapter=ad,
            )
            progress(0, desc="loading models")
            try:
                result = studio.generate(
                    request,
                    tracks=current,
                    mask_video=upload,
                    clip=clip_name,
                    on_step=lambda i, total: progress((i, total), desc="denoising"),
                )
            except Exception as exc:  # noqa: BLE001 - any failure is shown; the server stays usable
                gr.Warning(_message(exc))
                if not isinstance(exc, LapgenError):
                    traceback.print_exception(exc, file=sys.stderr)
                return (f"**Generation failed:** {_message(exc)}",) + (gr.skip(),) * 7
            past = [*past, (str(result.thumbnail), f"{len(past) + 1}: {result.prompt}")]
            return (
                f"**Done:** `{result.video.name}` in `{result.run_dir}`",
                str(result.video),
                str(result.side_by_side),
                [str(p) for p in result.downloads()],
                "\n".join(result.commands),
                result.card_text(),
                past,
                past,
            )

        generate.click(
            on_generate,
            [
                preview,
                model,
                controlnet,
                source,
                tracks,
                mask_video,
                clip,
                frames,
                fps,
                steps,
                guidance,
                seed,
                long,
                method,
                motion_adapter,
                history,
            ],
            [status, video, side, downloads, commands, card, gallery, history],
            concurrency_id="gpu",
            concurrency_limit=1,
        )
    return demo


def launch(
    studio: Studio,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    block: bool = True,
    max_file_size: str = "20mb",
    quiet: bool = False,
) -> tuple[gr.Blocks, str]:
    """Serve the page on `host:port` (no public share link, ever); returns the app and its local URL."""
    demo = build_app(studio)
    demo.queue(default_concurrency_limit=1, max_size=16)
    runs = Path(studio.config.runs)
    runs.mkdir(parents=True, exist_ok=True)
    allowed = [str(runs.resolve())]
    if studio.config.clips is not None:
        allowed.append(str(Path(studio.config.clips).resolve()))
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        prevent_thread_lock=True,
        quiet=True,
        show_error=False,
        allowed_paths=allowed,
        max_file_size=max_file_size,
        ssr_mode=False,
        mcp_server=False,
        inbrowser=False,
        theme=THEME,
        css=CSS,
        footer_links=[],
    )
    if not quiet:
        from lapgen.progress import notice

        notice(f"lapgen studio is serving on {url} (no public link)")
    if block:
        try:
            demo.block_thread()
        finally:
            demo.close()
    return demo, url
