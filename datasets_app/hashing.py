"""A file-like reader that hashes (sha256) and counts the bytes read through it, so a
checksum costs no second pass. No Django here: the shard builder uses it too."""

from __future__ import annotations

import hashlib
from typing import BinaryIO


class HashingReader:
    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        count = self._stream.readinto(buffer)
        self.digest.update(buffer[:count])
        self.size += count
        return count

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._stream.close()

    @property
    def closed(self) -> bool:
        return False
