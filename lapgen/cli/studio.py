"""`lapgen studio`: serve the interactive generation page on this machine (Gradio, optional extra)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

_HELP = (
    "Open the interactive page: compose a CholecT50 action, place tools on a canvas, generate a video. "
    "Serves on 127.0.0.1 only unless --host says otherwise; needs the studio extra "
    '(in the lapgen checkout: pip install -e ".\\[studio]").'
)


def register(app: typer.Typer) -> None:
    @app.command("studio", help=_HELP)
    def studio_cmd(
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
        port: int = typer.Option(7860, "--port", help="Port (0 = a free one)."),
        model: str | None = typer.Option(None, "--model", help="Stage-1 pipeline preselected on the page."),
        controlnet: str | None = typer.Option(None, "--controlnet", help="Stage-2 ControlNet preselected."),
        motion_adapter: str | None = typer.Option(
            None, "--motion-adapter", help="Motion adapter preselected for the AnimateDiff method."
        ),
        clips: Path | None = typer.Option(  # noqa: B008
            None, "--clips", help="Folder written by `lapgen masks clips` to pick real mask clips from."
        ),
        runs: Path | None = typer.Option(  # noqa: B008
            None, "--runs", help="Where generations are written (default: $LAPGEN_HOME/studio)."
        ),
        device: str = typer.Option("auto", "--device", help="auto|cpu|cuda."),
        dtype: str = typer.Option("fp32", "--dtype", help="fp32|fp16|bf16."),
        max_frames: int = typer.Option(250, "--max-frames", help="Largest frame count the page allows."),
    ) -> None:
        from lapgen.errors import LapgenError
        from lapgen.outputs import lapgen_home
        from lapgen.progress import notice, warn
        from lapgen.registry import resolve
        from lapgen.studio import require_gradio

        require_gradio()
        for name, kind in ((model, "pipeline"), (controlnet, "controlnet"), (motion_adapter, "motion-adapter")):
            if name is not None:
                resolve(name, kind)  # unknown names fail in one line before the server starts
        if clips is not None and not clips.is_dir():
            raise LapgenError(
                "--clips folder does not exist", path=clips, hint="run `lapgen masks clips` first"
            )
        if not 0 <= port <= 65535:
            raise LapgenError(f"--port {port} outside 0..65535")
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            warn(f"serving on {host}: anyone who can reach this address can use the page and your GPU")

        from lapgen.studio.app import launch
        from lapgen.studio.generation import Studio, StudioConfig

        config = StudioConfig(
            runs=runs or lapgen_home() / "studio",
            model=model,
            controlnet=controlnet,
            motion_adapter=motion_adapter,
            clips=clips,
            device=device,
            dtype=dtype,
            max_frames=max_frames,
        )
        notice(f"lapgen studio: generations go to {config.runs}; press Ctrl+C to stop")
        launch(Studio(config), host=host, port=port or None, block=True, quiet=False)
