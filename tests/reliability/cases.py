"""The malformed-input corpus: one row per case, across every command.

Each case builds its broken input inside its own folder `d` (copying from the session's valid `World`) and
returns the command line. The test runs it and checks the user-error contract (see `test_malformed_inputs`):
exit code 2, exactly one `lapgen: error:` line on stderr containing every string of `expect` (the problem
and, where there is one, the file), no traceback, and `d` byte-for-byte as it was before the command (no
output, no staging folder, inputs untouched; an output that existed before is unchanged).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tests.reliability.harness import World

CPU = ("--device", "cpu")
# A folder lapgen can never create, even as root: sysfs refuses mkdir (EPERM); non-root users lack W_OK.
UNWRITABLE = Path("/sys/lapgen-reliability-out")


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[World, Path], list]  # (world, case folder) -> argv after `lapgen`
    expect: tuple[str, ...]  # substrings of the one error line
    sub: bool = False  # run as a `python -m lapgen` subprocess (else CliRunner in-process)
    home: bool = False  # subprocess only: LAPGEN_HOME is `d/home` (the case may break its registry)
    # The problem is found while the work runs (a file's pixels, decoded only when its turn comes): the
    # resumable staging folder `<out>.partial` may stay (re-running after fixing the input resumes); `<out>`
    # itself must not exist and nothing else may change.
    staging: str | None = None


def copy(src: Path, dst: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    return dst


def truncate(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def edit_json(path: Path, edit: Callable[[object], object]) -> Path:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(edit(data)))
    return path


def edit_jsonl(path: Path, edit: Callable[[list[dict]], list]) -> Path:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    path.write_text("".join(json.dumps(r) + "\n" for r in edit(rows)))
    return path


def png(path: Path, size=(64, 64), mode="L", value=255) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode in ("L", "1") else (value,) * len(mode)).save(path)
    return path


def mask_square(path: Path, size=(128, 128)) -> Path:
    arr = np.zeros((size[1], size[0]), np.uint8)
    arr[size[1] // 4 : size[1] // 2, size[0] // 4 : size[0] // 2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "L").save(path)
    return path


def existing(path: Path, text: str = "keep me\n") -> Path:
    """An output that exists before the command (it must stay unchanged)."""
    if path.suffix:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    else:
        path.mkdir(parents=True)
        (path / "keep.txt").write_text(text)
    return path


# ----------------------------------------------------------------------------------------------- prepare


def prepare_corrupt_mp4(w: World, d: Path) -> list:
    c80 = copy(w.c80, d / "c80")
    (c80 / "videos" / "video03.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    return ["prepare", "--cholec80", c80, "--out", d / "out", "--size", 16, "--workers", 1]


def prepare_truncated_mp4(w: World, d: Path) -> list:
    c80 = copy(w.c80, d / "c80")
    truncate(c80 / "videos" / "video03.mp4", 0.6)  # the moov index sits at the end: lost
    return ["prepare", "--cholec80", c80, "--out", d / "out", "--size", 16, "--workers", 1]


def prepare_truncated_png(w: World, d: Path) -> list:
    t50 = copy(w.t50, d / "t50")
    truncate(t50 / "videos" / "VID08" / "000006.png", 0.3)
    return ["prepare", "--cholect50", t50, "--out", d / "out", "--size", 16, "--workers", 1]


def prepare_labels_not_json(w: World, d: Path) -> list:
    t50 = copy(w.t50, d / "t50")
    (t50 / "labels" / "VID08.json").write_text('{"video": 8, "annotations": {')
    return ["prepare", "--cholect50", t50, "--out", d / "out", "--size", 16]


def prepare_labels_wrong_schema(w: World, d: Path) -> list:
    t50 = copy(w.t50, d / "t50")
    edit_json(t50 / "labels" / "VID08.json", lambda data: {**data, "annotations": [[1, 2, 3]]})
    return ["prepare", "--cholect50", t50, "--out", d / "out", "--size", 16]


def prepare_phase_file_wrong_schema(w: World, d: Path) -> list:
    c80 = copy(w.c80, d / "c80")
    (c80 / "phase_annotations" / "video03-phase.txt").write_text("Frame\tPhase\n0\tPreparation\n1\tDancing\n")
    return ["prepare", "--cholec80", c80, "--out", d / "out", "--size", 16, "--workers", 1]


def prepare_missing_release(w: World, d: Path) -> list:
    return ["prepare", "--cholect50", d / "no-such-release", "--out", d / "out"]


def prepare_out_exists(w: World, d: Path) -> list:
    return ["prepare", "--cholect50", w.t50, "--out", existing(d / "out"), "--size", 16]


def prepare_out_unwritable(w: World, d: Path) -> list:
    return ["prepare", "--cholect50", w.t50, "--out", UNWRITABLE, "--size", 16, "--workers", 1]


def prepare_out_under_file(w: World, d: Path) -> list:
    (d / "afile").write_text("not a folder\n")
    return ["prepare", "--cholect50", w.t50, "--out", d / "afile" / "out", "--size", 16]


def prepare_bad_size_type(w: World, d: Path) -> list:
    return ["prepare", "--cholect50", w.t50, "--out", d / "out", "--size", "big"]


# ----------------------------------------------------------------------------------------------- segment


def convert_watershed_wrong_size(w: World, d: Path) -> list:
    seg = copy(w.seg8k, d / "seg8k")
    target = min(seg.rglob("*_watershed_mask.png"))
    Image.open(target).convert("RGB").resize((40, 30), Image.NEAREST).save(target)
    return ["segment", "convert", "--cholecseg8k", seg, "--out", d / "out"]


def convert_watershed_unknown_code(w: World, d: Path) -> list:
    seg = copy(w.seg8k, d / "seg8k")
    target = min(seg.rglob("*_watershed_mask.png"))
    arr = np.asarray(Image.open(target).convert("RGB")).copy()
    arr[10:14, 10:14] = 77  # not a CholecSeg8k class code
    Image.fromarray(arr).save(target)
    return ["segment", "convert", "--cholecseg8k", seg, "--out", d / "out"]


def convert_colour_mask_as_watershed(w: World, d: Path) -> list:
    seg = copy(w.seg8k, d / "seg8k")
    target = sorted(seg.rglob("*_watershed_mask.png"))[1]
    colour = target.with_name(target.name.replace("_watershed_mask", "_color_mask"))
    shutil.copy(colour, target)  # the colour mask (RGB, channels differ) where the watershed codes belong
    return ["segment", "convert", "--cholecseg8k", seg, "--out", d / "out"]


def convert_artnet_corrupt_mask(w: World, d: Path) -> list:
    art = copy(w.artnet, d / "artnet")
    target = min(art.rglob("*_Tool_Mask.png"))
    target.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return ["segment", "convert", "--artnet", art, "--out", d / "out"]


def convert_bad_classes(w: World, d: Path) -> list:
    return ["segment", "convert", "--cholecseg8k", w.seg8k, "--out", d / "out", "--classes", "per-organ"]


def train_data_yaml_wrong_schema(w: World, d: Path) -> list:
    yolo = copy(w.yolo, d / "yolo")
    (yolo / "data.yaml").write_text("path: .\ntrain: images/train\n")  # no val, no names
    return ["segment", "train", "--data", yolo, "--out", d / "out", "--epochs", 1, "--imgsz", 64, *CPU]


def train_unknown_base(w: World, d: Path) -> list:
    return ["segment", "train", "--data", w.yolo, "--out", d / "out", "--base", "yolov99-seg", *CPU]


def annotate_metadata_bad_line(w: World, d: Path) -> list:
    frames = copy(w.frames, d / "frames")
    with open(frames / "metadata.jsonl", "a") as fh:
        fh.write('{"file_name": "images/VID01/000099.png", "text": \n')
    return ["segment", "annotate", "--data", frames, "--out", d / "out", "--segmenter", "yolov8n-seg", *CPU]


def annotate_corrupt_segmenter(w: World, d: Path) -> list:
    weights = d / "broken-seg.pt"
    weights.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    return ["segment", "annotate", "--data", w.frames, "--out", d / "out", "--segmenter", weights, *CPU]


def predict_unknown_segmenter(w: World, d: Path) -> list:
    return ["segment", "predict", w.images["real"], "--out", d / "out", "--segmenter", "nosuch-seg", *CPU]


def predict_corrupt_image(w: World, d: Path) -> list:
    images = copy(w.images["real"], d / "images")
    truncate(images / "0003.png", 0.4)
    return ["segment", "predict", images, "--out", d / "out", "--segmenter", w.segmenter, "--imgsz", 64, *CPU]


def predict_not_an_image(w: World, d: Path) -> list:
    images = copy(w.images["real"], d / "images")
    (images / "0007.png").write_text("this is not an image\n")  # not even identifiable as a PNG
    return ["segment", "predict", images, "--out", d / "out", "--segmenter", w.segmenter, "--imgsz", 64, *CPU]


# ---------------------------------------------------------------------------------------------- training


def _train_args(command: str, w: World, data: Path, out: Path) -> list:
    base = w.tiny_sd
    return [
        command,
        "--data",
        data,
        "--out",
        out,
        "--base",
        base,
        "--resolution",
        64,
        "--batch-size",
        2,
        "--max-steps",
        1,
        *CPU,
    ]


def finetune_recipe_not_yaml(w: World, d: Path) -> list:
    recipe = d / "recipe.yaml"
    recipe.write_text("learning_rate: [1e-5\nbatch_size: 4\n")
    return [*_train_args("finetune", w, w.frames, d / "out"), "--config", recipe]


def finetune_recipe_unknown_key(w: World, d: Path) -> list:
    recipe = d / "recipe.yaml"
    recipe.write_text("learning_rate: 1.0e-5\nlearning_rat: 2.0e-5\n")
    return [*_train_args("finetune", w, w.frames, d / "out"), "--config", recipe]


def finetune_recipe_wrong_type(w: World, d: Path) -> list:
    recipe = d / "recipe.yaml"
    recipe.write_text("snr_gamma: five\n")  # a field not also given on the command line (flags win)
    return [*_train_args("finetune", w, w.frames, d / "out"), "--config", recipe]


def finetune_no_metadata(w: World, d: Path) -> list:
    frames = copy(w.frames, d / "frames")
    (frames / "metadata.jsonl").unlink()
    return _train_args("finetune", w, frames, d / "out")


def finetune_missing_image(w: World, d: Path) -> list:
    frames = copy(w.frames, d / "frames")
    (frames / "images" / "VID02" / "000001.png").unlink()
    return _train_args("finetune", w, frames, d / "out")


def finetune_unknown_base(w: World, d: Path) -> list:
    args = _train_args("finetune", w, w.frames, d / "out")
    args[args.index("--base") + 1] = "sd-99"
    return args


def finetune_bad_resolution(w: World, d: Path) -> list:
    args = _train_args("finetune", w, w.frames, d / "out")
    args[args.index("--resolution") + 1] = 60
    return args


def finetune_out_exists(w: World, d: Path) -> list:
    return _train_args("finetune", w, w.frames, existing(d / "run"))


def finetune_resume_not_a_checkpoint(w: World, d: Path) -> list:
    (d / "run" / "checkpoint-x").mkdir(parents=True)
    return [*_train_args("finetune", w, w.frames, d / "out"), "--resume", d / "run" / "checkpoint-x"]


def controlnet_no_masks(w: World, d: Path) -> list:
    return [*_train_args("train-controlnet", w, w.frames, d / "out")]


def controlnet_mask_wrong_size(w: World, d: Path) -> list:
    frames = copy(w.frames_masks, d / "frames")
    rec = json.loads((frames / "metadata.jsonl").read_text().splitlines()[0])
    mask = frames / rec["conditioning_image_file_name"]
    Image.open(mask).resize((40, 40), Image.NEAREST).save(mask)
    return [*_train_args("train-controlnet", w, frames, d / "out")]


def controlnet_mask_missing(w: World, d: Path) -> list:
    frames = copy(w.frames_masks, d / "frames")
    rec = json.loads((frames / "metadata.jsonl").read_text().splitlines()[4])
    (frames / rec["conditioning_image_file_name"]).unlink()
    return [*_train_args("train-controlnet", w, frames, d / "out")]


def controlnet_validation_mask_missing(w: World, d: Path) -> list:
    return [
        *_train_args("train-controlnet", w, w.frames_masks, d / "out"),
        "--validation-prompts",
        "grasper retract liver",
        "--validation-masks",
        d / "missing-mask.png",
    ]


# ---------------------------------------------------------------------------------------------- sampling


def _sample_args(w: World, out: Path) -> list:
    return ["sample", "--out", out, "--model", w.tiny_sd, "--n", 2, "--steps", 1, "--resolution", 64, *CPU]


def sample_zero_images(w: World, d: Path) -> list:
    args = _sample_args(w, d / "out") + ["--prompt", "grasper retract liver"]
    args[args.index("--n") + 1] = 0
    return args


def sample_unknown_model(w: World, d: Path) -> list:
    args = _sample_args(w, d / "out") + ["--prompt", "grasper retract liver"]
    args[args.index("--model") + 1] = "nosuch-model"
    return args


def sample_broken_model_folder(w: World, d: Path) -> list:
    model = copy(w.tiny_sd, d / "model")
    edit_json(model / "unet" / "config.json", lambda c: {**c, "block_out_channels": "wide"})
    args = _sample_args(w, d / "out") + ["--prompt", "grasper retract liver"]
    args[args.index("--model") + 1] = model
    return args


def sample_truncated_weights(w: World, d: Path) -> list:
    model = copy(w.tiny_sd, d / "model")
    truncate(model / "unet" / "diffusion_pytorch_model.safetensors", 0.5)
    args = _sample_args(w, d / "out") + ["--prompt", "grasper retract liver"]
    args[args.index("--model") + 1] = model
    return args


def sample_controlnet_without_masks(w: World, d: Path) -> list:
    return _sample_args(w, d / "out") + ["--controlnet", w.tiny_controlnet, "--prompts-from", w.frames]


def sample_mask_missing(w: World, d: Path) -> list:
    return _sample_args(w, d / "out") + [
        "--controlnet",
        w.tiny_controlnet,
        "--prompt",
        "grasper retract liver",
        "--mask",
        d / "nosuch.png",
    ]


def sample_corrupt_mask(w: World, d: Path) -> list:
    mask = d / "mask.png"
    mask.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return _sample_args(w, d / "out") + [
        "--controlnet",
        w.tiny_controlnet,
        "--prompt",
        "grasper retract liver",
        "--mask",
        mask,
    ]


def sample_empty_split(w: World, d: Path) -> list:
    return _sample_args(w, d / "out") + ["--prompts-from", w.frames, "--split", "val"]


# ------------------------------------------------------------------------------------------------- masks


def animate_missing_mask(w: World, d: Path) -> list:
    return [
        "masks",
        "animate",
        "--mask",
        d / "tool.png",
        "--path",
        "10,10;50,50",
        "--frames",
        4,
        "--out",
        d / "out",
    ]


def animate_bad_path(w: World, d: Path) -> list:
    tool = mask_square(d / "tool.png")
    return ["masks", "animate", "--mask", tool, "--path", "10,10;fifty", "--frames", 4, "--out", d / "out"]


def animate_empty_mask(w: World, d: Path) -> list:
    tool = png(d / "tool.png", (128, 128), "L", 0)  # no tool pixel at all
    return ["masks", "animate", "--mask", tool, "--path", "10,10;50,50", "--frames", 4, "--out", d / "out"]


def animate_bad_size(w: World, d: Path) -> list:
    tool = mask_square(d / "tool.png")
    return [
        "masks",
        "animate",
        "--mask",
        tool,
        "--path",
        "10,10;50,50",
        "--frames",
        4,
        "--size",
        "128by128",
        "--out",
        d / "out",
    ]


def from_video_corrupt(w: World, d: Path) -> list:
    video = copy(w.mask_video, d / "clip.mp4")
    truncate(video, 0.5)
    return ["masks", "from-video", video, "--out", d / "out", "--segmenter", "yolov8n-seg", *CPU]


def preview_empty_folder(w: World, d: Path) -> list:
    (d / "masks").mkdir()
    return ["masks", "preview", d / "masks", "--out", d / "preview.gif"]


def clips_missing_cholec80(w: World, d: Path) -> list:
    return [
        "masks",
        "clips",
        "--cholec80",
        d / "nowhere",
        "--cholect50",
        w.t50,
        "--out",
        d / "out",
        "--seconds",
        1,
        "--n",
        1,
    ]


# ------------------------------------------------------------------------------------------------- video


def _video_args(w: World, masks: Path, out: Path) -> list:
    return [
        "video",
        "--prompt",
        "grasper retract liver",
        "--masks",
        masks,
        "--out",
        out,
        "--model",
        w.tiny_sd,
        "--controlnet",
        w.tiny_controlnet,
        "--steps",
        2,
        "--resolution",
        64,
        *CPU,
    ]


def video_truncated_mask(w: World, d: Path) -> list:
    masks = copy(w.masks, d / "masks")
    truncate(masks / "000002.png", 0.5)
    return _video_args(w, masks, d / "clip.mp4")


def video_too_few_masks(w: World, d: Path) -> list:
    return _video_args(w, w.masks, d / "clip.mp4") + ["--frames", 20]


def video_corrupt_mask_video(w: World, d: Path) -> list:
    video = d / "masks.mp4"
    video.write_bytes(b"\x00\x00\x00\x20ftypisom" + b"\x17" * 3000)
    return _video_args(w, video, d / "clip.mp4")


def video_unknown_interpolator(w: World, d: Path) -> list:
    return _video_args(w, w.masks, d / "clip.mp4") + ["--interpolator", "film"]


def _clip_dataset(w: World, d: Path) -> Path:
    """A clip dataset (`prepare --clips`) of the world's Cholec80 release, 64 px, 8-frame clips."""
    from lapgen.data.prepare import PrepareConfig, prepare

    return prepare(PrepareConfig(out=d / "clips", cholec80=w.c80, size=64, workers=1, clips=True, clip_frames=8)).out


