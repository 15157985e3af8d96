"""The run directory: lock, unwritable places, corrupted cache, redaction, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from synthgen.backends.base import ChatRequest, Completion
from synthgen.cache import RequestCache
from synthgen.errors import RunDirError
from synthgen.pipeline import run_recipe
from synthgen.recipe import load_recipe
from synthgen.rundir import JsonlWriter, RunDir, read_lines, redact, write_atomic
from tests.conftest import disk_full_for


def test_a_second_run_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    with RunDir(tmp_path / "run").open():
        with pytest.raises(RunDirError, match="another synthgen run is using this directory"):
            RunDir(tmp_path / "run").open()
    RunDir(tmp_path / "run").open().close()  # free again once the first closes


def test_output_under_a_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="cannot create the run directory"):
        RunDir(tmp_path / "file" / "run").open()


def test_cache_round_trip_and_corruption(tmp_path: Path) -> None:
    server_a = {"kind": "openai", "options": {}, "base_url": "http://a:8000/v1"}
    cache = RequestCache(tmp_path / "c.sqlite", server_a)
    request = ChatRequest("m", [{"role": "user", "content": "hi"}], {"seed": 1})
    assert cache.get(request) is None
    cache.put(request, Completion("hello", "stop", 3, 1))
    assert cache.get(request) == Completion("hello", "stop", 3, 1, cached=True)
    assert cache.get(ChatRequest("m", [{"role": "user", "content": "hi"}], {"seed": 2})) is None
    cache.close()
    other_server = RequestCache(tmp_path / "c.sqlite", {**server_a, "base_url": "http://b:8000/v1"})
    assert other_server.get(request) is None  # the same request to another server is not answered from the cache
    other_server.close()
    (tmp_path / "bad.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(RunDirError, match="bad.sqlite: request cache is unreadable"):
        RequestCache(tmp_path / "bad.sqlite", {"kind": "sim"})


def test_corrupted_cache_in_a_run_fails_cleanly(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "cache.sqlite").write_bytes(b"garbage" * 1000)
    recipe = load_recipe("recipes/quickstart.yaml").with_backend(kind="sim")
    with pytest.raises(RunDirError, match="--fresh"):
        run_recipe(recipe, run, limit=2)
    result = run_recipe(recipe, run, limit=2, fresh=True)
    assert result.records + sum(result.stats.rejects.values()) == 2


def test_redact_hides_credentials_but_not_parameters() -> None:
    data = {"backend": {"api_key": "sk-1", "api_key_env": "OPENAI_API_KEY", "sim": {"api_key": "x", "hf_token": "t"}},
            "sampling": {"max_tokens": 5}, "password": None}
    assert redact(data) == {"backend": {"api_key": "<redacted>", "api_key_env": "OPENAI_API_KEY",
                                        "sim": {"api_key": "<redacted>", "hf_token": "<redacted>"}},
                            "sampling": {"max_tokens": 5}, "password": None}


def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "stats.json"
    write_atomic(target, b"old")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RunDirError, match="stats.json: cannot write .No space left on device."):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]


def test_a_full_disk_during_a_run_leaves_no_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = load_recipe("recipes/quickstart.yaml").with_backend(kind="sim")
    disk_full_for(monkeypatch, "dataset.jsonl.tmp")  # every stage finishes, then the dataset cannot be written
    with pytest.raises(RunDirError, match="dataset.jsonl: cannot write .No space left on device."):
        run_recipe(recipe, tmp_path / "run", limit=3)
    assert not list((tmp_path / "run").glob("dataset.jsonl*"))
    assert not list((tmp_path / "run").glob("*.tmp")) and not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))


def test_a_zst_path_is_written_compressed_in_frames_and_read_back_line_by_line(tmp_path: Path) -> None:
    lines = [orjson.dumps({"n": n, "text": f"record {n} " * 20}) for n in range(12_000)]  # ~2.6 MB: three frames
    writer = JsonlWriter(tmp_path / "out.jsonl.zst")
    for line in lines:
        writer.write_line(line)
    writer.commit()
    plain = JsonlWriter(tmp_path / "out.jsonl")
    for line in lines:
        plain.write_line(line)
    plain.commit()
    assert list(read_lines(tmp_path / "out.jsonl.zst")) == lines == list(read_lines(tmp_path / "out.jsonl"))
    assert (tmp_path / "out.jsonl.zst").stat().st_size * 10 < (tmp_path / "out.jsonl").stat().st_size
    assert (tmp_path / "out.jsonl").read_bytes() == b"".join(line + b"\n" for line in lines)  # users' files: plain


def test_a_full_disk_on_a_compressed_checkpoint_names_it_and_leaves_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk_full_for(monkeypatch, "out.jsonl.zst.tmp")
    writer = JsonlWriter(tmp_path / "out.jsonl.zst")
    writer.write_line(b'{"a": 1}')
    with pytest.raises(RunDirError, match=r"out.jsonl.zst: cannot write .No space left on device.; free space"):
        writer.commit()
    assert list(tmp_path.iterdir()) == []
