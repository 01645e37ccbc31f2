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
    normalising only those is what keeps hashing cheap. The NFC pattern follows the
    quick-check of UAX #15, made narrower where it answers "maybe" (a character that can be
    the second half M of a canonical pair). Flagged: a character that NFC changes on its own
    (or a conjoining Hangul vowel/trailing consonant); two combining marks in a row (which
    canonical ordering might swap, or between which a mark might compose); and M right after
    a character that is the first half of some pair or decomposes to a base and marks (M may
    sort before those marks and reach the base). Without the narrowing every Indic vowel
    sign, Hebrew point and combining accent made a candidate: 9% of UDHR rows went through
    the slow NFC normaliser, of which 3% changed; with it, 5%.

    Why right after is enough: M is only composed with the nearest starter before it, and
    only if no mark between has a class of its own or higher. If the character just before M
    is a combining mark the two marks are flagged; if it is a starter it must pair with M or,
    decomposed, end in marks that M moves before.

    Exact pairs (each M after its own first halves) would flag 3.4% instead of 5%, but RE2
    builds its automaton anew for every call, and for that pattern the building cost more on
    16 MiB pieces than the extra rows do.
    """
    alone: set[int] = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))
    combining: set[int] = set()
    before: set[int] = set()  # first halves of pairs, and characters that decompose to marks
    seconds: set[int] = set()
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        char = chr(cp)
        if unicodedata.combining(char):
            combining.add(cp)
        if unicodedata.normalize("NFC", char) != char:
            alone.add(cp)
            continue
        decomposition = unicodedata.decomposition(char)
        if decomposition and not decomposition.startswith("<"):
            if unicodedata.combining(unicodedata.normalize("NFD", char)[-1]):
                before.add(cp)
            parts = decomposition.split()
            if len(parts) == 2:
                before.add(int(parts[0], 16))
                seconds.add(int(parts[1], 16))
    nfc = f"[{_ranges(alone)}]|[{_ranges(combining)}]{{2}}|[{_ranges(before)}][{_ranges(seconds)}]"
    spaces = f"[{_ranges(map(ord, OTHER_WHITESPACE))}]|  |^ | $"
    return nfc, spaces


def normalize_texts(texts: pa.Array) -> pa.Array:
    """Normalised copies of a string array (nulls stay null)."""
    candidates, normalised = _normalised_candidates(texts)
    return texts if candidates is None else pc.replace_with_mask(texts, candidates, normalised)


def _normalised_candidates(texts: pa.Array) -> tuple[pa.Array | None, pa.Array | None]:
    """The rows that may change (a boolean mask, or None for none) and their normalised values."""
    nfc, spaces = patterns()
    # One pass over every row finds the few that may change. They are all NFC-normalised
    # without a finer check first: each regex call builds its automaton anew, which for the
    # NFC pattern costs more than normalising the rows that turn out not to change.
    candidates = pc.fill_null(pc.match_substring_regex(texts, f"{nfc}|{spaces}"), False)
    if not pc.any(candidates).as_py():
        return None, None
    some = pc.utf8_normalize(texts.filter(candidates), "NFC")
    # The whitespace pattern is small (cheap to build), and replacing runs of spaces is not:
    # every word boundary would be a match.
    needs_spaces = pc.fill_null(pc.match_substring_regex(some, spaces), False)
    if pc.any(needs_spaces).as_py():
        collapsed = pc.utf8_trim(pc.replace_substring_regex(some.filter(needs_spaces), f"[ {_ranges(map(ord, OTHER_WHITESPACE))}]+", " "), " ")
        some = pc.replace_with_mask(some, needs_spaces, collapsed)
    return candidates, some


HASH_BATCH = 8192  # rows turned into Python bytes at a time


def text_digests(texts: pa.Array) -> np.ndarray:
    """sha256 of each normalised text: uint8 array of shape [n, 32].

    The few normalised rows are hashed from their own array and the others straight from
    `texts`, a batch of Python bytes at a time: no normalised copy of the whole array and no
    list of every row's bytes (together 50 MB per 32 MiB piece, and more in the allocator).
    """
    candidates, normalised = _normalised_candidates(texts)
    binary = texts.cast(pa.binary())
    changed = np.flatnonzero(candidates.to_numpy(zero_copy_only=False)) if candidates is not None else np.zeros(0, np.int64)
    replacements = normalised.cast(pa.binary()).to_pylist() if candidates is not None else []
    # This is the build's hottest loop. Copying a started hash skips the digest lookup that
    # hashlib.sha256() does on every call (OpenSSL 3 fetches it anew): 15% faster on UDHR texts.
    digests, copy = [], _EMPTY_SHA256.copy
    append = digests.append
    for start in range(0, len(texts), HASH_BATCH):
        values = binary.slice(start, HASH_BATCH).to_pylist()
        first, last = np.searchsorted(changed, [start, start + HASH_BATCH])
        for index in range(first, last):
            values[changed[index] - start] = replacements[index]
        for value in values:
            h = copy()
            h.update(value)
            append(h.digest())
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(texts), 32)


def text_sha256(text: str) -> str:
    """The hex sha256 a takedown list stores for a text (see the module docstring)."""
    return bytes(text_digests(pa.array([text], pa.string()))[0]).hex()


def normalize_text(text: str) -> str:
    return normalize_texts(pa.array([text], pa.string()))[0].as_py()
