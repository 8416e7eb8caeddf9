"""The Rendezvous model: official state_dict layout, forward, checkpoints, preprocessing, training steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lapgen.errors import LapgenError
from lapgen.models.recognition import (
    RecognitionDataset, Rendezvous, RendezvousConfig, eval_transform, infer_config, label_matrix, load_rendezvous,
    parse_size, save_rendezvous,
)
from lapgen.models.recognition.train import (
    RendezvousLoss, TrainRecognizerConfig, lr_factor, make_optimizer, train_step,
)

LAYOUT = json.loads((Path(__file__).parent / "data" / "rdv_state_dict_layout.json").read_text())


def _shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_state_dict_matches_official_layout(norm):
    model = Rendezvous(RendezvousConfig(use_ln=norm == "layernorm"))  # 256x448 -> 8x14 maps
    assert _shapes(model) == LAYOUT[norm]


def test_forward_shapes_and_sigmoid_scores():
    torch.manual_seed(0)
    model = Rendezvous(RendezvousConfig(image_size=(64, 96))).eval()
    with torch.no_grad():
        (cam_i, li), (cam_v, lv), (cam_t, lt), livt = model(torch.randn(2, 3, 64, 96))
    h, w = model.config.feature_size()
    assert (h, w) == (2, 3)
    assert cam_i.shape == (2, 6, h, w) and cam_v.shape == (2, 10, h, w) and cam_t.shape == (2, 15, h, w)
    assert li.shape == (2, 6) and lv.shape == (2, 10) and lt.shape == (2, 15) and livt.shape == (2, 100)
    assert torch.allclose(li, cam_i.amax(dim=(2, 3)))  # WSL logits = global max pool of the CAMs
    assert torch.isfinite(livt).all()


def test_feature_size_rules():
    assert RendezvousConfig().feature_size() == (8, 14)
    assert RendezvousConfig(hr_output=True).feature_size() == (32, 56)
    assert RendezvousConfig(image_size=(128, 128)).feature_size() == (4, 4)
    with pytest.raises(LapgenError, match="not supported"):
        RendezvousConfig(basename="resnet50")


def test_lapgen_checkpoint_loads_strictly(tmp_path, one_torch_thread):
    torch.manual_seed(1)
    model = Rendezvous(RendezvousConfig(image_size=(64, 64))).eval()
    save_rendezvous(model, tmp_path / "rdv")
    loaded = load_rendezvous(tmp_path / "rdv")
    assert loaded.config == model.config and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[3], loaded(x)[3])


def test_official_style_pth_loads_with_inferred_config(tmp_path):
    """A plain torch.save(state_dict) like the released files; LayerNorm reveals 8x14 maps -> 256x448."""
    torch.manual_seed(2)
    model = Rendezvous(RendezvousConfig(use_ln=True))
    path = tmp_path / "rendezvous_l8_cholect50_crossval_k1_layernorm_lowres.pth"
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, path)  # DataParallel prefix too
    loaded = load_rendezvous(path)
    assert loaded.config.use_ln and loaded.config.image_size == (256, 448) and loaded.config.layer_size == 8
    bn = Rendezvous(RendezvousConfig())
    torch.save(bn.state_dict(), tmp_path / "bn.pth")
    cfg = infer_config(torch.load(tmp_path / "bn.pth", weights_only=True), image_size=(128, 128))
    assert not cfg.use_ln and cfg.image_size == (128, 128)
    assert load_rendezvous(tmp_path / "bn.pth", image_size=(128, 128)).config.image_size == (128, 128)


def test_mismatching_checkpoints_are_one_line_errors(tmp_path):
    model = Rendezvous(RendezvousConfig(image_size=(64, 64)))
    state = model.state_dict()
    state.pop("decoder.classifier.mlp.bias")
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(LapgenError, match="1 missing") as exc:
        load_rendezvous(tmp_path / "partial.pth")
    assert "\n" not in str(exc.value)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(LapgenError, match="cannot read"):
        load_rendezvous(tmp_path / "junk.pth")
    with pytest.raises(LapgenError, match="not found"):
        load_rendezvous(tmp_path / "missing.pth")


def test_eval_transform_is_resize_totensor_imagenet_norm():
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    x = eval_transform((32, 40))(img)
    resized = np.asarray(img.resize((40, 32), Image.BILINEAR), dtype=np.float64) / 255.0
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = ((resized - mean) / std).transpose(2, 0, 1)
    assert x.shape == (3, 32, 40)
    assert np.abs(x.numpy() - expected).max() < 0.05  # PIL vs torchvision antialias rounding only
    assert parse_size("128") == (128, 128) and parse_size("256x448") == (256, 448)
    with pytest.raises(LapgenError, match="invalid input size"):
        parse_size("big")


def test_label_matrix_and_range_errors():
    recs = [{"file_name": "a.png", "triplets": [60, 96]}, {"file_name": "b.png", "triplets": []}]
    m = label_matrix(recs)
    assert m["ivt"][0].nonzero()[0].tolist() == [60, 96]
    assert m["i"][0].nonzero()[0].tolist() == [2]  # hook
    assert m["v"][0].nonzero()[0].tolist() == [2, 9] and m["t"][0].nonzero()[0].tolist() == [0, 14]
    assert m["ivt"][1].sum() == 0
    with pytest.raises(LapgenError, match="out of range"):
        label_matrix([{"file_name": "a.png", "triplets": [100]}])
    with pytest.raises(LapgenError, match="out of range"):
        label_matrix([{"file_name": "a.png", "triplets": [1], "instruments": [6]}])
    with pytest.raises(LapgenError, match="no `triplets`"):
        label_matrix([{"file_name": "a.png", "text": "x"}])


def test_lr_schedule_equals_reference_torch_schedulers():
    """LinearLR warm-up then ExponentialLR via SequentialLR, as the reference builds it."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.01 / 0.1)
    warm = 3
    seq = torch.optim.lr_scheduler.SequentialLR(
        opt, [torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=warm),
              torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)], milestones=[warm + 1])
    for epoch in range(10):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(epoch, warm, 0.1, 0.9), rel=1e-9)
        opt.step()
        seq.step()


