"""Trained vs untrained: the demo's check that every training stage changed something, read from its report.

`compare(report, facts)` pairs each trained model with its untrained counterpart in `lapgen eval report`'s
JSON (the same rows as report.md) and says, per metric, which is better: lower FID, KID, CLIP-FID and CMMD
(closer to the real test frames), higher action mAP and tool-mask F1. A stage whose trained row is not
better on its metrics is flagged, so a broken stage shows in the demo's own output.
"""

from __future__ import annotations

import math
from typing import Any

from lapgen.demo.steps import SETS

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
        "facts": dict(facts or {}),
        "ok": all(s["ok"] for s in stages),
    }


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
