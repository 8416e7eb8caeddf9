"""The video table of `lapgen eval report`: `lapgen eval video` results, and the published surgical/endoscopic
video numbers as reference rows, labelled as other datasets and never comparable.

Iliash et al. 2024 report no video metric, so no row here is "the paper's". The reference rows are what later
video generators published, each on its own dataset with its own N, clip length, resolution and FVD
implementation:

- Endora (Li et al., "Endora: Video Generation Models as Endoscopy Simulators", MICCAI 2024): FVD 460.7 on
  Colonoscopic.
- FEAT (Wang et al., "FEAT: Full-Dimensional Efficient Attention Transformer for Medical Video Generation",
  2025): FVD 351.1, CD-FVD 397.0 on the endoscopy benchmark of that paper.
- SAW ("SAW: Toward a Surgical Action World Model via Controllable and Scalable Video Generation", 2025):
  CD-FVD 199 against 547 for its baseline, on that paper's surgical videos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

VIDEO_COLUMNS = ("mask_f1", "mask_iou", "warp_error", "frame_consistency", "fvd", "cd_fvd")
VIDEO_TITLES = {"mask_f1": "mask F1", "mask_iou": "mask IoU", "warp_error": "warp error", "frame_consistency":
                "frame consistency", "fvd": "FVD", "cd_fvd": "CD-FVD"}
REFERENCE_NOTE = "other dataset, N and protocol; not comparable with lapgen's values"
PUBLISHED_VIDEO: list[dict[str, Any]] = [
    {"work": "Endora (Li et al., MICCAI 2024)", "dataset": "Colonoscopic", "fvd": 460.7, "cd_fvd": None,
     "note": REFERENCE_NOTE},
    {"work": "FEAT (Wang et al., 2025)", "dataset": "the FEAT paper's endoscopy benchmark", "fvd": 351.1,
     "cd_fvd": 397.0, "note": REFERENCE_NOTE},
    {"work": "SAW (2025)", "dataset": "the SAW paper's surgical videos", "fvd": None, "cd_fvd": 199.0,
     "note": f"its baseline: CD-FVD 547; {REFERENCE_NOTE}"},
]


def is_video_result(data: Any) -> bool:
    return isinstance(data, dict) and data.get("metric") == "video" and isinstance(data.get("metrics"), dict)


def _row(r: dict[str, Any]) -> dict[str, Any]:
    details = r.get("details") or {}
    fvd = details.get("fvd") or details.get("cd_fvd") or {}
    return {"model": str(r.get("model") or Path(r.get("gen") or "?").name), "setup": r.get("setup"),
            "epoch": r.get("epoch"), "gen": r.get("gen"), "real": r.get("real"),
            "n_gen": r.get("n_gen"), "n_real": r.get("n_real"), "source": r.get("_source"),
            "values": {m: r["metrics"].get(m) for m in VIDEO_COLUMNS},
            "real_values": {m: (details.get(m) or {}).get("real") for m in VIDEO_COLUMNS},
            "fvd_clips": [fvd.get("n_gen"), fvd.get("n_real")] if fvd else None,
            "frames_per_clip": (fvd.get("protocol") or {}).get("frames_per_clip") if fvd else None,
            "skipped": r.get("skipped") or {},
            "networks": {m: (details.get(m) or {}).get("extractor") or ((details.get(m) or {}).get("segmenter") or {})
                         .get("name") for m in VIDEO_COLUMNS},
            "weights_sha256": {m: (details.get(m) or {}).get("weights_sha256") for m in VIDEO_COLUMNS}}


def build_video_table(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's video section: one row per `eval video` result, plus the published reference rows."""
    rows = sorted((_row(r) for r in results), key=lambda x: (x["model"], str(x["setup"]), str(x["source"])))
    return {"rows": rows, "published": PUBLISHED_VIDEO,
            "note": "Iliash et al. 2024 report no video metric; the published rows are other works on other "
                    "datasets, shown for scale only"}


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def render_video_markdown(video: dict[str, Any]) -> list[str]:
    if not video or not video.get("rows"):
        return []
    cols = [c for c in VIDEO_COLUMNS if any(r["values"].get(c) is not None for r in video["rows"])]
    lines = ["", "## Video metrics (`lapgen eval video`)", "",
             ("Cells: GEN's value (REAL's, where the metric applies to real clips: the floor of warp error, the "
              "ceiling of frame consistency and of the segmenter's mask agreement). FVD and CD-FVD are GEN "
              "against REAL. Lower is better for warp error, FVD and CD-FVD."), "",
             "| model | setup | N videos gen/real | " + " | ".join(VIDEO_TITLES[c] for c in cols)
             + " | FVD clips gen/real (frames) |", "|---|---|---|" + "---|" * len(cols) + "---|"]
    for r in video["rows"]:
        cells = []
        for c in cols:
            real = r["real_values"].get(c)
            text = _num(r["values"].get(c)) + (f" ({_num(real)})" if real is not None else "")
            cells.append(text if r["values"].get(c) is not None else ("skipped" if c in r["skipped"] else "-"))
        clips = (f"{r['fvd_clips'][0]}/{r['fvd_clips'][1]} ({r['frames_per_clip']})" if r["fvd_clips"] else "-")
        lines.append(f"| {r['model']} | {r['setup'] or '-'} | {r['n_gen']}/{r['n_real']} | " + " | ".join(cells)
                     + f" | {clips} |")
    lines += ["", "### Published video numbers (other datasets, not comparable)", "",
              f"{video['note']}. FVD moves with N, clip length, resolution and the I3D implementation.", "",
              "| work | dataset | FVD | CD-FVD | note |", "|---|---|---|---|---|"]
    for p in video["published"]:
        lines.append(f"| {p['work']} | {p['dataset']} | {_num(p['fvd'])} | {_num(p['cd_fvd'])} | {p['note']} |")
    skipped = [(r["model"], m, why) for r in video["rows"] for m, why in r["skipped"].items()]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{model} {m}: {why}" for model, m, why in skipped)]
    return lines
