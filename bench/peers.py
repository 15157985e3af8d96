"""The same structured-output workload through synthgen, distilabel and bespokelabs-curator, against one sim server.

Every tool sends N chat requests ("Write a short product review for item {i}.", a JSON schema with `title` and
`rating` 1-5, max_tokens 64) at the same concurrency to `synthgen sim-server --latency 0.1` in its own process.
Each peer runs in a throwaway venv (cached under ~/.cache/synthgen-peers/), each tool as a whole subprocess:
synthgen as a recipe through `synthgen run`, the peers as small scripts in bench/peers/. Printed per tool: wall
time, req/s, client CPU ms per request (user+sys of the client process tree), peak RSS of the tree (sampled),
what the server received; then a resume test: SIGKILL at ~50% of the requests received, run again the same
way, and count the bodies of run 2 the server had already seen in run 1 (re-sent requests).

    python bench/peers.py                                  # 2,000 requests at 64 in flight, then the resume test
    python bench/peers.py --requests 500 --concurrency 64 256 --no-resume
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from synthgen.sim.process import SimProcess, get_json

REPO = Path(__file__).resolve().parent.parent
HELPERS = REPO / "bench" / "peers"
CACHE = Path.home() / ".cache" / "synthgen-peers"
TORCH_WHEELS = Path("/opt/wheels")  # a local CPU torch wheel: used if a peer ever pulls torch
PEERS = {
    # distilabel 1.5.3 imports `requests` without declaring it; instructor backs its structured outputs
    "distilabel": ["distilabel[openai]==1.5.3", "requests", "instructor"],
    "curator": ["bespokelabs-curator==0.1.31"],
}
SHOW = {"distilabel": ["distilabel", "openai", "httpx", "instructor"],
        "curator": ["bespokelabs-curator", "litellm", "openai", "aiohttp", "httpx"]}
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "rating": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["title", "rating"],
}
RECIPE = """
name: peers-bench
seed: 1
prompts_dir: {prompts}
source: {{path: {inputs}}}
backend: {{kind: openai, model: sim-model, base_url: "{url}", max_concurrency: {concurrency}, timeout: 60}}
stages:
  - generate:
      template: review.j2
      schema: {schema}
      sampling: {{temperature: 0.8, max_tokens: 64}}
"""
CHAT = "/v1/chat/completions"
STALL = {"seconds": 60.0}  # a client that sends nothing this long is killed (--stall)


@dataclass
class Outcome:
    tool: str
    concurrency: int
    ok: bool = False
    wall: float = 0.0
    cpu: float = 0.0
    rss_mb: float = 0.0
    chat_requests: int = 0
    completed: int = 0
    rows: int = 0
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- venvs


def peer_venv(name: str, fresh: bool) -> tuple[Path | None, str]:
    """The peer's venv (built once, cached by its pins) and a line of installed versions, or None and why."""
    specs = PEERS[name]
    venv = CACHE / f"{name}-{hashlib.sha1(' '.join(specs).encode()).hexdigest()[:10]}"
    python = venv / "bin" / "python"
    if fresh and venv.exists():
        shutil.rmtree(venv)
    if not (venv / ".ok").exists():
        shutil.rmtree(venv, ignore_errors=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"[{name}] building venv {venv} ({' '.join(specs)})", flush=True)
        extra = ["--find-links", str(TORCH_WHEELS)] if TORCH_WHEELS.is_dir() else []
        constraints = venv.parent / f"{venv.name}.constraints"
        constraints.write_text("torch==2.13.0\n")  # a peer that pulls torch gets the local CPU wheel
        steps = [["python3", "-m", "venv", str(venv)],
                 [str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
                 [str(python), "-m", "pip", "install", "-q", *extra, "-c", str(constraints), *specs]]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                return None, f"`{' '.join(step[-3:])}` failed: {(done.stderr or done.stdout).strip()[-600:]}"
        (venv / ".ok").write_text(" ".join(specs))
    listing = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True)
    versions = {row["name"].lower(): row["version"] for row in json.loads(listing.stdout or "[]")}
    shown = [f"{pkg}=={versions[pkg]}" for pkg in SHOW[name] if pkg in versions]
    if "torch" in versions:
        shown.append(f"torch=={versions['torch']} (pulled in)")
    return python, f"pip install {' '.join(specs)} -> " + ", ".join(shown)


