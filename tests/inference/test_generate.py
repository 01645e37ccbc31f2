"""The engine against transformers' BloomForCausalLM fully in memory, at three budgets."""

from __future__ import annotations

import pytest
import torch

from inference.engine import Engine

PROMPTS = ["All human beings are born free", "Watu wote", "人人生而自由，在尊严和权利上一律平等。 Tous les êtres humains naissent libres"]
BUDGETS = ["all", "half", "none"]


@pytest.fixture(scope="module", params=BUDGETS)
def engine(request, tiny_checkpoint, budgets):
    size, resident = budgets[request.param]
    eng = Engine(tiny_checkpoint, memory_budget=size, max_batch_size=4, max_seq_len=128)
    assert len(eng.placement.resident) == resident
    yield eng
    eng.close()


def left_pad(engine, prompts):
    ids = [engine.encode(p) for p in prompts]
    T = max(map(len, ids))
    input_ids = torch.full((len(ids), T), engine.config.pad_token_id)
    mask = torch.zeros(len(ids), T, dtype=torch.long)
    for b, seq in enumerate(ids):
        input_ids[b, T - len(seq):] = torch.tensor(seq)
        mask[b, T - len(seq):] = 1
    return input_ids, mask


def reference_generate(model, input_ids, mask, n):
    out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                         eos_token_id=None, pad_token_id=3, output_logits=True, return_dict_in_generate=True)
    return out.sequences[:, input_ids.shape[1]:], torch.stack(out.logits, 1).float()


@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["batch1", "mixed-lengths"])
def test_it_gives_the_logits_of_transformers(engine, reference_model, prompts):
    input_ids, mask = left_pad(engine, prompts)
    ours = engine.logits(input_ids, mask)
    with torch.no_grad():
        theirs = reference_model(input_ids=input_ids, attention_mask=mask).logits
    real = mask.bool()  # padding slots' logits are meaningless in both
    assert (ours[real] - theirs[real]).abs().max().item() < 1e-4


@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["batch1", "mixed-lengths"])
def test_it_generates_the_greedy_tokens_of_transformers(engine, reference_model, prompts):
    n = 12
    input_ids, mask = left_pad(engine, prompts)
    ref_tokens, ref_logits = reference_generate(reference_model, input_ids, mask, n)
    result = engine.generate(prompts, max_new_tokens=n, stop_tokens=[], return_logits=True)
    assert [c.token_ids for c in result.completions] == ref_tokens.tolist()
    assert (torch.stack(result.step_logits, 1) - ref_logits).abs().max().item() < 1e-4
    stats = result.stats
    assert stats.new_tokens == n * len(prompts) and stats.decode_steps == n - 1
    streamed = engine.placement.streamed_bytes
    # every decode step reads each streamed block once: its tensors, and no more than their aligned spans
    payload = sum(e.nbytes for i in engine.placement.streamed for e in engine.checkpoint.entries(engine.checkpoint.block_names[i]).values())
    assert payload <= stats.bytes_read_per_decode_step <= streamed
    assert (stats.streamed_blocks == 0) == (stats.bytes_read_per_decode_step == 0)


def test_it_decodes_alike_over_a_slice_of_the_cache_and_over_all_of_it(engine, reference_model):
    from inference.engine.models import bloom

    n = 40  # a short prompt, many new tokens: the first steps attend over the slots in use, the last over the whole cache
    input_ids, mask = left_pad(engine, PROMPTS[1:2])
    T0 = input_ids.shape[1]
    assert bloom.attention_keys(T0 + 1, 1, T0 + n) == T0 + 1 and bloom.attention_keys(T0 + n - 1, 1, T0 + n) == T0 + n
    ref_tokens, ref_logits = reference_generate(reference_model, input_ids, mask, n)
    result = engine.generate(PROMPTS[1:2], max_new_tokens=n, stop_tokens=[], return_logits=True)
    assert [c.token_ids for c in result.completions] == ref_tokens.tolist()
    assert (torch.stack(result.step_logits, 1) - ref_logits).abs().max().item() < 1e-4


def test_it_completes_each_prompt_of_a_batch_as_it_would_alone(engine):
    together = engine.generate(PROMPTS, max_new_tokens=6, stop_tokens=[])
    alone = [engine.generate([p], max_new_tokens=6, stop_tokens=[]).completions[0] for p in PROMPTS]
    assert [c.token_ids for c in together.completions] == [c.token_ids for c in alone]
    assert [c.text for c in together.completions] == [c.text for c in alone]


def test_it_gives_the_same_logits_when_a_large_prefill_is_split_by_sequences(engine, reference_model, monkeypatch):
    from inference.engine import generate

    monkeypatch.setattr(generate, "PREFILL_TOKENS", 20)  # one or two sequences per block call here
    input_ids, mask = left_pad(engine, PROMPTS)
    ours = engine.logits(input_ids, mask)
    with torch.no_grad():
        theirs = reference_model(input_ids=input_ids, attention_mask=mask).logits
    real = mask.bool()
    assert (ours[real] - theirs[real]).abs().max().item() < 1e-4
