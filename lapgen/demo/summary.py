"""Trained vs untrained, and control: the demo's checks, read from its report and its facts.

`compare(report, facts)` pairs each trained model with its untrained counterpart in `lapgen eval report`'s
JSON (the same rows as report.md) and says, per metric, which is better: lower FID, KID, CLIP-FID and CMMD
(closer to the real test frames), higher action mAP and tool-mask F1. A stage whose trained row is not
better on its metrics is flagged, so a broken stage shows in the demo's own output.

`control` gathers what the demo exists to show, each against its target (docs/quickstart.md): the
segmenter finds tools (pixel F1 on the held-out CholecSeg8k video), the trained ControlNet's images follow
their masks and the untrained one's do not (tool-mask F1 and their ratio), and the video follows its
authored masks (mean per-frame F1).
"""

from __future__ import annotations

import math
from typing import Any

from lapgen.demo.steps import SETS

# Targets of the full demo (`lapgen demo` without --quick); docs/quickstart.md explains each.
TARGETS = {"segmenter_f1": 0.7, "controlnet_f1": 0.5, "controlnet_ratio": 5.0, "video_f1": 0.5}
LOWER_IS_BETTER = {"fid": True, "kid": True, "clip_fid": True, "cmmd": True, "map": False, "f1": False}
TITLES = {
    "fid": "FID",
    "kid": "KID",
    "clip_fid": "CLIP-FID",
    "cmmd": "CMMD",
    "map": "action mAP",
    "f1": "tool-mask F1",
}
PAIRS = (  # (stage, trained set, untrained set, metrics)
    ("Stage 1 (finetune)", "demo-sd", "demo-base", ("fid", "kid", "clip_fid", "cmmd", "map")),
    (
        "Stage 2 (train-controlnet)",
        "demo-controlnet",
        "untrained-controlnet",
        ("fid", "kid", "clip_fid", "cmmd", "f1"),
    ),
)


def _value(x: Any) -> float | None:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x)):
        return float(x)
    return None


def compare(report: dict[str, Any], facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"stages": [{stage, trained, untrained, rows: [{metric, trained, untrained, better}]}], ...}."""
    by_model = {r["model"]: r["ours"] for r in report.get("rows", [])}
    stages = []
    for stage, trained, untrained, metrics in PAIRS:
        t_label, u_label = SETS[trained][2], SETS[untrained][2]
        t, u = by_model.get(t_label, {}), by_model.get(u_label, {})
        rows = []
        for m in metrics:
            tv, uv = _value(t.get(m)), _value(u.get(m))
            better = None if tv is None or uv is None or tv == uv else (tv < uv) == LOWER_IS_BETTER[m]
            rows.append({"metric": m, "title": TITLES[m], "trained": tv, "untrained": uv, "better": better})
        decided = [r["better"] for r in rows if r["better"] is not None]
        stages.append(
            {
                "stage": stage,
                "trained": t_label,
                "untrained": u_label,
                "rows": rows,
                "wins": sum(decided),
                "decided": len(decided),
                "ok": bool(decided) and sum(decided) > len(decided) / 2,
            }
        )
    real = by_model.get("real test frames", {})
    return {
        "stages": stages,
        "real_map": _value(real.get("map")),
        "control": control(stages, facts or {}),
        "facts": dict(facts or {}),
        "ok": all(s["ok"] for s in stages),
    }


def control(stages: list[dict[str, Any]], facts: dict[str, Any]) -> dict[str, Any]:
    """The control numbers with their targets: {name: {"value", "target", "met"}} (None where unmeasured)."""
    f1 = next((r for s in stages for r in s["rows"] if r["metric"] == "f1"), {})
    trained, untrained = f1.get("trained"), f1.get("untrained")
    ratio = None
    if trained is not None and untrained is not None:
        ratio = math.inf if untrained == 0 and trained > 0 else (trained / untrained if untrained else None)
    values = {
        "segmenter_f1": _value(facts.get("segmenter_pixel_f1_cholecseg8k")),
        "controlnet_f1": trained,
        "controlnet_ratio": ratio,
        "video_f1": _value(facts.get("video_mask_f1")),
    }
    return {
        k: {"value": v, "target": TARGETS[k], "met": None if v is None else bool(v >= TARGETS[k])}
        for k, v in values.items()
    }


def control_lines(summary: dict[str, Any]) -> list[str]:
    """One line per control number: value, target, met or not (nothing when there are none)."""
    c = summary.get("control") or {}
    quick = (summary.get("facts") or {}).get("quick")

    def fmt(key: str, text: str) -> str | None:
        item = c.get(key) or {}
        if item.get("value") is None:
            return None
        mark = "" if quick else (": met" if item["met"] else ": MISSED")
        return f"{text} (target >= {item['target']:g}){mark}"

    ratio = (c.get("controlnet_ratio") or {}).get("value")
    ratio_text = "inf" if ratio == math.inf else (f"{ratio:.1f}" if ratio is not None else "-")
    cn_f1 = (c.get("controlnet_f1") or {}).get("value")
    lines = [
        fmt("segmenter_f1", "segmenter: pixel F1 {:.3f} on the held-out CholecSeg8k video".format(
            (c.get("segmenter_f1") or {}).get("value") or 0)),
        fmt("controlnet_f1", f"Stage 2: tool-mask F1 of the trained ControlNet's images {cn_f1 or 0:.3f}"),
        fmt("controlnet_ratio", f"Stage 2: {ratio_text} x the untrained ControlNet's"),
        fmt("video_f1", "Stage 3: the video follows its authored masks, mean per-frame F1 {:.3f}".format(
            (c.get("video_f1") or {}).get("value") or 0)),
    ]
    return [line for line in lines if line]


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """Plain-text verdicts, one per stage, and what the segmenter's result means for Stage 2."""
    facts = summary.get("facts") or {}
    lines = []
    for s in summary["stages"]:
        head = f"{s['stage']}: {s['trained']} better than {s['untrained']} on {s['wins']} of {s['decided']} metrics"
        if facts.get("quick"):
            verdict = "no verdict with --quick (a few images and steps: the differences are noise)"
        else:
            verdict = "training worked" if s["ok"] else "TRAINING DID NOT HELP: check this stage"
        lines.append(f"{head}: {verdict}")
    if facts.get("frames_with_tool_mask") == 0:
        lines.append(
            "note: the demo's segmenter (YOLOv8n-seg from random weights, validation mask mAP50 "
            f"{facts.get('segmenter_mask_map50') or 0:.3g}) found a tool in none of the "
            f"{facts.get('annotated_frames', '?')} frames, so the ControlNet trained on empty masks: its gain is "
            "extra capacity, not control by the mask, tool-mask F1 is undefined, and the video does not follow "
            "the mask. See docs/quickstart.md."
        )
    return lines


def video_lines(facts: dict[str, Any]) -> list[str]:
    """One line per `eval video` run of the demo: mask adherence and warp error, with the real clips'."""
    lines = []
    for label, r in (facts.get("eval_video") or {}).items():
        gen, real = r.get("gen") or {}, r.get("real") or {}
        parts = []
        if gen.get("mask_f1") is not None:
            parts.append(f"mask F1 {gen['mask_f1']:.3f}")
        if gen.get("warp_error") is not None:
            floor = real.get("warp_error")
            parts.append(f"warp error {gen['warp_error']:.4f}" + (f" (real clips {floor:.4f})" if floor is not None
                                                                   else ""))
        if gen.get("fvd") is not None:
            parts.append(f"FVD {gen['fvd']:.3g} (random I3D)")
        if parts:
            lines.append(f"{label} against the real clips: " + ", ".join(parts))
    return lines
