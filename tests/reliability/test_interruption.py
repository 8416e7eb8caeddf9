"""kill -9 in the middle of `lapgen prepare`, `lapgen finetune` (after a checkpoint) and `lapgen sample`; the
same command run again resumes (it skips the work already done, seen in its files and output) and ends with
the result of an uninterrupted run: the same bytes for prepare and sample, the same parameters for training.

The kill moment is found by polling the files the command writes (`harness.kill_when`), never by sleeping.
The killed run is a `python -m lapgen` subprocess; the re-run (a subprocess for prepare) and the
uninterrupted reference run the same CLI in-process (CliRunner) where importing torch and diffusers again
would dominate the test's time. All runs use the same number of torch threads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.reliability.harness import (
    assert_ok,
    compare_trees,
    files_by_inode,
    finetune_args,
    in_process_one_thread,
    kill_when,
    prepare_args,
    run_in_process,
    run_subprocess,
    sample_args,
)


def _pngs(folder: Path) -> int:
    return sum(1 for p in folder.glob("images/*/*.png") if ".tmp" not in p.name) if folder.is_dir() else 0


def test_prepare_killed_then_resumed(big_cholect50, prepare_reference, tmp_path):
    out = tmp_path / "frames"
    stage = tmp_path / "frames.partial"
    total = _pngs(prepare_reference)
    kill_when(prepare_args(big_cholect50, out), cwd=tmp_path, ready=lambda: _pngs(stage) >= 10)

    assert not out.exists(), "a killed prepare left --out behind"
    done = files_by_inode(stage)
    assert 10 <= len(done) < total, f"killed after {len(done)} of {total} frames"

    again = run_subprocess(prepare_args(big_cholect50, out), cwd=tmp_path)
    assert_ok(again)
    assert not stage.exists()
    after = files_by_inode(out)
    kept = [rel for rel, ino in done.items() if after.get(rel) == ino]
    assert sorted(kept) == sorted(done), (
        f"the resumed run rewrote {len(done) - len(kept)} of the {len(done)} frames the killed run had written"
    )
    compare_trees(out, prepare_reference)


# ------------------------------------------------------------------------------------------------- training


def _unet(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "unet" / "diffusion_pytorch_model.safetensors"))


@pytest.fixture(scope="module")
def finetune_reference(world, tmp_path_factory) -> Path:
    """An uninterrupted run of `finetune_args` (in-process, one torch thread)."""
    ref = tmp_path_factory.mktemp("finetune-ref") / "run"
    assert_ok(in_process_one_thread(finetune_args(world, ref)))
    return ref


def _same_training(out: Path, ref: Path, base: Path) -> None:
    log = [json.loads(x) for x in (out / "loss.jsonl").read_text().splitlines()]
    ref_log = [json.loads(x) for x in (ref / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9))
    # Bitwise equality, no tolerance: the same ops on the same numbers in the same order on one CPU thread,
    # and resume restores the weights, optimiser, scheduler, data order and the noise generator exactly.
    assert [r["loss"] for r in log] == [r["loss"] for r in ref_log]
    a, b = _unet(out), _unet(ref)
    assert a.keys() == b.keys()
    different = [k for k in a if not (a[k] == b[k]).all()]
    assert different == [], f"{len(different)} UNet tensors differ from the uninterrupted run"
    start = _unet(base)
    assert any(not (a[k] == start[k]).all() for k in a), "training did not move the weights"


def test_finetune_killed_after_a_checkpoint_then_resumed(world, finetune_reference, tmp_path, torch_threads):
    out = tmp_path / "run"
    stage = tmp_path / "run.partial"
    kill_when(
        finetune_args(world, out),
        cwd=tmp_path,
        ready=lambda: (stage / "checkpoint-2" / "lapgen_state_0.pt").exists(),
    )
    assert not out.exists()
    steps_before = len((stage / "loss.jsonl").read_text().splitlines())
    assert steps_before < 8, "the run finished its steps before the kill"

    again = run_in_process(finetune_args(world, out))
    assert_ok(again)
    resumed = re.search(r"resuming from \S*checkpoint-(\d+)", again.stderr)
    assert resumed and int(resumed.group(1)) >= 2, again.stderr
    _same_training(out, finetune_reference, world.tiny_sd)


class _Killed(BaseException):
    """Stands for SIGKILL inside the process: nothing catches it, nothing after it runs."""


def test_finetune_killed_while_saving_a_checkpoint(
    world, finetune_reference, tmp_path, monkeypatch, torch_threads
):
    """Death half-way through writing checkpoint-4 (accelerate's files written, lapgen's not): `--resume
    latest` must take the last complete checkpoint, not the torn one. (A SIGKILL cannot be aimed at this
    window reliably, so the death is injected at the same place.)"""
    from lapgen.models import checkpointing

    real = checkpointing.save_extra_state

    def dies_saving_step_4(folder, *args, **kwargs):
        if "checkpoint-4" in folder.name:
            raise _Killed
        return real(folder, *args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(checkpointing, "save_extra_state", dies_saving_step_4)
    with pytest.raises(_Killed):
        run_in_process(finetune_args(world, out))
    monkeypatch.setattr(checkpointing, "save_extra_state", real)
    stage = tmp_path / "run.partial"
    assert any("checkpoint-4" in p.name for p in stage.iterdir()), "the torn save left nothing to skip"

    again = run_in_process(finetune_args(world, out))
    assert_ok(again)
    assert re.search(r"resuming from \S*checkpoint-2\b", again.stderr), again.stderr
    assert not any("checkpoint-4" in p.name and p.name != "checkpoint-4" for p in out.iterdir())
    _same_training(out, finetune_reference, world.tiny_sd)


# ------------------------------------------------------------------------------------------------- sampling


def test_sample_killed_then_resumed(world, sample_reference, tmp_path, torch_threads):
    out = tmp_path / "gen"
    stage = tmp_path / "gen.partial"
    kill_when(sample_args(world, out), cwd=tmp_path, ready=lambda: len(list(stage.glob("images/*.png"))) >= 3)
    assert not out.exists()
    done = files_by_inode(stage, "images/*.png")
    assert 3 <= len(done) < 10

    again = run_in_process(sample_args(world, out))
    assert_ok(again)
    assert f"({10 - len(done)} generated now)" in again.stderr, again.stderr
    after = files_by_inode(out, "images/*.png")
    assert all(after[rel] == ino for rel, ino in done.items()), "finished images were generated again"
    compare_trees(out, sample_reference)
