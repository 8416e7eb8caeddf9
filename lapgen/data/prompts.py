"""The paper's prompt templates (Iliash et al. 2024, `data_processing/dataloader.py`,
`prepare_cholect50.py`, `prepare_cholec80.py`), paper-exact, plus opt-in prompt formats.

CholecT50: the frame's triplet names (deduplicated, ascending id) joined by " and ", then " in " + phase;
commas become spaces; `null_verb` / `null_target` are deleted; whitespace collapsed. No triplet -> the
phase alone. Cholec80: the present tools (lower-cased column names, column order) joined by " and ", then
" in " + phase.

Prompt formats (a small registry): `paper` (default; dataset spelling "carlot-triangle-dissection") and
`paper-calot` ("calot-triangle-dissection"). A format must be applied identically at prepare, training and
sampling time; the frames dataset's card records it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from lapgen.data import vocab
from lapgen.errors import LapgenError

PROMPT_FORMATS: dict[str, str] = {
    "paper": "the paper's template with the dataset's phase spelling (carlot-triangle-dissection)",
    "paper-calot": "the paper's template with the phase spelled calot-triangle-dissection",
}
DEFAULT_FORMAT = "paper"

_SPACES = re.compile(r"\s+")


def check_format(name: str) -> str:
    if name not in PROMPT_FORMATS:
        raise LapgenError(f"unknown prompt format {name!r}", hint="valid: " + ", ".join(PROMPT_FORMATS))
    return name


def phase_text(phase: int | str, fmt: str = DEFAULT_FORMAT) -> str:
    """The phase as written in prompts (a CholecT50 phase id or string)."""
    check_format(fmt)
    if isinstance(phase, int):
        if not 0 <= phase < vocab.NUM_PHASES:
            raise LapgenError(f"phase id {phase} out of range 0..{vocab.NUM_PHASES - 1}")
        phase = vocab.PHASES[phase]
    if phase not in vocab.PHASES:
        raise LapgenError(f"unknown CholecT50 phase {phase!r}", hint="valid: " + ", ".join(vocab.PHASES))
    if fmt == "paper-calot":
        phase = phase.replace("carlot-", "calot-")
    return phase


def _clean(text: str) -> str:
    text = text.replace(",", " ").replace("null_verb", "").replace("null_target", "")
    return _SPACES.sub(" ", text).strip()


def triplet_prompt(triplets: Iterable[int], phase: int | str, fmt: str = DEFAULT_FORMAT) -> str:
    """CholecT50 prompt from a frame's triplet ids (any order, duplicates allowed) and its phase.

    >>> triplet_prompt([82, 19], 5)
    'grasper retract liver and irrigator aspirate fluid in cleaning-and-coagulation'
    >>> triplet_prompt([94], 0)
    'grasper in preparation'
    """
    ids = sorted({int(t) for t in triplets if int(t) != -1})
    for t in ids:
        if not 0 <= t < vocab.NUM_TRIPLETS:
            raise LapgenError(f"triplet id {t} out of range 0..{vocab.NUM_TRIPLETS - 1}")
    ph = phase_text(phase, fmt)
    if not ids:
        return ph
    return _clean(" and ".join(vocab.TRIPLETS[t] for t in ids) + " in " + ph)


def tools_prompt(tools: Iterable[str], phase: int | str, fmt: str = DEFAULT_FORMAT) -> str:
    """Tools + phase prompt: `"grasper and hook in carlot-triangle-dissection"`; the phase alone without tools.

    `tools` are prompt words in the order to write them (CholecT50 instruments ascending by id, or Cholec80
    tool columns in file order).
    """
    words = [t for t in tools]
    ph = phase_text(phase, fmt)
    return " and ".join(words) + " in " + ph if words else ph


def instrument_prompt(instruments: Iterable[int], phase: int | str, fmt: str = DEFAULT_FORMAT) -> str:
    """Fallback for CholecT50 frames with instruments but no triplet: instruments ascending by id."""
    ids = sorted({int(i) for i in instruments if int(i) != -1})
    return tools_prompt([vocab.INSTRUMENTS[i] for i in ids], phase, fmt)


def cholec80_prompt(tool_flags: Sequence[int], phase_name: str, fmt: str = DEFAULT_FORMAT) -> str:
    """Cholec80 prompt from one tool row (7 flags in column order) and the Cholec80 phase name."""
    if len(tool_flags) != len(vocab.CHOLEC80_TOOLS):
        raise LapgenError(f"expected {len(vocab.CHOLEC80_TOOLS)} tool flags, got {len(tool_flags)}")
    if phase_name not in vocab.CHOLEC80_PHASES:
        raise LapgenError(f"unknown Cholec80 phase {phase_name!r}",
                          hint="valid: " + ", ".join(vocab.CHOLEC80_PHASES))
    tools = [w for w, flag in zip(vocab.CHOLEC80_TOOL_WORDS, tool_flags) if int(flag)]
    return tools_prompt(tools, vocab.CHOLEC80_PHASES[phase_name], fmt)


def prompt_vocabulary() -> set[str]:
    """Every word a paper-format prompt can contain (used to warn about out-of-vocabulary prompts)."""
    words = {"and", "in"}
    words.update(vocab.INSTRUMENTS, vocab.VERBS, vocab.TARGETS, vocab.PHASES, vocab.CHOLEC80_TOOL_WORDS)
    words.update(p.replace("carlot-", "calot-") for p in vocab.PHASES)
    words.discard("null_verb")
    words.discard("null_target")
    return words


def unknown_words(prompt: str) -> list[str]:
    """Words of `prompt` outside the CholecT50/Cholec80 prompt vocabulary (in order, unique)."""
    known = prompt_vocabulary()
    out: list[str] = []
    for word in prompt.lower().replace(",", " ").split():
        if word not in known and word not in out:
            out.append(word)
    return out