def prepare_clips_paper_split(w: World, d: Path) -> list:
    return ["prepare", "--clips", "--cholec80", w.c80, "--split", "paper", "--out", d / "clips", "--workers", 1]


def train_motion_mixed_clip_lengths(w: World, d: Path) -> list:
    clips = _clip_dataset(w, d)
    lines = (clips / "metadata.jsonl").read_text().splitlines()
    rec = json.loads(lines[-1])
    rec.update(num_frames=5, source_frames=rec["source_frames"][:5], labels=rec["labels"][:5])
    (clips / "metadata.jsonl").write_text("\n".join([*lines[:-1], json.dumps(rec)]) + "\n")
    return ["train-motion", "--data", clips, "--base", w.tiny_sd, "--out", d / "run", "--max-steps", 1,
            "--resolution", 64, *CPU]


def train_motion_adapter_layout(w: World, d: Path) -> list:
    from lapgen.models.motion import new_adapter

    wide = d / "wide-adapter"
    new_adapter({"block_out_channels": (8, 16), "layers_per_block": 2, "norm_num_groups": 1}, 32).save_pretrained(wide)
    return ["train-motion", "--data", _clip_dataset(w, d), "--base", w.tiny_sd, "--adapter-init", wide, "--out",
            d / "run", "--max-steps", 1, "--resolution", 64, *CPU]


def video_animatediff_beyond_context(w: World, d: Path) -> list:
    from tests.fixtures.motion import write_tiny_adapter

    adapter = write_tiny_adapter(d / "adapter", max_frames=4)
    return _video_args(w, w.masks, d / "clip.mp4") + ["--method", "animatediff", "--motion-adapter", adapter,
                                                       "--free-noise", "off"]


def video_animatediff_controlvideo_option(w: World, d: Path) -> list:
    from tests.fixtures.motion import write_tiny_adapter

    adapter = write_tiny_adapter(d / "adapter")
    return _video_args(w, w.masks, d / "clip.mp4") + ["--method", "animatediff", "--motion-adapter", adapter,
                                                       "--interpolator", "linear"]


def video_out_exists(w: World, d: Path) -> list:
    return _video_args(w, w.masks, existing(d / "clip.mp4"))


def video_out_not_mp4(w: World, d: Path) -> list:
    return _video_args(w, w.masks, d / "clip.avi")


# -------------------------------------------------------------------------------------------------- eval


def cmmd_corrupt_real_image(w: World, d: Path) -> list:
    real = copy(w.images["real"], d / "real")
    truncate(real / "0005.png", 0.3)  # the header still reads: found while extracting features
    name, weights = w.clip
    return ["eval", "cmmd", w.images["gen"], real, "--clip", name, "--weights", weights, "--no-cache", *CPU]


