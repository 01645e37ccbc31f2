"""Recognising a web page by its URL, for takedowns that name the page content came from.

Sources that say where each record was taken from keep that column as `url` (URL_COLUMN).
Two spellings of one page's address are the same page: the scheme (http or https), the
case of the host, a default port, a #fragment and a trailing slash do not matter;
the path and the query do. `canonical_url` gives the form the takedown list stores;
`url_hits` finds the rows of a batch whose URL is on the list, for builds (to drop them)
and for the takedown scan of published versions (to find them).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

URL_COLUMN = "url"
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def canonical_url(url: str) -> str:
    """'HTTPS://Blog.Example.net:443/letter/#top' -> '//blog.example.net/letter'."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:  # not a URL (a bad port, an unclosed IPv6 bracket): only the same text matches
        return url.strip()
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    port = port if port is not None and str(port) != _DEFAULT_PORTS.get(scheme) else None
    netloc = f"{host}:{port}" if port else host
    prefix = "//" if scheme in _DEFAULT_PORTS or not scheme else f"{scheme}://"
    path = parts.path.rstrip("/")
    return f"{prefix}{netloc}{path}" + (f"?{parts.query}" if parts.query else "")


def _coarse(urls: pa.Array) -> pa.Array:
    # A cheap vectorised key that every spelling of a listed page shares (lowercased, so it
    # also lets through a few that differ only in the case of the path): rows whose key is a
    # listed page's key get the exact check, one by one. Almost no row of a build is one.
    key = pc.utf8_lower(pc.utf8_trim_whitespace(urls))
    key = pc.replace_substring_regex(key, r"#.*$", "")
    key = pc.replace_substring_regex(key, r"^https?:", "")
    key = pc.replace_substring_regex(key, r"^(//[^/?]*?)\.?(?::(?:80|443))?([/?]|$)", r"\1\2")
    return pc.replace_substring_regex(key, r"/+(\?|$)", r"\1")


def url_hits(urls: pa.Array | pa.ChunkedArray, canonical: frozenset[str]) -> np.ndarray:
    """bool [len(urls)]: whether each row's URL is one of the `canonical` pages (null URLs never are)."""
    if isinstance(urls, pa.ChunkedArray):
        urls = urls.combine_chunks()
    if not canonical or len(urls) == 0 or not pa.types.is_string(urls.type):
        return np.zeros(len(urls), dtype=bool)
    keys = _coarse(pa.array(sorted(canonical), pa.string())).unique()
    hit = pc.fill_null(pc.is_in(_coarse(urls), value_set=keys), False).to_numpy(zero_copy_only=False)
    for index in np.flatnonzero(hit):
        hit[index] = canonical_url(urls[int(index)].as_py()) in canonical
    return hit
