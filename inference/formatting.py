"""Jobs as the APIs show them: token ids decoded on the web side with the checkpoint's own tokenizer
(no torch here), the JSON API's job object, and the OpenAI completion shape.

The worker stores token ids and log-probabilities only (inference.models.InferenceJob.outputs);
every text a client reads is decoded here, and cut at the first stop string, so that the JSON API,
the OpenAI-compatible API and the playground say the same thing.
"""

from __future__ import annotations

from inference.errors import JobError
from inference.models import InferenceJob
from inference.services import job_queue_position
from inference.tokenizer import tokenizer_for

REPLACEMENT = "\ufffd"


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """The text up to (not including) the earliest stop string, and whether one was found. The worker
    ends a sequence on the token that completes a stop string; what a client reads stops before it."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[:min(cuts)], True) if cuts else (text, False)


def model_name(job: InferenceJob) -> str:
    return f"{job.resource.repo_id}@{job.version.name}"


class _Decoder:
    """Decodes token ids of one version, reading its tokenizer once and only when needed."""

    def __init__(self, version):
        self.version = version
        self._tokenizer = None
        self._pieces: dict[int, str] = {}

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = tokenizer_for(self.version)
        return self._tokenizer

    def text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False) if ids else ""

    def piece(self, token_id: int) -> str:
        """One token as a string, the same for the same id wherever it appears (lm-evaluation-harness
        compares `tokens` with the keys of `top_logprobs`). A byte-level token that is part of a UTF-8
        character decodes to U+FFFD alone, and several such tokens would share one key: those are
        shown as their vocabulary entry, which is unique."""
        if token_id not in self._pieces:
            text = self.text([token_id])
            if not text or REPLACEMENT in text:
                text = self.tokenizer.id_to_token(token_id) or f"<{token_id}>"
            self._pieces[token_id] = text
        return self._pieces[token_id]


def job_json(job: InferenceJob) -> dict:
    """The JSON API's job object (inference.openapi's Job schema)."""
    decoder = _Decoder(job.version)
    outputs = job.outputs or []
    if job.kind == InferenceJob.Kind.GENERATE:
        stop = job.params.get("stop") or []
        outputs = [{**output, "text": _text_or_none(decoder, output.get("token_ids") or [], stop)} for output in outputs]
    return {
        "id": job.public_id, "object": "inference.job", "kind": job.kind, "status": job.status, "model": model_name(job),
        "via": job.via, "params": job.params, "outputs": outputs,
        "queue_position": job_queue_position(job),
        "cancel_requested": job.cancel_requested_at is not None,
        "usage": {"prompt_tokens": job.prompt_tokens, "completion_tokens": job.completion_tokens,
                  "total_tokens": job.prompt_tokens + job.completion_tokens},
        "error": job.error or None,
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "first_token_at": _iso(job.first_token_at), "finished_at": _iso(job.finished_at),
    }


def _text_or_none(decoder: _Decoder, ids: list[int], stop: list[str]) -> str | None:
    try:
        return cut_at_stop(decoder.text(ids), stop)[0]
    except JobError:
        # The checkpoint's tokenizer cannot be read (its stored file damaged or removed): the job is still
        # shown, with its exact token ids, rather than failing the whole list of the user's jobs.
        return None


def _iso(moment) -> str | None:
    return moment.isoformat() if moment is not None else None


def completion_json(job: InferenceJob, *, model: str) -> dict:
    """A finished generation job as an OpenAI text completion: one choice per prompt."""
    decoder = _Decoder(job.version)
    params = job.params
    choices = [_choice(index, prompt, output, params, decoder)
               for index, (prompt, output) in enumerate(zip(params["prompts"], job.outputs or []))]
    return {
        "id": job.public_id, "object": "text_completion", "created": int(job.created_at.timestamp()), "model": model,
        "choices": choices,
        "usage": {"prompt_tokens": job.prompt_tokens, "completion_tokens": job.completion_tokens,
                  "total_tokens": job.prompt_tokens + job.completion_tokens},
    }


def _choice(index: int, prompt: list[int], output: dict, params: dict, decoder: _Decoder) -> dict:
    echo, generated = params.get("echo", False), output.get("token_ids") or []
    prompt_text = decoder.text(prompt)
    # Decoded together, so that a character split across the prompt's last token and the first new
    # one comes out whole.
    continuation, stopped = cut_at_stop(decoder.text(prompt + generated)[len(prompt_text):], params.get("stop") or [])
    choice = {"index": index, "text": (prompt_text if echo else "") + continuation,
              "finish_reason": "stop" if stopped else (output.get("finish_reason") or "length"), "logprobs": None}
    if params.get("logprobs") is not None:
        choice["logprobs"] = _logprobs(prompt, output, echo=echo, decoder=decoder,
                                       end=len(prompt_text) + len(continuation) if stopped else None)
    return choice


def _logprobs(prompt: list[int], output: dict, *, echo: bool, decoder: _Decoder, end: int | None) -> dict:
    generated = output.get("token_ids") or []
    everything = prompt + generated
    # Where each token starts in the prompt's text followed by the completion's (OpenAI's convention,
    # echo or not): the length of the text of the tokens before it.
    offsets = [len(decoder.text(everything[:k])) for k in range(len(everything))]
    tops = output.get("top_logprobs")
    entries = []  # (token id, its log-probability, its top alternatives, offset)
    if echo:
        prompt_lps = output.get("prompt_logprobs") or [None] * len(prompt)
        prompt_tops = output.get("prompt_top_logprobs")
        for j, token_id in enumerate(prompt):
            entries.append((token_id, prompt_lps[j], prompt_tops[j] if prompt_tops else None, offsets[j]))
    for k, token_id in enumerate(generated):
        offset = offsets[len(prompt) + k]
        # The tokens of a stop string cut off the text (only then: a token that completes a character
        # begun in the prompt starts at the text's end too, and is the continuation's first token).
        if end is not None and offset >= end:
            break
        entries.append((token_id, output["token_logprobs"][k], tops[k] if tops else None, offset))
    with_tops = bool(tops) or bool(echo and output.get("prompt_top_logprobs"))
    return {
        "tokens": [decoder.piece(token_id) for token_id, _, _, _ in entries],
        "token_logprobs": [logprob for _, logprob, _, _ in entries],
        "top_logprobs": [_top_dict(top, decoder) if top is not None else None for _, _, top, _ in entries] if with_tops else None,
        "text_offset": [offset for _, _, _, offset in entries],
    }


def _top_dict(top: list, decoder: _Decoder) -> dict[str, float]:
    # Two ids with the same text share a key: keep the likelier, as the text is what a client compares.
    result: dict[str, float] = {}
    for token_id, logprob in top:
        key = decoder.piece(token_id)
        if key not in result or logprob > result[key]:
            result[key] = logprob
    return result
