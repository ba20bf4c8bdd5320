"""Bytes to text: a file's encoding found in a first pass over it, and its text decoded in
blocks of whole lines in a second.

Encodings, file by file (:func:`scan_source`):

1. A byte-order mark decides: UTF-8, UTF-16 or UTF-32, little- or big-endian (the mark
   itself is dropped).
2. Otherwise a block of lines that is valid UTF-8 is UTF-8 (the fast path; ASCII is UTF-8).
3. The lines that are not valid UTF-8 go, up to ``ENCODING_SAMPLE_BYTES`` of them, to
   charset-normalizer (:func:`detect_encoding`); every other such line of the file must
   then decode in the encoding found. A file that joins UTF-8 lines and lines in one
   legacy encoding keeps both readable (its encoding reads ``mixed:utf-8+cp1252``).
4. The manifest records each file's encoding and the confidence of it (1.0 where nothing
   was guessed: UTF-8, a byte-order mark). A file whose encoding is not found with
   ``ingest.min_encoding_confidence`` is skipped as undecodable, never written as mojibake.

The first pass also finds whether a file is usable at all (unreadable, corrupt, empty,
binary: NUL bytes; undecodable) before anything of it is written, and whether it has
blank lines (how its paragraphs are cut). :func:`decode` does the same for bytes in memory.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from electra.core.config import IngestConfig
from electra.data.sources import READ_BLOCK_BYTES, open_source, raw_blocks
from electra.data.text import has_blank_line

# Byte-order marks and the codec each names, longest first (UTF-32-LE's begins with UTF-16-LE's).
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)
BOM = codecs.BOM_UTF8
# A file that is neither UTF-8 nor marked by a BOM is looked for among these legacy
# encodings (Python's names): about the set Firefox's detector (chardetng) guesses among,
# the Windows code pages, the ISO 8859 parts still in use, KOI8, DOS Cyrillic and the CJK
# encodings. Why a closed list: rare code pages read real text as mojibake with no more
# "chaos" than the truth (French cp1252 scores better as mac_latin2, Polish ISO-8859-2 as
# ISO-8859-14, short Russian as cp1125). All of them are ASCII-compatible and never put a
# line-break byte inside a character, so a file can be decoded line by line.
LEGACY_ENCODINGS = (
    "cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257", "cp1258", "cp874",
    "iso8859_2", "iso8859_4", "iso8859_5", "iso8859_6", "iso8859_7", "iso8859_8", "iso8859_13",
    "koi8_r", "koi8_u", "cp866", "gb18030", "big5", "euc_jp", "cp932", "cp949",
)
# Of encodings that fit a sample equally well, this one: the WHATWG default for unlabelled
# legacy text, and what most stray bytes in English corpora are.
DEFAULT_LEGACY_ENCODING = "cp1252"
# The lines that are not UTF-8 given to the detector: a bounded sample (the first MiB of
# them), so detection costs the same memory for any file size; the rest is checked against it.
ENCODING_SAMPLE_BYTES = 1 << 20
# A detected encoding must be this sure, unless the caller says otherwise (ingest.min_encoding_confidence).
DEFAULT_MIN_ENCODING_CONFIDENCE: float = IngestConfig.model_fields["min_encoding_confidence"].default
# charset-normalizer's own margins for "fits as well": chaos within 0.01, coherence within 0.02.
_CHAOS_TIE, _COHERENCE_TIE = 0.01, 0.02


class UndecodableError(ValueError):
    """Raised when text has no encoding that decodes it with confidence; the message is the
    reason a file is skipped for."""


def bom_codec(head: bytes) -> tuple[str | None, int]:
    """The codec a byte-order mark at the start of ``head`` names, and the mark's length;
    ``(None, 0)`` without one."""
    for mark, codec in BOMS:
        if head.startswith(mark):
            return codec, len(mark)
    return None, 0


def _wide_text_blocks(path: Path, codec: str, skip: int) -> Iterator[str]:
    """The text of a UTF-16 or UTF-32 file (after its ``skip`` bytes of BOM) in blocks of
    whole lines. These encodings put NUL and newline bytes inside characters, so their bytes
    cannot be cut into lines: they are decoded as a stream, and the text cut at line breaks."""
    decoder = codecs.getincrementaldecoder(codec)()   # strict
    pending = ""
    with open_source(path) as handle:
        handle.read(skip)
        while True:
            chunk = handle.read(READ_BLOCK_BYTES)
            try:
                pending += decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                raise UndecodableError(f"undecodable: not valid {codec} ({exc.reason})") from None
            if not chunk:
                break
            cut = pending.rfind("\n") + 1
            if cut:
                yield pending[:cut]
                pending = pending[cut:]
    yield pending


def _decode_lines(data: bytes, legacy: str | None) -> str:
    """Decode a block of whole lines: UTF-8 when the block is valid UTF-8 (a newline byte never
    falls inside a UTF-8 sequence, so a file valid as a whole is valid block by block),
    otherwise line by line, each line UTF-8 or else ``legacy``, strictly (``UnicodeDecodeError``)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if legacy is None:
            raise
    return "".join(_decode_line(line, legacy) for line in data.splitlines(keepends=True))


