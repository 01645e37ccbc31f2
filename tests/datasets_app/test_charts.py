"""The language-distribution SVG: well-formed, deterministic, escaped, to scale.

No database: the chart is a pure function of its arguments.
"""

from __future__ import annotations

import gzip
import json
import random
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from datasets_app.charts import SVG_NS, format_bytes, format_count, language_chart_svg
from portal.shared import udhr_corpus

NS = {"svg": SVG_NS}
UDHR = udhr_corpus()
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

# Twenty languages with distinct record counts: lang00 has the most.
TWENTY = {f"lang{i:02d}": (1000 - i * 10, (i + 1) * 5000) for i in range(20)}


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{{{SVG_NS}}}svg"
    return root


def rows(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{{{SVG_NS}}}g") if "language-chart__row" in g.get("class", "").split()]


def bar(row: ET.Element, kind: str) -> ET.Element:
    (found,) = [e for e in row if f"language-chart__bar--{kind}" in e.get("class", "").split()]
    return found


def plot_width(row: ET.Element) -> float:
    (track,) = [e for e in row if e.get("class") == "language-chart__track"]
    return float(track.get("width"))


def text_of(element: ET.Element) -> str:
    return "".join(element.itertext())


def test_it_is_a_standalone_accessible_svg():
    svg = language_chart_svg({"fra": (3, 300), "deu": (1, 1500)}, names={"fra": "French"})
    root = parse(svg)
    title = root.find("svg:title", NS)
    desc = root.find("svg:desc", NS)
    assert list(root)[:2] == [title, desc]  # first children, as assistive technology expects
    assert root.get("role") == "img"
    assert root.get("aria-labelledby").split() == [title.get("id"), desc.get("id")]
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    assert root.get("width") == "640"
    assert title.text == "Language distribution: 2 languages, 4 records, 1.8 kB of text"
    assert "2 languages, 4 records, 1,800 bytes (1.8 kB)" in desc.text
    assert not svg.startswith("<?xml")  # inlined into HTML as it is
    assert "<script" not in svg and "<style" not in svg and "href" not in svg


def test_it_shows_the_top_languages_and_sums_the_others_exactly():
    root = parse(language_chart_svg(TWENTY, top=5))
    shown = rows(root)
    assert [g.get("data-code") for g in shown[:5]] == ["lang00", "lang01", "lang02", "lang03", "lang04"]
    others = shown[5]
    assert len(shown) == 6
    assert "language-chart__row--others" in others.get("class")
    rest = [TWENTY[f"lang{i:02d}"] for i in range(5, 20)]
    records, text_bytes = sum(r for r, _ in rest), sum(b for _, b in rest)
    assert others.get("data-others") == "15"
    assert (int(others.get("data-records")), int(others.get("data-bytes"))) == (records, text_bytes)
    assert "15 other languages" in text_of(others)
    values = [text_of(e) for e in others if "language-chart__value" in e.get("class", "")]
    assert values == [format_count(records), format_bytes(text_bytes)]
    assert sum(int(g.get("data-records")) for g in shown) == sum(r for r, _ in TWENTY.values())
    assert sum(int(g.get("data-bytes")) for g in shown) == sum(b for _, b in TWENTY.values())


def test_it_has_no_others_row_when_everything_fits_and_says_one_other_language():
    assert [g.get("data-code") for g in rows(parse(language_chart_svg(TWENTY, top=20)))] == list(TWENTY)
    shown = rows(parse(language_chart_svg(TWENTY, top=19)))
    assert text_of(shown[-1].find("svg:text", NS)) == "1 other language"
    assert shown[-1].get("data-records") == str(TWENTY["lang19"][0])


def test_it_orders_by_records_then_code_whatever_the_dict_order():
    stats = {"zul": (5, 10), "abk": (5, 99), "fra": (9, 1), "deu": (0, 0), "mlt": (5, 1)}
    svg = language_chart_svg(stats, top=4)
    assert [g.get("data-code") for g in rows(parse(svg))] == ["fra", "abk", "mlt", "zul", None]
    items = list(stats.items())
    for seed in range(5):
        random.Random(seed).shuffle(items)
        assert language_chart_svg(dict(items), top=4) == svg


def test_it_is_byte_identical_for_the_same_input():
    names = {code: code.upper() for code in TWENTY}
    first = language_chart_svg(TWENTY, names=names, top=7)
    assert language_chart_svg(dict(reversed(TWENTY.items())), names=dict(reversed(names.items())), top=7) == first
    # Different data gets different element ids, so two charts can share a page.
    other = parse(language_chart_svg({"fra": (1, 1)}))
    assert other.find("svg:title", NS).get("id") != parse(first).find("svg:title", NS).get("id")


def test_it_escapes_names_and_codes():
    nasty = "<script>&\"'"
    svg = language_chart_svg({"xxx": (2, 20), "a<b&c": (1, 10)}, names={"xxx": nasty})
    assert nasty not in svg
    assert "<script" not in svg
    assert "&lt;script&gt;&amp;&quot;&#x27;" in svg
    root = parse(svg)
    first, second = rows(root)
    (name,) = [e for e in first.iter() if e.get("class") == "language-chart__name"]
    assert name.text == nasty  # ElementTree gives back exactly the original text
    assert first.find("svg:title", NS).text.startswith(f"{nasty} (xxx): 2 records")
    assert second.get("data-code") == "a<b&c"
    assert text_of(second.find("svg:text", NS)) == "a<b&c"


def test_it_keeps_control_and_bidi_override_characters_out_of_the_markup():
    name = "Bad\x00a\nb\u202ec\ud800"
    root = parse(language_chart_svg({"bad": (1, 1)}, names={"bad": name}))
    (label,) = [e for e in root.iter() if e.get("class") == "language-chart__name"]
    assert label.text == "Bad a bc\ufffd"


def test_it_isolates_right_to_left_names_and_keeps_cjk_ones():
    stats = {"arb": (30, 9000), "heb": (20, 4000), "cmn": (25, 5000), "zho_Hant": (10, 2000)}
    names = {"arb": "العربية", "heb": "עברית (2)", "cmn": "中文", "zho_Hant": "中文（繁體）"}
    svg = language_chart_svg(stats, names=names)
    root = parse(svg)
    labels = {g.get("data-code"): g.find("svg:text", NS) for g in rows(root)}
    for code, name in names.items():
        label = labels[code]
        assert text_of(label) == f"{name} ({code})"
        # One left-to-right line per label, the name isolated with its own direction,
        # so "(arb)" stays after the Arabic instead of being pulled into it.
        assert label.get("direction") == "ltr"
        assert label.get("unicode-bidi") == "isolate"
        (tspan,) = [e for e in label if e.get("class") == "language-chart__name"]
        assert tspan.text == name
        assert tspan.get("unicode-bidi") == "plaintext"
        assert tspan.get("direction") is None
    assert "العربية" in svg and "中文（繁體）" in svg  # UTF-8 as is, not character references


def test_it_says_no_records_yet_for_empty_stats():
    svg = language_chart_svg({})
    root = parse(svg)
    assert root.find("svg:title", NS).text == "No records yet"
    assert text_of(root.find("svg:text", NS)) == "No records yet"
    assert rows(root) == []
    assert int(root.get("height")) < 100
    assert root.get("aria-labelledby").split()[0] == root.find("svg:title", NS).get("id")


def test_it_draws_a_single_language_at_full_width():
    root = parse(language_chart_svg({"fra": (7, 1234)}, names={"fra": "French"}))
    (row,) = rows(root)
    assert text_of(row.find("svg:text", NS)) == "French (fra)"
    assert float(bar(row, "records").get("width")) == plot_width(row)
    assert float(bar(row, "bytes").get("width")) == plot_width(row)
    assert "1 language, 7 records, 1.2 kB" in root.find("svg:title", NS).text


def test_it_scales_each_bar_to_its_own_maximum():
    stats = {"aaa": (1000, 10), "bbb": (500, 40), "ccc": (250, 20), "ddd": (1, 0)}
    by_code = {g.get("data-code"): g for g in rows(parse(language_chart_svg(stats)))}
    width = plot_width(by_code["aaa"])
    records = {code: float(bar(g, "records").get("width")) for code, g in by_code.items()}
    text_bytes = {code: float(bar(g, "bytes").get("width")) for code, g in by_code.items()}
    assert records["aaa"] == width == text_bytes["bbb"]
    assert records["bbb"] == pytest.approx(width / 2, abs=0.01)
    assert records["ccc"] == pytest.approx(width / 4, abs=0.01)
    assert text_bytes["ccc"] == pytest.approx(width / 2, abs=0.01)
    assert text_bytes["aaa"] == pytest.approx(width / 4, abs=0.01)
    assert records["ddd"] == 1.0  # a single record still shows
    assert text_bytes["ddd"] == 0.0


def test_it_cuts_an_others_row_longer_than_the_largest_language():
    root = parse(language_chart_svg(TWENTY, top=2))
    others = rows(root)[-1]
    capped = bar(others, "records")
    assert capped.tag == f"{{{SVG_NS}}}path"
    assert "language-chart__bar--capped" in capped.get("class")
    values = [text_of(e) for e in others if "language-chart__value" in e.get("class", "")]
    assert values[0] == format_count(int(others.get("data-records")))  # the true number, printed in full


def test_it_never_divides_by_zero():
    root = parse(language_chart_svg({"aaa": (0, 0), "bbb": (0, 0), "ccc": (0, 0)}, top=2))
    widths = [float(bar(g, kind).get("width")) for g in rows(root) for kind in ("records", "bytes")]
    assert widths == [0.0] * 6
    assert "3 languages, 0 records, 0 B of text" in root.find("svg:title", NS).text


def test_it_grows_taller_with_more_rows():
    codes = list(TWENTY)
    heights = [int(parse(language_chart_svg({c: TWENTY[c] for c in codes[:n]})).get("height")) for n in (1, 2, 5, 15)]
    assert heights == sorted(heights) and len(set(heights)) == len(heights)
    # 15 languages and an "others" row is one row taller than 15 languages.
    assert int(parse(language_chart_svg(TWENTY, top=15)).get("height")) > heights[-1]
    narrow = parse(language_chart_svg(TWENTY, width=400))
    assert narrow.get("viewBox").startswith("0 0 400 ")


def test_it_shortens_long_names_but_keeps_them_whole_in_the_tooltip():
    name = "A language name far too long to fit in the label column of the chart"
    (row,) = rows(parse(language_chart_svg({"lng": (1, 1)}, names={"lng": name})))
    shown = text_of(row.find("svg:text", NS))
    assert shown.endswith("\u2026 (lng)") and len(shown) < len(name)
    assert row.find("svg:title", NS).text.startswith(f"{name} (lng):")


def test_it_rejects_nonsense():
    for bad in ({"fra": (-1, 0)}, {"fra": (1, -5)}, {"fra": (1,)}, {"fra": 3}):
        with pytest.raises((ValueError, TypeError)):
            language_chart_svg(bad)
    with pytest.raises(TypeError):
        language_chart_svg({"fra": (1.5, 0)})
    with pytest.raises(ValueError):
        language_chart_svg({"fra": (1, 1)}, top=0)
    with pytest.raises(ValueError):
        language_chart_svg({"fra": (1, 1)}, width=100)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (1234, "1.2 kB"), (999_949, "999.9 kB"), (999_960, "1.0 MB"),
     (6_081_127, "6.1 MB"), (2_500_000_000, "2.5 GB"), (10**15, "1.0 PB"), (10**21, "1,000.0 EB")],
)
def test_it_formats_bytes_in_decimal_units(n, expected):
    assert format_bytes(n) == expected


