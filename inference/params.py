"""Validation of a job's parameters: what the worker runs, prompts as token ids, or a 400 that says
what to change. Text is tokenised here with the checkpoint's own tokenizer, nothing prepended;
token ids are used as given (never re-tokenised), checked against the model's vocabulary."""

from __future__ import annotations

from django.conf import settings

from datasets_app.models import Version
from inference.errors import JobError
from inference.tokenizer import context_length, model_config, tokenizer_for, vocab_size

KINDS = ("generate", "score", "inspect")
MAX_LOGPROBS = 5
MAX_TOP_K = 20


def _bad(message: str) -> JobError:
    return JobError(400, message)


def _int(body: dict, name: str, default, *, minimum: int | None = None, maximum: int | None = None, nullable: bool = False):
    value = body.get(name, default)
    if value is None and nullable:
        return None
    # bool is an int in Python; true is not a number of tokens.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{name} must be a whole number{' or null' if nullable else ''}, not {value!r}.")
    if minimum is not None and value < minimum:
        raise _bad(f"{name} must be at least {minimum} (got {value}).")
    if maximum is not None and value > maximum:
        raise _bad(f"{name} must be at most {maximum} (got {value}).")
    return value


def _float(body: dict, name: str, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise _bad(f"{name} must be a number, not {value!r}.")
    return float(value)


def _bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise _bad(f"{name} must be true or false, not {value!r}.")
    return value


class _Tokens:
    """Turns a text or a list of token ids into checked token ids."""

    def __init__(self, version: Version):
        self.version = version
        self.vocab = vocab_size(version)
        self.limit = settings.INFERENCE_MAX_PROMPT_TOKENS

    def ids(self, value, what: str, *, allow_empty: bool = False) -> list[int]:
        if isinstance(value, str):
            ids = tokenizer_for(self.version).encode(value, add_special_tokens=False).ids
        elif isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value):
            ids = value
            wrong = [i for i in ids if not 0 <= i < self.vocab]
            if wrong:
                raise _bad(f"{what} holds token ids outside the vocabulary of {self.version} (0 to {self.vocab - 1}): "
                           f"{', '.join(map(str, wrong[:5]))}. Tokenize with POST /api/tokenize, or send text.")
        else:
            raise _bad(f"{what} must be a text or a list of token ids (whole numbers), not {type(value).__name__}.")
        if not ids and not allow_empty:
            raise _bad(f"{what} is empty: give at least one token of text.")
        self.check_length(len(ids), what)
        return list(ids)

    def check_length(self, length: int, what: str) -> None:
        if length > self.limit:
            raise _bad(f"{what} is {length} tokens long, more than the {self.limit} allowed "
                       "(INFERENCE_MAX_PROMPT_TOKENS): shorten it.")


def _prompts(body: dict) -> list:
    """"prompts" (a list), or "prompt" as the OpenAI API takes it: a text, texts, token ids or lists of them."""
    if "prompts" in body:
        value = body["prompts"]
        if not isinstance(value, list):
            raise _bad("prompts must be a list of texts or of token-id lists.")
    elif "prompt" in body:
        value = body["prompt"]
        is_ids = isinstance(value, list) and value and all(isinstance(i, int) and not isinstance(i, bool) for i in value)
        value = [value] if isinstance(value, str) or is_ids else value
        if not isinstance(value, list):
            raise _bad("prompt must be a text, a list of texts, a list of token ids or a list of token-id lists.")
    else:
        raise _bad("Give the prompt: \"prompt\" (a text or token ids) or \"prompts\" (a list of them).")
    if not value:
        raise _bad("The list of prompts is empty: give at least one prompt.")
    return value