def _decode_line(line: bytes, legacy: str) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode(legacy)


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass
class FileScan:
    """What a first pass over a file finds, before anything of it is written; what its
    second pass (:func:`decoded_blocks`) decodes it with."""

    skipped: str | None = None
    encoding: str | None = None         # utf-8, utf-8-sig, utf-16-le, cp1251, mixed:utf-8+cp1252 ...
    confidence: float | None = None     # of the encoding: 1.0 unless it was detected
    wide: str | None = None             # a UTF-16/32 codec (named by the BOM): decoded as one stream
    bom_bytes: int = 0
    legacy: str | None = None           # the codec of the lines that are not UTF-8
    one_per_line: bool = False          # no blank line: one paragraph per line (WikiText, dumps)


def decoded_blocks(path: Path, scan: FileScan) -> Iterator[str]:
    """The file's text in blocks of whole lines (each ends with a line break, but the last),
    decoded as its first pass (:func:`scan_source`) found; without a byte-order mark."""
    if scan.wide:
        yield from _wide_text_blocks(path, scan.wide, scan.bom_bytes)
        return
    first = True
    for raw in raw_blocks(path):
        if first:
            first = False
            raw = raw[scan.bom_bytes:]
        yield _decode_lines(raw, scan.legacy)


def _bounded_sample(lines: list[bytes]) -> bytes:
    """The lines joined, cut to about ``ENCODING_SAMPLE_BYTES`` at a space or line break (bytes
    that no legacy encoding uses inside a character, so the cut splits no character)."""
    sample = b"".join(lines)
    if len(sample) > ENCODING_SAMPLE_BYTES:
        cut = max(sample.rfind(b" ", 0, ENCODING_SAMPLE_BYTES), sample.rfind(b"\n", 0, ENCODING_SAMPLE_BYTES))
        sample = sample[:cut] if cut > 0 else sample[:ENCODING_SAMPLE_BYTES]
    return sample


@dataclass(frozen=True)
class EncodingGuess:
    """An encoding :func:`detect_encoding` found, and how sure it is (1 - chaos)."""

    encoding: str
    confidence: float


def detect_encoding(sample: bytes, min_confidence: float) -> EncodingGuess:
    """The legacy encoding of ``sample`` (bytes that are not UTF-8), with charset-normalizer.

    1. charset-normalizer decodes the sample in each of ``LEGACY_ENCODINGS`` and measures,
       for each decoding that succeeds, its chaos (the share of improbable characters, as
       mojibake has) and its coherence (how well its letters match a language's).
    2. The best fit has the least chaos (within charset-normalizer's own margin, 0.01); of
       those, the ones that glue the fewest symbols to letters (:func:`_glued_symbols`:
       "poci¹giem" is Polish read as cp1252; charset-normalizer's chaos, averaged over
       mostly-ASCII text, barely sees it); of those, the most coherent (within 0.02).
       Encodings that give the same text are one answer (``could_be_from_charset``).
    3. One answer: its encoding. Several (a few accented letters read as well in several
       code pages): cp1252 if it is one of them, else none: the file is ambiguous. (Some
       confusions only words can settle: Hungarian cp1250 "ő" and "ű" are cp1252 "õ" and
       "û", letters both, so such a file is read as cp1252.)
    4. The confidence is 1 - chaos of the answer (what charset-normalizer's chardet-style
       ``detect`` reports); below ``min_confidence``, no answer.

    No answer raises :class:`UndecodableError`, its message the reason to skip the file.
    """
    from charset_normalizer import from_bytes

    matches = list(from_bytes(sample, cp_isolation=list(LEGACY_ENCODINGS)))
    if not matches:
        raise UndecodableError("undecodable: no known encoding decodes it (charset-normalizer)")
    least_chaos = min(m.chaos for m in matches)
    close = [m for m in matches if m.chaos <= least_chaos + _CHAOS_TIE]
    if len(close) > 1:
        glued = {id(m): _glued_symbols(str(m)) for m in close}
        close = [m for m in close if glued[id(m)] == min(glued.values())]
    most_coherent = max(m.coherence for m in close)
    best = [m for m in close if m.coherence >= most_coherent - _COHERENCE_TIE]
    preferred = [m for m in best if DEFAULT_LEGACY_ENCODING in m.could_be_from_charset]
    if len(best) > 1 and not preferred:
        names = ", ".join(m.encoding for m in best[:4]) + (", ..." if len(best) > 4 else "")
        raise UndecodableError(f"undecodable: ambiguous encoding ({names} fit equally well)")
    match = (preferred or best)[0]
    encoding = DEFAULT_LEGACY_ENCODING if DEFAULT_LEGACY_ENCODING in match.could_be_from_charset else match.encoding
    confidence = round(1.0 - match.chaos, 3)
    if confidence < min_confidence:
        raise UndecodableError(f"undecodable: {encoding} at confidence {confidence} "
                               f"< ingest.min_encoding_confidence ({min_confidence})")
    return EncodingGuess(encoding, confidence)


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


