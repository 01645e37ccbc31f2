"""Where the collaboration's shared, read-only files are (the UDHR corpus, tools).

They sit next to the checkout (`../shared`); a clone elsewhere finds them through
SHARED_DIR or at /work/shared. Nothing is ever copied into the project.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_path(relative: str) -> Path:
    """The path of a shared file; the first candidate that exists, else the one beside the checkout."""
    candidates = [Path(os.environ["SHARED_DIR"])] if os.environ.get("SHARED_DIR") else []
    candidates += [REPO.parent / "shared", Path("/work/shared")]
    for root in candidates:
        if (root / relative).exists():
            return root / relative
    return candidates[0] / relative


def udhr_corpus() -> Path:
    return shared_path("corpora/udhr/udhr.jsonl.gz")
