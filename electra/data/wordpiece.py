"""The WordPiece tokenizer shared by every stage.

Built with HF ``tokenizers`` from a vocab file (the BERT uncased vocab by
default) or trained on the corpus, and wrapped as a ``PreTrainedTokenizerFast``
so that it saves next to the models and reloads through ``AutoTokenizer``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _wrap(backend, lowercase: bool):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    cls_id = backend.token_to_id("[CLS]")
    sep_id = backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        do_lower_case=lowercase,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def _check_special_tokens(vocab: dict[str, int], source: str) -> None:
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"{source}: vocabulary lacks the special tokens {missing}")


def tokenizer_from_vocab(vocab_file: str | Path, lowercase: bool = True):
    """A BERT-style WordPiece tokenizer over an existing ``vocab.txt`` (one token per line)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece

    path = Path(vocab_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: vocab file not found (run `dvc pull` for data/vocab)")
    lines = path.read_text(encoding="utf-8").splitlines()
    # ids are line numbers (duplicates keep their first line), as in BERT's vocab.txt
    vocab = {}
    for line_no, token in enumerate(lines):
        if token and token not in vocab:
            vocab[token] = line_no
    if not vocab:
        raise ValueError(f"{path}: vocab file is empty")
    _check_special_tokens(vocab, str(path))
    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return _wrap(backend, lowercase)


def train_tokenizer(texts: Iterable[str], vocab_size: int, lowercase: bool = True):
    """Train a WordPiece vocabulary on ``texts`` (an iterator of sentences)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import WordPiece

    backend = Tokenizer(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, continuing_subword_prefix="##"
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return _wrap(backend, lowercase)