# Non-letters that real words hold: apostrophes, the Catalan middle dot, hyphens.
_IN_WORD = "\u2019\u02bc\u00b7\u00ad\u2010\u2011"


def _glued_symbols(text: str) -> int:
    """How many characters outside ASCII that are not letters sit glued to a letter: between
    two letters, or a symbol, superscript digit or inverted mark (¡ ¿) right after one. That
    is what a wrong code page makes of letters ("poci¹giem", "sabbatical”Xand"), and rare
    in real prose (apostrophes and hyphens aside)."""
    count = 0
    for match in _NON_ASCII.finditer(text):
        at = match.start()
        char = text[at]
        if char.isalpha() or char in _IN_WORD or not (at and text[at - 1].isalpha()):
            continue
        category = unicodedata.category(char)
        if category[0] == "M":   # a combining mark belongs to its letter
            continue
        if (at + 1 < len(text) and text[at + 1].isalpha()) or category[0] == "S" or category == "No" \
                or char in "\u00a1\u00bf":
            count += 1
    return count


def _encoding_label(utf8_lines: bool, legacy: str | None, bom: bool) -> str:
    """A file's encoding: ``utf-8`` (``utf-8-sig`` with a byte-order mark), the legacy one, or
    ``mixed:utf-8+<legacy>`` when some non-ASCII lines are UTF-8 and others are not."""
    if legacy is None:
        return "utf-8-sig" if bom else "utf-8"
    return f"mixed:utf-8+{legacy}" if utf8_lines else legacy


def _scan_wide(path: Path, codec: str, skip: int) -> FileScan:
    """:func:`scan_source` for a UTF-16 or UTF-32 file: NUL characters (not bytes) make it binary."""
    seen, nonspace, blank = 0, False, False
    for text in _wide_text_blocks(path, codec, skip):
        if seen < 65536 and "\x00" in text[: 65536 - seen]:
            return FileScan(skipped="binary file (NUL bytes)")
        seen += len(text)
        nonspace = nonspace or bool(text.strip())
        blank = blank or has_blank_line(text)
    if not nonspace:
        return FileScan(skipped="empty file")
    return FileScan(
        encoding=codec, confidence=1.0, wide=codec, bom_bytes=skip, one_per_line=not blank)