def fid_mixed_sizes(w: World, d: Path) -> list:
    gen = copy(w.images["gen"], d / "gen")
    Image.open(gen / "0001.png").resize((48, 48)).save(gen / "0001.png")
    return ["eval", "fid", gen, w.images["real"], "--no-cache", *CPU]


def fid_empty_set(w: World, d: Path) -> list:
    (d / "gen").mkdir()
    return ["eval", "fid", d / "gen", w.images["real"], "--no-cache", *CPU]


def kid_unknown_extractor(w: World, d: Path) -> list:
    return ["eval", "kid", w.images["gen"], w.images["real"], "--inception", "inception-v4", *CPU]


def clip_fid_corrupt_weights(w: World, d: Path) -> list:
    weights = d / "clip.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json header}")
    return ["eval", "clip-fid", w.images["gen"], w.images["real"], "--weights", weights, "--no-cache", *CPU]


def cmmd_unknown_clip(w: World, d: Path) -> list:
    return ["eval", "cmmd", w.images["gen"], w.images["real"], "--clip", "clip-vit-h-14", *CPU]


def fidelity_out_exists(w: World, d: Path) -> list:
    return ["eval", "fidelity", w.images["gen"], w.images["real"], "--out", existing(d / "result.json"), *CPU]


def fidelity_out_unwritable(w: World, d: Path) -> list:
    return ["eval", "fidelity", w.images["gen"], w.images["real"], "--out", UNWRITABLE / "result.json", *CPU]


