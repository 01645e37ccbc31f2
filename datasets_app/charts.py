"""A dataset's language distribution as a server-rendered SVG bar chart.

The dataset page inlines the returned markup, so the chart needs no JavaScript, no
external asset and no chart library. Everything a reader sees comes from the data, so
every piece of text is cleaned (XML cannot carry most control characters) and escaped;
the output can be marked safe in a template as it is.

Styling is left to the page: colours are ``currentColor`` at fixed opacities (the chart
follows the text colour, light or dark theme alike) and are given as presentation
attributes, which any CSS rule on the ``language-chart__*`` classes overrides. There is
no ``<style>`` element, because one inlined in HTML would apply to the whole page.

The output depends on nothing but the arguments: rows are sorted, coordinates are
rounded to two decimals, and the element ids are derived from the data, so the same
input gives byte-identical markup (and the page can cache it).
"""

from __future__ import annotations

import hashlib
import html
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["format_bytes", "format_count", "language_chart_svg"]

SVG_NS = "http://www.w3.org/2000/svg"

_BYTE_UNITS = ("kB", "MB", "GB", "TB", "PB", "EB")

# Layout, in SVG user units (pixels at the default size).
_PAD = 12
_HEADER_H = 50  # heading line and legend line
_ROW_H = 32
_BAR_H = 11
_BAR_GAP = 2
_OTHERS_GAP = 8  # extra room above the "other languages" row, for its separator
_GUTTER = 8
_VALUE_W = 88  # fits "1,234,567,890" and "999.9 MB" at the value font size
_FONT = 12
_VALUE_FONT = 11
_MIN_WIDTH = 320
_EMPTY_H = 48
# Width guesses for truncating labels, in ems: no font metrics on the server, so these
# err wide; the label column is also clipped, so a bad guess never overlaps the bars.
_EM_NARROW = 0.62
_EM_WIDE = 1.0
_ELLIPSIS = "\u2026"

# Opacities of currentColor. The bytes bar at 0.45 still has about 3.3:1 contrast
# against a white or near-black page (WCAG's 3:1 for graphics); the track is decoration.
_RECORDS_OPACITY = "0.8"
_BYTES_OPACITY = "0.45"
_TRACK_OPACITY = "0.06"
_MUTED_OPACITY = "0.72"
_FONT_FAMILY = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Noto Sans', 'Noto Sans Arabic', 'Noto Sans CJK SC', sans-serif"

# Explicit embeddings, overrides and isolates in a name could leak out of it and
# reorder the rest of the label (or a tooltip); the chart isolates names itself.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def format_count(n: int) -> str:
    """``27476`` -> ``"27,476"``."""
    _check_count(n, "n")
    return f"{n:,}"


def format_bytes(n: int) -> str:
    """Decimal units, one decimal from kB up: ``512 B``, ``1.5 kB``, ``12.3 MB``."""
    _check_count(n, "n")
    if n < 1000:
        return f"{n} B"
    for power, unit in enumerate(_BYTE_UNITS, start=1):
        value = n / 1000**power
        # Pick the unit by the rounded value, so 999,960 bytes reads "1.0 MB", not "1000.0 kB".
        if round(value, 1) < 1000 or unit == _BYTE_UNITS[-1]:
            return f"{value:,.1f} {unit}"
    raise AssertionError("unreachable: the last unit always returns")


@dataclass(frozen=True)
class _Row:
    code: str | None  # None for the "other languages" row
    name: str | None
    label: str  # the whole label as plain text, for tooltips and the id hash
    records: int
    text_bytes: int
    others: int = 0  # how many languages the "other languages" row stands for


def language_chart_svg(
    stats: Mapping[str, tuple[int, int]],
    *,
    names: Mapping[str, str] | None = None,
    top: int = 15,
    width: int = 640,
) -> str:
    """An SVG of the ``top`` languages by records, plus one row for all the others.

    ``stats`` maps a language config name (``"fra"``, ``"zho_Hant"``) to
    ``(records, text_bytes)``; ``names`` maps a code to a human name, shown as
    ``"French (fra)"``. Each row has a records bar and a bytes bar, each scaled to the
    largest of the named languages; the "other languages" row uses the same scales and,
    when it is longer than the plot, is cut off with a visible break (its numbers are
    printed in full). Ties in records are broken by code.
    """
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise ValueError(f"top must be a positive integer, not {top!r}")
    if not isinstance(width, int) or isinstance(width, bool) or width < _MIN_WIDTH:
        raise ValueError(f"width must be an integer of at least {_MIN_WIDTH}, not {width!r}")
    names = names or {}
    entries = []
    for code, value in stats.items():
        if not isinstance(code, str):
            raise TypeError(f"language codes must be strings, not {code!r}")
        try:
            records, text_bytes = value
        except (TypeError, ValueError):
            raise ValueError(f"stats[{code!r}] must be (records, text_bytes), not {value!r}") from None
        _check_count(records, f"records of {code!r}")
        _check_count(text_bytes, f"text bytes of {code!r}")
        entries.append((code, records, text_bytes))
    if not entries:
        return _empty_svg(width)

    entries.sort(key=lambda e: (-e[1], e[0]))
    shown, rest = entries[:top], entries[top:]
    rows = [_language_row(code, records, text_bytes, names.get(code)) for code, records, text_bytes in shown]
    if rest:
        label = _languages([e[0] for e in rest], other=True)
        rows.append(
            _Row(
                code=None,
                name=None,
                label=label,
                records=sum(e[1] for e in rest),
                text_bytes=sum(e[2] for e in rest),
                others=len(rest),
            )
        )
    totals = (_languages([e[0] for e in entries]), sum(e[1] for e in entries), sum(e[2] for e in entries))
    return _chart_svg(rows, totals, width=width, top=top)