def _scan_bytes(path: Path, min_confidence: float) -> FileScan:
    """:func:`scan_source` for a file read as bytes cut into lines (UTF-8, a legacy encoding, or both)."""
    seen = offset = 0
    nonspace = blank = utf8_lines = bom = False
    sample: list[bytes] = []      # lines not UTF-8 while no encoding is known for them
    sample_bytes = 0
    guess: EncodingGuess | None = None

    def settle() -> None:
        # 1. Detect on the sample; 2. its lines must decode whole (the sample may be cut).
        nonlocal guess, blank
        guess = detect_encoding(_bounded_sample(sample), min_confidence)
        blank = blank or has_blank_line("".join(_legacy_text(line, guess.encoding, None) for line in sample))
        sample.clear()

    for raw in raw_blocks(path):
        data = raw
        if offset == 0 and raw.startswith(BOM):
            bom, data = True, raw[len(BOM):]
        if seen < 65536 and b"\x00" in raw[: 65536 - seen]:   # binary: a NUL in the first 64 KiB
            return FileScan(skipped="binary file (NUL bytes)")
        seen += len(raw)
        nonspace = nonspace or bool(data.strip())
        at = offset + len(raw) - len(data)
        offset += len(raw)
        try:
            text = data.decode("utf-8")   # the fast path: a whole block of UTF-8
        except UnicodeDecodeError:
            pass
        else:
            utf8_lines = utf8_lines or not data.isascii()
            blank = blank or has_blank_line(text)
            continue
        texts: list[str] = []   # the block's lines decoded so far (each ends with a break: joined, still lines)
        for line in data.splitlines(keepends=True):
            if _is_utf8(line):
                utf8_lines = utf8_lines or not line.isascii()
                texts.append(line.decode("utf-8"))
            elif guess is None:
                sample.append(line)
                sample_bytes += len(line)
                if sample_bytes >= ENCODING_SAMPLE_BYTES:
                    settle()
            else:
                texts.append(_legacy_text(line, guess.encoding, at))
            at += len(line)
        blank = blank or has_blank_line("".join(texts))
    if sample:
        settle()
    if not nonspace:
        return FileScan(skipped="empty file")
    legacy = guess.encoding if guess else None
    return FileScan(encoding=_encoding_label(utf8_lines, legacy, bom), confidence=guess.confidence if guess else 1.0,
                    legacy=legacy, bom_bytes=len(BOM) if bom else 0, one_per_line=not blank)


def _legacy_text(line: bytes, encoding: str, at: int | None) -> str:
    """A non-UTF-8 line decoded in the file's detected encoding, or the reason the file is undecodable."""
    try:
        return line.decode(encoding)
    except UnicodeDecodeError as exc:
        where = f" at byte {at + exc.start}" if at is not None else ""
        raise UndecodableError(f"undecodable: the text{where} is not {encoding}, the encoding detected "
                               f"from the file's first non-UTF-8 lines") from None


def scan_source(path: Path, min_confidence: float = DEFAULT_MIN_ENCODING_CONFIDENCE) -> FileScan:
    """Read a file once, as a stream, without keeping it: whether it is unreadable (or corrupt),
    empty, binary or undecodable, its encoding (see the module's docstring) and whether it has
    blank lines (how paragraphs are cut). Reading it all first means a corrupt, undecodable or
    vanishing file is skipped before any of it is written."""
    try:
        with open_source(path) as handle:
            wide, skip = bom_codec(handle.read(4))
        if wide and wide != "utf-8-sig":
            return _scan_wide(path, wide, skip)
        return _scan_bytes(path, min_confidence)
    except OSError as exc:   # vanished since it was listed, not readable, corrupt
        return FileScan(skipped=f"unreadable: {exc.strerror or exc}")
    except UndecodableError as exc:
        return FileScan(skipped=str(exc))


def decode(data: bytes, min_confidence: float = DEFAULT_MIN_ENCODING_CONFIDENCE) -> tuple[str, str]:
    """Decode bytes held in memory as ingestion decodes a file; return ``(text, encoding)``.

    A byte-order mark decides (and is dropped); else UTF-8 when ``data`` is valid UTF-8; else
    line by line, UTF-8 lines as UTF-8 and the others in the encoding :func:`detect_encoding`
    finds for them, so a file pasted together from UTF-8 and Windows-1252 parts keeps both
    readable (``mixed:utf-8+cp1252``). Raises :class:`UndecodableError` when no encoding
    is found with ``min_confidence``, or the lines do not all decode in the one found.
    """
    codec, skip = bom_codec(data)
    if codec and codec != "utf-8-sig":
        try:
            return data[skip:].decode(codec), codec
        except UnicodeDecodeError as exc:
            raise UndecodableError(f"undecodable: not valid {codec} ({exc.reason})") from None
    body = data[skip:]
    if _is_utf8(body):
        return body.decode("utf-8"), _encoding_label(False, None, bool(skip))
    lines = body.splitlines(keepends=True)
    sample: list[bytes] = []
    sampled = 0
    for line in lines:
        if sampled >= ENCODING_SAMPLE_BYTES:
            break
        if not _is_utf8(line):
            sample.append(line)
            sampled += len(line)
    guess = detect_encoding(_bounded_sample(sample), min_confidence)
    text = "".join(_legacy_text(line, guess.encoding, None) if not _is_utf8(line) else line.decode("utf-8")
                   for line in lines)
    utf8_lines = any(not line.isascii() and _is_utf8(line) for line in lines)
    return text, _encoding_label(utf8_lines, guess.encoding, bool(skip))
