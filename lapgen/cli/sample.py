"""`lapgen sample`: generate an evaluation set (PNGs + metadata.jsonl) from a pipeline and optional ControlNet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

_HELP = ("Generate an evaluation set: prompts (and masks, with --controlnet) drawn from a dataset split, or one "
         "--prompt; one seed per image index; re-runs skip finished images; works under `accelerate launch`.")


def register(app: typer.Typer) -> None:
    @app.command("sample", help=_HELP)
    def sample_cmd(
        out: Path = typer.Option(..., "--out", help="Folder of the generated set."),
        model: Optional[str] = typer.Option(None, "--model", help="Pipeline (default: the last trained one)."),
        controlnet: Optional[str] = typer.Option(None, "--controlnet", help="ControlNet (masks from the data)."),
        prompts_from: Optional[Path] = typer.Option(None, "--prompts-from", help="Frames dataset to draw prompts "
                                                    "(and masks) from."),
        split: str = typer.Option("test", "--split", help="Split of --prompts-from."),
        prompt: Optional[str] = typer.Option(None, "--prompt", help="One prompt for every image."),
        mask: Optional[Path] = typer.Option(None, "--mask", help="With --prompt and --controlnet: the mask PNG."),
        n: int = typer.Option(10_000, "--n", "--num-images",
                             help="Number of images (paper: 10,000). Under torchrun use --num-images."),
        steps: int = typer.Option(100, "--steps", help="Denoising steps (paper: 100)."),
        guidance: float = typer.Option(3.0, "--guidance", help="Classifier-free guidance scale (paper: 3)."),
        seed: int = typer.Option(0, "--seed", help="Image i uses seed + i."),
        batch_size: int = typer.Option(8, "--batch-size", help="Images per pipeline call, per process."),
        resolution: Optional[int] = typer.Option(None, "--resolution", help="px (default: the model's training "
                                                 "resolution)."),
        device: str = typer.Option("auto", "--device", help="auto|cpu|cuda."),
        dtype: str = typer.Option("fp32", "--dtype", help="fp32|fp16|bf16 (fp16 falls back to fp32 on CPU)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    ) -> None:
        from lapgen.models.sampling import SampleConfig, sample_images
        from lapgen.progress import notice

        config = SampleConfig(out=str(out), model=model, controlnet=controlnet,
                              prompts_from=str(prompts_from) if prompts_from else None, split=split, prompt=prompt,
                              mask=str(mask) if mask else None, n=n, steps=steps, guidance=guidance, seed=seed,
                              batch_size=batch_size, resolution=resolution, device=device, dtype=dtype,
                              overwrite=overwrite)
        result = sample_images(config)
        if as_json:
            typer.echo(json.dumps({"out": str(result.out), "images": result.images, "generated": result.generated}))
        else:
            notice(f"wrote {result.images} images to {result.out} ({result.generated} generated now)")