def f1_no_conditioning(w: World, d: Path) -> list:
    return ["eval", "f1", w.frames, "--segmenter", "yolov8n-seg", "--boot", 0, *CPU]


def f1_mask_missing(w: World, d: Path) -> list:
    gen = copy(w.frames_masks, d / "gen")
    rec = json.loads((gen / "metadata.jsonl").read_text().splitlines()[2])
    (gen / rec["conditioning_image_file_name"]).unlink()
    return ["eval", "f1", gen, "--segmenter", w.segmenter, "--boot", 0, "--imgsz", 64, *CPU]


def f1_corrupt_mask(w: World, d: Path) -> list:
    gen = copy(w.frames_masks, d / "gen")
    rec = json.loads((gen / "metadata.jsonl").read_text().splitlines()[3])
    truncate(gen / rec["conditioning_image_file_name"], 0.5)
    return ["eval", "f1", gen, "--segmenter", w.segmenter, "--boot", 0, "--imgsz", 64, *CPU]


def map_no_triplets(w: World, d: Path) -> list:
    gen = copy(w.frames, d / "gen")
    edit_jsonl(
        gen / "metadata.jsonl", lambda rows: [{k: v for k, v in r.items() if k != "triplets"} for r in rows]
    )
    return ["eval", "map", gen, "--recognizer", "rdv-cholect50", "--boot", 0, *CPU]


