"""Continuous batching, scoring and inspection over one loaded Engine.

    batch = ContinuousBatch(engine, max_slots=16)
    batch.admit([SequenceRequest(key="7:0", prompt_ids=ids, max_new_tokens=32, logprobs=2)])
    while batch.active_keys():
        for event in batch.step():   # one pass over the weights: a token for every running sequence
            ...
    score(engine, [(context_ids, continuation_ids)], max_batch=16)
    inspect(engine, ids, layers=[0, 6], positions=[3], top_k=5)

One step is one pass over the weights: each block (resident, or streamed from disk once) serves the
running sequences' decode token and the newly admitted prompts' prefill, as two calls on the same
weights, since their query lengths differ. Sequences sit in slots [0, active) of one KV cache; their
tokens are right-aligned at one write position W, each row masked left of its own start. BLOOM's ALiBi
counts positions from the mask, not from the slot, so moving a row's cache left or right changes
nothing it computes: a prompt longer than W shifts the running rows right, a cache full at its end
shifts them left over their common unused prefix, and a finished row's slot is refilled by the last
row, so the running rows stay contiguous and every group is a plain slice of the cache.

The block reader is started for one pass per step and stopped after it: between steps the caller may
idle, or run score, inspect or Engine.generate, which start the same reader for passes of their own.
The price is the read of the first streamed block, not overlapped with the previous step's compute.

Log-probabilities are the model's own (temperature 1), fp32, from one log_softmax per position; the
top entries are that tensor's top-k, so a greedy token's log-prob is exactly its first top entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .errors import EngineError, PromptError
from .generate import Engine

MAX_TOP = 20  # top entries per position a caller may ask for
HEAD_CHUNK = 256  # positions per head call for echo and scoring: logits are [positions, vocab] fp32


@dataclass
class SequenceRequest:
    key: str
    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    logprobs: int | None = None  # None: no top entries; 0..MAX_TOP top entries per token
    echo: bool = False  # the prompt's own log-probs on the first event
    stop: list[str] = field(default_factory=list)  # checked on the decoded continuation


@dataclass
class TokenEvent:
    key: str
    token_id: int | None  # None on the last event of a sequence ended by EOS (left out) or with no new tokens
    logprob: float | None
    top: list[tuple[int, float]] | None
    finished: bool
    finish_reason: str | None  # "stop" (EOS or a stop string) or "length"
    prompt_logprobs: list | None = None  # on the first event of an echo request: [None, float, ...]
    prompt_top: list | None = None  # and with logprobs: [None, [(id, logprob), ...], ...]


@dataclass
class _Seq:
    request: SequenceRequest
    generator: torch.Generator | None
    length: int = 0  # cache slots this row holds, ending at the write position
    last: int = 0  # the token to feed at the next step
    tokens: list[int] = field(default_factory=list)


def _top(logp: torch.Tensor, k: int | None) -> list[tuple[int, float]] | None:
    # logp: [V] fp32
    if k is None:
        return None
    values, ids = logp.topk(k) if k else (logp[:0], logp[:0].long())
    return [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist())]


def _blocks(engine: Engine, groups: list[dict], on_layer=None) -> None:
    """One pass over the weights for several groups of rows, each group its own query length.

    A group: x [B, T, C], kv [n_layer, 2, B, nh, L, hd] (a view of some cache), start, alibi, mask;
    its x is replaced block after block. on_layer(i, groups) sees the groups after block i."""
    for i in range(engine.config.n_layer):
        w = engine.blocks.get(i)
        streamed = w is None
        if streamed:
            w = engine.stream.acquire(i)
        try:
            for g in groups:
                g["x"] = engine._block(w, g["x"], g["kv"][i], g["start"], g["alibi"], g["mask"])
        finally:
            if streamed:
                engine.stream.release()
        if on_layer is not None:
            on_layer(i + 1, groups)


def _group(engine: Engine, ids: torch.Tensor, valid: torch.Tensor, kv: torch.Tensor, start: int) -> dict:
    # ids: [B, T] at cache slots [start, start+T); valid: [B, start+T]
    T = ids.shape[1]
    x = engine.arch.embed(engine.globals, ids, engine.config.layer_norm_epsilon)
    keys = engine.arch.attention_keys(start + T, T, kv.shape[-2])
    alibi, mask = engine.arch.attention_bias(engine.slopes, valid[:, :start + T], T, engine.dtype, keys=keys)
    return {"x": x, "kv": kv, "start": start, "alibi": alibi, "mask": mask}


def _scratch_kv(engine: Engine, B: int, T: int) -> torch.Tensor:
    """A cache for one pass that keeps nothing afterwards: every layer writes into the same [2, B, nh, T, hd],
    since a layer's keys and values are dead once it has run. 1/n_layer of a full cache, so scoring and
    inspection beside a running batch (whose cache the budget reserved) stay close to the budget."""
    c = engine.config
    layer = torch.empty(2, B, c.n_head, T, c.head_dim, dtype=engine.dtype, device=engine.device)
    return layer[None].expand(c.n_layer, *layer.shape)  # [n_layer, 2, B, nh, T, hd], one storage


def _one_pass(engine: Engine, groups: list[dict], on_layer=None) -> int:
    """Run the groups through every block; returns the bytes the streamed blocks took to read."""
    if engine.stream is None:
        _blocks(engine, groups, on_layer)
        return 0
    engine.stream.start(1)
    try:
        _blocks(engine, groups, on_layer)
        return engine.stream.stats.bytes_by_pass[0]
    finally:
        engine.stream.stop()


def _logprobs(engine: Engine, x: torch.Tensor) -> torch.Tensor:
    # x: [N, C] final hidden states -> [N, V] fp32 log-probs, a chunk of positions at a time
    parts = [F.log_softmax(engine.arch.head(engine.globals, x[None, a:a + HEAD_CHUNK], engine.config.layer_norm_epsilon)[0], -1)
             for a in range(0, x.shape[0], HEAD_CHUNK)]
    return torch.cat(parts) if parts else x.new_empty(0, engine.config.vocab_size, dtype=torch.float32)


def _check_ids(ids: list[int], vocab: int, what: str) -> None:
    if any(not isinstance(t, int) or not 0 <= t < vocab for t in ids):
        raise PromptError(f"{what} has token ids outside the vocabulary of {vocab}; tokenize it with the model's tokenizer")


class ContinuousBatch:
    """Sequences that join and leave between passes, max_slots at once, in one preallocated KV cache.

    stop_tokens, as in Engine.generate, defaults to the model's end-of-sequence token: a sequence ends
    there with finish_reason "stop", the token left out."""

    def __init__(self, engine: Engine, *, max_slots: int, max_seq_len: int | None = None,
                 stop_tokens: list[int] | None = None):
        if max_slots < 1:
            raise EngineError("a batch needs at least one slot")
        if max_slots > engine.max_batch_size:
            raise EngineError(f"{max_slots} slots exceed the engine's max_batch_size {engine.max_batch_size}, which its "
                              "memory budget reserved the KV cache for; load the engine with a larger one")
        self.engine = engine
        self.max_slots = max_slots
        self.max_seq_len = min(max_seq_len or engine.max_seq_len, engine.max_seq_len)
        c, dev = engine.config, engine.device
        # [n_layer, 2 (k, v), S, nh, L, hd]: zeros, not empty, since masked slots still meet the values in
        # probs @ v (with weight 0, and 0 * NaN from uninitialised memory would be NaN)
        self.kv = torch.zeros(c.n_layer, 2, max_slots, c.n_head, self.max_seq_len, c.head_dim, dtype=engine.dtype, device=dev)
        self.valid = torch.zeros(max_slots, self.max_seq_len, dtype=torch.bool, device=dev)  # [S, L]
        self.rows: list[_Seq] = []  # slot r holds rows[r]
        self.pending: list[_Seq] = []
        self.write = 0  # W: the slot this step's decode tokens go to
        self.steps = 0
        self.shifts = {"right": 0, "left": 0}  # how often the running rows' cache moved, each way
        self.bytes_by_step: list[int] = []  # streamed bytes read by each step
        self.stop_tokens = set(stop_tokens) if stop_tokens is not None else {c.eos_token_id} - {None}

    # -- membership --------------------------------------------------------------------------------

    def free_slots(self) -> int:
        return self.max_slots - len(self.rows) - len(self.pending)

    def active_keys(self) -> list[str]:
        return [s.request.key for s in self.rows] + [s.request.key for s in self.pending]

    def admit(self, requests: list[SequenceRequest]) -> None:
        """Checks every request first, so a refused list admits none of them."""
        keys = set(self.active_keys())
        if len(requests) > self.free_slots():
            raise EngineError(f"{len(requests)} sequences do not fit in the {self.free_slots()} free slots; admit them after others finish")
        for r in requests:
            what = f"prompt {r.key}"
            if r.key in keys:
                raise EngineError(f"{r.key} is already in the batch; give every sequence its own key")
            keys.add(r.key)
            if not r.prompt_ids:
                raise PromptError(f"{what} is empty; give it some text")
            _check_ids(r.prompt_ids, self.engine.config.vocab_size, what)
            if r.max_new_tokens < 0:
                raise PromptError(f"{what} asks for {r.max_new_tokens} new tokens; ask for 0 or more")
            if len(r.prompt_ids) + r.max_new_tokens > self.max_seq_len:
                raise PromptError(f"{what} is {len(r.prompt_ids)} tokens; with {r.max_new_tokens} new tokens it exceeds the "
                                  f"{self.max_seq_len} tokens a sequence may hold; shorten it or ask for fewer tokens")
            if r.temperature < 0 or not 0 < r.top_p <= 1:
                raise PromptError(f"{what}: temperature must be >= 0 and top_p in (0, 1]")
            if r.logprobs is not None and not 0 <= r.logprobs <= MAX_TOP:
                raise PromptError(f"{what}: logprobs must be between 0 and {MAX_TOP}")
        for r in requests:
            generator = None
            if r.temperature > 0:
                # a generator per sequence: its samples do not depend on who else is in the batch
                generator = torch.Generator(device=self.engine.device)
                if r.seed is not None:
                    generator.manual_seed(r.seed)
                else:
                    generator.seed()
            self.pending.append(_Seq(r, generator))

    def drop(self, key: str) -> None:
        """A cancelled sequence leaves at once; its slot is free for the next admit."""
        self.pending = [s for s in self.pending if s.request.key != key]
        for r, s in enumerate(self.rows):
            if s.request.key == key:
                self._free([r])
                return

    # -- the cache ---------------------------------------------------------------------------------

    def _free(self, slots: list[int]) -> None:
        """Frees rows, moving the last running rows into the holes so that running rows stay [0, A)."""
        for r in sorted(slots, reverse=True):
            last = len(self.rows) - 1
            if r != last:
                self.kv[:, :, r] = self.kv[:, :, last]
                self.valid[r] = self.valid[last]
                self.rows[r] = self.rows[last]
            self.valid[last] = False
            self.rows.pop()
        if not self.rows:
            self.write = 0

    def _shift(self, d: int) -> None:
        """Moves the running rows' cache d slots (right if d > 0) and the write position with it."""
        A, W = len(self.rows), self.write
        self.shifts["right" if d > 0 else "left"] += 1
        lo = max(0, -d)  # right: everything; left: only what is not dropped off the front (unused slots)
        nh, L, hd = self.kv.shape[3:]
        for i in range(self.kv.shape[0]):  # one layer at a time: the copy's temporary stays small
            k_t = self.kv[i, 0, :A].view(A, nh, hd, L)  # the keys are held transposed (models/bloom.py block)
            k_t[..., lo + d:W + d] = k_t[..., lo:W].clone()
            self.kv[i, 1, :A, :, lo + d:W + d] = self.kv[i, 1, :A, :, lo:W].clone()
        moved = self.valid[:A, lo:W].clone()
        self.valid[:A] = False
        self.valid[:A, lo + d:W + d] = moved
        self.write = W + d

    def _place(self, prefill_len: int) -> None:
        """Puts W where this step can write: at least prefill_len - 1 (new prompts end at W) and inside the cache."""
        if not self.rows:
            self.write = max(prefill_len - 1, 0)
            return
        if self.write < prefill_len - 1:
            self._shift(prefill_len - 1 - self.write)
        if self.write >= self.max_seq_len:
            # every row fits: a row holds at most prompt + max_new_tokens - 1 <= max_seq_len - 1 slots
            need = max(max(s.length for s in self.rows), prefill_len - 1)
            self._shift(need - self.write)

    # -- one pass ----------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """One pass over the weights: the new prompts' prefill and one token for every running sequence."""
        if not self.rows and not self.pending:
            return []
        eng, dev = self.engine, self.engine.device
        new, self.pending = self.pending, []
        Tn = max((len(s.request.prompt_ids) for s in new), default=0)
        self._place(Tn)
        A, k, W = len(self.rows), len(new), self.write
        groups = []
        if A:
            self.valid[:A, W] = True
            ids = torch.tensor([[s.last] for s in self.rows], dtype=torch.long, device=dev)  # [A, 1]
            groups.append(_group(eng, ids, self.valid[:A], self.kv[:, :, :A], W))
        if k:
            start = W + 1 - Tn
            pad = eng.config.pad_token_id or 0
            ids = torch.full((k, Tn), pad, dtype=torch.long)  # [k, Tn], left-padded, ending at slot W
            self.valid[A:A + k] = False
            for j, s in enumerate(new):
                n = len(s.request.prompt_ids)
                ids[j, Tn - n:] = torch.tensor(s.request.prompt_ids)
                self.valid[A + j, W + 1 - n:W + 1] = True
                s.length = n
            groups.append(_group(eng, ids.to(dev), self.valid[A:A + k], self.kv[:, :, A:A + k], start))
        self.bytes_by_step.append(_one_pass(eng, groups))
        self.steps += 1
        for s in self.rows:
            s.length += 1
        self.rows.extend(new)
        self.write = W + 1

        eps = eng.config.layer_norm_epsilon
        last = torch.cat([g["x"][:, -1] for g in groups])  # [A + k, C]
        logits = eng.arch.head(eng.globals, last[:, None], eps)[:, 0]  # [A + k, V] fp32
        logp = F.log_softmax(logits, -1)
        # every greedy row's token in one call: an argmax per row over the vocabulary (250,880 here) cost
        # 7% of a 32-sequence step, one thread at a time
        greedy = logits.argmax(-1).tolist()
        events, done = [], []
        for r, s in enumerate(self.rows):
            event = TokenEvent(s.request.key, None, None, None, False, None)
            if r >= A and s.request.echo:
                x = groups[-1]["x"][r - A, Tn - s.length:]  # [n, C]: the prompt's positions
                event.prompt_logprobs, event.prompt_top = self._prompt_logprobs(x, s.request)
            events.append(event)
            if not s.tokens and s.request.max_new_tokens == 0:
                event.finished, event.finish_reason = True, "length"
                done.append(r)
                continue
            token = greedy[r] if s.generator is None else self._sample(logits[r], s)
            if token in self.stop_tokens:  # left out of the completion, as Engine.generate does
                event.finished, event.finish_reason = True, "stop"
                done.append(r)
                continue
            event.token_id, event.logprob = token, float(logp[r, token])
            event.top = _top(logp[r], s.request.logprobs)
            s.tokens.append(token)
            s.last = token
            if s.request.stop and any(stop in eng.decode(s.tokens) for stop in s.request.stop):
                event.finished, event.finish_reason = True, "stop"
            elif len(s.tokens) >= s.request.max_new_tokens:
                event.finished, event.finish_reason = True, "length"
            if event.finished:
                done.append(r)
        self._free(done)
        return events

    def _sample(self, logits: torch.Tensor, s: _Seq) -> int:
        # logits: [V] fp32; the sampling is Engine._sample's, on this sequence's own generator
        return int(Engine._sample(logits[None], s.request.temperature, s.request.top_p, s.generator)[0])

    def _prompt_logprobs(self, x: torch.Tensor, request: SequenceRequest) -> tuple[list, list | None]:
        # x: [n, C]; position t predicts token t + 1, so the first token has no log-prob
        logp = _logprobs(self.engine, x[:-1])  # [n - 1, V]
        ids = torch.tensor(request.prompt_ids[1:], device=logp.device)
        chosen = logp.gather(1, ids[:, None])[:, 0].tolist() if len(ids) else []
        top = None
        if request.logprobs is not None:
            top = [None] + [_top(logp[t], request.logprobs) for t in range(logp.shape[0])]
        return [None] + chosen, top


