"""Model loading: devices and dtypes, tiny pipelines through the registry, safe weights, offline errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from lapgen import registry
from lapgen.errors import LapgenError
from lapgen.models import loading
from lapgen.device import dtype_name, mixed_precision_for, resolve_device, resolve_dtype

# (inception-v3-clean is never downloaded: without a local file it fails the same way)
NEEDS_DOWNLOAD = {"sd15", "clip-vit-b-32", "clip-vit-l-14-336", "inception-v3", "inception-v3-clean", "rdv-cholect50",
                  "rife-v3", "i3d-kinetics400", "videomae-v2-g", "animatediff-v1-5-2"}
VIDEO_EXTRACTORS = {"i3d-kinetics400", "videomae-v2-g"}


@pytest.fixture
def own_home(tmp_path, monkeypatch):
    """A private $LAPGEN_HOME (for tests that register entries); tiny models come from session fixtures."""
    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _assert_one_line_offline(err: LapgenError, name: str) -> None:
    msg = err.one_line()
    assert "\n" not in str(err)
    assert f"'{name}'" in msg and f"lapgen models add {name} PATH" in msg


# -- device / dtype --------------------------------------------------------------------------------------

def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(LapgenError, match="invalid device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_gpu_is_a_one_line_error():
    with pytest.raises(LapgenError, match="no CUDA device"):
        resolve_device("cuda")


def test_resolve_dtype_on_cpu(capsys):
    cpu = torch.device("cpu")
    assert resolve_dtype("fp32", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype(torch.bfloat16, cpu) == torch.bfloat16
    assert resolve_dtype("fp16", cpu) == torch.float32  # no fp16 on CPU: fp32 with a notice
    assert "fp16 is not supported on CPU" in capsys.readouterr().err
    assert [dtype_name(x) for x in ("float16", "half", "bfloat16", "no")] == ["fp16", "fp16", "bf16", "fp32"]
    assert mixed_precision_for("fp16", "cpu") == "no" and mixed_precision_for("bf16", "cpu") == "bf16"
    with pytest.raises(LapgenError, match="unknown dtype"):
        resolve_dtype("int8", cpu)


# -- contract over every built-in ------------------------------------------------------------------------

@pytest.mark.parametrize("name", registry.builtin_names())
def test_every_builtin_loads_or_fails_in_one_line(name, monkeypatch, tmp_path):
    """Entries that need no download load; the others fail at once, naming the entry and the fix."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached Inception weights
    from lapgen.models.controlvideo.interpolators import load_interpolator

    entry = registry.resolve(name)
    loader = {"pipeline": loading.load_sd_pipeline, "controlnet": loading.load_controlnet,
              "segmenter": loading.load_segmenter, "recognizer": loading.load_recognizer,
              "interpolator": load_interpolator, "motion-adapter": loading.load_motion_adapter,
              "feature-extractor": (loading.load_clip if name.startswith("clip") else loading.load_video_extractor
                                    if name in VIDEO_EXTRACTORS else loading.load_inception),
              }[entry.kind]
    if name in NEEDS_DOWNLOAD:
        with pytest.raises(LapgenError) as err:
            loader(name, device="cpu")
        _assert_one_line_offline(err.value, name)
        return
    model = loader(name, device="cpu")
    assert model is not None
    if entry.kind == "segmenter":
        assert model.task == "segment"


# -- pipelines and ControlNets ---------------------------------------------------------------------------

def _image(pipe) -> np.ndarray:
    return pipe("hook dissect gallbladder in carlot-triangle-dissection", num_inference_steps=2,
                generator=torch.Generator("cpu").manual_seed(3), output_type="np").images


def test_tiny_sd_by_name_path_and_registered_name_agree(tiny_sd_dir, tiny_sd_pipeline, own_home):
    by_path = loading.load_sd_pipeline(str(tiny_sd_dir), device="cpu")
    assert by_path.safety_checker is None
    reference = _image(tiny_sd_pipeline)
    assert reference.shape == (1, 128, 128, 3)
    np.testing.assert_allclose(_image(by_path), reference, atol=1e-6)
    registry.register_artifact("stage1", "pipeline", tiny_sd_dir)
    default = loading.load_sd_pipeline(None, device="cpu")  # the last registered pipeline is the default
    a, b = default.unet.state_dict(), by_path.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_sd_builtin_materialises_once(own_home):
    pipe = loading.load_sd_pipeline("tiny-sd", device="cpu", dtype="bf16")
    assert pipe.unet.dtype == torch.bfloat16 and pipe.text_encoder.dtype == torch.bfloat16
    folder = loading.ensure_local("tiny-sd")
    assert (folder / "model_index.json").exists() and folder.is_relative_to(own_home)
    assert loading.ensure_local("tiny-sd") == folder


