"""The real CLIP BPE tokenizer, built offline from the vocabulary shipped in ``attnguide/data``.

``bpe_simple_vocab_16e6.txt.gz`` is OpenAI CLIP's byte-pair vocabulary (MIT; see
``CLIP_BPE_LICENSE``). From it we rebuild the 49,408-entry encoder the way CLIP does: 256 byte
symbols, the same with the end-of-word marker, 48,894 merges, then the start and end tokens.
"""

from __future__ import annotations

import functools
import gzip
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

NUM_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 49408


def _byte_symbols() -> list[str]:
    """CLIP/GPT-2's reversible byte -> printable character table, in encoder order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codepoints = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codepoints.append(256 + extra)
            extra += 1
    return [chr(c) for c in codepoints]


@functools.lru_cache(maxsize=1)
def clip_vocabulary() -> tuple[dict[str, int], tuple[str, ...]]:
    """Return ``(encoder, merges)``: token -> id (49,408 entries) and the BPE merges."""
    blob = resources.files("attnguide.data").joinpath("bpe_simple_vocab_16e6.txt.gz").read_bytes()
    lines = gzip.decompress(blob).decode("utf-8").split("\n")
    merges = tuple(lines[1 : NUM_MERGES + 1])
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    encoder = {token: i for i, token in enumerate(vocab)}
    if len(encoder) != VOCAB_SIZE:  # pragma: no cover - guards a corrupted data file
        raise RuntimeError(f"CLIP vocabulary has {len(encoder)} entries, expected {VOCAB_SIZE}")
    return encoder, merges


def clip_tokenizer(model_max_length: int = 77, pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """Build the CLIP tokenizer with no download.

    Args:
        model_max_length: the text encoder's window (77 for SD 1.x/2.x).
        pad_token: ``"<|endoftext|>"`` as SD 1.x's CLIP tokenizer; ``"!"`` as SD 2.x's
            OpenCLIP tokenizer.
    """
    from transformers import CLIPTokenizer  # here, not at the top: importing transformers takes seconds

    encoder, merges = clip_vocabulary()
    return CLIPTokenizer(
        vocab=dict(encoder),
        merges=[tuple(m.split()) for m in merges],
        pad_token=pad_token,
        model_max_length=model_max_length,
    )
