"""`lapgen demo`: run the whole mission on synthetic data with tiny models (docs/quickstart.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

_HELP = (
    "Run the whole mission offline on a CPU in minutes: synthetic Cholec data -> prepare -> segment -> "
    "finetune -> train-controlnet -> sample -> masks animate -> video -> eval -> report, with tiny models. "
    "Prints every step's lapgen command; re-running resumes; the trained models become the registry "
    "defaults (so `lapgen studio` opens with them)."
)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def register(app: typer.Typer) -> None:
    @app.command("demo", help=_HELP)
    def demo_cmd(
        out: Path = typer.Option(
            Path("lapgen-demo"),
            "--out",
            help="Demo folder (created; resumed if it holds a demo with the same settings).",
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the data, the models and every random draw."),
        quick: bool = typer.Option(
            False,
            "--quick",
            help="A much smaller run (about a minute; for tests and a first look). Its numbers are noisy.",
        ),
        motion: bool = typer.Option(
            False,
            "--motion",
            help="Also train a tiny AnimateDiff motion module on the synthetic Cholec80 clips and generate the "
            "video with it beside ControlVideo, and compare the two methods on the real clips (a few minutes more).",
        ),
        force: bool = typer.Option(
            False, "--force", help="Delete the previous demo in --out and start over."
        ),
        no_defaults: bool = typer.Option(
            False,
            "--no-defaults",
            help="Register the demo's models but do not make them the registry defaults.",
        ),
        device: str = typer.Option("auto", "--device", help="auto|cpu|cuda."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    ) -> None:
        from lapgen.demo import DemoConfig, run_demo
        from lapgen.demo.summary import control_lines, summary_lines, video_lines
        from lapgen.progress import is_quiet, stderr, stdout

        def on_event(i: int, n: int, step, commands: list[str], event: str) -> None:
            if is_quiet():
                return
            if event == "skip":
                stderr.print(f"[dim][{i}/{n}] {step.title}: done before, skipped[/dim]", highlight=False)
            elif event == "start":
                if stderr.is_terminal:
                    stderr.rule(f"[bold][{i}/{n}] {step.title}", align="left")
                else:  # a pipe or a file: a rule would be as wide as the console's pipe width
                    stderr.print(f"── [{i}/{n}] {step.title}", highlight=False, markup=False)
                for line in commands:
                    stderr.print(
                        f"[cyan]$ {line}[/cyan]" if line.startswith("lapgen") else f"[dim]{line}[/dim]",
                        highlight=False,
                        soft_wrap=True,
                    )

        result = run_demo(
            DemoConfig(
                out=out, seed=seed, quick=quick, force=force, device=device, set_defaults=not no_defaults,
                motion=motion,
            ),
            on_event=on_event,
        )
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "out": str(result.out),
                        "video": str(result.video),
                        "side_by_side": str(result.side_by_side),
                        "gif": str(result.gif),
                        "strip": str(result.strip),
                        "animatediff": str(result.animatediff) if result.animatediff else None,
                        "report": str(result.report),
                        "seconds": round(result.seconds, 1),
                        "timings": {k: round(v, 1) for k, v in result.timings.items()},
                        "skipped": result.skipped,
                        "summary": result.summary,
                    },
                    default=str,
                )
            )
            return
        from rich.table import Table

        table = Table(title="trained vs untrained (lower FID/KID/CLIP-FID/CMMD, higher mAP/F1 is better)")
        for col in ("stage", "metric", "trained", "untrained", "better?"):
            table.add_column(col)
        for s in result.summary["stages"]:
            for r in s["rows"]:
                mark = {True: "[green]trained[/green]", False: "[red]untrained[/red]", None: "-"}[r["better"]]
                table.add_row(s["stage"], r["title"], _fmt(r["trained"]), _fmt(r["untrained"]), mark)
        stdout.print(table)
        for line in summary_lines(result.summary):
            stdout.print(line, highlight=False)
        for line in control_lines(result.summary) + video_lines(result.facts):
            stdout.print(line, highlight=False, markup=False)
        stdout.print(
            f"\nvideo:         {result.video}\nmask | video:  {result.side_by_side}\n"
            f"frame strip:   {result.strip}\n"
            + (f"AnimateDiff:   {result.animatediff}\nits strip:     {result.animatediff_strip}\n"
               if result.animatediff else "")
            + f"report:        {result.report}\n"
            f"took {result.seconds:.0f} s"
            + (f" ({len(result.skipped)} steps done before)" if result.skipped else ""),
            highlight=False,
        )
        if not no_defaults:
            stdout.print(
                "the demo's models are now the defaults: `lapgen studio` opens with demo-sd and "
                "demo-controlnet",
                highlight=False,
            )
