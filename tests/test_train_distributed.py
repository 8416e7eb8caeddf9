"""Two processes on CPU (torchrun, gloo): training and sampling split the work and give the same result as
one process. torchrun rather than `accelerate launch --cpu`, which starts a single process on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lapgen.models.sampling import SampleConfig, sample_images


def _torchrun(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LAPGEN_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lapgen", "--quiet", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


@pytest.mark.slow
def test_two_process_training_and_sampling(frames_dir, tiny_sd_dir, tmp_path):
    run = tmp_path / "run"
    done = _torchrun(["finetune", "--data", str(frames_dir), "--base", str(tiny_sd_dir), "--out", str(run),
                      "--name", "ddp", "--max-steps", "2", "--batch-size", "2", "--checkpointing-steps", "1",
                      "--device", "cpu", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    card = __import__("yaml").safe_load((run / "lapgen.yaml").read_text())
    assert card["training"]["processes"] == 2 and card["training"]["steps"] == 2
    # 8 records, 2 ranks x batch 2: 2 optimiser steps per epoch; each rank checkpoints its own noise state
    assert {p.name for p in (run / "checkpoint-2").glob("lapgen_state_*.pt")} == {"lapgen_state_0.pt",
                                                                                  "lapgen_state_1.pt"}
    assert len((run / "loss.jsonl").read_text().splitlines()) == 2

    # torchrun's own parser takes `--n` for an abbreviation of its options: the alias avoids that
    gen = tmp_path / "gen"
    done = _torchrun(["sample", "--model", str(run), "--prompts-from", str(frames_dir), "--num-images", "5", "--steps", "2",
                      "--batch-size", "2", "--device", "cpu", "--out", str(gen)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(x) for x in (gen / "metadata.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(5))
    # the same images as one process (rank shares [0, 1, 2] and [3, 4] vs one share of 5)
    one = sample_images(SampleConfig(out=str(tmp_path / "one"), model=str(run), prompts_from=str(frames_dir),
                                     n=5, steps=2, batch_size=2, device="cpu"))
    assert one.images == 5
    for i in range(5):
        a = np.asarray(Image.open(gen / f"images/{i:05d}.png"), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "one" / f"images/{i:05d}.png"), dtype=np.int16)
        assert np.abs(a - b).max() <= 2