def _chart_svg(rows: list[_Row], totals: tuple[int, int, int], *, width: int, top: int) -> str:
    languages, n_records, n_bytes = totals
    named = [r for r in rows if r.code is not None]
    has_others = len(named) < len(rows)
    # Scales come from the named languages only: the "other languages" row is a sum of
    # hundreds of them and would otherwise flatten every other bar. Only if all named
    # rows are zero does the others row set the scale (it is then the only non-zero one).
    max_records = max(r.records for r in named) or rows[-1].records
    max_bytes = max(r.text_bytes for r in named) or rows[-1].text_bytes

    label_w = max(120, round(width * 0.34))
    label_right = _PAD + label_w
    plot_x = label_right + _GUTTER
    value_right = width - _PAD
    plot_w = value_right - _VALUE_W - _GUTTER - plot_x
    rows_top = _PAD + _HEADER_H
    height = rows_top + len(rows) * _ROW_H + (_OTHERS_GAP if has_others else 0) + _PAD

    uid = _chart_id(rows, width, top)
    summary = (
        f"{languages}, "
        f"{format_count(n_records)} {_plural(n_records, 'record')}, {format_bytes(n_bytes)} of text"
    )
    title = f"Language distribution: {summary}"
    shown = f"the {format_count(len(named))} {_plural(len(named), 'language')} with the most records"
    if has_others:
        shown += f" and the other {format_count(rows[-1].others)} together"
    desc = (
        f"Records and UTF-8 text bytes for {shown}; each bar is scaled to the largest language. "
        f"Totals: {languages}, "
        f"{format_count(n_records)} {_plural(n_records, 'record')}, "
        f"{format_count(n_bytes)} {_plural(n_bytes, 'byte')} ({format_bytes(n_bytes)})."
    )

    out = [
        _svg_open(uid, width, height),
        f'<title id="{uid}-title">{_esc(title)}</title>',
        f'<desc id="{uid}-desc">{_esc(desc)}</desc>',
        # Labels that outrun the truncation guess are cut at the column edge rather
        # than drawn over the bars.
        f'<defs><clipPath id="{uid}-labels"><rect x="0" y="0" width="{label_right}" height="{height}"/></clipPath></defs>',
        f'<text class="language-chart__heading" x="{_PAD}" y="{_PAD + 13}" font-size="13" font-weight="600">{_esc(summary)}</text>',
    ]
    out.extend(_legend(plot_x, _PAD + 30))

    y = rows_top
    for row in rows:
        if row.code is None:
            sep_y = y + _OTHERS_GAP / 2
            out.append(
                f'<line class="language-chart__separator" x1="{_PAD}" x2="{value_right}" y1="{_num(sep_y)}" y2="{_num(sep_y)}" '
                f'stroke="currentColor" stroke-opacity="0.25" stroke-width="1"/>'
            )
            y += _OTHERS_GAP
        out.extend(
            _row_svg(
                row, y=y, uid=uid, label_right=label_right, label_w=label_w, plot_x=plot_x, plot_w=plot_w,
                value_right=value_right, max_records=max_records, max_bytes=max_bytes,
            )
        )
        y += _ROW_H
    out.append(
        f'<line class="language-chart__axis" x1="{plot_x}" x2="{plot_x}" y1="{rows_top}" y2="{y}" '
        f'stroke="currentColor" stroke-opacity="0.35" stroke-width="1"/>'
    )
    out.append("</svg>")
    return "\n".join(out)


