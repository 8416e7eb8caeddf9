"""lapgen's reliability suite (issue 9): malformed inputs, interruption, determinism.

Run it with `python -m pytest tests/reliability` (part of the default suite; `-m slow` adds nothing here).

- `test_malformed_inputs.py`: the corpus in `cases.py`, one pytest param per case id, covering every
  command. Each case breaks a copy of a valid input (corrupt/truncated MP4 and PNG, wrong JSON/YAML
  schemas, missing files, wrong image and mask sizes, unknown registry names and extractors, bad option
  values, unwritable or existing outputs, ...) and runs the real CLI, `python -m lapgen` in a subprocess for
  a representative subset and Typer's CliRunner for the rest. Checked: exit code 2; exactly one line on
  stderr, `lapgen: error: ...`, naming the problem and the file; no traceback; the case folder (inputs,
  `--out` and its siblings) and the registry byte-for-byte unchanged. Where the problem can only be found
  while the work runs (pixels decoded in turn), the resumable staging folder `<out>.partial` may remain;
  `<out>` never exists.
"""
