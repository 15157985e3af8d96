"""distilabel side of bench/peers.py: run in distilabel's own venv (prints `RESULT {json}` as its last line).

    python distilabel_run.py --base-url URL --requests N --concurrency C --cache-dir DIR [--use-cache]
"""

from __future__ import annotations

import argparse
import json
import logging
import os

os.environ.setdefault("DISTILABEL_LOG_LEVEL", "WARNING")  # it logs every HTTP request at INFO otherwise

from distilabel.models import OpenAILLM  # noqa: E402
from distilabel.pipeline import Pipeline  # noqa: E402
from distilabel.steps import LoadDataFromDicts  # noqa: E402
from distilabel.steps.tasks import TextGeneration  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "rating": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["title", "rating"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--use-cache", action="store_true")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    rows = [{"instruction": f"Write a short product review for item {i}.", "i": i} for i in range(args.requests)]
    with Pipeline(name="peers-bench", cache_dir=args.cache_dir) as pipeline:
        load = LoadDataFromDicts(data=rows, batch_size=args.concurrency)
        llm = OpenAILLM(
            model="sim-model", base_url=args.base_url, api_key="sk-bench", max_retries=2, timeout=60,
            generation_kwargs={
                "max_new_tokens": 64, "temperature": 0.8,
                # its `response_format` argument is typed Dict[str, str], so a json_schema one rides in extra_body
                "extra_body": {"response_format": {"type": "json_schema",
                                                   "json_schema": {"name": "review", "schema": SCHEMA, "strict": True}}},
            },
        )
        generate = TextGeneration(llm=llm, input_batch_size=args.concurrency)
        load >> generate
    distiset = pipeline.run(use_cache=args.use_cache)
    data = distiset["default"]["train"]
    valid = 0
    for text in data["generation"]:
        try:
            obj = json.loads(text or "")
            valid += isinstance(obj, dict) and {"title", "rating"} <= obj.keys()
        except ValueError:
            pass
    print("RESULT " + json.dumps({"rows": len(data), "valid": valid}), flush=True)


if __name__ == "__main__":
    main()
