"""Byte sizes as people write them, read one way everywhere: a shard build's shard size
(datasets_app.builds), the inference engine's memory budget (inference.engine) and the settings.

A bare number is bytes; KiB, MiB, GiB, TiB (and K, M, G) are powers of 1024; KB, MB, GB, TB are
powers of 1000; letter case is ignored. Plain Python at the top of the repository, because
datasets_app must not import inference, and inference/engine imports no Django app.
"""

from __future__ import annotations

import re

UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30}
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*")


def parse_size(text: str) -> int:
    """'1.5GiB' -> 1610612736; a ValueError that says how to write a size otherwise."""
    match = _SIZE.fullmatch(str(text))
    if not match or match.group(2).lower() not in UNITS:
        raise ValueError(f"{text!r} is not a size: write it like 256MiB, 1.5GiB, 500MB or 65536 (bytes).")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])
