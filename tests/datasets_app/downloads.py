"""Helpers of the download tests: release bytes, digests, download records, and real HTTP clients
(curl, wget) run as subprocesses. The fixtures (release_files, release_folder, local_storage,
published) live in tests/conftest.py, beside the cast."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from pathlib import Path

from datasets_app.models import DownloadEvent

# Big enough that a rate-limited client is still mid-way after a second; small enough to be quick.
BIG_SIZE = 1_500_000


def release_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_of(version, path: str):
    return version.files.get(path=path)


def download_mark() -> int:
    """The last download record's id, to find the records a test's requests add."""
    return DownloadEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def downloads_since(mark: int) -> list[DownloadEvent]:
    return list(DownloadEvent.objects.filter(id__gt=mark).order_by("id"))


def run(*args: str, cwd: Path | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a real HTTP client; its output is kept (as bytes) for the assertions."""
    # LC_ALL=C: wget and sha256sum report in English, whatever the machine's locale.
    result = subprocess.run(args, cwd=cwd, capture_output=True, timeout=timeout, env={**os.environ, "LC_ALL": "C"})
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}: {result.stderr.decode(errors='replace')}")
    return result


def curl(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run("curl", "-sS", *args, **kwargs)


def parse_headers(raw: bytes) -> tuple[int, dict[str, str]]:
    """The status and headers of the last response in a `curl -D -` dump (after redirects)."""
    blocks = [b for b in raw.decode("latin-1").replace("\r\n", "\n").split("\n\n") if b.startswith("HTTP/")]
    lines = blocks[-1].strip().split("\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers
