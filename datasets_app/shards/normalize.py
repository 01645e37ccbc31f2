"""The normalised text a takedown hashes, and its sha256 computed for a whole batch.

Normalisation: Unicode NFC, then every run of whitespace (what Python's str.isspace
calls whitespace) becomes one space, then leading and trailing spaces go. Records that
differ only in composition or spacing therefore have the same hash, and a takedown
made from a copy-pasted record still matches. `text_sha256` (one text, used by the
takedown list) and `text_digests` (a batch, used by builds) share the code path that
normalises, so they can never disagree.
"""

from __future__ import annotations

import hashlib
import unicodedata
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# str.isspace() code points other than the plain space; checked against Python by the tests.
OTHER_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_EMPTY_SHA256 = hashlib.sha256()


def _ranges(code_points) -> str:
    spans: list[list[int]] = []
    for cp in sorted(code_points):
        if spans and spans[-1][1] == cp - 1:
            spans[-1][1] = cp
        else:
            spans.append([cp, cp])
    return "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in spans)


_seeded: tuple[str, str] | None = None


def patterns() -> tuple[str, str]:
    return _seeded or _patterns()


def seed_patterns(derived: tuple[str, str]) -> None:
    """Use patterns another process derived (a build's worker processes get the build's)."""
    global _seeded
    _seeded = derived


@cache
def _patterns() -> tuple[str, str]:
    """RE2 patterns flagging the rows that may change under normalisation.

    Most rows are already normal; finding the others with one vectorised regex and
    normalising only those is what keeps hashing cheap. The NFC pattern is the
    quick-check of UAX #15 made into a regex: a character that is not NFC_QC=Yes
    (changed by NFC on its own, or the second half of a canonical pair, or a conjoining
    Hangul vowel/trailing consonant), or two combining marks in a row (which canonical
    ordering might swap).
    """
    not_yes: set[int] = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))
    combining: set[int] = set()
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        char = chr(cp)
        if unicodedata.combining(char):
            combining.add(cp)
        decomposition = unicodedata.decomposition(char)
        if decomposition and not decomposition.startswith("<"):
            parts = decomposition.split()
            if len(parts) == 2:
                not_yes.add(int(parts[1], 16))
        if unicodedata.normalize("NFC", char) != char:
            not_yes.add(cp)
    nfc = f"[{_ranges(not_yes)}]|[{_ranges(combining)}]{{2}}"
    spaces = f"[{_ranges(map(ord, OTHER_WHITESPACE))}]|  |^ | $"
    return nfc, spaces


def normalize_texts(texts: pa.Array) -> pa.Array:
    """Normalised copies of a string array (nulls stay null)."""
    nfc, spaces = patterns()
    # One pass over every row finds the few that may change; the two finer checks run on those only.
    candidates = pc.fill_null(pc.match_substring_regex(texts, f"{nfc}|{spaces}"), False)
    if not pc.any(candidates).as_py():
        return texts
    some = texts.filter(candidates)
    needs_nfc = pc.fill_null(pc.match_substring_regex(some, nfc), False)
    if pc.any(needs_nfc).as_py():
        some = pc.replace_with_mask(some, needs_nfc, pc.utf8_normalize(some.filter(needs_nfc), "NFC"))
    needs_spaces = pc.fill_null(pc.match_substring_regex(some, spaces), False)
    if pc.any(needs_spaces).as_py():
        collapsed = pc.utf8_trim(pc.replace_substring_regex(some.filter(needs_spaces), f"[ {_ranges(map(ord, OTHER_WHITESPACE))}]+", " "), " ")
        some = pc.replace_with_mask(some, needs_spaces, collapsed)
    texts = pc.replace_with_mask(texts, candidates, some)
    return texts


def text_digests(texts: pa.Array) -> np.ndarray:
    """sha256 of each normalised text: uint8 array of shape [n, 32]."""
    values = normalize_texts(texts).cast(pa.binary()).to_pylist()
    # This is the build's hottest loop. Copying a started hash skips the digest lookup that
    # hashlib.sha256() does on every call (OpenSSL 3 fetches it anew): 15% faster on UDHR texts.
    digests, copy = [], _EMPTY_SHA256.copy
    append = digests.append
    for value in values:
        h = copy()
        h.update(value)
        append(h.digest())
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(values), 32)


def text_sha256(text: str) -> str:
    """The hex sha256 a takedown list stores for a text (see the module docstring)."""
    return bytes(text_digests(pa.array([text], pa.string()))[0]).hex()


def normalize_text(text: str) -> str:
    return normalize_texts(pa.array([text], pa.string()))[0].as_py()
