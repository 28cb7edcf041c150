"""The built-in prompt sets: what each is, where it came from, and how to read it.

Every set is a name (``attend-and-excite/animals``, ``abc-6k``, ``dvmp`` ...) and a reader that
returns ``PromptItem``s in the order of the source file. Names are matched case-insensitively,
with ``_`` read as ``-``. Files ship beside this module with their LICENSE and SOURCE.md; see
docs/datasets.md for sources and licences.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from importlib import resources

from ..errors import ConfigError
from .seeded import shuffled

DVMP_SIZE, DVMP_SEED = 200, 0


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a set.

    Attributes:
        prompt: the text, stripped of surrounding whitespace.
        set: the set's name.
        index: position in the source file (0-based), before any shuffling.
        category: group within the set (A&E ``animals``; T2I-CompBench ``color`` ...), or "".
        subjects: the nouns the prompt is about, where the source makes them known
            (A&E, DVMP); empty otherwise.
        phrases: the prompt's noun phrases where known (``"a red car"``); empty otherwise.
    """

    prompt: str
    set: str
    index: int
    category: str = ""
    subjects: tuple[str, ...] = ()
    phrases: tuple[str, ...] = ()


@dataclass(frozen=True)
class PromptSet:
    """A named set: its reader, where it comes from and its licence (a shipped file)."""

    name: str
    description: str
    source: str
    licence: str
    licence_file: str  # path inside attnguide.datasets
    read: Callable[[], tuple[PromptItem, ...]]


def _text(path: str) -> str:
    return resources.files("attnguide.datasets").joinpath(path).read_text(encoding="utf-8")


def _lines(path: str) -> list[str]:
    """Non-empty lines, stripped (CC-500 has some with stray spaces)."""
    return [line.strip() for line in _text(path).splitlines() if line.strip()]


# -- Attend-and-Excite ------------------------------------------------------------------
AE_FILE = "attend_and_excite/a.e_prompts.json"
AE_GROUPS = ("animals", "animals_objects", "objects")
_AE_SPLIT = re.compile(r" (?:and|with) ")


@lru_cache(maxsize=None)
def _attend_and_excite(group: str | None) -> tuple[PromptItem, ...]:
    data = json.loads(_text(AE_FILE))
    name = "attend-and-excite" + (f"/{group.replace('_', '-')}" if group else "")
    items, index = [], 0
    for key in AE_GROUPS:
        for prompt in data[key]:
            if group in (None, key):
                # every A&E prompt is "a [colour] noun (and|with) a [colour] noun"
                phrases = tuple(_AE_SPLIT.split(prompt))
                subjects = tuple(p.split()[-1] for p in phrases)
                items.append(PromptItem(prompt, name, index, key, subjects, phrases))
            index += 1
    return tuple(items)


# -- Structured Diffusion (ABC-6K, CC-500) and T2I-CompBench ----------------------------
@lru_cache(maxsize=None)
def _plain(name: str, files: tuple[tuple[str, str], ...]) -> tuple[PromptItem, ...]:
    """Text files of one prompt per line; ``files`` = ((category, path), ...)."""
    items: list[PromptItem] = []
    for category, path in files:
        items.extend(PromptItem(p, name, len(items), category) for p in _lines(path))
    return tuple(items)


COMPBENCH = (("color", "t2i_compbench/color_val.txt"), ("shape", "t2i_compbench/shape_val.txt"),
             ("texture", "t2i_compbench/texture_val.txt"))


# -- DVMP -------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _dvmp() -> tuple[PromptItem, ...]:
    from .dvmp import generate_dvmp

    return tuple(
        PromptItem(p.text, "dvmp", i, f"{len(p.phrases)}-phrase", p.subjects, tuple(ph.text for ph in p.phrases))
        for i, p in enumerate(generate_dvmp(DVMP_SIZE, DVMP_SEED))
    )


