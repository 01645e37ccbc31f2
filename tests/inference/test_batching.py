"""Continuous batching, scoring and inspection on the tiny checkpoint (fp32), against the engine's own
batch-1 generation and transformers' BloomForCausalLM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inference.engine import Engine, EngineError, PromptError
from inference.engine.batching import ContinuousBatch, SequenceRequest, inspect, score
from inference.engine.demo import DEMO_TEXT

SLOTS = 6
SEQ_LEN = 128
LINES = DEMO_TEXT.splitlines()


def prompt_of(engine, line: int, n: int) -> list[int]:
    return engine.encode(LINES[line])[:n]


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    eng = Engine(tiny_checkpoint, memory_budget="1GiB", max_batch_size=8, max_seq_len=SEQ_LEN)
    assert not eng.placement.streamed
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def streaming_engine(tiny_checkpoint, budgets):
    """Every block streamed from disk on each pass, with a KV cache for 8 sequences."""
    probe = Engine(tiny_checkpoint, memory_budget="1GiB", max_batch_size=8, max_seq_len=SEQ_LEN)
    extra = probe.kv_cache_bytes(8, SEQ_LEN) - probe.kv_cache_bytes(4, SEQ_LEN)
    probe.close()
    eng = Engine(tiny_checkpoint, memory_budget=budgets["none"][0] + extra, max_batch_size=8, max_seq_len=SEQ_LEN)
    assert not eng.placement.resident
    yield eng
    eng.close()


def run(batch: ContinuousBatch, schedule: dict[int, list[SequenceRequest]]) -> dict[str, dict]:
    """Steps the batch to the end, admitting schedule[step] before that step (waiting for free slots)."""
    out: dict[str, dict] = {}
    waiting: list[SequenceRequest] = []
    step = 0
    while True:
        waiting += schedule.get(step, [])
        while waiting and batch.free_slots():
            batch.admit([waiting.pop(0)])
        if not batch.active_keys():
            if waiting or any(s > step for s in schedule):
                step += 1
                continue
            return out
        for e in batch.step():
            seq = out.setdefault(e.key, {"tokens": [], "logprobs": [], "top": [], "finish": None, "prompt": None, "prompt_top": None})
            if e.prompt_logprobs is not None:
                seq["prompt"], seq["prompt_top"] = e.prompt_logprobs, e.prompt_top
            if e.token_id is not None:
                seq["tokens"].append(e.token_id)
                seq["logprobs"].append(e.logprob)
                seq["top"].append(e.top)
            if e.finished:
                seq["finish"] = e.finish_reason
        step += 1


def alone(engine, request: SequenceRequest) -> dict:
    return run(ContinuousBatch(engine, max_slots=1), {0: [request]})[request.key]


@pytest.mark.parametrize("which", ["engine", "streaming_engine"])
def test_it_gives_each_sequence_of_a_staggered_batch_the_greedy_tokens_it_gets_alone(request, which):
    engine = request.getfixturevalue(which)
    lengths = [5, 3, 9, 22, 4, 30, 12, 7, 17]
    new_tokens = [20, 31, 12, 9, 25, 14, 18, 10, 16]
    requests = [SequenceRequest(key=f"p{i}", prompt_ids=prompt_of(engine, i, n), max_new_tokens=m, logprobs=0)
                for i, (n, m) in enumerate(zip(lengths, new_tokens))]
    assert sorted({len(r.prompt_ids) for r in requests}) == sorted(lengths)
    # three short ones start; a longer one joins after 3 steps (its prompt reaches further back than
    # the write position), more after 5 and 8; with 6 slots the last wait for finished ones. A 48-token
    # cache makes the write position run past the end, so running rows move left while they decode.
    batch = ContinuousBatch(engine, max_slots=SLOTS, max_seq_len=48)
    together = run(batch, {0: requests[:3], 3: requests[3:5], 5: requests[5:7], 8: requests[7:]})
    assert batch.steps < max(lengths) + sum(new_tokens) // 2
    assert batch.shifts["right"] >= 2 and batch.shifts["left"] >= 1
    for r in requests:
        reference = engine.generate([r.prompt_ids], max_new_tokens=r.max_new_tokens, return_logits=True)
        completion = reference.completions[0]
        assert (together[r.key]["tokens"], together[r.key]["finish"]) == (completion.token_ids, completion.finish_reason), r.key
        # the random tiny model's greedy tokens depend little on the context; its log-probs do
        expected = [F.log_softmax(logits[0], -1)[t].item() for logits, t in zip(reference.step_logits, completion.token_ids)]
        assert max(abs(a - b) for a, b in zip(together[r.key]["logprobs"], expected)) < 1e-4, r.key
    assert batch.free_slots() == SLOTS and batch.active_keys() == []


def test_it_gives_log_probs_of_the_model_with_the_greedy_token_first_among_the_top(engine, reference_model):
    prompt = prompt_of(engine, 1, 11)
    r = SequenceRequest(key="a", prompt_ids=prompt, max_new_tokens=8, logprobs=3, echo=True)
    got = alone(engine, r)
    assert len(got["tokens"]) == 8 and got["finish"] == "length"
    for token, lp, top in zip(got["tokens"], got["logprobs"], got["top"]):
        assert len(top) == 3 and top[0] == (token, lp)
    assert len(got["prompt"]) == len(prompt) and got["prompt"][0] is None and got["prompt_top"][0] is None
    assert all(len(t) == 3 for t in got["prompt_top"][1:])
    with torch.no_grad():
        logits = reference_model(input_ids=torch.tensor([prompt + got["tokens"]])).logits[0].float()
    logp = F.log_softmax(logits, -1)
    full = prompt + got["tokens"]
    expected = [logp[t - 1, full[t]].item() for t in range(1, len(full))]
    ours = got["prompt"][1:] + got["logprobs"]
    assert max(abs(a - b) for a, b in zip(ours, expected)) < 1e-4


def test_it_gives_the_chosen_token_alone_with_logprobs_0_and_none_without(engine):
    prompt = prompt_of(engine, 2, 6)
    zero = alone(engine, SequenceRequest(key="z", prompt_ids=prompt, max_new_tokens=3, logprobs=0, echo=True))
    assert zero["top"] == [[], [], []] and zero["prompt_top"] == [None] + [[]] * 5
    plain = alone(engine, SequenceRequest(key="n", prompt_ids=prompt, max_new_tokens=3))
    assert plain["top"] == [None] * 3 and plain["prompt"] is None and plain["tokens"] == zero["tokens"]


def test_it_echoes_a_prompt_with_no_new_tokens(engine):
    prompt = prompt_of(engine, 3, 7)
    got = alone(engine, SequenceRequest(key="e", prompt_ids=prompt, max_new_tokens=0, echo=True))
    assert got["tokens"] == [] and got["finish"] == "length" and len(got["prompt"]) == 7


def score_requests(engine):
    ids = engine.encode(LINES[0] + " " + LINES[1])
    greedy = engine.generate([ids[:6]], max_new_tokens=5, stop_tokens=[]).completions[0].token_ids
    return [(ids[:6], greedy), (ids[:10], ids[10:14]), ([], ids[:7]), (ids[3:5], ids[5:25]), (engine.encode(LINES[4]), [9])]


def test_it_scores_continuations_as_transformers_does(engine, reference_model):
    requests = score_requests(engine)
    results = score(engine, requests, max_batch=8)
    for (context, continuation), result in zip(requests, results):
        full = context + continuation
        with torch.no_grad():
            logp = F.log_softmax(reference_model(input_ids=torch.tensor([full])).logits[0].float(), -1)
        first = max(len(context), 1)
        expected = [logp[t - 1, full[t]].item() for t in range(first, len(full))]
        ours = result["token_logprobs"]
        assert len(ours) == len(continuation)
        if not context:
            assert ours[0] is None
            ours = ours[1:]
        assert max(abs(a - b) for a, b in zip(ours, expected)) < 1e-4
        assert abs(result["sum"] - sum(expected)) < 1e-3
        greedy = all(logp[t - 1].argmax().item() == full[t] for t in range(first, len(full)))
        assert result["is_greedy"] == greedy
    assert results[0]["is_greedy"] and not results[1]["is_greedy"]


def test_it_scores_packed_requests_as_one_at_a_time(engine):
    requests = score_requests(engine)
    packed = score(engine, requests, max_batch=3)  # two passes, mixed lengths in each
    single = [score(engine, [r], max_batch=1)[0] for r in requests]
    for a, b in zip(packed, single):
        assert a["is_greedy"] == b["is_greedy"] and abs(a["sum"] - b["sum"]) < 1e-4
        assert all((x is None and y is None) or abs(x - y) < 1e-5 for x, y in zip(a["token_logprobs"], b["token_logprobs"]))


def test_it_inspects_hidden_states_as_transformers_and_the_last_lens_is_the_model_output(engine, reference_model):
    prompt = prompt_of(engine, 5, 9)
    n_layer = engine.config.n_layer
    layers, positions = [0, 2, n_layer], [0, 4, -1]
    result = inspect(engine, prompt, layers=layers, positions=positions, top_k=5)
    assert sorted(result["hidden_states"]) == sorted(result["logit_lens"]) == sorted(str(x) for x in layers)
    with torch.no_grad():
        out = reference_model(input_ids=torch.tensor([prompt]), output_hidden_states=True)
    at = [p % len(prompt) for p in positions]
    for layer in layers:
        theirs = out.hidden_states[layer][0, at]
        ours = torch.tensor(result["hidden_states"][str(layer)])
        assert ours.shape == theirs.shape and (ours - theirs).abs().max().item() < 1e-4, layer
    final = F.log_softmax(out.logits[0, at].float(), -1).topk(5)
    lens = result["logit_lens"][str(n_layer)]
    assert [[t for t, _ in pos] for pos in lens] == final.indices.tolist()
    assert max(abs(lp - v) for pos, vs in zip(lens, final.values.tolist()) for (_, lp), v in zip(pos, vs)) < 1e-4
    assert result["logit_lens"]["0"] != lens


def test_it_frees_the_slot_of_a_dropped_sequence_at_once(engine):
    requests = [SequenceRequest(key=f"d{i}", prompt_ids=prompt_of(engine, i, 4 + i), max_new_tokens=10, logprobs=0)
                for i in range(3)]
    batch = ContinuousBatch(engine, max_slots=3)
    batch.admit(requests)
    assert batch.free_slots() == 0
    with pytest.raises(EngineError, match="free slots"):
        batch.admit([SequenceRequest(key="x", prompt_ids=[5, 6], max_new_tokens=2)])
    tokens, logprobs = {r.key: [] for r in requests}, {r.key: [] for r in requests}
    for _ in range(3):
        for e in batch.step():
            tokens[e.key].append(e.token_id)
            logprobs[e.key].append(e.logprob)
    batch.drop("d0")
    assert batch.free_slots() == 1 and "d0" not in batch.active_keys()
    late = SequenceRequest(key="late", prompt_ids=prompt_of(engine, 7, 8), max_new_tokens=4, logprobs=0)
    batch.admit([late])
    rest = run(batch, {})
    assert "d0" not in rest
    for key, r, before, before_lp in [("d1", requests[1], tokens["d1"], logprobs["d1"]),
                                      ("d2", requests[2], tokens["d2"], logprobs["d2"]), ("late", late, [], [])]:
        reference = alone(engine, r)
        assert before + rest[key]["tokens"] == reference["tokens"]
        assert max(abs(a - b) for a, b in zip(before_lp + rest[key]["logprobs"], reference["logprobs"])) < 1e-4


def test_it_refuses_a_bad_prompt_and_admits_nothing_of_that_call(engine):
    batch = ContinuousBatch(engine, max_slots=4)
    good = SequenceRequest(key="g", prompt_ids=[5, 6, 7], max_new_tokens=2)
    for bad, words in [(SequenceRequest(key="b", prompt_ids=[], max_new_tokens=2), "empty"),
                       (SequenceRequest(key="b", prompt_ids=[engine.config.vocab_size], max_new_tokens=2), "vocabulary"),
                       (SequenceRequest(key="b", prompt_ids=[5] * 100, max_new_tokens=40), "exceeds")]:
        with pytest.raises(PromptError, match=words):
            batch.admit([good, bad])
        assert batch.free_slots() == 4


def test_it_ends_a_sequence_at_a_stop_string(engine):
    prompt = prompt_of(engine, 0, 5)
    free = alone(engine, SequenceRequest(key="f", prompt_ids=prompt, max_new_tokens=12))
    text = engine.decode(free["tokens"])
    stop = text[len(engine.decode(free["tokens"][:3])):][:2]  # text that appears with the 4th token or later
    assert stop.strip()
    cut = next(n for n in range(1, 13) if stop in engine.decode(free["tokens"][:n]))
    got = alone(engine, SequenceRequest(key="s", prompt_ids=prompt, max_new_tokens=12, stop=["never there", stop]))
    assert got["finish"] == "stop" and got["tokens"] == free["tokens"][:cut]


def test_it_ends_a_sequence_at_a_stop_token_and_leaves_the_token_out(engine):
    one = SequenceRequest(key="a", prompt_ids=prompt_of(engine, 0, 5), max_new_tokens=12)
    two = SequenceRequest(key="b", prompt_ids=prompt_of(engine, 8, 9), max_new_tokens=12)
    free = alone(engine, one)["tokens"]
    stop = free[4]
    assert stop not in alone(engine, two)["tokens"]
    got = run(ContinuousBatch(engine, max_slots=2, stop_tokens=[stop]), {0: [one, two]})
    assert got["a"]["tokens"] == free[:free.index(stop)] and got["a"]["finish"] == "stop"
    assert len(got["b"]["tokens"]) == 12 and got["b"]["finish"] == "length"


def test_it_samples_a_seeded_sequence_the_same_alone_and_in_a_batch(engine):
    prompt = prompt_of(engine, 6, 8)
    seeded = SequenceRequest(key="s", prompt_ids=prompt, max_new_tokens=15, temperature=1.0, top_p=0.95, seed=11)
    others = [SequenceRequest(key=f"o{i}", prompt_ids=prompt_of(engine, i, 3 + 2 * i), max_new_tokens=9,
                              temperature=1.2, seed=None if i % 2 else i) for i in range(4)]
    by_itself = alone(engine, seeded)
    together = run(ContinuousBatch(engine, max_slots=5), {0: others[:2], 2: [seeded], 3: others[2:]})
    assert together["s"]["tokens"] == by_itself["tokens"]
    assert max(abs(a - b) for a, b in zip(together["s"]["logprobs"], by_itself["logprobs"])) < 1e-4
    other_seed = alone(engine, SequenceRequest(key="t", prompt_ids=prompt, max_new_tokens=15, temperature=1.0, top_p=0.95, seed=12))
    assert other_seed["tokens"] != by_itself["tokens"]


def test_it_reads_each_streamed_block_once_per_step_however_many_sequences_run(streaming_engine):
    engine = streaming_engine
    batch = ContinuousBatch(engine, max_slots=8)
    batch.admit([SequenceRequest(key="one", prompt_ids=prompt_of(engine, 0, 6), max_new_tokens=20)])
    batch.step()
    batch.step()  # one sequence decoding
    batch.admit([SequenceRequest(key=f"n{i}", prompt_ids=prompt_of(engine, i, 10 + 3 * i), max_new_tokens=8) for i in range(1, 8)])
    events = batch.step()  # seven prefills and one decode token in the same pass
    assert len(events) == 8
    batch.step()  # eight sequences decoding
    payload = sum(e.nbytes for i in engine.placement.streamed
                  for e in engine.checkpoint.entries(engine.checkpoint.block_names[i]).values())
    assert len(batch.bytes_by_step) == 4
    assert len(set(batch.bytes_by_step)) == 1
    assert payload <= batch.bytes_by_step[0] <= engine.placement.streamed_bytes