def _generate(body: dict, tokens: _Tokens) -> dict:
    given = _prompts(body)
    prompts = [tokens.ids(p, f"Prompt {i + 1}" if len(given) > 1 else "The prompt") for i, p in enumerate(given)]
    echo = _bool(body, "echo", False)
    name = "max_tokens" if "max_tokens" in body and "max_new_tokens" not in body else "max_new_tokens"
    max_new = _int(body, name, 16, minimum=0)
    if max_new > settings.INFERENCE_MAX_NEW_TOKENS:
        raise _bad(f"{name} is {max_new}, more than the {settings.INFERENCE_MAX_NEW_TOKENS} new tokens a job may ask for "
                   "(INFERENCE_MAX_NEW_TOKENS): ask for fewer, or continue in a second job.")
    # The engine's context: refused here rather than failed on a worker.
    context = context_length(tokens.version)
    longest = max(len(p) for p in prompts)
    if longest + max_new > context:
        raise _bad(f"The longest prompt ({longest} tokens) with {max_new} new tokens passes the model's context of {context} "
                   "tokens: shorten it or ask for fewer new tokens.")
    if max_new == 0 and not echo:
        raise _bad(f"{name} is 0 without echo, so the job would return nothing: ask for new tokens, or set echo "
                   "to get the prompt's log-probabilities.")
    temperature = _float(body, "temperature", 0.0)  # greedy unless asked: research wants reproducible outputs
    if temperature < 0:
        raise _bad(f"temperature must be 0 (greedy) or more, not {temperature}.")
    top_p = _float(body, "top_p", 1.0)
    if not 0 < top_p <= 1:
        raise _bad(f"top_p must be above 0 and at most 1, not {top_p}.")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise _bad("stop must be a text or a list of non-empty texts.")
    return {
        "prompts": prompts, "max_new_tokens": max_new, "temperature": temperature, "top_p": top_p,
        "seed": _int(body, "seed", None, nullable=True), "stop": stop,
        "logprobs": _int(body, "logprobs", None, minimum=0, maximum=MAX_LOGPROBS, nullable=True), "echo": echo,
    }


def _score(body: dict, tokens: _Tokens) -> dict:
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise _bad("requests must be a non-empty list of {\"context\": ..., \"continuation\": ...}.")
    normalized = []
    for i, item in enumerate(requests, start=1):
        if not isinstance(item, dict) or "continuation" not in item:
            raise _bad(f"Request {i} must be an object with a \"continuation\" (and optionally a \"context\").")
        context = tokens.ids(item.get("context") or [], f"The context of request {i}", allow_empty=True)
        continuation = tokens.ids(item["continuation"], f"The continuation of request {i}")
        tokens.check_length(len(context) + len(continuation), f"Request {i} (context and continuation)")
        normalized.append({"context": context, "continuation": continuation})
    return {"requests": normalized}


def _inspect(body: dict, tokens: _Tokens) -> dict:
    prompt = tokens.ids(body.get("prompt"), "The prompt")
    # Layer 0 is the embeddings' output, layer n the last block's (as Hugging Face's hidden_states).
    n_layer = int(model_config(tokens.version).get("n_layer") or model_config(tokens.version).get("num_hidden_layers") or 0)
    layers = body.get("layers", [n_layer])
    if not isinstance(layers, list) or not layers or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
        raise _bad(f"layers must be a non-empty list of layer numbers (0 to {n_layer}).")
    wrong = [x for x in layers if not 0 <= x <= n_layer]
    if wrong:
        raise _bad(f"layers {wrong} do not exist: {tokens.version} has layers 0 (the embeddings) to {n_layer}.")
    positions = body.get("positions", [-1])
    if not isinstance(positions, list) or not positions or not all(isinstance(x, int) and not isinstance(x, bool) for x in positions):
        raise _bad(f"positions must be a non-empty list of token positions (0 to {len(prompt) - 1}, or negative from the end).")
    wrong = [x for x in positions if not -len(prompt) <= x < len(prompt)]
    if wrong:
        raise _bad(f"positions {wrong} are outside the prompt, which has {len(prompt)} tokens.")
    return {"prompt": prompt, "layers": sorted(set(layers)), "positions": sorted({x % len(prompt) for x in positions}),
            "top_k": _int(body, "top_k", 5, minimum=1, maximum=MAX_TOP_K)}


def params_validate(*, kind: str, body: dict, version: Version) -> dict:
    """The normalised parameters of a job of `kind` (inference.models.InferenceJob.params), or JobError 400."""
    if kind not in KINDS:
        raise _bad(f"kind must be one of {', '.join(KINDS)}, not {kind!r}.")
    if not isinstance(body, dict):
        raise _bad("The parameters must be a JSON object.")
    tokens = _Tokens(version)
    return {"generate": _generate, "score": _score, "inspect": _inspect}[kind](body, tokens)


def params_tokens(*, kind: str, params: dict) -> tuple[int, int]:
    """(prompt tokens, the most new tokens) of validated parameters: what a job may cost."""
    if kind == "generate":
        prompt = sum(len(p) for p in params["prompts"])
        return prompt, params["max_new_tokens"] * len(params["prompts"])
    if kind == "score":
        return sum(len(r["context"]) + len(r["continuation"]) for r in params["requests"]), 0
    return len(params["prompt"]), 0
