"""A T5-convention SentencePiece-style (Unigram) tokenizer, shipped, with no download.

SD3 and Flux read T5 tokens. T5's own ``spiece.model`` is not in any package this project can
install, so attnguide ships a small Unigram tokenizer trained here with T5's conventions -
NFKC normalisation, metaspace pre-tokenisation (``▁`` marks a word start, prepended to the
first word), no start token, ``</s>`` (id 1) appended, ``<pad>`` id 0, ``<unk>`` id 2, no byte
fallback - on the words of the shipped CLIP vocabulary and the shipped prompt sets
(``attnguide.datasets``). Its pieces are not T5's: it exists so that alignment, capture and
losses meet real SentencePiece behaviour (word-start markers, multi-piece words, unknown
characters) offline. Real SD3/Flux models load their own T5 tokenizer.

``python -m attnguide.models.t5_tokenizer OUT.json`` trains it again (Unigram training is not
bit-reproducible across runs, so the shipped file is the reference).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

VOCAB_FILE = "t5_unigram.json"
VOCAB_SIZE = 8000
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
PROMPT_FILES = (
    "structured_diffusion/ABC-6K.txt",
    "structured_diffusion/CC-500.txt",
    "t2i_compbench/color_val.txt",
    "t2i_compbench/shape_val.txt",
    "t2i_compbench/texture_val.txt",
)


def training_corpus() -> Iterator[str]:
    """The shipped prompt sets' lines, then every lower-case word of the CLIP vocabulary."""
    from .tokenizer import clip_vocabulary

    root = resources.files("attnguide.datasets")
    for name in PROMPT_FILES:
        yield from root.joinpath(name).read_text(encoding="utf-8").splitlines()
    encoder, _ = clip_vocabulary()
    yield from sorted({t[:-4] for t in encoder if t.endswith("</w>") and re.fullmatch(r"[a-z]+", t[:-4])})


def train_t5_unigram(vocab_size: int = VOCAB_SIZE) -> Any:
    """Train the Unigram ``tokenizers.Tokenizer`` with T5's conventions (a few seconds)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(re.escape("  "), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), unk_token="<unk>")
    tok.train_from_iterator(training_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return tok


@functools.lru_cache(maxsize=1)
def _shipped() -> str:
    return resources.files("attnguide.data").joinpath(VOCAB_FILE).read_text(encoding="utf-8")


def t5_tokenizer(model_max_length: int = 256) -> Any:
    """The shipped T5-convention tokenizer as a ``T5TokenizerFast`` (offsets, ``</s>``, no
    start token); ``model_max_length``: SD3's default T5 window (Flux-dev uses 512)."""
    from tokenizers import Tokenizer
    from transformers import T5TokenizerFast

    return T5TokenizerFast(tokenizer_object=Tokenizer.from_str(_shipped()), eos_token="</s>", unk_token="<unk>",
                           pad_token="<pad>", extra_ids=0, model_max_length=model_max_length)


if __name__ == "__main__":  # pragma: no cover - the build command
    import sys

    path = sys.argv[1] if len(sys.argv) > 1 else VOCAB_FILE
    with open(path, "w", encoding="utf-8") as out:
        out.write(train_t5_unigram().to_str())
    print(f"wrote {path}")
