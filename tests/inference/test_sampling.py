"""Sampling, stop tokens, and what the reader leaves in the page cache."""

from __future__ import annotations

import ctypes
import mmap
import os
import shutil

import pytest

from inference.engine import Engine

PROMPTS = ["All human beings", "Semua orang dilahirkan merdeka dan"]


@pytest.fixture(scope="module")
def streaming_engine(tiny_checkpoint, budgets):
    eng = Engine(tiny_checkpoint, memory_budget=budgets["none"][0], max_batch_size=4, max_seq_len=128, io="buffered")
    yield eng
    eng.close()


def test_it_samples_reproducibly_with_a_seed(streaming_engine):
    def run(seed):
        return [c.token_ids for c in streaming_engine.generate(PROMPTS, max_new_tokens=10, temperature=1.0, top_p=0.95, seed=seed, stop_tokens=[]).completions]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_it_samples_the_greedy_token_when_top_p_keeps_one(streaming_engine):
    greedy = streaming_engine.generate(PROMPTS, max_new_tokens=8, stop_tokens=[])
    narrow = streaming_engine.generate(PROMPTS, max_new_tokens=8, temperature=1.5, top_p=1e-6, seed=1, stop_tokens=[])
    assert [c.token_ids for c in narrow.completions] == [c.token_ids for c in greedy.completions]


def test_it_ends_each_sequence_at_its_stop_token(streaming_engine):
    free = streaming_engine.generate(PROMPTS, max_new_tokens=8, stop_tokens=[]).completions
    stop = free[0].token_ids[3]
    first = free[0].token_ids.index(stop)
    result = streaming_engine.generate(PROMPTS, max_new_tokens=8, stop_tokens=[stop])
    assert result.completions[0].token_ids == free[0].token_ids[:first]
    assert result.completions[0].finish_reason == "stop"
    if stop not in free[1].token_ids:
        assert result.completions[1].token_ids == free[1].token_ids and result.completions[1].finish_reason == "length"


def resident_pages(path) -> int:
    """Pages of the file in the page cache, from mincore(2)."""
    size = os.path.getsize(path)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    with open(path, "rb") as f:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = ctypes.create_string_buffer(pages)
        assert libc.mincore(ctypes.c_void_p(addr), size, vec) == 0
        libc.munmap(ctypes.c_void_p(addr), size)
    return sum(b & 1 for b in vec.raw)


def test_it_leaves_no_block_pages_in_the_page_cache(tmp_path, tiny_checkpoint, budgets):
    # A copy of its own: the reference model of other tests maps the session checkpoint's files, and
    # mapped pages cannot be dropped by anyone.
    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    os.sync()
    with Engine(checkpoint, memory_budget=budgets["none"][0], max_batch_size=4, max_seq_len=128, io="buffered") as engine:
        shards = sorted(checkpoint.glob("model-*.safetensors"))
        for shard in shards:  # warm every shard, as an earlier reader would have
            shard.read_bytes()
        assert sum(resident_pages(s) for s in shards) > 0
        engine.generate(PROMPTS, max_new_tokens=4, stop_tokens=[])
    # every block was read through the page cache and dropped behind the reader
    assert {s.name: resident_pages(s) for s in shards if s != shards[0]} == {s.name: 0 for s in shards[1:]}
