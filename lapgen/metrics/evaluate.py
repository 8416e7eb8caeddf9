"""Fidelity evaluation: image sets -> features (one pass per extractor and preprocessing, cached) -> results.

`evaluate_fidelity(config)` computes any of FID, KID, CLIP-FID and CMMD for one or more generated sets
against one real set and returns one result dict per (generated set, metric) in lapgen's eval JSON schema
(documented in `lapgen.metrics.report` and docs/metrics.md). The real set's features are extracted once;
CLIP-FID and CMMD share one CLIP pass when they use the same backbone and the images are square.

With clean-fid's own network (`inception="inception-v3-clean"`, NVIDIA's TorchScript file) and the `clean`
protocol, `fid_method="auto"` and `kid_estimator="auto"` take clean-fid 0.1.35's arithmetic as well
(`frechet_distance_cleanfid`, `kid_cleanfid`), so the whole chain is clean-fid's: the paper's FID and KID
bit for bit on the same images (KID given clean-fid's RNG seeded with `kid_seed`). With torch-fidelity's
network, "auto" keeps lapgen's float64 routes and torch-fidelity's KID estimator.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lapgen.errors import LapgenError
from lapgen.metrics.cmmd import cmmd
from lapgen.metrics.confidence import split_values, summarize
from lapgen.metrics.fid import frechet_distance
from lapgen.metrics.images import ImageSet, open_image_set
from lapgen.metrics.kid import DEFAULT_SUBSET_SIZE, kid

SCHEMA = "lapgen.eval/1"
FIDELITY_METRICS = ("fid", "kid", "clip_fid", "cmmd")
CLIP_FID_EXTRACTOR = "clip-vit-b-32"  # clean-fid's `clip_vit_b_32`, what the paper's CLIP-FID used


@dataclass
class FidelityConfig:
    """What `lapgen eval fid|kid|clip-fid|cmmd|fidelity` computes."""

    gen: list[Path]  # one or more generated image sets (folders or lapgen datasets)
    real: Path  # the reference set
    metrics: tuple[str, ...] = FIDELITY_METRICS
    protocol: str = "clean"  # Inception resize protocol: clean | torch-fidelity
    inception: str = "inception-v3"  # FID/KID extractor (registry name)
    inception_weights: str | None = None  # path or registry name; None: registry / library default
    clip_fid_model: str = CLIP_FID_EXTRACTOR  # CLIP-FID extractor; the paper: clip-vit-b-32
    clip_fid_weights: str | None = None
    cmmd_clip: str = "clip-vit-b-32"  # CMMD backbone; clip-vit-l-14-336 reproduces the paper's public code
    cmmd_weights: str | None = None
    kid_subsets: int = 100
    kid_subset_size: int | None = None  # None: min(N_gen, N_real, 1000), clean-fid's rule, recorded
    kid_seed: int = 2020
    kid_estimator: str = "auto"  # auto | torch-fidelity | clean-fid (auto: clean-fid with its own network)
    fid_method: str = "auto"
    seeds: int | None = None  # the generated sets are this many seed replicates of one model
    splits: int | None = None  # spread over k disjoint splits at size N/k
    split_seed: int = 0
    gen_split: str | None = None
    real_split: str | None = None
    real_limit: int | None = None
    real_seed: int = 42
    device: str = "auto"
    batch_size: int = 50
    workers: int = 2
    use_cache: bool = True
    labels: dict[str, Any] = field(default_factory=dict)  # model / setup / epoch overrides


def _trained_epochs(name: Any) -> int | None:
    """`training.epochs` from the card of the registry entry `name` (a lapgen-trained model), if any."""
    if not isinstance(name, str) or not name:
        return None
    from lapgen.registry import resolve

    try:
        card = resolve(name).card or {}
    except LapgenError:
        return None
    epochs = (card.get("training") or {}).get("epochs") if isinstance(card.get("training"), dict) else None
    return int(epochs) if isinstance(epochs, (int, float)) and not isinstance(epochs, bool) else None


def card_labels(card: dict[str, Any] | None) -> dict[str, Any]:
    """`model`, `setup`, `epoch` from a generated set's card (top level, `config` or `parent`), if present.

    Without an `epoch`, the epochs of the model that made the set (its ControlNet if any, else its pipeline,
    read from the registry entry's card `training.epochs`) label the result.
    """
    out: dict[str, Any] = {}
    if not card:
        return out
    places = [card] + [card[k] for k in ("config", "parent", "pipeline", "source") if isinstance(card.get(k), dict)]
    for name in ("model", "setup", "epoch"):
        for place in places:
            value = place.get(name)
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                out[name] = value
                break
    if "epoch" not in out:
        epochs = _trained_epochs(card.get("controlnet")) or _trained_epochs(card.get("model"))
        if epochs is not None:
            out["epoch"] = epochs
    return out


def _check_config(cfg: FidelityConfig) -> None:
    unknown = [m for m in cfg.metrics if m not in FIDELITY_METRICS]
    if unknown:
        raise LapgenError(f"unknown metric(s) {', '.join(unknown)}", hint=f"use {', '.join(FIDELITY_METRICS)}")
    if cfg.protocol not in ("clean", "torch-fidelity"):
        raise LapgenError(f"unknown protocol {cfg.protocol!r}", hint="use clean or torch-fidelity")
    from lapgen.metrics.fid import METHODS
    from lapgen.metrics.kid import ESTIMATORS

    if cfg.fid_method not in METHODS:
        raise LapgenError(f"unknown Fréchet distance method {cfg.fid_method!r}", hint=f"use one of {', '.join(METHODS)}")
    if cfg.kid_estimator not in ("auto",) + ESTIMATORS:
        raise LapgenError(f"unknown KID estimator {cfg.kid_estimator!r}",
                          hint=f"use auto, {', '.join(ESTIMATORS)}")
    if cfg.seeds is not None and cfg.seeds != len(cfg.gen):
        raise LapgenError(f"--seeds {cfg.seeds} but {len(cfg.gen)} generated set(s) given",
                          hint="pass one generated folder per seed, or a folder holding one sub-folder per seed")
    if cfg.seeds is not None and cfg.seeds < 2:
        raise LapgenError("--seeds needs at least 2 generated sets (3 or more recommended)")


def expand_seed_sets(gen: list[Path], seeds: int | None) -> list[Path]:
    """With `--seeds K` and one GEN folder without images of its own: its K image-set sub-folders, sorted."""
    if seeds is None or len(gen) != 1 or not gen[0].is_dir():
        return gen
    root = gen[0]
    if (root / "metadata.jsonl").exists() or any(p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg")
                                                 for p in root.iterdir()):
        return gen
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return subs or gen


def _libraries() -> dict[str, str]:
    from lapgen.cards import library_versions

    return library_versions()


def evaluate_fidelity(cfg: FidelityConfig) -> list[dict[str, Any]]:
    """Every requested metric for every generated set; validation happens before any feature pass."""
    from lapgen.metrics.features import FeatureExtractor, compute_features, feature_key, preprocessing_id
    from lapgen.device import resolve_device
    from lapgen.progress import warn

    cfg.gen = expand_seed_sets([Path(g) for g in cfg.gen], cfg.seeds)
    _check_config(cfg)
    gens = [open_image_set(g, what="GEN", split=cfg.gen_split) for g in cfg.gen]
    real = open_image_set(cfg.real, what="REAL", split=cfg.real_split, limit=cfg.real_limit,
                          sample_seed=cfg.real_seed)
    n_min = min([len(real)] + [len(g) for g in gens])
    if n_min < 2:
        raise LapgenError(f"a set has {n_min} image(s); FID, KID and CMMD need at least 2 per set")
    subset_size = cfg.kid_subset_size
    if "kid" in cfg.metrics:
        if subset_size is None:
            subset_size = min(n_min, DEFAULT_SUBSET_SIZE)
        elif subset_size > n_min:
            raise LapgenError(f"KID subset size {subset_size} is larger than the smallest set ({n_min} images)",
                              hint=f"pass --kid-subset-size {n_min} or less, or use more images")
    if cfg.splits is not None and n_min // cfg.splits < 2:
        raise LapgenError(f"cannot make {cfg.splits} disjoint splits of {n_min} images", hint="use fewer splits")
    for g in gens:
        if len(g) != len(real):
            warn(f"N_gen={len(g)} ({g.root}) differs from N_real={len(real)}: FID and KID are biased in N, "
                 "compare only results at equal N")
    device = str(resolve_device(cfg.device))

    # extractor name -> protocol -> metrics using it
    plan: dict[tuple[str, str | None], list[tuple[str, str]]] = {}
    if "fid" in cfg.metrics or "kid" in cfg.metrics:
        plan.setdefault((cfg.inception, cfg.inception_weights), []).extend(
            (m, cfg.protocol) for m in ("fid", "kid") if m in cfg.metrics)
    if "clip_fid" in cfg.metrics:
        plan.setdefault((cfg.clip_fid_model, cfg.clip_fid_weights), []).append(("clip_fid", "clip-fid"))
    if "cmmd" in cfg.metrics:
        plan.setdefault((cfg.cmmd_clip, cfg.cmmd_weights), []).append(("cmmd", "cmmd"))
    extractors = {key: FeatureExtractor(key[0], weights=key[1], device=device) for key in plan}  # weights checked

    features: dict[tuple[int, str], Any] = {}  # (id(set), key) -> FeatureResult; shares passes in one run

    def feats(image_set: ImageSet, ext: FeatureExtractor, protocol: str, label: str):
        key = feature_key(image_set.digest(), ext, preprocessing_id(ext.spec, protocol, image_set.size))
        if (id(image_set), key) not in features:  # e.g. CLIP-FID and CMMD on square images: one pass
            features[(id(image_set), key)] = compute_features(
                image_set, ext, protocol, batch_size=cfg.batch_size, use_cache=cfg.use_cache,
                workers=cfg.workers, label=label)
        return features[(id(image_set), key)]

    results: list[dict[str, Any]] = []
    for key, uses in plan.items():
        ext = extractors[key]
        for metric, protocol in uses:
            real_f = feats(real, ext, protocol, "REAL")
            for g in gens:
                gen_f = feats(g, ext, protocol, f"GEN {g.root.name}")
                results.append(_one_result(cfg, metric, protocol, ext, g, real, gen_f, real_f, subset_size))
    order = {m: i for i, m in enumerate(FIDELITY_METRICS)}
    position = {str(p): i for i, p in enumerate(cfg.gen)}
    results.sort(key=lambda r: (order[r["metric"]], position.get(r["gen"], 0)))
    if cfg.seeds is not None:
        results = [_seed_summary(cfg, [r for r in results if r["metric"] == m]) for m in cfg.metrics
                   if any(r["metric"] == m for r in results)]
    return results


def cleanfid_chain(ext: Any, protocol: str) -> bool:
    """Whether these features are clean-fid's own (its TorchScript network behind its `clean` resize)."""
    return ext.spec.loader == "torchscript" and protocol == "clean"


def fid_method_for(cfg: FidelityConfig, metric: str, ext: Any, protocol: str) -> str:
    if cfg.fid_method == "auto" and metric == "fid" and cleanfid_chain(ext, protocol):
        return "clean-fid"
    return cfg.fid_method


def kid_estimator_for(cfg: FidelityConfig, ext: Any, protocol: str) -> str:
    if cfg.kid_estimator == "auto":
        return "clean-fid" if cleanfid_chain(ext, protocol) else "torch-fidelity"
    return cfg.kid_estimator


def _metric_fn(cfg: FidelityConfig, metric: str, subset_size: int | None, ext: Any, protocol: str):
    if metric in ("fid", "clip_fid"):
        method = fid_method_for(cfg, metric, ext, protocol)
        return lambda a, b: frechet_distance(a, b, method=method)
    if metric == "kid":
        estimator = kid_estimator_for(cfg, ext, protocol)
        return lambda a, b: kid(a, b, subsets=cfg.kid_subsets, seed=cfg.kid_seed, estimator=estimator,
                                subset_size=min(subset_size or DEFAULT_SUBSET_SIZE, len(a), len(b)))
    return cmmd


def _one_result(cfg: FidelityConfig, metric: str, protocol: str, ext: Any, gen: ImageSet, real: ImageSet,
                gen_f: Any, real_f: Any, subset_size: int | None) -> dict[str, Any]:
    a, b = gen_f.features, real_f.features
    std = None
    params: dict[str, Any] = {}
    if metric == "kid":
        estimator = kid_estimator_for(cfg, ext, protocol)
        value, std = kid(a, b, subsets=cfg.kid_subsets, subset_size=subset_size, seed=cfg.kid_seed,
                         estimator=estimator)
        params = {"subsets": cfg.kid_subsets, "subset_size": subset_size, "seed": cfg.kid_seed,
                  "kernel": "poly3", "estimator": "unbiased", "implementation": estimator,
                  "draw_order": "gen-then-real"}
    elif metric == "cmmd":
        value = cmmd(a, b)
        params = {"sigma": 10.0, "scale": 1000.0, "estimator": "biased-v-statistic", "l2_normalised": True}
    else:
        from lapgen.metrics.fid import resolve_method

        method = fid_method_for(cfg, metric, ext, protocol)
        value = frechet_distance(a, b, method=method)
        params = {"method": resolve_method(method, len(a), len(b), a.shape[1]), "ddof": 1}
    spread = None
    if cfg.splits is not None:
        fn = _metric_fn(cfg, metric, subset_size, ext, protocol)
        spread = split_values(a, b, (lambda x, y: fn(x, y)[0]) if metric == "kid" else fn, cfg.splits,
                              seed=cfg.split_seed)
    extractor = ext.name
    variant = {"fid": f"{extractor}-{protocol}", "kid": f"{extractor}-{protocol}",
               "clip_fid": f"clean-fid-compatible,{extractor}", "cmmd": f"clip={extractor}"}[metric]
    result = {
        "schema": SCHEMA,
        "metric": metric,
        "key": f"{metric}[{variant},sha256={ext.weights_sha256[:12]}]",
        "variant": variant,
        "value": float(value),
        "std": std,
        "spread": spread,
        "protocol": protocol,
        "extractor": extractor,
        "network": ext.spec.loader,
        "weights_sha256": ext.weights_sha256,
        "preprocessing": gen_f.preprocessing,
        "n_gen": len(gen),
        "n_real": len(real),
        "gen": str(gen.root),
        "real": str(real.root),
        "gen_size": list(gen.size),
        "real_size": list(real.size),
        "gen_selection": gen.selection,
        "real_selection": real.selection,
        "params": params,
        "cached": {"gen": gen_f.cached, "real": real_f.cached},
        **{k: gen_f.extractor[k] for k in ("precision", "tf32", "device", "dtype")},
        "batch_size": cfg.batch_size,
        "libraries": _libraries(),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    result.update(card_labels(gen.card))
    result.update({k: v for k, v in cfg.labels.items() if v is not None})
    return result


def _seed_summary(cfg: FidelityConfig, per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One result for R seed replicates: value = mean, spread = each value with mean and sd."""
    first = dict(per_seed[0])
    spread = summarize([r["value"] for r in per_seed])
    spread.update(method="seeds", gens=[r["gen"] for r in per_seed])
    import os

    first.update(value=spread["mean"], spread=spread, gen=os.path.commonpath([r["gen"] for r in per_seed]),
                 n_gen=[r["n_gen"] for r in per_seed], std=None, seeds=len(per_seed))
    return first


def save_result(out: str | Path, payload: Any, results: list[dict[str, Any]], **card_fields: Any) -> list[str]:
    """Publish an evaluation as `lapgen eval ... --out FILE` does: the JSON file (atomically) with its
    `eval-result` card, and `results` recorded in the cards of the lapgen-trained models that made the sets
    (`lapgen models show`). Returns the names of the models whose cards were updated."""
    import json

    from lapgen.cards import make_card, write_card
    from lapgen.outputs import atomic_file
    from lapgen.registry import record_metrics

    with atomic_file(out, "w") as fh:
        fh.write(json.dumps(payload, indent=1) + "\n")
    write_card(out, make_card("eval-result", output=str(out), **card_fields))
    return record_metrics(results)