def _row_svg(
    row: _Row, *, y: int, uid: str, label_right: int, label_w: int, plot_x: int, plot_w: int,
    value_right: int, max_records: int, max_bytes: int,
) -> list[str]:
    classes = "language-chart__row" + (" language-chart__row--others" if row.code is None else "")
    data = f'data-code="{_esc(row.code)}"' if row.code is not None else f'data-others="{row.others}"'
    records_y = y + 4
    bytes_y = records_y + _BAR_H + _BAR_GAP
    tooltip = (
        f"{row.label}: {format_count(row.records)} {_plural(row.records, 'record')}, "
        f"{format_bytes(row.text_bytes)} ({format_count(row.text_bytes)} {_plural(row.text_bytes, 'byte')})"
    )
    parts = [
        f'<g class="{classes}" {data} data-records="{row.records}" data-bytes="{row.text_bytes}">',
        f"<title>{_esc(tooltip)}</title>",
        f'<text class="language-chart__label" x="{label_right}" y="{_num(y + _ROW_H / 2 + 4)}" text-anchor="end" '
        f'direction="ltr" unicode-bidi="isolate" clip-path="url(#{uid}-labels)"'
        + (' font-style="italic"' if row.code is None else "")
        + f">{_label_markup(row, label_w)}</text>",
        f'<rect class="language-chart__track" x="{plot_x}" y="{records_y - 1}" width="{plot_w}" '
        f'height="{2 * _BAR_H + _BAR_GAP + 2}" fill="currentColor" fill-opacity="{_TRACK_OPACITY}"/>',
        _bar("records", row.records, max_records, x=plot_x, y=records_y, plot_w=plot_w, opacity=_RECORDS_OPACITY),
        _bar("bytes", row.text_bytes, max_bytes, x=plot_x, y=bytes_y, plot_w=plot_w, opacity=_BYTES_OPACITY),
        f'<text class="language-chart__value language-chart__value--records" x="{value_right}" y="{records_y + _BAR_H - 1}" '
        f'text-anchor="end" font-size="{_VALUE_FONT}">{_esc(format_count(row.records))}</text>',
        f'<text class="language-chart__value language-chart__value--bytes" x="{value_right}" y="{bytes_y + _BAR_H - 1}" '
        f'text-anchor="end" font-size="{_VALUE_FONT}" fill-opacity="{_MUTED_OPACITY}">{_esc(format_bytes(row.text_bytes))}</text>',
        "</g>",
    ]
    return parts


def _bar(kind: str, value: int, maximum: int, *, x: int, y: int, plot_w: int, opacity: str) -> str:
    cls = f"language-chart__bar language-chart__bar--{kind}"
    w = plot_w * value / maximum if maximum > 0 else 0.0
    if 0 < w < 1:
        w = 1.0  # a language with any records at all gets a visible sliver
    if w <= plot_w:
        return (
            f'<rect class="{cls}" x="{x}" y="{y}" width="{_num(w)}" height="{_BAR_H}" '
            f'fill="currentColor" fill-opacity="{opacity}"/>'
        )
    # Longer than the plot (only the "other languages" row can be): draw it to the edge
    # with a slanted break, so it is not read as merely equal to the largest language.
    end = x + plot_w
    cut, resume, slant = end - 10, end - 5, 3
    bottom = y + _BAR_H
    d = (
        f"M{x},{y}H{cut}L{cut - slant},{bottom}H{x}Z"
        f"M{resume},{y}H{end}V{bottom}H{resume - slant}Z"
    )
    return f'<path class="{cls} language-chart__bar--capped" d="{d}" fill="currentColor" fill-opacity="{opacity}"/>'


def _label_markup(row: _Row, label_w: int) -> str:
    max_em = (label_w - 4) / _FONT
    if row.code is None:
        return _esc(_fit(row.label, max_em))
    code_text = f"({row.code})"
    code_markup = f'<tspan class="language-chart__code" fill-opacity="{_MUTED_OPACITY}">{_esc(code_text)}</tspan>'
    if row.name is None:
        return f'<tspan class="language-chart__code">{_esc(_fit(row.code, max_em))}</tspan>'
    name = _fit(row.name, max_em - _em_width(" " + code_text))
    # The label is a left-to-right line, "name (code)", whatever the script. The name is
    # an isolated run whose direction comes from its own first strong letter (plaintext
    # is CSS for HTML's dir="auto"), so an Arabic or Hebrew name reads right to left and
    # its digits and brackets cannot trade places with the code after it. Not
    # direction="rtl" on the tspan: Chromium then anchors the whole label from its left
    # edge, pushing it into the bars.
    return (
        f'<tspan class="language-chart__name" unicode-bidi="plaintext">'
        f"{_esc(name)}</tspan> {code_markup}"
    )