def map_unknown_recognizer(w: World, d: Path) -> list:
    return ["eval", "map", w.frames, "--recognizer", "rdv-nope", "--boot", 0, *CPU]


def report_wrong_schema(w: World, d: Path) -> list:
    bad = d / "fid.json"
    bad.write_text(json.dumps({"metric": "fid", "value": "low"}))
    return ["eval", "report", bad, "--out", d / "report.md"]


def report_missing_input(w: World, d: Path) -> list:
    return ["eval", "report", d / "nosuch.json", "--out", d / "report.md"]


def report_out_exists(w: World, d: Path) -> list:
    result = d / "fid.json"
    result.write_text(json.dumps({"metric": "fid", "value": 12.5, "gen": "gen"}))
    return ["eval", "report", result, "--out", existing(d / "report.md")]


# ------------------------------------------------------------------------------------------------ models


def models_add_missing_path(w: World, d: Path) -> list:
    return ["models", "add", "my-model", d / "nowhere", "--kind", "pipeline"]


def models_add_unknown_kind(w: World, d: Path) -> list:
    return ["models", "add", "my-model", w.tiny_sd, "--kind", "vocoder"]


def models_add_not_a_model(w: World, d: Path) -> list:
    (d / "folder").mkdir()
    (d / "folder" / "notes.txt").write_text("hello\n")
    return ["models", "add", "my-model", d / "folder"]


def models_remove_unknown(w: World, d: Path) -> list:
    return ["models", "remove", "never-added"]


def models_show_unknown(w: World, d: Path) -> list:
    return ["models", "show", "sd-99"]


def models_show_corrupt_card(w: World, d: Path) -> list:
    model = copy(w.tiny_sd, d / "model")
    (model / "lapgen.yaml").write_text("kind: pipeline\n  name: [oops\n")
    return ["models", "show", model]


# ------------------------------------------------------------------------------------------------ studio


def models_registry_corrupt(w: World, d: Path) -> list:
    (d / "home").mkdir()
    (d / "home" / "registry.yaml").write_text("entries:\n  mine: {path: [unclosed\n")
    return ["models", "add", "mine", w.tiny_sd]


def studio_unknown_model(w: World, d: Path) -> list:
    return ["studio", "--model", "nosuch-model", "--port", 0]


def studio_missing_clips(w: World, d: Path) -> list:
    return ["studio", "--clips", d / "no-clips", "--port", 0]


def studio_bad_port(w: World, d: Path) -> list:
    return ["studio", "--port", 70000]


