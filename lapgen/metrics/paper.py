"""What Iliash et al. 2024 reported in Table 1, and with what: the values, the N behind each row, the
networks and official weight files of each column, and the protocol notes the report prints.

Sources: the paper (arXiv 2406.06537) and its code, buma13/dgm4miccai24_laparoscopicvideos
(`evaluation/eval_fidelity.py`, `evaluation/metrics.py`, `evaluation/controlnet_eval_datasets.py`);
docs/metrics.md, "Comparing with Table 1", says value by value what lapgen records against them.
"""

from __future__ import annotations

import re

PAPER_N = 10_000  # generated and real images per fidelity metric in the paper
# The paper's ControlNet set is every row of its ControlNet `test.jsonl` (evaluation/controlnet_eval_datasets.py
# in buma13/dgm4miccai24_laparoscopicvideos), the same images for fidelity, action mAP and tool-mask F1:
# 4,000 images (the count the paper gives for that set), scored against the one 10,000-frame real set.
PAPER_N_BY_ROW = {"ControlNet": (4_000, PAPER_N)}

# Table 1 of Iliash et al. 2024 (128x128): setup -> epoch -> column -> value (docs/metrics.md, "Comparing
# with Table 1").
PAPER_TABLE1: dict[str, dict[int | None, dict[str, float]]] = {
    "CholecT50 (UNet)": {
        1: {"cmmd": 0.206, "clip_fid": 4.991, "fid": 50.637, "kid": 0.04359, "map": 0.0421},
        5: {"cmmd": 0.103, "clip_fid": 3.42, "fid": 36.962, "kid": 0.02660, "map": 0.0971},
        10: {"cmmd": 0.113, "clip_fid": 3.522, "fid": 38.548, "kid": 0.02953, "map": 0.1325}},
    "CholecT50+80 (UNet)": {
        1: {"cmmd": 0.174, "clip_fid": 4.32, "fid": 49.428, "kid": 0.04311, "map": 0.0526},
        5: {"cmmd": 0.113, "clip_fid": 3.531, "fid": 40.011, "kid": 0.03024, "map": 0.0939},
        10: {"cmmd": 0.102, "clip_fid": 3.298, "fid": 33.426, "kid": 0.02203, "map": 0.1457}},
    "CholecT50+80 (UNet+CLIP)": {
        1: {"cmmd": 0.14, "clip_fid": 3.804, "fid": 44.045, "kid": 0.03616, "map": 0.0503},
        5: {"cmmd": 0.103, "clip_fid": 3.337, "fid": 38.331, "kid": 0.02858, "map": 0.1035},
        10: {"cmmd": 0.119, "clip_fid": 3.37, "fid": 34.197, "kid": 0.02457, "map": 0.2055}},
    "ControlNet": {100: {"cmmd": 0.124, "clip_fid": 2.474, "fid": 38.097, "kid": 0.02924, "map": 0.2516,
                         "f1_instance": 0.71}},
    "real CholecT50 frames (RDV)": {None: {"map": 0.2990}},
}
REAL_ROW = "real CholecT50 frames (RDV)"
# --setup values that name a paper row (normalised: lower case, only letters, digits and '+').
SETUP_ALIASES = {
    "cholect50unet": "CholecT50 (UNet)", "t50unet": "CholecT50 (UNet)", "t50": "CholecT50 (UNet)",
    "cholect50+80unet": "CholecT50+80 (UNet)", "t50+80unet": "CholecT50+80 (UNet)", "t50+80": "CholecT50+80 (UNet)",
    "cholect50+80unet+clip": "CholecT50+80 (UNet+CLIP)", "t50+80unet+clip": "CholecT50+80 (UNet+CLIP)",
    "controlnet": "ControlNet", "realcholect50framesrdv": "real CholecT50 frames (RDV)", "real": "real CholecT50 frames (RDV)",
}
# Official weight files (SHA-256 prefixes): torch-fidelity's Inception release, NVIDIA's TorchScript Inception
# (the file clean-fid downloads; its SHA-256 as published by e.g. crowsonkb/k-diffusion), OpenAI's CLIP files.
OFFICIAL_WEIGHTS = {"inception-v3": "6726825d", "inception-v3-clean": "f58cb9b6ec323ed63459aa4fb441fe750",
                    "clip-vit-b-32": "40d365715913c9da", "clip-vit-l-14-336": "3035c92b350959924f"}
