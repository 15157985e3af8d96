"""The filesystem a path lives on, and the SQLite journal mode chosen from it."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from synthgen import filesystems
from synthgen.cache import connect


def mountinfo(tmp_path: Path, shared: Path) -> Path:
    """A mount table: / on ext4, `shared` (with a space in a parent's name escaped) on NFS, a tmpfs inside it."""
    escaped = str(shared).replace(" ", "\\040")
    text = (f"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
            f"40 22 0:50 /export {escaped} rw,relatime shared:9 - nfs4 head:/export rw,vers=4.2\n"
            f"41 40 0:51 / {escaped}/scratch rw shared:10 - tmpfs tmpfs rw\n")
    path = tmp_path / "mountinfo"
    path.write_text(text)
    return path


def test_the_innermost_mount_names_the_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "cluster runs"
    monkeypatch.setattr(filesystems, "MOUNTINFO", mountinfo(tmp_path, shared))
    assert filesystems.filesystem_type(shared / "run" / "cache.sqlite") == "nfs4"
    assert filesystems.filesystem_type(shared / "scratch" / "x") == "tmpfs"
    assert filesystems.filesystem_type(tmp_path / "cluster runs2") == "ext4"  # a sibling sharing the prefix
    assert filesystems.is_network_filesystem(shared) and not filesystems.is_network_filesystem(shared / "scratch")


def test_a_cache_on_a_network_filesystem_uses_the_rollback_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared, local = tmp_path / "nfs", tmp_path / "local"
    shared.mkdir(), local.mkdir()
    monkeypatch.setattr(filesystems, "MOUNTINFO", mountinfo(tmp_path, shared))
    schema = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)"
    modes = {}
    for folder in (shared, local):
        db = connect(folder / "cache.sqlite", schema, "request cache")
        modes[folder.name] = db.execute("PRAGMA journal_mode").fetchone()[0], db.execute("PRAGMA synchronous").fetchone()[0]
        db.close()
    assert modes == {"nfs": ("delete", 2), "local": ("wal", 1)}  # synchronous FULL = 2, NORMAL = 1


def test_no_mount_table_keeps_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(filesystems, "MOUNTINFO", tmp_path / "absent")
    assert filesystems.filesystem_type(tmp_path) is None and not filesystems.is_network_filesystem(tmp_path)


def _open_and_write(path: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        db = connect(Path(path), "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)", "request cache")
        db.execute("INSERT OR IGNORE INTO t VALUES (?)", (str(os.getpid()),))
        db.close()
        results.put("ok")
    except Exception as exc:  # reported to the test, which names it
        results.put(repr(exc))


def test_processes_opening_a_new_cache_at_once_all_get_it(tmp_path: Path) -> None:
    """Ray workers open the run's caches together: switching a new file to WAL must wait for the others, not fail
    with 'database is locked'."""
    context = multiprocessing.get_context("fork")
    outcomes = []
    for trial in range(12):
        barrier, results = context.Barrier(6), context.Queue()
        workers = [context.Process(target=_open_and_write, args=(str(tmp_path / f"c{trial}.sqlite"), barrier, results))
                   for _ in range(6)]
        for worker in workers:
            worker.start()
        outcomes += [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join()
    assert [o for o in outcomes if o != "ok"] == []
