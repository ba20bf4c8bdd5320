"""Text as ingestion cleans and cuts it: normalisation (NFC, line endings, control
characters, runs of spaces), documents and paragraphs from a stream of lines, sentences
by a rule-based splitter, and over-long sentences cut at spaces.

Pure functions of ``str``: no files, no encodings (:mod:`electra.data.decoding` turns bytes
into the text these take).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator

_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "rev", "hon", "gen", "col", "capt",
    "lt", "sgt", "mt", "vs", "etc", "no", "vol", "fig", "inc", "ltd", "co", "corp", "u.s",
    "e.g", "i.e", "a.m", "p.m",
}
# Quotes and brackets that may close a sentence after its . ! or ?, and that may open the
# next one before its first letter (Spanish opens questions with ¿ and exclamations with ¡;
# French quotes « », German „ “ and » «).
_CLOSERS = "\"')]\u201d\u2019\u201c\u2018\u00bb\u00ab\u203a\u2039"
_OPENERS = "\"'([\u201c\u2018\u201e\u201a\u00ab\u00bb\u2039\u203a\u00bf\u00a1"
# A candidate sentence end: . ! or ? (plus closers) and space. It ends a sentence when the
# next word starts like one (:func:`_starts_sentence`), which a regex cannot say for every
# script: Python's ``re`` has no class for "upper-case letter" beyond ASCII.
_SENTENCE_END = re.compile(r"[.!?]+[" + re.escape(_CLOSERS) + r"]*\s+")
# Runs of these space characters become one " ": each becomes " ", then runs of " " one
# (a regex replacing every single space is slow on megabytes).
_SPACE_TABLE = {ord(c): " " for c in "\t\u00a0\u3000" + "".join(chr(c) for c in range(0x2000, 0x200C))}
_SPACE_RUNS = re.compile(r" {2,}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def normalize_text(text: str) -> str:
    """NFC-normalise, unify line endings, drop control characters, collapse spaces per line."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Neither the control nor the space characters hold "\\n": the whole text at once is per line.
    text = _SPACE_RUNS.sub(" ", _CONTROL.sub("", text).translate(_SPACE_TABLE))
    return "\n".join(line.strip() for line in text.split("\n"))


def split_lines(texts: Iterable[str], normalize: bool = False) -> Iterator[str]:
    """``"".join(texts).split("\\n")`` (normalised first when ``normalize``), streamed.

    Each text ends with a line break (but the last), and nothing in normalisation reaches
    across one, so normalising text by text gives the same lines as the whole text."""
    pending = ""
    for text in texts:
        pending += normalize_text(text) if normalize else text
        *complete, pending = pending.split("\n")
        yield from complete
    yield pending


def has_blank_line(text: str) -> bool:
    """Whether a line of ``text`` that ends with a line break is blank once normalised (the
    text ends with a break, or is a file's last line). What cuts a file into paragraphs."""
    return "" in normalize_text(text).split("\n")[:-1]


def _starts_sentence(text: str, at: int) -> bool:
    """Whether the word at ``at`` can start a sentence: after any opening quotes or brackets
    (and one space after them, as in French "« Oui"), a digit or a letter that is not lower
    case: upper or title case in any script ("Él", "Он", "Η"), or a letter of a script without
    case. A lower-case letter ("e.g. the") does not start one."""
    end = len(text)
    opened = at
    while at < end and text[at] in _OPENERS:
        at += 1
    if at > opened and at < end and text[at] == " ":
        at += 1
    if at >= end:
        return False
    char = text[at]
    return char in "0123456789" or (char.isalpha() and not char.islower())


def split_sentences(paragraph: str) -> list[str]:
    """Split one paragraph into sentences with a rule-based splitter (no model, any language
    that ends sentences with . ! or ? and a space): a sentence ends there when the next word
    starts like a sentence (:func:`_starts_sentence`), but abbreviations and initials do not
    end one."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        if not _starts_sentence(paragraph, match.end()):
            continue
        before = paragraph[start : match.start() + 1].rstrip()
        last_word = before.split()[-1] if before.split() else ""
        token = last_word.rstrip(".!?" + _CLOSERS).lower().lstrip(_OPENERS)
        if paragraph[match.start()] == "." and (
            token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha())
        ):
            continue
        sentence = paragraph[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    tail = paragraph[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def split_documents(text: str, separator: re.Pattern[str] | None) -> Iterator[list[str]]:
    """Yield documents as lists of paragraphs from normalised text (lines already stripped)."""
    lines = text.split("\n")
    return split_document_lines(lines, separator, one_per_line="" not in lines[:-1])


def split_document_lines(lines: Iterable[str], separator: re.Pattern[str] | None,
                         one_per_line: bool) -> Iterator[list[str]]:
    """Yield documents as lists of paragraphs from a stream of normalised lines.

    A file is one document unless a line matches ``separator``, which then starts a
    new one (the line itself is a title and is dropped). Hard-wrapped prose separates
    paragraphs with blank lines; a file with no blank line at all (``one_per_line``:
    WikiText, one-paragraph-per-line dumps) has one paragraph per line. Only the
    current document is held in memory.
    """
    paragraphs: list[str] = []
    current: list[str] = []

    def flush_paragraph() -> None:
        if current:
            paragraphs.append(" ".join(current))
            current.clear()

    for raw_line in lines:
        if separator is not None and separator.match(raw_line):
            flush_paragraph()
            if paragraphs:
                yield list(paragraphs)
                paragraphs.clear()
            continue
        line = raw_line.strip()
        if not line:
            flush_paragraph()
        else:
            current.append(line)
            if one_per_line:
                flush_paragraph()
    flush_paragraph()
    if paragraphs:
        yield paragraphs


def split_long(sentence: str, max_chars: int) -> list[str]:
    """Cut a sentence longer than ``max_chars`` at spaces (hard cuts where a piece has none).

    Walks positions instead of re-slicing the rest, so a 100 MB line costs one pass."""
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    start, end = 0, len(sentence)
    while end - start > max_chars:
        cut = sentence.rfind(" ", start, start + max_chars + 1)
        if cut <= start:
            cut = start + max_chars
        piece = sentence[start:cut].strip()
        if piece:
            pieces.append(piece)
        start = cut
        while start < end and sentence[start] == " ":
            start += 1
    tail = sentence[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces
