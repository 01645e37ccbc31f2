"""From a parsed chunk to clean output rows: validation (rejects named by line) and PII
scrubbing."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datasets_app.shards.sources import RawChunk, Wanted, type_name
from datasets_app.shards.spec import ALL_CONFIG

CONFIG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# RE2 patterns. Phone numbers need a leading + or 0, or the North American 3-3-4 shape,
# so that years, article numbers and figures in running text are left alone.
PII_PATTERNS = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "phone": r"(?:\+[0-9]{1,3}(?:[ .-]?\(?[0-9]{1,4}\)?){2,6})"
             r"|(?:\(?\b0[0-9]{1,4}\)?[ ./-]?[0-9]{2,4}(?:[ .-][0-9]{2,4}){1,4}\b)"
             r"|(?:\(?\b[2-9][0-9]{2}\)?[ .-][0-9]{3}[ .-][0-9]{4}\b)",
}
PII_PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]"}


class Rejected:
    """Per-row reasons of one chunk, filled cheaply: most chunks have none."""

    def __init__(self, n: int):
        self.mask = np.zeros(n, dtype=bool)
        self.reasons: dict[int, str] = {}

    def add(self, mask: np.ndarray, reason) -> None:
        new = mask & ~self.mask
        if new.any():
            for index in np.flatnonzero(new):
                self.reasons[int(index)] = reason(int(index)) if callable(reason) else reason
            self.mask |= new


def _as_array(column) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        # combine_chunks copies even a single chunk, which is what a piece's parse gives.
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def _string_column(table: pa.Table, name: str, rejected: Rejected, *, ints_ok: bool = False, checked: bool = False) -> pa.Array:
    n = table.num_rows
    if name not in table.column_names:
        return pa.nulls(n, pa.string())
    column = _as_array(table[name])
    type_ = column.type
    if checked and pa.types.is_string(type_):
        return column  # validated while parsing; a second full UTF-8 pass cost 5% of the build
    if pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_binary(type_) or pa.types.is_large_binary(type_):
        try:
            column = column.cast(pa.string())
            column.validate(full=True)
            return column
        except pa.ArrowInvalid:
            values = column.cast(pa.binary()).to_pylist()
            bad = np.zeros(n, dtype=bool)
            for i, value in enumerate(values):
                if value is not None:
                    try:
                        values[i] = value.decode("utf-8")
                    except UnicodeDecodeError:
                        bad[i], values[i] = True, None
            rejected.add(bad, f"invalid UTF-8 in '{name}'")
            return pa.array(values, pa.string())
    if pa.types.is_null(type_):
        return pa.nulls(n, pa.string())
    if ints_ok and pa.types.is_integer(type_):
        return column.cast(pa.string())
    rejected.add(column.is_valid().to_numpy(zero_copy_only=False), f"'{name}' is {type_name(type_)}, expected a string")
    return pa.nulls(n, pa.string())


def _typed_column(table: pa.Table, name: str, type_: pa.DataType, rejected: Rejected, *, checked: bool) -> pa.Array:
    n = table.num_rows
    if name not in table.column_names:
        return pa.nulls(n, type_)
    if pa.types.is_string(type_):
        return _string_column(table, name, rejected, checked=checked)
    column = _as_array(table[name])
    if column.type == type_:
        return column
    if pa.types.is_null(column.type) or (pa.types.is_floating(type_) and pa.types.is_integer(column.type)) \
            or (pa.types.is_integer(type_) and pa.types.is_integer(column.type)):
        try:
            return column.cast(type_)
        except pa.ArrowInvalid:
            pass
    rejected.add(column.is_valid().to_numpy(zero_copy_only=False), f"'{name}' is {type_name(column.type)}, expected {type_name(type_)}")
    return pa.nulls(n, type_)


def validate(chunk: RawChunk, *, wanted: Wanted, source: str, default_language: str | None) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Output rows (id, text, language, source, kept columns) and the rejects (line, reason)."""
    table, n = chunk.table, chunk.table.num_rows
    rejected = Rejected(n)
    checked = chunk.utf8_checked
    text = _string_column(table, wanted.text, rejected, checked=checked)
    rejected.add(text.is_null().to_numpy(zero_copy_only=False), f"no value for '{wanted.text}'")

    if wanted.id:
        ids = _string_column(table, wanted.id, rejected, ints_ok=True, checked=checked)
        rejected.add(ids.is_null().to_numpy(zero_copy_only=False), f"no value for '{wanted.id}'")
    else:
        ids = pc.binary_join_element_wise(f"{chunk.rel}:", pa.array(chunk.lines).cast(pa.string()), "")

    if wanted.language:
        language = _string_column(table, wanted.language, rejected, checked=checked)
        if default_language:
            language = pc.fill_null(language, default_language)
        rejected.add(language.is_null().to_numpy(zero_copy_only=False), f"no value for '{wanted.language}'")
        bad_names = [v for v in pc.unique(language).to_pylist() if v is not None and (v == ALL_CONFIG or not CONFIG_NAME.fullmatch(v))]
        if bad_names:
            values = language.to_pylist()
            rejected.add(pc.is_in(language, pa.array(bad_names, pa.string())).to_numpy(zero_copy_only=False),
                         lambda i: f"'{wanted.language}' value {values[i]!r} cannot name a config (letters, digits, '-', '_', '.'; not '{ALL_CONFIG}')")
    else:
        language = pa.array(np.full(n, default_language, dtype=object), pa.string())

    columns = {"id": ids, "text": text, "language": language, "source": pa.array(np.full(n, source, dtype=object), pa.string())}
    for name, type_ in wanted.keep.items():
        columns[name] = _typed_column(table, name, type_, rejected, checked=checked)

    rejects = sorted(chunk.rejects + [(int(chunk.lines[i]), reason) for i, reason in rejected.reasons.items()])
    out = pa.table(columns)
    if rejected.mask.any():
        out = out.filter(pa.array(~rejected.mask))
    return out, rejects


def scrub_pii(text: pa.Array) -> tuple[pa.Array, dict[str, int], np.ndarray]:
    """Text with e-mail addresses and phone numbers replaced, the counts by kind, and which rows changed."""
    counts, changed = {}, np.zeros(len(text), dtype=bool)
    for kind, pattern in PII_PATTERNS.items():
        found = pc.count_substring_regex(text, pattern).to_numpy(zero_copy_only=False)
        counts[kind] = int(found.sum())
        if counts[kind]:
            hit = found > 0
            changed |= hit
            text = pc.if_else(pa.array(hit), pc.replace_substring_regex(text, pattern, PII_PLACEHOLDERS[kind]), text)
    return text, counts, changed
