"""Prompt composition for the studio's Action panel: plain functions over `lapgen.data.vocab` / `prompts`.

The page offers an instrument, then only the verbs that form one of the 100 CholecT50 triplets with it,
then only the targets that complete a valid triplet. The prompt holds the triplets added with "Add triplet"
plus the one the dropdowns show (what the page shows is what it generates); with a phase it is exactly
`lapgen.data.prompts.triplet_prompt` (the paper's template). A free-text override replaces the composed
prompt; words outside the vocabulary give a warning, never an error (as `lapgen video` does).

Phase spelling: CholecT50 writes Calot's triangle as "carlot-triangle-dissection", and the paper's models
were trained on prompts with that spelling (`lapgen prepare`'s default prompt format `paper`). A dataset
prepared with `--normalize-phase-names` (format `paper-calot`) writes "calot-". The page names each phase in
plain words, shows the exact prompt word beside it, and takes the spelling from the chosen model's training
data when its cards say (`prompt_format_of`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lapgen.data import vocab
from lapgen.data.prompts import DEFAULT_FORMAT, PROMPT_FORMATS, phase_text, triplet_prompt, unknown_words
from lapgen.errors import LapgenError

DEFAULT_PHASE = vocab.PHASES[1]  # carlot-triangle-dissection: the most frequent CholecT50 phase


def instrument_choices() -> list[str]:
    """The six CholecT50 instruments, vocabulary order."""
    return list(vocab.INSTRUMENTS)


def verb_choices(instrument: str | None) -> list[str]:
    """Verbs forming at least one valid triplet with `instrument` (empty without an instrument)."""
    if not instrument:
        return []
    if instrument not in vocab.INSTRUMENTS:
        raise LapgenError(f"unknown instrument {instrument!r}", hint="valid: " + ", ".join(vocab.INSTRUMENTS))
    return vocab.valid_verbs(instrument)


def target_choices(instrument: str | None, verb: str | None) -> list[str]:
    """Targets completing a valid triplet with `instrument` and `verb` (empty unless both are valid)."""
    if not instrument or not verb or verb not in verb_choices(instrument):
        return []
    return vocab.valid_targets(instrument, verb)


def triplet_label(triplet: int) -> str:
    """Readable label of a triplet id: `"19: grasper retract liver"`."""
    return f"{triplet}: " + vocab.TRIPLETS[triplet].replace(",", " ")


def label_to_triplet(label: str) -> int:
    """Inverse of `triplet_label` (the id before the colon)."""
    try:
        value = int(str(label).split(":", 1)[0])
    except ValueError:
        raise LapgenError(f"not a triplet label: {label!r}") from None
    if not 0 <= value < vocab.NUM_TRIPLETS:
        raise LapgenError(f"triplet id {value} out of range 0..{vocab.NUM_TRIPLETS - 1}")
    return value


def add_triplet(
    selected: Iterable[int], instrument: str | None, verb: str | None, target: str | None
) -> list[int]:
    """`selected` plus the triplet (instrument, verb, target), ascending and unique.

    An incomplete choice is a LapgenError naming the missing part; an invalid combination is one too
    (`vocab.triplet_id`), although the page never offers one.
    """
    missing = [
        name for name, value in (("instrument", instrument), ("verb", verb), ("target", target)) if not value
    ]
    if missing:
        raise LapgenError(f"choose a {missing[0]} before adding the triplet")
    triplet = vocab.triplet_id(str(instrument), str(verb), str(target))
    return sorted({int(t) for t in selected} | {triplet})


def remove_triplets(selected: Iterable[int], labels: Iterable[str]) -> list[int]:
    """`selected` without the triplets named by `labels` (as `triplet_label` writes them)."""
    drop = {label_to_triplet(label) for label in labels}
    return [t for t in selected if t not in drop]


@dataclass(frozen=True)
class PromptPreview:
    """The prompt the page will use and a warning (empty when every word is in the vocabulary)."""

    prompt: str
    unknown: tuple[str, ...] = ()

    @property
    def warning(self) -> str:
        if not self.unknown:
            return ""
        return (
            "words outside the CholecT50 vocabulary: "
            + ", ".join(self.unknown)
            + " (the models were trained on '<instrument> <verb> <target> in <phase>' captions)"
        )


def shown_triplet(instrument: str | None, verb: str | None, target: str | None) -> list[int]:
    """The triplet the dropdowns show, as a list of its id (empty while the choice is incomplete)."""
    if not (instrument and verb and target) or target not in target_choices(instrument, verb):
        return []
    return [vocab.triplet_id(instrument, verb, target)]


def phase_label(phase: str, fmt: str = DEFAULT_FORMAT) -> str:
    """The phase in plain words with its exact prompt word: `"Calot's triangle dissection
    (prompt: carlot-triangle-dissection, the dataset's spelling)"`."""
    words = phase.replace("carlot-", "calot-").replace("-", " ")
    if phase.startswith("carlot-"):
        words = "Calot's " + words.removeprefix("calot ")
    word = phase_text(phase, fmt)
    note = ", the dataset's spelling" if word == phase and phase.startswith("carlot-") else ""
    return f"{words[:1].upper()}{words[1:]} (prompt: {word}{note})"


def phase_choices(fmt: str = DEFAULT_FORMAT) -> list[tuple[str, str]]:
    """(label, value) of the seven CholecT50 phases; the value is the dataset's phase name."""
    return [(phase_label(p, fmt), p) for p in vocab.PHASES]


def prompt_format_of(model: str | None) -> str | None:
    """The prompt format the model `model` was trained with, when its cards say: the training data of a
    lapgen-trained pipeline is a `lapgen prepare` dataset whose card names its `prompt_format`."""
    from lapgen.cards import read_card
    from lapgen.registry import resolve

    try:
        entry = resolve(model, kind="pipeline")
    except LapgenError:
        return None
    data = ((entry.card or {}).get("config") or {}).get("data")
    try:
        card = read_card(data, required=False) if data else None
    except (LapgenError, OSError):
        return None
    fmt = (card or {}).get("prompt_format")
    return fmt if fmt in PROMPT_FORMATS else None


def compose_prompt(triplets: Iterable[int], phase: str | None, override: str | None = "",
                   fmt: str = DEFAULT_FORMAT) -> PromptPreview:
    """The live preview: `triplet_prompt(triplets, phase, fmt)`, or the free-text override when one is given."""
    text = (override or "").strip()
    if text:
        return PromptPreview(" ".join(text.split()), tuple(unknown_words(text)))
    prompt = triplet_prompt(list(triplets), phase or DEFAULT_PHASE, fmt)
    return PromptPreview(prompt, tuple(unknown_words(prompt)))
