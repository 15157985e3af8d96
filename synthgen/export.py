"""Export: a run's records in the layout a trainer reads (chat messages, Alpaca, ShareGPT, sentence-transformers
triplets or pairs, pretraining text, DPO preference pairs, BEIR corpus/queries/qrels,
RAG-eval rows, chat messages with the context), as JSONL, Parquet or a
Hugging Face `datasets` folder, with an optional seeded train/test split and a dataset card. Files appear only
when complete (a temporary folder renamed)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson
from pydantic import Field, ValidationInfo, field_validator

from synthgen.arrow_rows import BATCH_ROWS, jsonl_to_arrow, jsonl_to_parquet, parquet_to_arrow
from synthgen.config import StrictModel
from synthgen.errors import ConfigError, RunDirError
from synthgen.export_beir import write_beir
from synthgen.hashing import stable_int
from synthgen.record import Record
from synthgen.rundir import EXPORT_MARKER, write_error
from synthgen.version import __version__

Layout = Literal["records", "messages", "alpaca", "sharegpt", "triplets", "pairs", "text", "preference", "beir", "rag",
                 "rag_messages"]
Row = dict[str, Any]
HF_SHARD = "data-00000-of-00001.arrow"  # a split's one Arrow file in the HF layout, named as `save_to_disk` names it


class ExportConfig(StrictModel):
    """How to export. `fields` renames the roles a layout reads (e.g. {instruction: question, output: answer})."""

    format: Literal["jsonl", "parquet", "hf"] = "jsonl"
    layout: Layout = "records"
    fields: dict[str, str] = Field(default_factory=dict)
    test_size: float | None = Field(default=None, gt=0, lt=1, description="share of rows in a `test` split")
    split_seed: int = 0
    instruction_in_anchor: bool = Field(default=True, description="triplets/pairs: anchor = 'Instruct: ...\\nQuery: ...'")
    negatives: int | None = Field(default=None, ge=1, le=100, description="triplets: k negative_1..k columns")
    conversational: bool = Field(default=False, description="preference: prompt, chosen, rejected as chat messages")
    push_to_hub: str | None = Field(default=None, description="repo id; the token is read from `token_env`")
    token_env: str = "HF_TOKEN"

    @field_validator("fields")
    @classmethod
    def _known_roles(cls, fields: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        layout = info.data.get("layout", "records")
        unknown = sorted(set(fields) - set(LAYOUT_ROLES[layout]))
        if unknown:
            known = ", ".join(LAYOUT_ROLES[layout]) or "none (it writes every field as is)"
            raise ValueError(f"the {layout} layout has no role {', '.join(map(repr, unknown))}; its roles: {known}")
        return fields

    @field_validator("conversational")
    @classmethod
    def _preference_only(cls, conversational: bool, info: ValidationInfo) -> bool:
        if conversational and info.data.get("layout") != "preference":
            raise ValueError("only the preference layout has a conversational form; remove it or set layout: preference")
        return conversational

    @field_validator("layout")
    @classmethod
    def _beir_jsonl(cls, layout: str, info: ValidationInfo) -> str:
        if layout == "beir" and info.data.get("format") != "jsonl":
            raise ValueError("the beir layout writes BEIR's own JSONL and TSV files; remove `format` or set format: jsonl")
        return layout


ROLE_DEFAULTS = {
    "instruction": "instruction", "input": "input", "output": "response", "system": "system",
    "anchor": "anchor", "positive": "positive", "negative": "negative", "negatives": "mined_negatives", "text": "text",
    "prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "title": "title", "corpus_id": "chunk_id",
    "question": "question", "answer": "answer", "contexts": "contexts", "source_ids": "source_ids",
}
LAYOUT_ROLES: dict[str, tuple[str, ...]] = {  # the roles each layout reads, i.e. the keys `fields` may rename
    "records": (), "messages": ("instruction", "input", "output", "system"), "alpaca": ("instruction", "input", "output"),
    "sharegpt": ("instruction", "input", "output"), "triplets": ("anchor", "positive", "negative", "negatives"),
    "pairs": ("anchor", "positive"), "text": ("text",), "preference": ("prompt", "chosen", "rejected"),
    "beir": ("anchor", "positive", "title", "corpus_id"), "rag": ("question", "answer", "contexts", "source_ids"),
    "rag_messages": ("question", "answer", "contexts", "system"),
}
LAYOUT_NEEDS: dict[str, tuple[str, ...]] = {  # the roles without which a layout skips a record
    "records": (), "messages": ("instruction", "output"), "alpaca": ("instruction", "output"),
    "sharegpt": ("instruction", "output"), "triplets": ("anchor", "positive"), "pairs": ("anchor", "positive"),
    "text": ("text",), "preference": ("prompt", "chosen", "rejected"), "beir": ("anchor", "positive"),
    "rag": ("question", "answer", "contexts"), "rag_messages": ("question", "answer", "contexts"),
}


@dataclass
class ExportResult:
    """Where the export went and how many rows each split got (rows a layout could not fill are skipped)."""

    path: Path
    rows: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    skipped_fields: list[str] = field(default_factory=list)  # the first skipped record's fields, to say what is missing


def _role(record: Record, config: ExportConfig, role: str) -> Any:
    return record.fields.get(config.fields.get(role, ROLE_DEFAULTS[role]))


def _prompt(record: Record, config: ExportConfig) -> str | None:
    instruction, extra = _role(record, config, "instruction"), _role(record, config, "input")
    if not isinstance(instruction, str) or not instruction.strip():
        return None
    return f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction


def _anchor(record: Record, config: ExportConfig) -> Any:
    anchor, instruction = _role(record, config, "anchor"), record.fields.get("instruction")
    if config.instruction_in_anchor and instruction and isinstance(anchor, str):
        return f"Instruct: {instruction}\nQuery: {anchor}"
    return anchor


def _messages(record: Record, config: ExportConfig) -> Row | None:
    prompt, answer, system = _prompt(record, config), _role(record, config, "output"), _role(record, config, "system")
    if prompt is None or not isinstance(answer, str):
        return None
    turns = [{"role": "system", "content": system}] if isinstance(system, str) and system else []
    return {"messages": [*turns, {"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


def _alpaca(record: Record, config: ExportConfig) -> Row | None:
    instruction, output = _role(record, config, "instruction"), _role(record, config, "output")
    if not isinstance(instruction, str) or not isinstance(output, str):
        return None
    return {"instruction": instruction, "input": _role(record, config, "input") or "", "output": output}


def _sharegpt(record: Record, config: ExportConfig) -> Row | None:
    prompt, answer = _prompt(record, config), _role(record, config, "output")
    if prompt is None or not isinstance(answer, str):
        return None
    return {"conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]}


def _triplets(record: Record, config: ExportConfig) -> Row | None:
    """{anchor, positive, negative}; a record with a list of negatives (`mined_negatives`) gets sentence-transformers'
    n-tuple instead, {anchor, positive, negative_1, ..., negative_k} as MultipleNegativesRankingLoss reads it: its
    `negative` first, then the list's others. k = `negatives`, a row with fewer distinct negatives skipped (as
    sentence-transformers' own mining does), so every row has the same columns; unset, k = the list's length
    (mine_hard_negatives' k, short only where it found fewer)."""
    positive, negative, listed = (_role(record, config, role) for role in ("positive", "negative", "negatives"))
    if not all(isinstance(v, str) and v for v in (_role(record, config, "anchor"), positive)):
        return None
    if not isinstance(listed, list) or not listed:
        return {"anchor": _anchor(record, config), "positive": positive, "negative": negative} \
            if isinstance(negative, str) and negative else None
    distinct = list(dict.fromkeys(v for v in (negative, *listed) if isinstance(v, str) and v))
    k = config.negatives or len(listed)
    if len(distinct) < k:
        return None
    return {"anchor": _anchor(record, config), "positive": positive,
            **{f"negative_{i}": text for i, text in enumerate(distinct[:k], 1)}}


def _pairs(record: Record, config: ExportConfig) -> Row | None:
    positive = _role(record, config, "positive")
    if not all(isinstance(v, str) and v for v in (_role(record, config, "anchor"), positive)):
        return None
    return {"anchor": _anchor(record, config), "positive": positive}


def _text(record: Record, config: ExportConfig) -> Row | None:
    text = _role(record, config, "text")
    return {"text": text} if isinstance(text, str) and text else None


def _preference(record: Record, config: ExportConfig) -> Row | None:
    """TRL's preference rows (DPOTrainer): standard {prompt, chosen, rejected} strings, or the conversational
    form with a user turn for the prompt and an assistant turn for each answer."""
    row = {role: _role(record, config, role) for role in ("prompt", "chosen", "rejected")}
    if not all(isinstance(text, str) and text for text in row.values()):
        return None
    if not config.conversational:
        return row
    return {"prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}]}


def _rag(record: Record, config: ExportConfig) -> Row | None:
    """A RAG-evaluation row as Ragas and similar tools read it: {question, answer, contexts, source_ids}."""
    row = {role: _role(record, config, role) for role in ("question", "answer", "contexts", "source_ids")}
    if not all(isinstance(row[role], str) and row[role] for role in ("question", "answer")) \
            or not isinstance(row["contexts"], list) or not row["contexts"]:
        return None
    return {**row, "source_ids": row["source_ids"] if isinstance(row["source_ids"], list) else []}


def _rag_messages(record: Record, config: ExportConfig) -> Row | None:
    """Chat messages for training an answer from context: the passages and the question in the user turn."""
    row = _rag(record, config)
    if row is None:
        return None
    passages = "\n\n".join(f"<context>\n{text}\n</context>" for text in row["contexts"])
    system = _role(record, config, "system")
    turns = [{"role": "system", "content": system}] if isinstance(system, str) and system else []
    user = f"Answer the question from the context below.\n\n{passages}\n\nQuestion: {row['question']}"
    return {"messages": [*turns, {"role": "user", "content": user}, {"role": "assistant", "content": row["answer"]}]}


def _records(record: Record, config: ExportConfig) -> Row | None:
    return {"id": record.id, **record.fields, "meta": orjson.dumps(record.meta).decode()}


LAYOUTS: dict[str, Callable[[Record, ExportConfig], Row | None]] = {
    "records": _records, "messages": _messages, "alpaca": _alpaca, "sharegpt": _sharegpt,
    "triplets": _triplets, "pairs": _pairs, "text": _text, "preference": _preference,
    "rag": _rag, "rag_messages": _rag_messages,
}


def export_records(records: Iterable[Record], config: ExportConfig, out: Path,
                   card: Callable[[ExportResult], str] | None = None, batch_rows: int = BATCH_ROWS,
                   allow_empty: bool = False) -> ExportResult:
    """Write `records` in `config`'s layout and format to the folder `out`, with README.md. `out` may replace
    only an empty folder or an earlier export (marked by a .synthgen-export file): never a folder of the user's.
    Rows stream to disk as they come; Parquet and the HF layout's Arrow files are written `batch_rows` rows at a
    time (see synthgen.arrow_rows). No rows is an error (a layout no record fits names the fields it needs),
    except that with `allow_empty` an empty input writes the card alone (a run's `export` stage that kept nothing)."""
    token = _hub_token(config) if config.push_to_hub else None
    tmp = out.with_name(out.name + ".tmp")
    for folder in (out, tmp):
        _refuse_foreign(folder)
    result = ExportResult(out)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)  # an earlier export's leftover (checked above)
        tmp.mkdir(parents=True)
        (tmp / EXPORT_MARKER).write_bytes(orjson.dumps({"synthgen": __version__}))
        _write(records, config, tmp, result, batch_rows, allow_empty)
        if card is not None:
            (tmp / "README.md").write_text(card(result), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(out, exc, "cannot write the export") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if config.push_to_hub and token and result.rows:
        _push(out, config, list(result.rows), token, batch_rows)
    return result


def _refuse_foreign(folder: Path) -> None:
    """Refuse to replace `folder` unless it is absent, an empty folder, or an earlier export."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_dir() and not folder.is_symlink() and ((folder / EXPORT_MARKER).is_file() or not any(folder.iterdir())):
        return
    raise RunDirError(f"{folder}: exists and was not written by synthgen export (no {EXPORT_MARKER} in it); "
                      "refusing to replace it: choose another export folder")


def _write(records: Iterable[Record], config: ExportConfig, folder: Path, result: ExportResult, batch_rows: int,
           allow_empty: bool) -> None:
    """Stream the rows into `folder`'s split files (JSONL, line by line), counting them in `result`; then convert
    them to the chosen format. A `test` split exists only when a row falls in it; a split is the stable hash of
    the record id, so no shuffle holds the set in memory."""
    if config.layout == "beir":  # three files, not one row per record (synthgen.export_beir)
        result.rows, result.skipped = write_beir(records, lambda record, role: _role(record, config, role),
                                                 lambda id_: _split(id_, config) if config.test_size else None, folder)
        return
    to_row = LAYOUTS[config.layout]
    with ExitStack() as files:
        handles: dict[str, IO[bytes]] = {"train": files.enter_context((folder / "train.jsonl").open("wb"))}
        result.rows = {"train": 0}
        for record in records:
            row = to_row(record, config)
            if row is None:
                result.skipped_fields = result.skipped_fields or sorted(record.fields)
                result.skipped += 1
                continue
            name = _split(record.id, config)
            if name not in handles:
                handles[name] = files.enter_context((folder / f"{name}.jsonl").open("wb"))
                result.rows[name] = 0
            handles[name].write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
            result.rows[name] += 1
    if not sum(result.rows.values()):
        if result.skipped or not allow_empty:
            raise ConfigError("export", "layout" if result.skipped else None, _no_rows(config, result))
        (folder / "train.jsonl").unlink()
        result.rows = {}
        return
    if config.format == "jsonl":
        return
    for name in result.rows:
        if config.format == "parquet":
            jsonl_to_parquet(folder / f"{name}.jsonl", folder / f"{name}.parquet", batch_rows)
        else:
            (folder / name).mkdir()
            jsonl_to_arrow(folder / f"{name}.jsonl", folder / name / HF_SHARD, batch_rows)
        (folder / f"{name}.jsonl").unlink()
    if config.format == "hf":
        _describe_in_place(folder, list(result.rows))


def _split(record_id: str, config: ExportConfig) -> str:
    """`test` for a stable-hash share `test_size` of the ids, `train` for the rest."""
    in_test = config.test_size is not None and stable_int(config.split_seed, record_id) % 10_000 < config.test_size * 10_000
    return "test" if in_test else "train"


def _no_rows(config: ExportConfig, result: ExportResult) -> str:
    """Why an export has no rows: no records, or the fields the layout needs that the records lack."""
    if not result.skipped:
        return "no records to export: the run's dataset is empty"
    needed = {role: config.fields.get(role, ROLE_DEFAULTS[role]) for role in LAYOUT_NEEDS[config.layout]}
    missing = [f"{role} (field `{name}`)" for role, name in needed.items() if name not in result.skipped_fields]
    return (f"none of the {result.skipped} records fits the {config.layout} layout: it needs "
            f"{', '.join(missing) or ', '.join(needed)} as non-empty values, and the records have the fields "
            f"{', '.join(result.skipped_fields) or '(none)'}; map yours with `fields:` "
            f"(e.g. fields: {{{next(iter(needed))}: <your field>}}) or choose another layout")


def _describe_in_place(folder: Path, splits: list[str]) -> None:
    """Make `folder` a DatasetDict that `datasets.load_from_disk(folder)` reads: dataset_dict.json, and beside each
    split's Arrow file the state.json and dataset_info.json that `save_to_disk` writes (the same keys). The Arrow
    files stay where they were written: `save_to_disk` would read every mapped page back and copy it (1.4 GB of
    resident memory at 1M records)."""
    import dataclasses

    for name, dataset in _dataset_dict(folder, splits, f"{{split}}/{HF_SHARD}").items():
        state = {"_data_files": [{"filename": HF_SHARD}], "_fingerprint": dataset._fingerprint,
                 "_format_columns": dataset.format["columns"], "_format_kwargs": dataset.format["format_kwargs"],
                 "_format_type": dataset.format["type"], "_output_all_columns": dataset.format["output_all_columns"],
                 "_split": None}
        info = dataclasses.asdict(dataset.info)
        (folder / name / "state.json").write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        (folder / name / "dataset_info.json").write_bytes(orjson.dumps({key: info[key] for key in sorted(info)},
                                                                       option=orjson.OPT_INDENT_2))
    (folder / "dataset_dict.json").write_bytes(orjson.dumps({"splits": splits}))


def _dataset_dict(folder: Path, splits: list[str], file: str = "{split}.arrow") -> Any:
    """The splits' Arrow stream files in `folder` (`file` names them) as a DatasetDict, memory-mapped where they are: no copy in
    memory, no cache in ~/.cache/huggingface."""
    import datasets

    return datasets.DatasetDict({name: datasets.Dataset.from_file(str(folder / file.format(split=name)))
                                 for name in splits})


def _push(out: Path, config: ExportConfig, splits: list[str], token: str, batch_rows: int) -> None:
    """Push the written export to the Hub from its files (JSONL or Parquet copied to Arrow beside it first)."""
    import datasets

    if config.format == "hf":
        datasets.load_from_disk(str(out)).push_to_hub(config.push_to_hub, token=token)
        return
    with tempfile.TemporaryDirectory(prefix=".hub-", dir=out.parent) as scratch:
        for name in splits:
            if config.format == "jsonl":
                jsonl_to_arrow(out / f"{name}.jsonl", Path(scratch) / f"{name}.arrow", batch_rows)
            else:
                parquet_to_arrow(out / f"{name}.parquet", Path(scratch) / f"{name}.arrow")
        _dataset_dict(Path(scratch), splits).push_to_hub(config.push_to_hub, token=token)


def _hub_token(config: ExportConfig) -> str:
    """The Hub token from the environment: handed to `push_to_hub`, never stored or written."""
    token = os.environ.get(config.token_env)
    if not token:
        raise ConfigError("export", "push_to_hub", f"set the {config.token_env} environment variable to a Hub token")
    return token