def test_controlnet_loading(tiny_controlnet_dir, own_home, tiny_sd_dir):
    from diffusers import ControlNetModel

    cn = loading.load_controlnet(str(tiny_controlnet_dir), device="cpu")
    assert isinstance(cn, ControlNetModel) and not cn.training
    ref = ControlNetModel.from_pretrained(tiny_controlnet_dir)
    assert all(torch.equal(a, b) for a, b in zip(cn.state_dict().values(), ref.state_dict().values()))
    with pytest.raises(LapgenError, match="no default ControlNet yet"):
        loading.load_controlnet(None)
    with pytest.raises(LapgenError, match="is a diffusion pipeline, not a ControlNet"):
        loading.load_controlnet(str(tiny_sd_dir))
    with pytest.raises(LapgenError, match="is a ControlNet, not a diffusion pipeline"):
        loading.load_sd_pipeline(str(tiny_controlnet_dir))


def test_not_a_pipeline_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "lapgen.yaml").write_text("kind: pipeline\n")
    with pytest.raises(LapgenError, match="no model_index.json"):
        loading.load_sd_pipeline(str(tmp_path / "x"))


def test_incomplete_pipeline_folder(tiny_sd_dir, tmp_path):
    """A copy without tokenizer/ is one line naming the folder, not an error deep inside transformers."""
    copy = tmp_path / "incomplete"
    shutil.copytree(tiny_sd_dir, copy)
    shutil.rmtree(copy / "tokenizer")
    with pytest.raises(LapgenError, match=r"has no tokenizer/ \(listed in model_index.json\)"):
        loading.load_sd_pipeline(str(copy), device="cpu")


def test_hub_sources_fail_offline_in_one_line():
    for source, name in (("sd15", "sd15"), ("hf:someorg/uncached-model", "hf:someorg/uncached-model")):
        with pytest.raises(LapgenError) as err:
            loading.load_sd_pipeline(source)
        assert "HF_HUB_OFFLINE" in err.value.one_line() and "hf download" in err.value.one_line()
        assert f"'{name}'" in err.value.one_line()


def test_hub_source_without_network_fails_in_one_line(monkeypatch):
    """HF_HUB_OFFLINE unset: the hub is tried, the (blocked) network fails, the error is still one line."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "1")
    with pytest.raises(LapgenError) as err:
        loading.load_controlnet("hf:someorg/uncached-controlnet", device="cpu")
    assert "download failed" in err.value.one_line()


# -- safe weights, CLIP and Inception --------------------------------------------------------------------

class _NotATensor:
    pass


def test_safe_state_dict_formats_and_refuses_pickled_objects(tmp_path):
    from safetensors.torch import save_file

    state = {"w": torch.arange(6.0).reshape(2, 3)}
    save_file(state, tmp_path / "a.safetensors")
    torch.save({"state_dict": {"module.w": state["w"]}}, tmp_path / "b.pth")
    torch.jit.script(torch.nn.Linear(3, 2)).save(str(tmp_path / "c.pt"))
    assert torch.equal(loading.safe_state_dict(tmp_path / "a.safetensors")["w"], state["w"])
    assert torch.equal(loading.safe_state_dict(tmp_path / "b.pth")["w"], state["w"])
    assert set(loading.safe_state_dict(tmp_path / "c.pt")) == {"weight", "bias"}
    torch.save({"w": _NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(LapgenError, match="weights_only"):
        loading.safe_state_dict(tmp_path / "evil.pth")


_TINY_CLIP = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_load_clip_from_local_safetensors(tmp_path, own_home):
    import open_clip
    from safetensors.torch import save_file

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "lapgen-test-loading-clip.json").write_text(json.dumps(_TINY_CLIP))
    open_clip.add_model_config(tmp_path / "cfg")
    torch.manual_seed(0)
    reference = open_clip.create_model("lapgen-test-loading-clip").eval()
    weights = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(weights, tmp_path / "tiny-clip.safetensors")
    registry.add_entry("tinyclip", str(tmp_path / "tiny-clip.safetensors"), kind="feature-extractor")
    model, preprocess = loading.load_clip("tinyclip", device="cpu", arch="lapgen-test-loading-clip")
    from PIL import Image

    x = preprocess(Image.fromarray(np.full((40, 50, 3), 120, np.uint8))).unsqueeze(0)
    assert x.shape == (1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(x), reference.encode_image(x))
    with pytest.raises(LapgenError, match="not an open_clip CLIP model"):
        loading.load_clip("tinyclip")  # a user entry needs its architecture
    with pytest.raises(LapgenError, match="is a tool segmenter, not a feature extractor"):
        loading.load_clip("yolov8n-seg")


def _random_inception_state() -> dict[str, torch.Tensor]:
    """torch-fidelity's InceptionV3 with random (seeded) weights, built without its download."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: None)
        mp.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    return {k: v.clone().contiguous() for k, v in net.state_dict().items()}