def test_it_formats_counts_with_thousands_separators():
    assert [format_count(n) for n in (0, 999, 1000, 27476, 1234567)] == ["0", "999", "1,000", "27,476", "1,234,567"]
    with pytest.raises(ValueError):
        format_count(-1)
    with pytest.raises(TypeError):
        format_bytes(1.0)


def test_it_charts_the_udhr_corpus():
    if not UDHR.exists():
        pytest.skip(f"{UDHR} is not here (it lives in the shared corpora folder)")
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    spellings: dict[str, Counter] = defaultdict(Counter)
    with gzip.open(UDHR, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            entry = stats[record["lang"]]
            entry[0] += 1
            entry[1] += len(record["text"].encode())
            spellings[record["lang"]][record["name"]] += 1
    # Some languages have several spellings of their name; take the commonest.
    names = {code: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for code, c in spellings.items()}
    svg = language_chart_svg({code: (r, b) for code, (r, b) in stats.items()}, names=names, top=15)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "language-chart.svg").write_text(svg, encoding="utf-8")

    root = parse(svg)
    title = root.find("svg:title", NS).text
    assert "430 languages and und (undetermined)" in title  # und is not counted as a language
    assert "27,476 records" in title
    total_bytes = sum(b for _, b in stats.values())
    assert f"{format_count(total_bytes)} bytes" in root.find("svg:desc", NS).text
    shown = rows(root)
    assert len(shown) == 16
    assert shown[-1].get("data-others") == str(431 - 15)
    assert sum(int(g.get("data-records")) for g in shown) == 27_476
    assert sum(int(g.get("data-bytes")) for g in shown) == total_bytes
    counts = [int(g.get("data-records")) for g in shown[:15]]
    assert counts == sorted(counts, reverse=True)
    assert min(counts) >= max(r for code, (r, _) in stats.items() if code not in {g.get("data-code") for g in shown})
