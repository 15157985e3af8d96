"""bespokelabs-curator side of bench/peers.py: run in curator's own venv (prints `RESULT {json}` last).

Needs TELEMETRY_ENABLED=false, LITELLM_LOCAL_MODEL_COST_MAP=True and CURATOR_CACHE_DIR in the environment
(bench/peers.py sets them).

    python curator_run.py --base-url URL --requests N --concurrency C
"""

from __future__ import annotations

import argparse
import json

from bespokelabs import curator
from pydantic import BaseModel, Field


class Review(BaseModel):
    title: str
    rating: int = Field(ge=1, le=5)


class Reviewer(curator.LLM):
    response_format = Review

    def prompt(self, row: dict) -> str:
        return row["instruction"]

    def parse(self, row: dict, response: Review) -> dict:
        return {"i": row["i"], "title": response.title, "rating": response.rating}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    args = parser.parse_args()
    rows = [{"instruction": f"Write a short product review for item {i}.", "i": i} for i in range(args.requests)]
    reviewer = Reviewer(
        model_name="sim-model", backend="openai",
        generation_params={"max_tokens": 64, "temperature": 0.8},
        backend_params={
            "base_url": args.base_url, "api_key": "sk-bench",
            "max_requests_per_minute": 10_000_000, "max_tokens_per_minute": 10_000_000_000,
            "max_concurrent_requests": args.concurrency, "max_retries": 2, "request_timeout": 60,
        },
    )
    result = reviewer(rows)
    data = result.dataset if hasattr(result, "dataset") else result
    print("RESULT " + json.dumps({"rows": len(data), "valid": len(data)}), flush=True)


if __name__ == "__main__":
    main()