def test_load_inception_from_local_weights_via_builtin_override(tmp_path, own_home, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    state = _random_inception_state()
    torch.save(state, tmp_path / "weights-inception.pth")
    registry.add_entry("inception-v3", str(tmp_path / "weights-inception.pth"))
    net = loading.load_inception(device="cpu")
    assert isinstance(net, tfi.FeatureExtractorInceptionV3) and tfi.load_state_dict_from_url is not None
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = net(x)[0]
    assert feats.shape == (2, 2048)
    assert loading.weights_fingerprint("inception-v3").startswith("sha256:")


def test_inception_without_weights_fails_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(LapgenError) as err:
        loading.load_inception()
    _assert_one_line_offline(err.value, "inception-v3")
    assert "weights-inception-2015-12-05-6726825d.pth" in err.value.one_line()


def test_recognizer_without_checkpoint_names_the_official_files(own_home):
    # a private home: other tests train recognizers, and a trained run becomes the default of its kind
    with pytest.raises(LapgenError) as err:
        loading.load_recognizer()
    msg = err.value.one_line()
    assert "rendezvous_l8_cholect50" in msg and "s3.unistra.fr" in msg
    assert "lapgen models add rdv-cholect50" in msg


@pytest.mark.slow
def test_load_clip_vit_b_32_from_local_openai_layout(tmp_path, own_home):
    """The real ViT-B/32 architecture with random weights written as a user's local file."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    reference = open_clip.create_model("ViT-B-32-quickgelu").eval()
    weights = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(weights, tmp_path / "vit-b-32.safetensors")
    registry.add_entry("clip-vit-b-32", str(tmp_path / "vit-b-32.safetensors"))
    model, preprocess = loading.load_clip("clip-vit-b-32", device="cpu")
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(x), reference.encode_image(x))


def test_segmenter_sources(tmp_path, capsys):
    model = loading.load_segmenter("yolov8n-seg.yaml", device="cpu")  # an ultralytics config name
    assert model.task == "segment"
    assert "random weights" in capsys.readouterr().err
    model.save(str(tmp_path / "yolo-seg.pt"))
    again = loading.load_segmenter(str(tmp_path / "yolo-seg.pt"), device="cpu")
    a, b = model.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys()
    # ultralytics stores checkpoints in fp16
    assert all(torch.equal(a[k].half(), b[k].half()) for k in a if a[k].is_floating_point())
    assert loading.load_segmenter(registry.resolve("yolov8n-seg"), device="cpu").task == "segment"


def test_hub_failure_prints_only_lapgen_line(monkeypatch, capfd):
    """`--model sd15` offline: diffusers' own "Couldn't connect to the Hub" / "Will try to load from local
    cache" lines are held back, so lapgen's one line is all the user reads; the libraries' log levels come
    back afterwards."""
    import huggingface_hub.constants
    from diffusers.utils import constants as dconst
    from diffusers.utils import logging as dlog

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(dconst, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "1")
    before = dlog.get_verbosity()
    with pytest.raises(LapgenError) as err:
        loading.load_sd_pipeline("sd15", device="cpu")
    assert "model 'sd15'" in err.value.one_line() and "download failed" in err.value.one_line()
    printed = capfd.readouterr()
    assert "Couldn't connect" not in printed.err and "local cache" not in printed.err, printed.err
    assert dlog.get_verbosity() == before
