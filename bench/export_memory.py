"""Peak memory of exporting and of `synthgen dedup` file mode on quickstart-shaped records (~1.7 KB of JSON each).

Each case runs in its own subprocess and prints that process's peak RSS (ru_maxrss), the peak of its anonymous part
(RssAnon, sampled every 20 ms: the memory the process really holds, as opposed to pages of memory-mapped Arrow files,
which the kernel can drop) and wall seconds. Records are made on the fly (a generator), so what the figures show is
what the export or the dedup holds, not the input.

    python bench/export_memory.py [--records 100000] [--cases parquet,hf,jsonl,dedup]
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from synthgen.record import Record

WORDS = ["".join(random.Random(i).choices("abcdefghijklmnopqrstuvwxyz", k=3 + i % 7)) for i in range(5000)]


def text(rng: random.Random, chars: int) -> str:
    """Word salad of about `chars` characters."""
    return " ".join(rng.choices(WORDS, k=chars // 6))[:chars]


def records(count: int, seed: int = 0) -> Iterator[Record]:
    """Quickstart-shaped records: instruction, input, response and provenance meta, ~1.7 KB as JSON."""
    rng = random.Random(seed)
    for i in range(count):
        fields = {"instruction": text(rng, 160), "input": text(rng, 120) if i % 2 else "", "response": text(rng, 1050),
                  "taxonomy_path": f"writing/email/{i % 7}"}
        meta = {"recipe": "quickstart", "stage": "01-generate", "template": "quickstart/response.j2",
                "backend": "sim", "model": "sim-model", "sampling": {"temperature": 0.7, "max_tokens": 512},
                "parents": [f"{rng.getrandbits(64):016x}"], "usage": {"prompt_tokens": 120, "completion_tokens": 300},
                "taxonomy": {"path": f"writing/email/{i % 7}", "leaf": "email"}}
        yield Record(f"{rng.getrandbits(64):016x}", fields, meta)


def rows_file(path: Path, count: int) -> None:
    """A JSONL file of `count` rows with a `text` field, one row in ten an exact or near copy of an earlier one."""
    previous = ""
    with path.open("wb") as handle:
        for i, record in enumerate(records(count)):
            row = {"text": record.fields["response"], "instruction": record.fields["instruction"], "n": i}
            if i % 10 == 5:  # an exact copy of the row before, or a near one (a word added)
                row["text"] = previous if i % 20 == 5 else f"{previous} extra"
            previous = record.fields["response"]
            handle.write(orjson.dumps(row) + b"\n")


def sample_anonymous(peak: list[int], stop: threading.Event) -> None:
    """Keep the largest RssAnon (kB) of this process in `peak[0]` until `stop` is set."""
    while not stop.wait(0.02):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                peak[0] = max(peak[0], int(line.split()[1]))


def run_case(case: str, count: int, folder: Path) -> None:
    peak_anon, stop = [0], threading.Event()
    sampler = threading.Thread(target=sample_anonymous, args=(peak_anon, stop), daemon=True)
    sampler.start()
    if case == "dedup":
        from synthgen.file_dedup import dedup_file
        from synthgen.stages.dedup import MinHashDedupParams
        from synthgen.stages.source import SourceConfig

        source = folder / "rows.jsonl"
        rows_file(source, count)
        started = time.perf_counter()
        summary = dedup_file(SourceConfig(path=str(source)), folder / "kept.parquet", MinHashDedupParams(fields=["text"]))
        done = f"kept {summary.kept} of {summary.records}"
    else:
        from synthgen.export import ExportConfig, export_records

        started = time.perf_counter()
        result = export_records(records(count), ExportConfig(format=case), folder / "out")  # type: ignore[arg-type]
        done = f"rows {result.rows}"
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{case:8} {count:>8,} records  peak RSS {peak:6.0f} MB (anonymous {peak_anon[0] / 1024:5.0f} MB)  "
          f"{seconds:6.1f} s  ({done})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--cases", default="parquet,hf,jsonl,dedup")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one case, in this process
    args = parser.parse_args()
    if args.records > 300_000:
        parser.error("at most 300,000 records: this bench is sized for a shared machine")
    if args.case:
        with tempfile.TemporaryDirectory() as folder:
            run_case(args.case, args.records, Path(folder))
        return
    for case in args.cases.split(","):
        subprocess.run([sys.executable, __file__, "--records", str(args.records), "--case", case], check=True)


if __name__ == "__main__":
    main()