CASES: list[Case] = [
    # prepare
    Case("prepare-corrupt-mp4", prepare_corrupt_mp4, ("video03.mp4", "corrupt"), sub=True),
    Case("prepare-truncated-mp4", prepare_truncated_mp4, ("video03.mp4",), sub=True),
    Case("prepare-truncated-png", prepare_truncated_png, ("000006.png", "truncated"), staging="out"),
    Case("prepare-labels-not-json", prepare_labels_not_json, ("VID08.json", "JSON")),
    Case("prepare-labels-wrong-schema", prepare_labels_wrong_schema, ("VID08.json",)),
    Case(
        "prepare-phase-file-wrong-schema", prepare_phase_file_wrong_schema, ("video03-phase.txt", "Dancing")
    ),
    Case("prepare-missing-release", prepare_missing_release, ("no-such-release", "not found"), sub=True),
    Case("prepare-out-exists", prepare_out_exists, ("out", "already exists")),
    Case("prepare-out-unwritable", prepare_out_unwritable, (str(UNWRITABLE),), sub=True),
    Case("prepare-out-under-file", prepare_out_under_file, ("afile", "not writable")),
    Case("prepare-size-not-a-number", prepare_bad_size_type, ("--size", "valid integer"), sub=True),
    # segment
    Case("convert-watershed-wrong-size", convert_watershed_wrong_size, ("watershed_mask.png", "40x30")),
    Case(
        "convert-watershed-unknown-code",
        convert_watershed_unknown_code,
        ("watershed_mask.png", "77"),
        staging="out",
    ),
    Case(
        "convert-colour-mask-as-watershed",
        convert_colour_mask_as_watershed,
        ("watershed_mask.png", "colour"),
        staging="out",
    ),
    Case("convert-artnet-corrupt-mask", convert_artnet_corrupt_mask, ("_Tool_Mask.png",), staging="out"),
    Case("convert-unknown-classes", convert_bad_classes, ("per-organ",), sub=True),
    Case("train-data-yaml-wrong-schema", train_data_yaml_wrong_schema, ("data.yaml",)),
    Case("train-unknown-base", train_unknown_base, ("yolov99-seg",)),
    Case("annotate-metadata-bad-line", annotate_metadata_bad_line, ("metadata.jsonl", "line 13")),
    Case("annotate-corrupt-segmenter", annotate_corrupt_segmenter, ("broken-seg.pt",)),
    Case("predict-unknown-segmenter", predict_unknown_segmenter, ("nosuch-seg",)),
    Case("predict-corrupt-image", predict_corrupt_image, ("0003.png",), staging="out"),
    Case(
        "predict-not-an-image", predict_not_an_image, ("0007.png", "cannot identify"), sub=True, staging="out"
    ),
    # training
    Case("finetune-recipe-not-yaml", finetune_recipe_not_yaml, ("recipe.yaml", "YAML"), sub=True),
    Case("finetune-recipe-unknown-key", finetune_recipe_unknown_key, ("recipe.yaml", "learning_rat")),
    Case("finetune-recipe-wrong-type", finetune_recipe_wrong_type, ("recipe.yaml", "snr_gamma")),
    Case("finetune-no-metadata", finetune_no_metadata, ("metadata.jsonl",)),
    Case("finetune-missing-image", finetune_missing_image, ("000001.png",)),
    Case("finetune-unknown-base", finetune_unknown_base, ("sd-99",)),
    Case("finetune-resolution-not-multiple-of-8", finetune_bad_resolution, ("--resolution 60",)),
    Case("finetune-out-exists", finetune_out_exists, ("run", "already exists")),
    Case("finetune-resume-not-a-checkpoint", finetune_resume_not_a_checkpoint, ("checkpoint-x",)),
    Case("controlnet-dataset-without-masks", controlnet_no_masks, ("conditioning_image_file_name",)),
    Case("controlnet-mask-wrong-size", controlnet_mask_wrong_size, ("000000.png", "40x40")),
    Case("controlnet-mask-file-missing", controlnet_mask_missing, ("masks/VID01/000004.png",)),
    Case("controlnet-validation-mask-missing", controlnet_validation_mask_missing, ("missing-mask.png",)),
    Case("train-motion-mixed-clip-lengths", train_motion_mixed_clip_lengths,
         ("metadata.jsonl", "mixed lengths (5, 8 frames"), sub=True),
    Case("train-motion-adapter-layout", train_motion_adapter_layout, ("wide-adapter", "does not fit")),
    # sampling
    Case("sample-zero-images", sample_zero_images, ("--n",)),
    Case("sample-unknown-model", sample_unknown_model, ("nosuch-model",), sub=True),
    Case("sample-broken-model-config", sample_broken_model_folder, ("model", "could not be loaded")),
    Case("sample-truncated-weights", sample_truncated_weights, ("diffusion_pytorch_model.safetensors",)),
    Case(
        "sample-controlnet-without-masks", sample_controlnet_without_masks, ("conditioning_image_file_name",)
    ),
    Case("sample-mask-missing", sample_mask_missing, ("nosuch.png", "not found")),
    Case("sample-corrupt-mask", sample_corrupt_mask, ("mask.png",)),
    Case("sample-empty-split", sample_empty_split, ("val",)),
    # masks
    Case("animate-missing-mask", animate_missing_mask, ("tool.png", "not found"), sub=True),
    Case("animate-bad-path", animate_bad_path, ("fifty",)),
    Case("animate-empty-mask", animate_empty_mask, ("tool.png",)),
    Case("animate-bad-size", animate_bad_size, ("128by128",)),
    Case("from-video-truncated", from_video_corrupt, ("clip.mp4",)),
    Case("preview-empty-folder", preview_empty_folder, ("masks",)),
    Case("clips-missing-cholec80", clips_missing_cholec80, ("nowhere",)),
    # video
    Case("video-truncated-mask-png", video_truncated_mask, ("000002.png",)),
    Case("video-fewer-masks-than-frames", video_too_few_masks, ("20 frames", "masks")),
    Case("video-corrupt-mask-video", video_corrupt_mask_video, ("masks.mp4",)),
    Case("video-unknown-interpolator", video_unknown_interpolator, ("film",)),
    Case("video-out-exists", video_out_exists, ("clip.mp4", "already exists")),
    Case("video-out-not-mp4", video_out_not_mp4, ("clip.avi", ".mp4")),
    Case("video-animatediff-beyond-context", video_animatediff_beyond_context,
         ("6 frames exceed the 4 frames", "adapter"), sub=True),
    Case("video-animatediff-controlvideo-option", video_animatediff_controlvideo_option, ("--interpolator",)),
    Case("prepare-clips-paper-split", prepare_clips_paper_split, ("--split paper", "video-disjoint")),
    # eval
    Case("cmmd-corrupt-real-image", cmmd_corrupt_real_image, ("0005.png",)),
    Case("fid-mixed-image-sizes", fid_mixed_sizes, ("0001.png", "48x48")),
    Case("fid-empty-set", fid_empty_set, ("gen",)),
    Case("kid-unknown-extractor", kid_unknown_extractor, ("inception-v4",)),
    Case("clip-fid-corrupt-weights", clip_fid_corrupt_weights, ("clip.safetensors",)),
    Case("cmmd-unknown-clip", cmmd_unknown_clip, ("clip-vit-h-14",)),
    Case("fidelity-out-exists", fidelity_out_exists, ("result.json", "already exists")),
    Case("fidelity-out-unwritable", fidelity_out_unwritable, ("result.json",)),
    Case("f1-no-conditioning-masks", f1_no_conditioning, ("conditioning_image_file_name",)),
    Case("f1-mask-file-missing", f1_mask_missing, ("000002.png",)),
    Case("f1-corrupt-mask", f1_corrupt_mask, ("000003.png",)),
    Case("map-no-triplets", map_no_triplets, ("triplets",)),
    Case("map-unknown-recognizer", map_unknown_recognizer, ("rdv-nope",)),
    Case("report-wrong-schema", report_wrong_schema, ("fid.json",), sub=True),
    Case("report-missing-input", report_missing_input, ("nosuch.json",)),
    Case("report-out-exists", report_out_exists, ("report.md", "already exists")),
    # models
    Case("models-add-missing-path", models_add_missing_path, ("nowhere",), sub=True),
    Case("models-add-unknown-kind", models_add_unknown_kind, ("vocoder",)),
    Case("models-add-not-a-model", models_add_not_a_model, ("folder",)),
    Case("models-remove-unknown", models_remove_unknown, ("never-added",)),
    Case("models-show-unknown", models_show_unknown, ("sd-99",)),
    Case("models-registry-corrupt", models_registry_corrupt, ("registry.yaml", "YAML"), sub=True, home=True),
    Case("models-show-corrupt-card", models_show_corrupt_card, ("lapgen.yaml",)),
    # studio
    Case("studio-unknown-model", studio_unknown_model, ("nosuch-model",), sub=True),
    Case("studio-missing-clips", studio_missing_clips, ("no-clips",)),
    Case("studio-port-out-of-range", studio_bad_port, ("70000",)),
]
