"""The shared training core: exact resume, checkpoint limits, the latent cache, data order."""

from __future__ import annotations

import json
import re

import pytest
import torch

from lapgen.errors import LapgenError
from lapgen.models.finetune import FinetuneStage, finetune
from lapgen.models.training import TrainConfig, list_checkpoints

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Interrupt(KeyboardInterrupt):
    pass


def _config(frames_dir, tiny_sd_dir, out, **kw) -> TrainConfig:
    base = dict(data=str(frames_dir), out=str(out), base=str(tiny_sd_dir), max_steps=4, batch_size=2,
                learning_rate=1e-3, ema=True, ema_decay=0.9, snr_gamma=5.0, checkpointing_steps=2, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _unet_state(run):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(run / "unet").state_dict()


def test_resume_is_exact(frames_dir, tiny_sd_dir, tmp_path):
    """4 steps straight == 2 steps, interruption, `--resume latest`, 2 more steps (EMA, Min-SNR, mid-epoch)."""
    straight = tmp_path / "straight"
    finetune(_config(frames_dir, tiny_sd_dir, straight))

    resumed = tmp_path / "resumed"

    def stop_after_two(step, loss):
        if step == 2:
            raise Interrupt()

    with pytest.raises(Interrupt):
        finetune(_config(frames_dir, tiny_sd_dir, resumed), on_step_end=stop_after_two)
    partial = tmp_path / "resumed.partial"
    assert not resumed.exists() and [p.name for p in list_checkpoints(partial)] == ["checkpoint-2"]
    with pytest.raises(LapgenError, match="--resume latest to continue it"):  # never mixes two runs silently
        finetune(_config(frames_dir, tiny_sd_dir, resumed))
    result = finetune(_config(frames_dir, tiny_sd_dir, resumed, resume="latest"))
    assert result.steps == 4 and resumed.is_dir() and not partial.exists()

    a, b = _unet_state(straight), _unet_state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    log_a = [json.loads(x) for x in (straight / "loss.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (resumed / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_b] == [1, 2, 3, 4]
    assert [r["loss"] for r in log_a] == pytest.approx([r["loss"] for r in log_b], abs=1e-6)
    # the training moved the weights: the comparison above is not vacuous
    base = _unet_state(tiny_sd_dir)
    assert max(float((a[k] - base[k]).abs().max()) for k in a) > 1e-4


def test_resume_from_a_checkpoint_path_into_a_new_run(frames_dir, tiny_sd_dir, tmp_path):
    first = tmp_path / "first"
    finetune(_config(frames_dir, tiny_sd_dir, first, max_steps=2, ema=False, checkpointing_steps=1,
                     checkpoints_total_limit=1))
    assert [p.name for p in list_checkpoints(first)] == ["checkpoint-2"]
    more = finetune(_config(frames_dir, tiny_sd_dir, tmp_path / "more", max_steps=3, ema=False,
                            resume=str(first / "checkpoint-2")))
    assert more.steps == 3
    rows = [json.loads(x) for x in (tmp_path / "more" / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


def test_cache_gives_the_same_loss_as_no_cache(frames_dir, tiny_sd_dir, tmp_path):
    from lapgen.models.latent_cache import build_latent_cache, build_prompt_cache, make_collate

    stage = FinetuneStage(_config(frames_dir, tiny_sd_dir, tmp_path / "unused"))
    stage.load(torch.device("cpu"), torch.float32)
    collate = make_collate(stage.tokenizer)
    plain = collate([stage.dataset[i] for i in (3, 0)])
    loss_plain = stage.loss(plain, torch.Generator().manual_seed(7))

    moments, path, reused = build_latent_cache(stage.dataset, stage.vae, batch_size=3)
    prompts, ppath, preused = build_prompt_cache([r["text"] for r in stage.records], stage.tokenizer,
                                                 stage.text_encoder)
    assert not reused and path.is_file() and ppath.is_file() and moments.shape == (8, 8, 16, 16)
    stage.dataset.attach_cache(moments, prompts)
    cached = collate([stage.dataset[i] for i in (3, 0)])
    assert "pixel_values" not in cached and "input_ids" not in cached
    loss_cached = stage.loss(cached, torch.Generator().manual_seed(7))
    torch.testing.assert_close(loss_cached, loss_plain, rtol=1e-5, atol=1e-6)
    assert abs(stage.loss(cached, torch.Generator().manual_seed(8)).item() - loss_plain.item()) > 0

    # keyed by content: the same data and VAE reuse the file; a changed VAE does not
    assert build_latent_cache(stage.dataset, stage.vae)[2] is True
    with torch.no_grad():
        next(stage.vae.parameters()).add_(1e-3)
    _, other, reused = build_latent_cache(stage.dataset, stage.vae)
    assert other != path and reused is False


def test_cached_training_run_matches_uncached(frames_dir, tiny_sd_dir, tmp_path):
    """Same seeds, two steps: training from the cache gives the same losses as encoding on the fly."""
    plain = finetune(_config(frames_dir, tiny_sd_dir, tmp_path / "plain", max_steps=2, ema=False))
    cached = finetune(_config(frames_dir, tiny_sd_dir, tmp_path / "cached", max_steps=2, ema=False,
                              cache_latents=True))
    card = __import__("yaml").safe_load((tmp_path / "cached" / "lapgen.yaml").read_text())
    assert "latents" in card["training"]["latent_cache"] and "prompts" in card["training"]["latent_cache"]
    rows = [[json.loads(x)["loss"] for x in (tmp_path / r / "loss.jsonl").read_text().splitlines()]
            for r in ("plain", "cached")]
    assert rows[0] == pytest.approx(rows[1], rel=1e-4)
    assert plain.final_loss == pytest.approx(cached.final_loss, rel=1e-4)


def test_epoch_sampler_is_a_seeded_permutation():
    from lapgen.models.latent_cache import EpochSampler

    s = EpochSampler(10, seed=3)
    first = list(s)
    assert sorted(first) == list(range(10)) and list(s) == first
    s.use_epoch(1)
    assert list(s) != first and sorted(s) == list(range(10))


def test_paper_recipes_ship_in_the_package_and_are_valid_configs(tmp_path):
    from lapgen.models.train_config import shipped_recipes

    recipes = shipped_recipes()
    assert set(recipes) == {"paper-stage1-unet", "paper-stage1-unet-clip", "paper-controlnet", "animatediff-motion"}
    assert all(p.parent.name == "configs" and p.parent.parent.name == "lapgen" for p in recipes.values())
    for name in recipes:
        config = TrainConfig.from_recipe(name, overrides={"data": "d", "out": str(tmp_path / "o")})
        lr = 1e-4 if name == "animatediff-motion" else 1e-5  # AnimateDiff's motion-module rate; the paper's
        assert config.learning_rate == lr and config.lr_warmup_steps == 0 and config.resolution == 128
    assert TrainConfig.from_recipe("paper-stage1-unet-clip.yaml", overrides={"data": "d", "out": "o"}
                                   ).train_text_encoder is True


def test_library_recipes_get_the_cli_checks(tmp_path, monkeypatch):
    """TrainConfig.from_recipe is the one route: a library caller gets the CLI's one-line errors."""
    from lapgen.errors import LapgenError

    monkeypatch.chdir(tmp_path)  # a shipped recipe is named from any folder
    config = TrainConfig.from_recipe("paper-controlnet", overrides={"data": "d", "out": "o", "batch_size": 4},
                                     defaults={"batch_size": 99, "epochs": 7})
    assert config.batch_size == 4 and config.epochs == 100 and config.mixed_precision == "fp16"  # recipe > default
    bad = tmp_path / "bad.yaml"
    for text, message in (("batch_size: five\n", "recipe key batch_size must be int, got 'five'"),
                          ("learning_rat: 1.0\n", "unknown recipe keys: learning_rat"),
                          ("- a\n- b\n", "recipe must be a mapping"),
                          ("a: [\n", "recipe is not valid YAML")):
        bad.write_text(text)
        with pytest.raises(LapgenError, match=re.escape(message)):
            TrainConfig.from_recipe(bad, overrides={"data": "d", "out": "o"})
    with pytest.raises(LapgenError, match="not a shipped recipe.*paper-stage1-unet"):
        TrainConfig.from_recipe("paper-stage3", overrides={"data": "d", "out": "o"})
    with pytest.raises(LapgenError, match="--data is required"):
        TrainConfig.from_recipe("paper-stage1-unet", overrides={"out": "o"})
    with pytest.raises(LapgenError, match="--resolution 100 must be a positive multiple of 8"):
        TrainConfig.from_recipe(None, overrides={"data": "d", "out": "o", "resolution": 100})


def test_recipe_values_and_flags_win(frames_dir, tiny_sd_dir, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from lapgen.cli.main import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"base": str(tiny_sd_dir), "batch_size": 2, "max_steps": 1,
                                      "learning_rate": 1e-3, "seed": 5, "device": "cpu"}))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["finetune", "--config", str(recipe), "--data", str(frames_dir),
                                      "--out", str(out), "--lr", "2e-5"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "lapgen.yaml").read_text())["config"]
    assert config["learning_rate"] == 2e-5  # the flag wins
    assert config["batch_size"] == 2 and config["seed"] == 5 and config["max_steps"] == 1  # the recipe's
    assert config["epochs"] == 100  # untouched default