# ---------------------------------------------------------------------------------------------- measuring


def tree_rss_kb(root: int) -> int:
    """Summed VmRSS of `root` and its descendants."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        pid = int(entry)
        for line in status.splitlines():
            if line.startswith("PPid:"):
                parents[pid] = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss[pid] = int(line.split()[1])
    total, members = 0, {root}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in members and pid not in members:
                members.add(pid)
                changed = True
    for pid in members:
        total += rss.get(pid, 0)
    return total


def run_client(command: list[str], env: dict[str, str], cwd: Path, log: Path, root: str, kill_at: int | None = None,
               ) -> tuple[int | str, float, float, float]:
    """Run one client to the end (or SIGKILL its process group once the server got `kill_at` chat requests).

    A client that sends nothing for STALL seconds is killed too (its exit code reads "stalled").
    Returns exit code, wall seconds, CPU seconds of the (waited-for) process tree, peak summed RSS in MB.
    """
    stall = STALL["seconds"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    code: int | str
    with log.open("ab") as out:
        began = time.perf_counter()
        client = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        peak, last_poll, received, last_change = 0, 0.0, -1, began
        try:
            while (code := client.poll()) is None:  # type: ignore[assignment]
                now = time.perf_counter()
                if now - last_poll >= (0.05 if kill_at is not None else 0.25):
                    peak, last_poll = max(peak, tree_rss_kb(client.pid)), now
                    count = get_json(root + "/sim/stats")["endpoints"].get(CHAT, 0)  # type: ignore[index]
                    if count != received:
                        received, last_change = count, now
                    if (kill_at is not None and received >= kill_at) or now - last_change > stall:
                        os.killpg(client.pid, signal.SIGKILL)
                        client.wait()
                        killed = kill_at is not None and received >= kill_at
                        code = "killed" if killed else f"stalled ({stall:.0f} s without a request)"
                        break
                time.sleep(0.02)
        finally:
            if client.poll() is None:  # interrupted: take the client's process group down with us
                os.killpg(client.pid, signal.SIGKILL)
                client.wait()
        wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return code, wall, cpu, peak / 1024


def result_line(log: Path) -> dict[str, int]:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {}


def tail(log: Path, lines: int = 6) -> str:
    text = [line.strip() for line in log.read_text(errors="replace").splitlines()
            if line.strip() and "warn" not in line.lower()]
    return " | ".join(text[-lines:])[-700:]


# ---------------------------------------------------------------------------------------------- the tools


def synthgen_command(work: Path, url: str, count: int, concurrency: int, run_dir: Path) -> tuple[list[str], dict[str, str]]:
    prompts = work / "prompts"
    prompts.mkdir(exist_ok=True)
    (prompts / "review.j2").write_text("Write a short product review for item {{ record.i }}.\n")
    inputs = work / f"inputs-{count}.jsonl"
    if not inputs.exists():
        inputs.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(count)))
    recipe = work / f"synthgen-{count}-{concurrency}.yaml"
    recipe.write_text(RECIPE.format(prompts=prompts, inputs=inputs, url=url, concurrency=concurrency,
                                    schema=json.dumps(SCHEMA)))
    return [sys.executable, "-m", "synthgen", "run", str(recipe), "--out", str(run_dir)], dict(os.environ)


def peer_command(name: str, python: Path, url: str, count: int, concurrency: int, cache: Path, resume: bool
                 ) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    args = ["--base-url", url, "--requests", str(count), "--concurrency", str(concurrency)]
    if name == "distilabel":
        args += ["--cache-dir", str(cache)] + (["--use-cache"] if resume else [])
        env["DISTILABEL_LOG_LEVEL"] = "WARNING"
    else:
        site = next(python.parent.parent.glob("lib/python*/site-packages"))
        env.update(TELEMETRY_ENABLED="false", LITELLM_LOCAL_MODEL_COST_MAP="True", CURATOR_CACHE_DIR=str(cache),
                   CURATOR_DISABLE_RICH_DISPLAY="1", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
                   TIKTOKEN_CACHE_DIR=str(site / "litellm" / "litellm_core_utils" / "tokenizers"))
    return [str(python), str(HELPERS / f"{name}_run.py"), *args], env


def command_for(tool: str, pythons: dict[str, Path], work: Path, url: str, count: int, concurrency: int,
                state: Path, resume: bool = False) -> tuple[list[str], dict[str, str]]:
    if tool == "synthgen":
        return synthgen_command(work, url, count, concurrency, state)
    return peer_command(tool, pythons[tool], url, count, concurrency, state, resume)


def throughput(tool: str, pythons: dict[str, Path], work: Path, root: str, count: int, concurrency: int) -> Outcome:
    outcome = Outcome(tool, concurrency)
    state = Path(tempfile.mkdtemp(prefix=f"{tool}-state-", dir=work))  # fresh cache / run dir: nothing reused
    command, env = command_for(tool, pythons, work, root + "/v1", count, concurrency, state)
    log = work / f"{tool}-{concurrency}.log"
    get_json(root + "/sim/reset", "POST")
    code, outcome.wall, outcome.cpu, outcome.rss_mb = run_client(command, env, work, log, root)
    stats = get_json(root + "/sim/stats")
    outcome.chat_requests = stats["endpoints"].get(CHAT, 0)  # type: ignore[index]
    outcome.completed = stats["completed"]  # type: ignore[index]
    if tool == "synthgen":
        dataset = state / "dataset.jsonl"
        outcome.rows = sum(1 for _ in dataset.open()) if dataset.exists() else 0
    else:
        outcome.rows = result_line(log).get("rows", 0)
    outcome.ok = code == 0 and outcome.rows == count
    if not outcome.ok:
        outcome.note = f"exit {code}, {outcome.rows} rows; log {log}: {tail(log)}"
    return outcome


def resume(tool: str, pythons: dict[str, Path], work: Path, root: str, count: int, concurrency: int) -> dict[str, object]:
    """Kill at ~50% received, rerun the same way; count run-2 bodies already received in run 1."""
    state = Path(tempfile.mkdtemp(prefix=f"{tool}-resume-", dir=work))
    command, env = command_for(tool, pythons, work, root + "/v1", count, concurrency, state, resume=True)
    log = work / f"{tool}-resume.log"
    get_json(root + "/sim/reset", "POST")
    run_client(command, env, work, log, root, kill_at=count // 2)
    time.sleep(0.3)  # let the server notice the dropped connections
    first = get_json(root + "/sim/stats")
    first_bodies = set(get_json(root + "/sim/bodies"))  # type: ignore[arg-type]
    get_json(root + "/sim/reset", "POST")
    code, wall, _, _ = run_client(command, env, work, log, root)
    second = get_json(root + "/sim/stats")
    second_bodies: list[str] = get_json(root + "/sim/bodies")  # type: ignore[assignment]
    seen = sum(1 for digest in second_bodies if digest in first_bodies)
    received1 = first["endpoints"].get(CHAT, 0)  # type: ignore[index]
    completed1 = first["completed"]  # type: ignore[index]
    unfinished = received1 - completed1
    return {"ok": code == 0, "received1": received1, "completed1": completed1, "received2": second["endpoints"].get(CHAT, 0),  # type: ignore[index]
            "seen_again": seen, "resent_finished": max(0, seen - unfinished), "wall2": wall,
            "note": "" if code == 0 else f"second run: {code}; {tail(log, 3)}"}


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64])
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--tools", nargs="+", default=["synthgen", "distilabel", "curator"])
    parser.add_argument("--no-resume", action="store_true", help="skip the SIGKILL / resume comparison")
    parser.add_argument("--fresh-venvs", action="store_true", help="rebuild the peers' cached venvs")
    parser.add_argument("--stall", type=float, default=60.0, help="kill a client that sends nothing this long")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, run dirs)")
    args = parser.parse_args()
    STALL["seconds"] = args.stall

    pythons: dict[str, Path] = {}
    installs: dict[str, str] = {}
    for name in PEERS:
        if name in args.tools:
            python, line = peer_venv(name, args.fresh_venvs)
            installs[name] = line
            if python is not None:
                pythons[name] = python
            else:
                print(f"[{name}] NOT RUN: {line}", flush=True)
    tools = [tool for tool in args.tools if tool == "synthgen" or tool in pythons]

    work = Path(tempfile.mkdtemp(prefix="synthgen-peers-"))
    if not args.keep:
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    outcomes: list[Outcome] = []
    resumes: dict[str, dict[str, object]] = {}
    with SimProcess("--latency", str(args.latency), "--track-bodies") as server:
        root = server.root
        print(f"sim server {root} (own process), latency {args.latency * 1000:.0f} ms; {args.requests:,} requests "
              f"per tool; {os.cpu_count()} cores; work dir {work}", flush=True)
        header = (f"{'tool':10} {'conc':>5} {'wall s':>7} {'req/s':>7} {'cpu ms/req':>10} {'peak RSS MB':>11} "
                  f"{'srv chat req':>12} {'srv 200':>8} {'rows':>6}")
        for concurrency in args.concurrency:
            print(header, flush=True)
            for tool in tools:
                outcome = throughput(tool, pythons, work, root, args.requests, concurrency)
                outcomes.append(outcome)
                print(f"{tool:10} {concurrency:5d} {outcome.wall:7.1f} {args.requests / outcome.wall:7.0f} "
                      f"{outcome.cpu * 1000 / args.requests:10.2f} {outcome.rss_mb:11.0f} {outcome.chat_requests:12d} "
                      f"{outcome.completed:8d} {outcome.rows:6d}" + ("" if outcome.ok else f"  FAILED: {outcome.note}"),
                      flush=True)
        if not args.no_resume:
            concurrency = args.concurrency[0]
            print(f"\nresume: SIGKILL once the server received {args.requests // 2:,} of {args.requests:,} requests, "
                  f"then run again the same way (concurrency {concurrency})", flush=True)
            for tool in tools:
                try:
                    resumes[tool] = resume(tool, pythons, work, root, args.requests, concurrency)
                except Exception as exc:  # noqa: BLE001 - report and go on with the others
                    resumes[tool] = {"ok": False, "note": f"{type(exc).__name__}: {exc}"}
                r = resumes[tool]
                if "received1" in r:
                    print(f"{tool:10} run 1: {r['received1']:5d} received, {r['completed1']:5d} answered 200 | run 2: "
                          f"{r['received2']:5d} received, {r['seen_again']:5d} bodies already received in run 1 "
                          f"(re-sent finished ~{r['resent_finished']}), {r['wall2']:.1f} s"
                          + ("" if r["ok"] else f"  {r['note']}"), flush=True)
                else:
                    print(f"{tool:10} FAILED: {r['note']}", flush=True)

    print("\nsummary (req/s; synthgen / best peer at equal concurrency; target >= 1.5x)")
    for concurrency in args.concurrency:
        rates = {o.tool: args.requests / o.wall for o in outcomes if o.concurrency == concurrency and o.ok}
        peers = {tool: rate for tool, rate in rates.items() if tool != "synthgen"}
        cells = ", ".join(f"{tool} {rate:.0f}" for tool, rate in rates.items())
        failed = [o.tool for o in outcomes if o.concurrency == concurrency and not o.ok]
        line = f"  concurrency {concurrency}: {cells}" + (f"; failed: {', '.join(failed)}" if failed else "")
        if "synthgen" in rates and peers:
            best = max(peers, key=peers.__getitem__)
            ratio = rates["synthgen"] / peers[best]
            line += f"; synthgen / {best} = {ratio:.2f}x ({'meets' if ratio >= 1.5 else 'MISSES'} 1.5x)"
        print(line)
    if resumes:
        print("  resume, re-sent finished requests: " + ", ".join(
            f"{tool} {r.get('resent_finished', 'n/a')}" for tool, r in resumes.items()))
    print("installed:")
    print(f"  synthgen: this repo ({sys.executable})")
    for name, line in installs.items():
        print(f"  {name}: {line}")


if __name__ == "__main__":
    main()
