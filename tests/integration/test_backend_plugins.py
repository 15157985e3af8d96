"""Backends are found through the `synthgen.backends` entry-point group: a plugin package installed beside
synthgen (here: a dist-info folder on PYTHONPATH) is selected by `backend.kind` like a built-in one."""

from __future__ import annotations

import os
from pathlib import Path

from synthgen.backends.factory import known_backends
from tests.conftest import read_jsonl, synthgen, write

PLUGIN = '''
from synthgen.backends.base import Completion


class ShoutBackend:
    """Answers every request with its last message in capitals, prefixed by the plugin's option."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def complete(self, request):
        return Completion(text=self.prefix + request.messages[-1]["content"].upper(), prompt_tokens=1, completion_tokens=1)

    async def aclose(self):
        pass


def make_backend(config, context):
    return ShoutBackend(config.options.get("prefix", ""))
'''

RECIPE = """
name: plugin
seed: 1
source: {path: items.jsonl}
backend: {kind: shout, model: none, options: {prefix: "> "}}
stages:
  - generate:
      template: echo.j2
      output: answer
"""


def install_plugin(root: Path) -> None:
    """What `pip install` of a plugin package leaves behind: its module and a dist-info with entry points."""
    write(root / "shout_plugin.py", PLUGIN)
    write(root / "shout_plugin-0.1.dist-info" / "METADATA", "Metadata-Version: 2.1\nName: shout-plugin\nVersion: 0.1\n")
    write(root / "shout_plugin-0.1.dist-info" / "entry_points.txt",
          "[synthgen.backends]\nshout = shout_plugin:make_backend\n")


def test_builtins_are_entry_points() -> None:
    assert {"openai", "sim", "vllm", "transformers"} <= set(known_backends())


def test_plugin_backend_runs_a_recipe(tmp_path: Path) -> None:
    install_plugin(tmp_path / "site")
    write(tmp_path / "items.jsonl", '{"text": "hello there"}\n{"text": "second item"}\n')
    write(tmp_path / "prompts" / "echo.j2", "{{ record.text }}")
    write(tmp_path / "recipe.yaml", RECIPE)
    env = {"PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = synthgen("run", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "run"), env=env)
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(tmp_path / "run" / "dataset.jsonl")
    assert [row["fields"]["answer"] for row in rows] == ["> HELLO THERE", "> SECOND ITEM"]
    assert all(row["meta"]["steps"][0]["backend"] == "shout" for row in rows)


def test_unknown_kind_lists_the_installed_backends(tmp_path: Path) -> None:
    write(tmp_path / "items.jsonl", '{"text": "x"}\n')
    write(tmp_path / "prompts" / "echo.j2", "{{ record.text }}")
    write(tmp_path / "recipe.yaml", RECIPE)
    result = synthgen("run", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "unknown backend 'shout'" in result.stderr and "'openai'" in result.stderr and "'vllm'" in result.stderr
