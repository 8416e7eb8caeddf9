"""The Table-1 style report: lapgen's numbers beside Iliash et al. 2024's, with protocol notes and a plot.

Input: eval JSON files (or folders holding them) in lapgen's eval schema `lapgen.eval/1`. Every result is a
JSON object with at least

    metric          "fid" | "kid" | "clip_fid" | "cmmd" | "f1" | "map"
    value           float (the headline number; KID raw, not x1000; CMMD x1000)
    protocol        e.g. "clean", "torch-fidelity", "clip-fid", "cmmd", "pixel-f1@...", or a mAP mode
    extractor       e.g. "inception-v3", "clip-vit-b-32", a segmenter or recognizer name
    weights_sha256  hex SHA-256 of the extractor weights (null when unknown)
    n_gen, n_real   image counts (n_real null for f1 / map)
    gen, real       the evaluated folders
and optionally `key`, `variant`, `std`, `spread` ({method, values, mean, sd, n}), `ci`
({low, high, ...} or {micro_ci: [lo, hi], ...}), `params`, `preprocessing`, `libraries`, and the labels
`model`, `setup`, `epoch` (from GEN's card or `--model/--setup/--epoch`). A file may hold one result, a list
of results, or {"results": [...]}. A result of `lapgen eval map` may also give its value as a top-level
`map` key (a float, or a dict with `ivt`/`value`). A `lapgen eval video` result (`"metric": "video"` with a
`metrics` map) goes into the report's video table (`lapgen.metrics.report_video`), beside published video
numbers of other works on other datasets.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from lapgen.errors import LapgenError
from lapgen.metrics.epoch_plot import plot_epochs
from lapgen.metrics.report_video import build_video_table, is_video_result, render_video_markdown
from lapgen.metrics.paper import (
    COLUMNS,
    NETWORK_LABELS,
    OFFICIAL_WEIGHTS,
    PAPER_EXTRACTORS,
    PAPER_TABLE1,
    PROTOCOL_NOTES,
    REAL_ROW,
    TITLES,
    normalise_setup,
    paper_n,
)

LABELLED_COLUMNS = ("cmmd", "fid", "kid")  # main-table cells that name the network behind the value
# What two results for one cell may differ in that changes the number (reported when they do).
COMPARABLE_FIELDS = ("value", "extractor", "weights_sha256", "protocol", "preprocessing", "n_gen", "n_real",
                     "params", "variant", "gen", "real", "absent_classes")

def _as_results(data: Any, source: Path) -> list[dict[str, Any]]:
    if isinstance(data, list):
        return [r for item in data for r in _as_results(item, source)]
    if not isinstance(data, dict):
        return []
    if isinstance(data.get("results"), list):
        return _as_results(data["results"], source)
    if "metric" not in data and "map" in data:  # an eval-map result giving its value as `map`
        value = data["map"]
        if isinstance(value, dict):
            value = value.get("ivt", value.get("value"))
        data = {**data, "metric": "map", "value": value}
    if is_video_result(data):  # `lapgen eval video`: its own table (lapgen.metrics.report_video)
        return [{**data, "_source": str(source)}]
    if data.get("metric") in COLUMNS and "value" in data:
        value = data["value"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise LapgenError(f"the {data['metric']} result's value is not a number: {value!r}", path=source,
                              hint="pass the files written by `lapgen eval ... --out`")
        return [{**data, "_source": str(source)}]
    return []


def load_results(inputs: list[Path]) -> list[dict[str, Any]]:
    """Every result in the given JSON files and folders (a folder: its *.json and eval/*.json)."""
    files: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            files += sorted(item.glob("*.json")) + sorted(item.glob("eval/*.json"))
        elif item.is_file():
            files.append(item)
        else:
            raise LapgenError("report input does not exist", path=item, hint="pass eval JSON files or folders")
    results: list[dict[str, Any]] = []
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            raise LapgenError(f"not a readable JSON file ({exc.__class__.__name__})", path=f,
                              hint="pass the files written by `lapgen eval ... --out`") from exc
        results += _as_results(data, f)
    if not results:
        raise LapgenError("no eval results found in the inputs", hint="write them with `lapgen eval ... --out X.json`")
    return results


def paper_setup_of(r: dict[str, Any]) -> str | None:
    return normalise_setup(r.get("setup")) or normalise_setup(r.get("model"))


def network_label(r: dict[str, Any]) -> str:
    """Which network produced the value, in words ("ViT-L/14@336", "clean-fid Inception", ...)."""
    extractor = str(r.get("extractor") or "-")
    return NETWORK_LABELS.get(extractor, extractor)


def comparability(r: dict[str, Any]) -> tuple[bool, list[str]]:
    """(comparable with the paper's column, reasons it is not)."""
    why: list[str] = []
    metric = r["metric"]
    sha = r.get("weights_sha256") or ""
    row = paper_setup_of(r)
    n_gen, n_real = paper_n(row)
    if metric in ("fid", "kid", "clip_fid", "cmmd"):
        if r.get("n_gen") != n_gen or r.get("n_real") != n_real:
            why.append(f"N {r.get('n_gen')}/{r.get('n_real')} != {n_gen}/{n_real}")
        expected = PAPER_EXTRACTORS[metric]
        if r.get("extractor") not in expected:
            why.append(f"extractor {r.get('extractor')} (paper: {' or '.join(expected)})")
        elif not sha.startswith(OFFICIAL_WEIGHTS[r["extractor"]]):
            why.append("weights not recognised (SHA-256) as the official release file")
        if metric in ("fid", "kid") and r.get("protocol") != "clean":
            why.append(f"protocol {r.get('protocol')} (paper: clean)")
        if metric == "kid" and (r.get("params") or {}).get("subset_size") not in (None, 1000):
            why.append(f"KID subset size {(r.get('params') or {}).get('subset_size')} (paper: 1000)")
    elif metric == "map":
        real_row = REAL_ROW in (normalise_setup(r.get("setup")), normalise_setup(r.get("model")))
        mode = r.get("variant")
        if real_row:  # 0.2990 = the published RDV AP_IVT: official model, RDV test split, video-wise
            why.append("needs the published Rendezvous (256x448, RDV split) or an equivalent recognizer")
            if mode not in ("video", None):
                why.append(f"mode {mode} (paper's real-frames figure: video-wise)")
        else:
            why.append("needs Rendezvous retrained at 128 px like the paper's (unpublished weights)")
            if mode not in ("global", None):
                why.append(f"mode {mode} (paper: one pseudo-video = global)")
    elif metric == "f1":
        why.append("pixel F1; the paper's 0.71 is the instance-level f1_instance_yolo_val")
    elif metric == "f1_instance":
        why.append("needs a segmenter equivalent to the paper's (unpublished weights)")
        if r.get("n_gen") is not None and r.get("n_gen") != n_gen:
            why.append(f"N {r.get('n_gen')} != {n_gen}")
    return not why, why


def preference(e: dict[str, Any]) -> tuple:
    """How strongly a result belongs in its table cell; the highest wins. In order: the network is the
    paper's (for CMMD the ViT-L/14@336 backbone; for FID/KID clean-fid's own network first), comparable,
    fewer reasons not to be, the newer evaluation (`created`), then the key. Never the file name."""
    expected = PAPER_EXTRACTORS.get(e["metric"], ())
    extractor = e.get("extractor")
    rank = len(expected) - expected.index(extractor) if extractor in expected else 0
    ok, why = comparability(e)
    return (rank, ok, -len(why), str(e.get("created") or ""), str(e.get("key") or ""), str(e.get("_source")))


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [f for f in COMPARABLE_FIELDS if a.get(f) != b.get(f)]


def _spread_text(r: dict[str, Any]) -> str:
    spread, ci = r.get("spread"), r.get("ci")
    if spread:
        return f"± {spread['sd']:.3g} sd ({spread['method']}, n={spread['n']})"
    if isinstance(ci, dict):
        low, high = ci.get("low"), ci.get("high")
        if low is None and "micro_ci" in ci:
            low, high = ci["micro_ci"]
        if low is not None and high is not None:
            return f"[{low:.4g}, {high:.4g}] ({ci.get('method', ci.get('unit', 'bootstrap'))})"
    if r.get("std") is not None:
        return f"± {r['std']:.3g} (KID subset std, not a CI)"
    return ""


def _choose(metric: str, candidates: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """The result a table cell shows, and a note when other results for that cell disagree with it."""
    chosen = max(candidates, key=preference)
    others = [(c, _differences(chosen, c)) for c in candidates if c is not chosen]
    others = [(c, diff) for c, diff in others if diff]
    if not others:
        return chosen, None
    best, runner_up = preference(chosen), max(preference(c) for c, _ in others)
    if best[0] > runner_up[0]:
        reason = f"its network ({network_label(chosen)}) is the paper's"
    elif best[1] > runner_up[1] or best[2] > runner_up[2]:
        reason = "it is the most comparable with the paper's"
    elif best[3] > runner_up[3]:
        reason = "it is the newest evaluation"
    else:
        reason = "tie on every criterion; the last by key and source"
    rest = "; ".join(f"`{c.get('key', metric)}` = {c['value']} from {c.get('_source')} (differs in {', '.join(d)})"
                     for c, d in others)
    note = (f"{TITLES.get(metric, metric)}: shows `{chosen.get('key', metric)}` = {chosen['value']} from "
            f"{chosen.get('_source')} ({network_label(chosen)}) because {reason}; also found {rest}")
    return chosen, note


def build_report(inputs: list[Path]) -> dict[str, Any]:
    """Rows per (model, setup, epoch) with lapgen's and the paper's values, plus per-result details.

    Several results for one cell (e.g. CMMD with ViT-B/32 from `eval fidelity` and with ViT-L/14@336 from
    `eval cmmd --clip clip-vit-l-14-336`) are ranked by `preference`, never by file name; the row's `shown`
    says which result each cell holds, and `choices` explains every cell whose results disagree.
    """
    results = load_results(inputs)
    video = [r for r in results if r["metric"] == "video"]
    results = [r for r in results if r["metric"] != "video"]
    rows: dict[tuple[str, str, Any], dict[str, Any]] = {}
    candidates: dict[tuple[tuple[str, str, Any], str], list[dict[str, Any]]] = {}
    details = []
    for r in results:
        model = str(r.get("model") or Path(r.get("gen") or "?").name)
        setup = r.get("setup")
        paper_setup = normalise_setup(setup) or normalise_setup(model)
        epoch = r.get("epoch")
        try:
            epoch = None if epoch is None else int(float(epoch))
        except (TypeError, ValueError):
            pass
        paper = PAPER_TABLE1.get(paper_setup, {}).get(epoch) if paper_setup else None
        key = (model, str(setup or paper_setup or ""), epoch)
        rows.setdefault(key, {"model": model, "setup": setup, "paper_setup": paper_setup, "epoch": epoch,
                              "ours": {}, "paper": dict(paper or {}), "comparable": {}, "network": {},
                              "shown": {}})
        entries = [r]
        if r["metric"] == "f1" and isinstance(r.get("instance"), dict):
            entries.append({**r, **r["instance"], "metric": "f1_instance", "spread": None, "ci": None})
        for e in entries:
            ok, why = comparability(e)
            candidates.setdefault((key, e["metric"]), []).append(e)
            details.append({"model": model, "setup": setup, "epoch": epoch, "metric": e["metric"],
                            "key": e.get("key", e["metric"]), "variant": e.get("variant"), "value": e["value"],
                            "paper": (paper or {}).get(e["metric"]), "spread": _spread_text(e),
                            "n_gen": e.get("n_gen"), "n_real": e.get("n_real"), "protocol": e.get("protocol"),
                            "extractor": e.get("extractor"), "network": network_label(e),
                            "weights_sha256": e.get("weights_sha256"), "comparable": ok, "why_not": why,
                            "source": e.get("_source"), "_cell": (key, e["metric"]), "_entry": e})
    choices = []
    shown: dict[tuple[tuple[str, str, Any], str], dict[str, Any]] = {}
    for (key, metric), found in candidates.items():
        chosen, note = _choose(metric, found)
        shown[(key, metric)] = chosen
        row = rows[key]
        row["ours"][metric] = chosen["value"]
        row["comparable"][metric] = comparability(chosen)[0]
        row["network"][metric] = network_label(chosen)
        row["shown"][metric] = {"key": chosen.get("key", metric), "source": chosen.get("_source")}
        if note:
            choices.append({"model": row["model"], "setup": row["setup"], "epoch": row["epoch"], "metric": metric,
                            "note": note})
    for d in details:
        d["in_table"] = shown[d.pop("_cell")] is d.pop("_entry")
    ordered = sorted(rows.values(), key=lambda x: (str(x["paper_setup"] or x["model"]), str(x["setup"]),
                                                   -1 if x["epoch"] is None else float(x["epoch"])))
    order = {c: i for i, c in enumerate(COLUMNS)}
    details.sort(key=lambda d: (d["model"], str(d["setup"]), -1 if d["epoch"] is None else float(d["epoch"]),
                                order.get(d["metric"], 99)))
    return {"schema": "lapgen.report/1",
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "columns": list(COLUMNS), "rows": ordered, "details": details, "choices": choices,
            "video": build_video_table(video),
            "paper": "Iliash et al. 2024, Table 1",
            "paper_table1": {k: {str(e): v for e, v in d.items()} for k, d in PAPER_TABLE1.items()}}


def _cell(value: Any, paper: Any, label: str | None = None) -> str:
    ours = "-" if value is None else (f"{value:.5g}" if isinstance(value, float) else str(value))
    text = ours if paper is None else f"{ours} ({paper:g})"
    return f"{text} · {label}" if label else text


def render_markdown(report: dict[str, Any], plot_name: str | None) -> str:
    cols = [c for c in COLUMNS if any(c in r["ours"] for r in report["rows"])]
    lines = ["# lapgen evaluation report", ""]
    if report["rows"]:
        lines += [(f"Created {report['created']}. Cells: lapgen value (paper's Table 1 value, Iliash et al. 2024) · "
                   "the network behind the value (CMMD backbone; FID/KID Inception). A paper value is comparable "
                   "only where the details table says yes."), "",
                  "| model | setup | epoch | " + " | ".join(TITLES[c] for c in cols) + " |",
                  "|---|---|---|" + "---|" * len(cols)]
    else:
        lines.append(f"Created {report['created']}. No image metrics among the inputs.")
    for r in report["rows"]:
        cells = [_cell(r["ours"].get(c), r["paper"].get(c),
                       r.get("network", {}).get(c) if c in LABELLED_COLUMNS else None) for c in cols]
        setup = r["setup"] or r["paper_setup"] or "-"
        lines.append(f"| {r['model']} | {setup} | {'-' if r['epoch'] is None else r['epoch']} | "
                     + " | ".join(cells) + " |")
    if report.get("choices"):
        lines += ["", "## Cells with several results", "",
                  ("Where results for one cell disagree, the table shows one (the paper's network first, then "
                   "the most comparable, then the newest evaluation; never by file name):"), ""]
        for c in report["choices"]:
            lines.append(f"- {c['model']}, epoch {'-' if c['epoch'] is None else c['epoch']}: {c['note']}")
    if report["details"]:
        lines += ["", "## Details", "",
                  ("| model | epoch | key | value | spread | paper | N gen/real | protocol | network | weights | "
                   "in table | comparable |"), "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in report["details"]:
        comp = "yes" if d["comparable"] else "no: " + "; ".join(d["why_not"])
        value = "-" if d["value"] is None else f"{d['value']:.6g}"
        network = d["extractor"] or "-"
        if d.get("network") and d["network"] != network:
            network = f"{network} ({d['network']})"
        lines.append(f"| {d['model']} | {'-' if d['epoch'] is None else d['epoch']} | `{d['key']}` | {value} | "
                     f"{d['spread'] or '-'} | {'-' if d['paper'] is None else d['paper']} | "
                     f"{d['n_gen'] if d['n_gen'] is not None else '-'}/{'-' if d['n_real'] is None else d['n_real']} | "
                     f"{d['protocol'] or '-'} | {network} | {(d['weights_sha256'] or '-')[:12]} | "
                     f"{'yes' if d.get('in_table') else 'no'} | {comp} |")
    if plot_name:
        lines += ["", "## Metrics over epochs", "", f"![metrics over epochs]({plot_name})"]
    lines += render_video_markdown(report.get("video") or {})
    lines += ["", "## Protocol notes", "", PROTOCOL_NOTES]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path, *, overwrite: bool = False) -> list[Path]:
    """Write `out` (markdown), `out` with .json and .png beside it, and a card; never a partial set."""
    import tempfile

    from lapgen.cards import make_card, write_card
    from lapgen.outputs import atomic_file, check_writable_parent

    out = Path(out)
    json_path, png_path = out.with_suffix(".json"), out.with_suffix(".png")
    if out.suffix.lower() == ".json":
        raise LapgenError("--out must be the markdown report path (e.g. report.md)", path=out)
    for p in (out, json_path, png_path):
        if p.exists() and not overwrite:
            raise LapgenError("output already exists", path=p, hint="pass --overwrite or choose another --out")
    check_writable_parent(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".lapgen-report-") as tmp:
        has_plot = plot_epochs(report, Path(tmp) / "plot.png")
        markdown = render_markdown(report, png_path.name if has_plot else None)  # before any file is written
        with atomic_file(json_path, "w") as fh:
            fh.write(json.dumps(report, indent=1) + "\n")
        written = [out, json_path]
        if has_plot:
            Path(tmp, "plot.png").replace(png_path)
            written.append(png_path)
        with atomic_file(out, "w") as fh:
            fh.write(markdown)
    sources = {d["source"] for d in report["details"]} | {r["source"] for r in (report.get("video") or {}).get("rows", [])}
    write_card(out, make_card("eval-report", inputs=sorted(sources),
                              outputs=[str(p) for p in written]))
    return written