def test_training_steps_reduce_loss(rdv_frames_dir, one_torch_thread):
    from torch.utils.data import DataLoader

    from lapgen.models.recognition.data import read_metadata, select_split

    recs = select_split(read_metadata(rdv_frames_dir), "train", rdv_frames_dir)
    ds = RecognitionDataset(rdv_frames_dir, recs, eval_transform((64, 64)))
    batch = next(iter(DataLoader(ds, batch_size=6)))
    assert batch[1][3].sum() > 0  # the synthetic frames carry triplets
    torch.manual_seed(0)
    model = Rendezvous(RendezvousConfig(image_size=(64, 64)))
    opt, _ = make_optimizer(model, TrainRecognizerConfig(data="", out="", name="x"))
    loss_fn = RendezvousLoss()

    def eval_loss():
        model.eval()
        with torch.no_grad():
            return float(loss_fn(model(batch[0]), batch[1])[0])

    before = eval_loss()
    steps = [train_step(model, batch, loss_fn, opt)["loss"] for _ in range(4)]
    assert steps[-1] < steps[0]
    assert eval_loss() < before


def test_train_transform_keeps_the_input_size():
    """Flips, autocontrast and rotation with expansion, then the final Resize back to (H, W)."""
    from PIL import Image

    from lapgen.models.recognition import train_transform

    torch.manual_seed(0)
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 70, 3), dtype=np.uint8))
    tf = train_transform((48, 64))
    outs = [tf(img) for _ in range(6)]
    assert all(o.shape == (3, 48, 64) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # random
    assert torch.equal(train_transform((48, 64), augment=False)(img), eval_transform((48, 64))(img))


@pytest.mark.slow
def test_full_size_training_step_at_256x448(one_torch_thread):
    """The released configuration (LayerNorm, 256x448) trains: one step, finite losses, gradients everywhere."""
    torch.manual_seed(0)
    model = Rendezvous(RendezvousConfig(use_ln=True))
    opt, _ = make_optimizer(model, TrainRecognizerConfig(data="", out="", name="x"))
    labels = (torch.zeros(2, 6), torch.zeros(2, 10), torch.zeros(2, 15), torch.zeros(2, 100))
    for y in labels:
        y[:, 0] = 1
    out = train_step(model, (torch.randn(2, 3, 256, 448), labels), RendezvousLoss(), opt)
    assert all(np.isfinite(v) for v in out.values())
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == ["encoder.basemodel.basemodel.fc.weight", "encoder.basemodel.basemodel.fc.bias"]  # unused


@pytest.mark.gpu
def test_mixed_precision_step_and_scores_on_cuda(rdv_frames_dir):
    from lapgen.models.recognition.data import read_metadata, select_split
    from lapgen.models.recognition.train import predict_scores

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    recs = select_split(read_metadata(rdv_frames_dir), "train", rdv_frames_dir)
    ds = RecognitionDataset(rdv_frames_dir, recs, eval_transform((64, 64)))
    model = Rendezvous(RendezvousConfig(image_size=(64, 64))).cuda()
    opt, _ = make_optimizer(model, TrainRecognizerConfig(data="", out="", name="x"))
    scaler = torch.amp.GradScaler("cuda")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    out = train_step(model, batch, RendezvousLoss().cuda(), opt, scaler=scaler, autocast_dtype=torch.float16)
    assert np.isfinite(out["loss"])
    scores = predict_scores(model, ds, batch_size=4, autocast_dtype=torch.float16)
    assert scores["ivt"].shape == (len(ds), 100) and np.isfinite(scores["ivt"]).all()


def test_local_backbone_weights_initialise_the_encoder(tmp_path):
    """`--backbone PATH`: a torchvision resnet18 state_dict (e.g. a local ImageNet copy) loads strictly."""
    import torchvision

    from lapgen.models.recognition.train import _load_backbone

    torch.manual_seed(5)
    r18 = torchvision.models.resnet18(weights=None)
    torch.save(r18.state_dict(), tmp_path / "resnet18.pth")
    model = Rendezvous(RendezvousConfig(image_size=(64, 64)))
    assert _load_backbone(model, str(tmp_path / "resnet18.pth")) == str(tmp_path / "resnet18.pth")
    for k, v in r18.state_dict().items():
        assert torch.equal(model.encoder.basemodel.basemodel.state_dict()[k], v), k
    assert _load_backbone(model, "none") is None


def test_infer_config_high_resolution_layernorm_and_size_guard():
    state = {"decoder.mhma.0.ln.weight": torch.zeros(100, 32, 56),
             "decoder.projection.0.ivt_query.weight": torch.zeros(128, 100),
             "decoder.projection.5.ivt_query.weight": torch.zeros(128, 100)}
    cfg = infer_config(state)
    assert cfg.use_ln and cfg.hr_output and cfg.image_size == (256, 448) and cfg.layer_size == 6
    assert cfg.feature_size() == (32, 56)
    model = Rendezvous(RendezvousConfig(image_size=(128, 128), use_ln=True, layer_size=1)).eval()
    with pytest.raises(LapgenError, match="needs 128x128 input, got 64x64"):
        with torch.no_grad():
            model(torch.randn(1, 3, 64, 64))
