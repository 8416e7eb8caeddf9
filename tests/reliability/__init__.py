"""lapgen's reliability suite: malformed inputs, interruption and resume, determinism.

Run it with `python -m pytest tests/reliability` (it is part of the default suite; nothing in it is marked
`slow`). It needs no GPU, no network and no downloaded weights: inputs come from `lapgen.data.synthetic`
and the fixtures in `tests/fixtures/`, models are the tiny random ones (`tiny-sd`, `tiny-controlnet`, a
yolov8n-seg built from its config, a tiny CLIP). About 1.5 CPU-minutes; 2-3 minutes of wall time on a
shared 2-core machine.

`test_malformed_inputs.py` - the corpus in `cases.py`, one pytest param per case id, over every command
(prepare, segment convert/train/annotate/predict, finetune, train-controlnet, sample, masks animate/
from-video/preview/clips, video, eval fid/kid/clip-fid/cmmd/fidelity/f1/map/report, models add/remove/show,
studio). Each case breaks a copy of a valid input (corrupt and truncated MP4/PNG, wrong JSON/YAML schemas,
missing files, wrong image and mask sizes or modes, unknown registry names and extractors, bad option
values, unwritable or already existing outputs, ...) and runs the real CLI: `python -m lapgen` in a
subprocess for a representative subset (`sub=True`), Typer's CliRunner for the rest. Checked: exit code 2;
exactly one line on stderr, `lapgen: error: ...`, containing the case's expected strings (the problem and
the file); no traceback; the case folder (inputs, `--out` and its siblings, the working directory) and the
registry byte-for-byte unchanged. Where the problem can only be found while the work runs (pixels decoded
in turn), the resumable staging folder `<out>.partial` may remain (`staging=`); `<out>` never exists.
Adding a case: write a builder `(world, case_folder) -> argv` and a `Case` row.

`test_interruption.py` - SIGKILL of a `python -m lapgen` subprocess during `prepare`, during `finetune`
after a checkpoint was written, and during `sample`; the kill moment is found by polling the files the
command writes (`harness.kill_when`), never by a sleep. The same command run again must resume (finished
frames and images keep their inodes, i.e. were not redone; training says "resuming from checkpoint-N") and
end with what an uninterrupted run gives: identical files for prepare and sample, bitwise identical losses
and UNet weights for training (no tolerance: one CPU thread, same ops in the same order, exact resume of
optimiser, scheduler, data order and noise generator). A death half-way through saving a checkpoint (injected
in-process: SIGKILL cannot be aimed at that window reliably) must resume from the last complete checkpoint.

`test_determinism.py` - `prepare`, `sample` and `video` run twice into two folders with the same seed give
byte-identical files on CPU. Only the provenance cards (`lapgen.yaml`, `<video>.lapgen.yaml`) are compared
field-wise without `created` (a timestamp) and `command` (the command line), with each run's own output
folder path written as `<out>`; every other file (PNGs, metadata.jsonl, MP4, GIF) must be identical bytes.

Every run uses one torch thread (`harness.THREADS`): float results depend on the thread count.
"""
