"""The `lapgen` command line (Typer only; library code never imports this package)."""
