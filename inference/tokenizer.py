"""The tokenizer of a published checkpoint version, for web processes (no torch: `tokenizers` only)."""

from __future__ import annotations

import json
import threading

from tokenizers import Tokenizer

from datasets_app.models import File, Version
from inference.errors import JobError
from inference.materialize import version_file

_lock = threading.Lock()
# Per revision: a published version never changes, so neither does what is read from it.
_tokenizers: dict[str, Tokenizer] = {}
_configs: dict[str, dict] = {}


def tokenizer_for(version: Version) -> Tokenizer:
    with _lock:
        if version.revision not in _tokenizers:
            path = version_file(version, "tokenizer.json")
            try:
                _tokenizers[version.revision] = Tokenizer.from_file(str(path))
            except Exception as error:  # tokenizers raises its own exception type for a malformed file
                raise JobError(500, f"The tokenizer.json of {version} cannot be read ({str(error).splitlines()[0]}): "
                                    "publish a new version with a working tokenizer.", code="checkpoint") from None
        return _tokenizers[version.revision]


def model_config(version: Version) -> dict:
    """The version's config.json ({} when it has none)."""
    with _lock:
        if version.revision not in _configs:
            has_config = File.objects.filter(version=version, path="config.json").exists()
            _configs[version.revision] = json.loads(version_file(version, "config.json").read_text()) if has_config else {}
        return _configs[version.revision]


def vocab_size(version: Version) -> int:
    """Token ids a prompt may hold: the model's embedding rows (which may exceed the tokenizer's vocabulary)."""
    return int(model_config(version).get("vocab_size") or tokenizer_for(version).get_vocab_size(with_added_tokens=True))


def context_length(version: Version) -> int:
    """Tokens the model reads at most, prompt and new ones together: config.json's, as the engine reads it
    (inference.engine.config)."""
    config = model_config(version)
    return int(next((config[k] for k in ("seq_length", "n_positions", "max_position_embeddings") if config.get(k)), 2048))


def special_tokens(version: Version) -> dict[str, str | None]:
    """{"eos_token", "bos_token", "pad_token"}: from tokenizer_config.json when the version has one, else the
    ids of config.json through the tokenizer."""
    tokens = {"eos_token": None, "bos_token": None, "pad_token": None}
    if File.objects.filter(version=version, path="tokenizer_config.json").exists():
        named = json.loads(version_file(version, "tokenizer_config.json").read_text())
        for key in tokens:
            value = named.get(key)
            tokens[key] = value.get("content") if isinstance(value, dict) else value
    config, tokenizer = model_config(version), tokenizer_for(version)
    for key in tokens:
        token_id = config.get(key.replace("_token", "_token_id"))
        if tokens[key] is None and isinstance(token_id, int):
            tokens[key] = tokenizer.id_to_token(token_id)
    return tokens