_AE_SOURCE = ("Attend-and-Excite (Chefer et al., SIGGRAPH 2023), a.e_prompts.txt linked from "
              "yuval-alaluf/Attend-and-Excite; copy from Bomingmiao/NoiseDiffusion@24a5883")
_SD_SOURCE = "Structured Diffusion Guidance (Feng et al., ICLR 2023), weixi-feng/Structured-Diffusion-Guidance@773b2ba"
_CB_SOURCE = "T2I-CompBench (Huang et al., NeurIPS 2023), Karine-Huang/T2I-CompBench@1b70949 examples/dataset/*_val.txt"


def _catalogue() -> dict[str, PromptSet]:
    ae_lic, sd_lic, cb_lic = ("attend_and_excite/LICENSE", "structured_diffusion/LICENSE", "t2i_compbench/LICENSE")
    sets = [
        PromptSet("attend-and-excite", "Attend-and-Excite's 276 evaluation prompts, all three groups",
                  _AE_SOURCE, "MIT", ae_lic, lambda: _attend_and_excite(None)),
        *(PromptSet(f"attend-and-excite/{g.replace('_', '-')}", f"Attend-and-Excite group {g}",
                    _AE_SOURCE, "MIT", ae_lic, partial(_attend_and_excite, g)) for g in AE_GROUPS),
        PromptSet("abc-6k", "ABC-6K: COCO captions with two or more colour words, and their colour-swapped twins",
                  _SD_SOURCE, "MIT", sd_lic, lambda: _plain("abc-6k", (("", "structured_diffusion/ABC-6K.txt"),))),
        PromptSet("cc-500", "CC-500: concept conjunctions, 'a green bench and a red car'",
                  _SD_SOURCE, "MIT", sd_lic, lambda: _plain("cc-500", (("", "structured_diffusion/CC-500.txt"),))),
        PromptSet("t2i-compbench", "T2I-CompBench attribute-binding validation prompts: colour, shape, texture",
                  _CB_SOURCE, "MIT", cb_lic, lambda: _plain("t2i-compbench", COMPBENCH)),
        *(PromptSet(f"t2i-compbench/{c}", f"T2I-CompBench {c} binding validation prompts", _CB_SOURCE,
                    "MIT", cb_lic, partial(_plain, f"t2i-compbench/{c}", ((c, p),))) for c, p in COMPBENCH),
        PromptSet("dvmp", f"DVMP: {DVMP_SIZE} generated multi-modifier prompts (seed {DVMP_SEED}); "
                  "`attnguide datasets dvmp` makes others",
                  "generator following SynGen's dvmp.py (RoyiRa/Linguistic-Binding-in-Diffusion-Models), "
                  "reimplemented in attnguide.datasets.dvmp", "Apache-2.0 (attnguide)", "", _dvmp),
    ]
    return {s.name: s for s in sets}


SETS: dict[str, PromptSet] = _catalogue()


def normalise_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def get_prompt_set(name: str) -> PromptSet:
    """The set called ``name``; a ``ConfigError`` listing every name when there is none."""
    key = normalise_name(str(name))
    if key in SETS:
        return SETS[key]
    close = difflib.get_close_matches(key, list(SETS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown prompt set {name!r}{hint} (prompt sets: {', '.join(SETS)})")


def load_prompt_items(name: str, limit: int | None = None, seed: int | None = None) -> list[PromptItem]:
    """The items of set ``name``: in file order, or in an order fixed by ``seed``
    (``attnguide.datasets.seeded.shuffled``); then the first ``limit`` of them."""
    items = list(get_prompt_set(name).read())
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"prompt set limit must be a whole number >= 0, got {limit!r}")
    if seed is not None:
        items = shuffled(items, seed)
    return items if limit is None else items[:limit]


def load_prompt_set(name: str, limit: int | None = None, seed: int | None = None) -> list[str]:
    """The prompt texts of set ``name`` (see ``load_prompt_items``)."""
    return [item.prompt for item in load_prompt_items(name, limit, seed)]


def list_prompt_sets() -> list[PromptSet]:
    return list(SETS.values())
