"""Where the collaboration's shared, read-only files are (the UDHR corpus, tools).

They sit next to the checkout (`../shared`), or wherever SHARED_DIR points. Nothing is
ever copied into the project.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    return Path(os.environ["SHARED_DIR"]) if os.environ.get("SHARED_DIR") else REPO.parent / "shared"


def shared_path(relative: str) -> Path:
    """The path of a shared file; FileNotFoundError, saying where it was looked for, when it is not there."""
    path = shared_root() / relative
    if not path.exists():
        where = "SHARED_DIR" if os.environ.get("SHARED_DIR") else "the folder beside the checkout (SHARED_DIR is not set)"
        raise FileNotFoundError(f"{relative} is not in {where}, {shared_root()}: "
                                "set SHARED_DIR to the folder of the collaboration's shared files.")
    return path


def udhr_corpus() -> Path:
    return shared_path("corpora/udhr/udhr.jsonl.gz")
