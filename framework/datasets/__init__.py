"""Prompt sets for evaluation, shipped with their sources and licences (docs/datasets.md).

``load_prompt_set(name, limit, seed)`` gives prompt texts (what recipes' ``prompts: {set: ...}``
use); ``load_prompt_items`` gives ``PromptItem``s with category, subject nouns and noun phrases
where the source makes them known; ``generate_dvmp`` makes DVMP prompts for any size and seed.
"""

from __future__ import annotations

from .catalog import (
    SETS,
    PromptItem,
    PromptSet,
    get_prompt_set,
    list_prompt_sets,
    load_prompt_items,
    load_prompt_set,
)
from .dvmp import DvmpPhrase, DvmpPrompt, generate_dvmp

__all__ = [
    "SETS",
    "DvmpPhrase",
    "DvmpPrompt",
    "PromptItem",
    "PromptSet",
    "generate_dvmp",
    "get_prompt_set",
    "list_prompt_sets",
    "load_prompt_items",
    "load_prompt_set",
]