# The extractors whose values sit in the paper's columns. FID/KID: the paper ran clean-fid, i.e. NVIDIA's
# TorchScript network; torch-fidelity's port of the same TF graph is accepted too and labelled as such.
PAPER_EXTRACTORS = {"fid": ("inception-v3-clean", "inception-v3"), "kid": ("inception-v3-clean", "inception-v3"),
                    "clip_fid": ("clip-vit-b-32",), "cmmd": ("clip-vit-l-14-336",)}
NETWORK_LABELS = {"inception-v3": "torch-fidelity Inception", "inception-v3-clean": "clean-fid Inception",
                  "clip-vit-b-32": "ViT-B/32", "clip-vit-l-14-336": "ViT-L/14@336"}

PROTOCOL_NOTES = """\
- **FID / KID**: Inception-v3 pool3 of the TF 2015-12-05 graph. The paper used clean-fid 0.1.35
  `mode="clean"` (PIL bicubic on float data to 299x299), which runs NVIDIA's TorchScript
  `inception-2015-12-05.pt` (`inception-v3-clean`; with `--protocol clean` lapgen then reproduces clean-fid's
  FID and KID bit for bit). torch-fidelity's port of the same graph (`inception-v3`) is accepted too; every
  cell names the network it shows. Only `protocol=clean` results are comparable: `torch-fidelity` (TF1
  bilinear) numbers differ, sometimes by more than two models do. FID is biased upward at small N (roughly
  c/N): compare only at the paper's N, 10,000 vs 10,000, and 4,000 generated vs 10,000 real for the
  ControlNet row (the size of its test.jsonl set).
- **KID**: unbiased polynomial-kernel MMD, 100 subsets of m = min(N, 1000), seeded. The paper's clean-fid
  KID is unseeded and reports the mean only; with clean-fid's network lapgen uses clean-fid's arithmetic.
- **CLIP-FID**: Fréchet distance on OpenAI CLIP ViT-B/32 embeddings with clean-fid's preprocessing (the
  paper ran it in fp16 on GPU; lapgen runs fp32).
- **CMMD**: RBF-MMD (sigma 10, x1000, biased estimator) on L2-normalised CLIP embeddings. The paper's public
  code used ViT-L/14 @ 336 px (its text says ViT-B/32): only `clip-vit-l-14-336` results are comparable.
  When a row has CMMD results of both backbones, the table shows the ViT-L/14@336 one and names it.
- **action mAP**: Rendezvous retrained at 128 px (weights unpublished), ivtmetrics, all generated images as one
  pseudo-video (a global mAP). Comparable only with an equivalent recognizer. Triplets without a positive
  are left out (`absent_classes=ignore`, ivtmetrics on GitHub) or count as AP 0 (`zero`, ivtmetrics 0.1.5
  from PyPI with current scikit-learn); the paper pinned neither, and the two can differ a lot. The real-frames row (0.2990)
  equals the published RDV AP_IVT (official model, RDV test split, video-wise), so it compares with
  `lapgen eval map FRAMES --split test` in video mode.
- **tool-mask F1**: the paper's 0.71 is ultralytics `val` instance-level F1 (`f1_instance_yolo_val`), not
  the pixel F1; its segmenter weights are unpublished.
- Spread: `seeds` = sd over independent generation seeds at full N; `disjoint-splits` = sd over k splits at
  N/k; KID's subset std is not a confidence interval; F1 intervals are image-level bootstrap percentiles.
"""

# The report's columns (Table 1's, plus the tool-mask F1 of the ControlNet) and their titles.
COLUMNS = ("cmmd", "clip_fid", "fid", "kid", "map", "f1", "f1_instance")
TITLES = {"cmmd": "CMMD", "clip_fid": "CLIP-FID", "fid": "FID", "kid": "KID", "map": "action mAP",
          "f1": "tool-mask F1 (pixel)", "f1_instance": "tool-mask F1 (instance, YOLO val)"}


def normalise_setup(text: str | None) -> str | None:
    if text is None:
        return None
    key = re.sub(r"[^a-z0-9+]", "", str(text).lower())
    if key in SETUP_ALIASES:
        return SETUP_ALIASES[key]
    for name in PAPER_TABLE1:
        if re.sub(r"[^a-z0-9+]", "", name.lower()) == key:
            return name
    return None


def paper_n(paper_setup: str | None) -> tuple[int, int]:
    """(N generated, N real) behind the paper's fidelity values of a Table-1 row."""
    return PAPER_N_BY_ROW.get(paper_setup or "", (PAPER_N, PAPER_N))