def _legend(x: int, y: int) -> list[str]:
    items = [("records", "Records", _RECORDS_OPACITY), ("bytes", "Text bytes (UTF-8)", _BYTES_OPACITY)]
    out = ['<g class="language-chart__legend">']
    for kind, text, opacity in items:
        out.append(
            f'<rect class="language-chart__swatch language-chart__swatch--{kind}" x="{x}" y="{y - 9}" width="10" height="10" '
            f'fill="currentColor" fill-opacity="{opacity}"/>'
        )
        out.append(f'<text x="{x + 14}" y="{y}" font-size="{_VALUE_FONT}">{_esc(text)}</text>')
        x += 14 + round(_em_width(text) * _VALUE_FONT) + 16
    out.append("</g>")
    return out


def _empty_svg(width: int) -> str:
    uid = "language-chart-empty"
    return "\n".join(
        [
            _svg_open(uid, width, _EMPTY_H),
            f'<title id="{uid}-title">No records yet</title>',
            f'<desc id="{uid}-desc">This dataset has no records in any language yet.</desc>',
            f'<text class="language-chart__empty" x="{_num(width / 2)}" y="{_EMPTY_H // 2 + 4}" text-anchor="middle" '
            f'fill-opacity="{_MUTED_OPACITY}">No records yet</text>',
            "</svg>",
        ]
    )


def _svg_open(uid: str, width: int, height: int) -> str:
    # width/height give a standalone file its natural size; inlined, the page can
    # override them with CSS (e.g. max-width: 100%; height: auto) and viewBox scales.
    return (
        f'<svg xmlns="{SVG_NS}" class="language-chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-labelledby="{uid}-title {uid}-desc" font-family="{_esc(_FONT_FAMILY)}" font-size="{_FONT}" '
        f'fill="currentColor">'
    )


def _language_row(code: str, records: int, text_bytes: int, name: object) -> _Row:
    clean_code = _clean(code) or "?"
    clean_name = _clean(name) if name is not None else ""
    if not clean_name or clean_name == clean_code:
        return _Row(code=clean_code, name=None, label=clean_code, records=records, text_bytes=text_bytes)
    return _Row(
        code=clean_code, name=clean_name, label=f"{clean_name} ({clean_code})", records=records, text_bytes=text_bytes
    )


def _chart_id(rows: list[_Row], width: int, top: int) -> str:
    # Ids must differ between different charts on one page, yet the output must be
    # byte-identical for the same input, so they are a hash of what is drawn.
    material = repr((width, top, [(r.code, r.label, r.records, r.text_bytes, r.others) for r in rows]))
    return "language-chart-" + hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _clean(text: object) -> str:
    """Text as XML can carry it: no control characters, no stray bidi controls, one line."""
    out = []
    for ch in str(text):
        if ch in _BIDI_CONTROLS:
            continue
        category = unicodedata.category(ch)
        if category == "Cc":
            out.append(" ")  # tabs, newlines, NUL...: none may appear, or mean anything, in a label
        elif category == "Cs" or ch in "\ufffe\uffff":
            out.append("\ufffd")  # lone surrogates and these noncharacters are not XML characters
        else:
            out.append(ch)
    return " ".join("".join(out).split())


def _esc(text: str) -> str:
    # Escapes &, <, > and both quotes, so the result is safe in text and in attributes.
    return html.escape(text, quote=True)



def _char_em(ch: str) -> float:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0.0
    return _EM_WIDE if unicodedata.east_asian_width(ch) in ("W", "F") else _EM_NARROW


def _em_width(text: str) -> float:
    return sum(_char_em(ch) for ch in text)


def _fit(text: str, max_em: float) -> str:
    """``text`` cut short with an ellipsis if it would not fit ``max_em`` ems."""
    if _em_width(text) <= max_em:
        return text
    budget = max_em - _EM_WIDE  # room for the ellipsis
    used, end = 0.0, 0
    for end, ch in enumerate(text):
        used += _char_em(ch)
        if used > budget:
            break
    # Never strand a base letter's combining marks on the far side of the cut.
    while end > 0 and unicodedata.combining(text[end]):
        end -= 1
    return text[:end].rstrip(" ,;:([-") + _ELLIPSIS


def _languages(codes: list[str], *, other: bool = False) -> str:
    """"430 languages and und (undetermined)": `und` tags text whose language nobody identified,
    so it is named for what it is rather than counted as one more language."""
    n = sum(code != "und" for code in codes)
    words = f"{format_count(n)} {'other ' if other else ''}{_plural(n, 'language')}"
    if "und" not in codes:
        return words
    return f"{words} and und (undetermined)" if n else "und (undetermined)"


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def _num(x: float) -> str:
    """A coordinate with at most two decimals and no trailing zeros (never ``-0``)."""
    text = f"{round(x, 2) + 0.0:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _check_count(n: object, what: str) -> None:
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"{what} must be an integer, not {n!r}")
    if n < 0:
        raise ValueError(f"{what} must not be negative, not {n}")
