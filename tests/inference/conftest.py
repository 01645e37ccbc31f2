"""A tiny BLOOM checkpoint (fp32, random weights, several shards) built once per session, and the
budgets that put all, half, or none of its blocks in memory."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from inference.engine.demo import make_demo_checkpoint

    path = make_demo_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", shape="tiny", dtype="fp32", seed=1)
    os.sync()  # written pages are dirty until flushed, and the kernel drops only clean ones
    return path


@pytest.fixture(scope="session")
def reference_model(tiny_checkpoint):
    import torch
    from transformers import BloomForCausalLM

    return BloomForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def budgets(tiny_checkpoint):
    """Budget name -> (bytes, blocks expected resident), for batch 4 x 128 slots, from the engine's own plan."""
    from inference.engine import Engine

    probe = Engine(tiny_checkpoint, memory_budget="1GiB", max_batch_size=4, max_seq_len=128)
    p = probe.placement
    probe.close()
    n = len(p.block_bytes)
    streaming_all = p.fixed_bytes + p.kv_cache_bytes + 2 * max(p.block_bytes)
    return {
        "all": (p.fixed_bytes + p.kv_cache_bytes + sum(p.block_bytes), n),
        "half": (streaming_all + sum(sorted(p.block_bytes)[: n // 2]), n // 2),
        "none": (streaming_all, 0),
    }
