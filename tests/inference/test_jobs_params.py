"""Every bad parameter of a job gets a 400 that says what to change; good ones are normalised to
token ids, text tokenised with the checkpoint's own tokenizer and nothing prepended."""

from __future__ import annotations

import pytest

from inference.errors import JobError
from inference.params import params_validate
from inference.tokenizer import special_tokens, tokenizer_for, vocab_size
from tests.inference.conftest_jobs import _own_inference_cache, model  # noqa: F401 (fixtures)

BAD = [
    ("generate", {}, "Give the prompt"),
    ("generate", {"prompt": 42}, "prompt must be a text, a list of texts"),
    ("generate", {"prompt": ""}, "The prompt is empty"),
    ("generate", {"prompt": []}, "The list of prompts is empty"),
    ("generate", {"prompts": ["fine", ""]}, "Prompt 2 is empty"),
    ("generate", {"prompt": [1, 2, 100000]}, "token ids outside the vocabulary"),
    ("generate", {"prompt": [1, -3]}, "token ids outside the vocabulary"),
    ("generate", {"prompt": [[1, 2], [3, "x"]]}, "Prompt 2 must be a text or a list of token ids"),
    ("generate", {"prompt": "Hi", "max_new_tokens": -1}, "max_new_tokens must be at least 0"),
    ("generate", {"prompt": "Hi", "max_new_tokens": "5"}, "max_new_tokens must be a whole number"),
    ("generate", {"prompt": "Hi", "max_new_tokens": True}, "max_new_tokens must be a whole number"),
    ("generate", {"prompt": "Hi", "max_tokens": 0}, "max_tokens is 0 without echo"),
    ("generate", {"prompt": [5] * 2000, "max_new_tokens": 100}, "passes the model's context of 2048 tokens"),
    ("generate", {"prompt": "Hi", "temperature": -0.5}, "temperature must be 0 (greedy) or more"),
    ("generate", {"prompt": "Hi", "temperature": "hot"}, "temperature must be a number"),
    ("generate", {"prompt": "Hi", "top_p": 0}, "top_p must be above 0 and at most 1"),
    ("generate", {"prompt": "Hi", "top_p": 1.5}, "top_p must be above 0 and at most 1"),
    ("generate", {"prompt": "Hi", "logprobs": 6}, "logprobs must be at most 5"),
    ("generate", {"prompt": "Hi", "logprobs": -1}, "logprobs must be at least 0"),
    ("generate", {"prompt": "Hi", "seed": 1.5}, "seed must be a whole number or null"),
    ("generate", {"prompt": "Hi", "stop": [""]}, "stop must be a text or a list of non-empty texts"),
    ("generate", {"prompt": "Hi", "echo": "yes"}, "echo must be true or false"),
    ("score", {"requests": []}, "requests must be a non-empty list"),
    ("score", {"requests": [{"context": "Hi"}]}, "Request 1 must be an object with a \"continuation\""),
    ("score", {"requests": [{"context": "Hi", "continuation": ""}]}, "The continuation of request 1 is empty"),
    ("inspect", {"prompt": "Hello", "layers": [99]}, "do not exist"),
    ("inspect", {"prompt": "Hello", "layers": []}, "layers must be a non-empty list"),
    ("inspect", {"prompt": [5, 6], "positions": [2]}, "positions [2] are outside the prompt, which has 2 tokens"),
    ("inspect", {"prompt": "Hello", "top_k": 21}, "top_k must be at most 20"),
    ("translate", {"prompt": "Hi"}, "kind must be one of generate, score, inspect"),
]


@pytest.mark.parametrize(("kind", "body", "message"), BAD, ids=[f"{k}-{m[:30]}" for k, _, m in BAD])
def test_it_answers_a_bad_parameter_with_a_clear_400(model, kind, body, message):
    with pytest.raises(JobError) as refused:
        params_validate(kind=kind, body=body, version=model)
    assert refused.value.status == 400 and refused.value.code == "invalid"
    assert message in str(refused.value)


def test_it_tokenises_text_with_the_checkpoints_tokenizer_and_keeps_token_ids_as_given(model):
    tokenizer = tokenizer_for(model)
    params = params_validate(kind="generate", body={"prompt": ["Hello world", [7, 8, 9]], "max_tokens": 3, "stop": "\n",
                                                    "logprobs": 0, "seed": 4}, version=model)
    assert params == {"prompts": [tokenizer.encode("Hello world", add_special_tokens=False).ids, [7, 8, 9]],
                      "max_new_tokens": 3, "temperature": 0.0, "top_p": 1.0, "seed": 4, "stop": ["\n"],
                      "logprobs": 0, "echo": False}
    assert tokenizer.decode(params["prompts"][0]) == "Hello world"  # nothing prepended
    assert params_validate(kind="generate", body={"prompt": [3, 4]}, version=model)["prompts"] == [[3, 4]]
    assert params_validate(kind="generate", body={"prompt": "Hi", "max_tokens": 0, "echo": True}, version=model)["max_new_tokens"] == 0
    score = params_validate(kind="score", body={"requests": [{"context": "The cat", "continuation": " sat"},
                                                             {"continuation": [5, 6]}]}, version=model)
    assert score["requests"][1] == {"context": [], "continuation": [5, 6]}
    inspect = params_validate(kind="inspect", body={"prompt": [5, 6, 7], "layers": [2, 0, 2], "positions": [-1, 0]}, version=model)
    assert inspect == {"prompt": [5, 6, 7], "layers": [0, 2], "positions": [0, 2], "top_k": 5}


def test_it_reads_the_vocabulary_and_special_tokens_of_the_checkpoint(model):
    assert vocab_size(model) == tokenizer_for(model).get_vocab_size()
    assert special_tokens(model) == {"eos_token": "</s>", "bos_token": "<s>", "pad_token": "<pad>"}