def _padded(engine: Engine, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    # left-padded ids [B, T] and valid [B, T]
    T = max(map(len, seqs))
    ids = torch.full((len(seqs), T), engine.config.pad_token_id or 0, dtype=torch.long)
    valid = torch.zeros(len(seqs), T, dtype=torch.bool)
    for b, seq in enumerate(seqs):
        ids[b, T - len(seq):] = torch.tensor(seq)
        valid[b, T - len(seq):] = True
    return ids.to(engine.device), valid.to(engine.device)


def _check_fits(engine: Engine, B: int, T: int) -> None:
    if B > engine.max_batch_size:
        raise EngineError(f"max_batch {B} exceeds the engine's max_batch_size {engine.max_batch_size}; pack fewer requests per pass")
    if T > engine.max_seq_len:
        raise PromptError(f"a request of {T} tokens exceeds the {engine.max_seq_len} tokens the engine holds; shorten it")


@torch.inference_mode()
def score(engine: Engine, requests: list[tuple[list[int], list[int]]], *, max_batch: int) -> list[dict]:
    """Log-likelihood of each continuation given its context, max_batch requests per pass.

    {"token_logprobs": [one per continuation token], "sum", "is_greedy"}; with an empty context the first
    continuation token has no prediction: its log-prob is None, and it counts in neither sum nor is_greedy."""
    if max_batch < 1:
        raise EngineError("max_batch must be at least 1")
    vocab = engine.config.vocab_size
    for n, (context, continuation) in enumerate(requests, 1):
        if not continuation:
            raise PromptError(f"request {n} has an empty continuation; give the tokens to score")
        _check_ids(list(context) + list(continuation), vocab, f"request {n}")
    results = []
    for a in range(0, len(requests), max_batch):
        chunk = [(list(c), list(t)) for c, t in requests[a:a + max_batch]]
        seqs = [c + t for c, t in chunk]
        ids, valid = _padded(engine, seqs)
        B, T = ids.shape
        _check_fits(engine, B, T)
        group = _group(engine, ids, valid, _scratch_kv(engine, B, T), 0)
        _one_pass(engine, [group])
        for b, (context, continuation) in enumerate(chunk):
            n, first = len(seqs[b]), max(len(context), 1)  # first: the first token that has a prediction
            x = group["x"][b, T - n + first - 1:T - 1]  # positions predicting tokens first .. n-1
            logp = _logprobs(engine, x)  # [n - first, V]
            target = torch.tensor(seqs[b][first:], device=logp.device)
            chosen = logp.gather(1, target[:, None])[:, 0]
            lps = [None] * (first - len(context)) + chosen.tolist()
            results.append({"token_logprobs": lps, "sum": float(chosen.sum()),
                            "is_greedy": bool((logp.argmax(-1) == target).all())})
    return results


@torch.inference_mode()
def inspect(engine: Engine, prompt_ids: list[int], *, layers: list[int], positions: list[int], top_k: int) -> dict:
    """Hidden states and the logit lens of one prompt, in one pass.

    Layer 0 is the embeddings (after their norm), layer l the residual stream after block l, as in
    transformers' output_hidden_states, whose last entry is after the final norm: so is ours. The
    logit lens of layer l is the final norm and head applied to that residual stream, so the last
    layer's lens is the model's own next-token distribution."""
    if not prompt_ids:
        raise PromptError("the prompt is empty; give it some text")
    _check_ids(list(prompt_ids), engine.config.vocab_size, "the prompt")
    n_layer, n = engine.config.n_layer, len(prompt_ids)
    if any(not 0 <= layer <= n_layer for layer in layers):
        raise PromptError(f"layers go from 0 (the embeddings) to {n_layer}")
    if any(not -n <= p < n for p in positions):
        raise PromptError(f"positions must lie within the prompt's {n} tokens")
    if not 1 <= top_k <= MAX_TOP:
        raise PromptError(f"top_k must be between 1 and {MAX_TOP}")
    _check_fits(engine, 1, n)
    positions = [p % n for p in positions]
    at = torch.tensor(positions, device=engine.device)
    eps = engine.config.layer_norm_epsilon
    hidden, lens = {}, {}

    def keep(layer: int, groups: list[dict]) -> None:
        if layer not in layers:
            return
        x = groups[0]["x"][0, at]  # [P, C]: the residual stream at the asked positions
        logp = _logprobs(engine, x)
        lens[str(layer)] = [[[t, lp] for t, lp in _top(logp[p], top_k)] for p in range(len(positions))]
        if layer == n_layer:
            x = F.layer_norm(x, (x.shape[-1],), engine.globals["ln_f_w"], engine.globals["ln_f_b"], eps)
        hidden[str(layer)] = x.float().tolist()

    ids, valid = _padded(engine, [list(prompt_ids)])
    group = _group(engine, ids, valid, _scratch_kv(engine, 1, n), 0)
    keep(0, [group])
    _one_pass(engine, [group], on_layer=keep)
    return {"hidden_states": hidden, "logit_lens": lens}
