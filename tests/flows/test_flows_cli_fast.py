"""The command line stays fast: ``--help`` of every command and the info commands import no torch,
timm, Prefect or Dask once the option cache (``flows.cli_cache``) holds this source's entries, and
the cache answers what the models say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flowtest_support import local_env

HEAVY = ("torch", "timm", "prefect", "distributed", "stan_head.train", "features.plan")

_PROBE = """
import json, sys
import click
from click.testing import CliRunner
from flows.cli import main

def commands(group, prefix=()):
    out, ctx = [prefix], click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        out += commands(cmd, prefix + (name,)) if isinstance(cmd, click.Group) else [prefix + (name,)]
    return out

if sys.argv[2] == "help":
    runs = [[*c, "--help"] for c in commands(main)] + [["dataset", "info", sys.argv[1]]]
elif sys.argv[2] == "features":
    runs = [["features", "info", sys.argv[1]]]
else:  # a no-op re-run of a complete store: dataset, out root, then the store's options
    runs = [["extract-features", sys.argv[1], "--out", *sys.argv[3:]]]
for args in runs:
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, (args, r.output)
    assert sys.argv[2] != "extract" or "no-op" in r.output, r.output
print(json.dumps(sorted(m for m in %r if m in sys.modules)))
""" % (HEAVY,)


def _probe(env: dict[str, str], folder: Path, what: str, *extra: str) -> list[str]:
    """The heavy modules imported by ``--help`` of every command and ``dataset info folder`` (``what="help"``),
    by ``features info folder`` (``what="features"``) or by a no-op ``extract-features folder --out ...``
    (``what="extract"``, ``extra`` the out root and the store's options)."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(folder), what, *extra], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_and_dataset_info_import_no_torch_or_prefect(tiny_dataset: Path, tmp_path: Path) -> None:
    env = dict(local_env(tmp_path / "prefect-home"), WHEREWHEN_CACHE_DIR=str(tmp_path / "cache"))
    _probe(env, tiny_dataset, "help")                    # fills the cache (imports the models once)
    assert len(list((tmp_path / "cache").glob("cli-*.json"))) == 1
    assert _probe(env, tiny_dataset, "help") == []       # every later command reads it


def test_features_info_imports_no_torch(tiny_run, tmp_path: Path) -> None:
    env = dict(local_env(tmp_path / "prefect-home"), WHEREWHEN_CACHE_DIR=str(tmp_path / "cache"))
    assert _probe(env, tiny_run.store, "features") == []


def test_cached_options_are_the_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli_options import _specs, option_specs

    monkeypatch.setenv("WHEREWHEN_CACHE_DIR", str(tmp_path))
    for ref in ("features.plan:ExtractConfig", "stan_head.train:TrainConfig", "stan_head.explain:ExplainConfig",
                "stan_head.evaluation.evaluate:EvaluateConfig", "pipelines.build:BuildConfig"):
        assert option_specs(ref) == json.loads(json.dumps(_specs(ref)))   # computed, then cached
        assert option_specs(ref) == json.loads(json.dumps(_specs(ref)))   # read back
    extract = {s["name"]: s for s in option_specs("features.plan:ExtractConfig")}
    assert extract["workers"]["type"] == {"kind": "int"} and extract["visual"]["type"]["kind"] == "choice"
    assert extract["shard_size"]["default"] == "32"


def test_cache_recomputes_what_it_cannot_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli_cache import cached, source_key

    monkeypatch.setenv("WHEREWHEN_CACHE_DIR", str(tmp_path))
    calls: list[int] = []

    def compute() -> dict:
        calls.append(1)
        return {"a": (1, 2)}

    assert cached("x", compute) == {"a": [1, 2]} and len(calls) == 1
    assert cached("x", compute) == {"a": [1, 2]} and len(calls) == 1
    (tmp_path / f"cli-{source_key()}.json").write_text("{not json")
    assert cached("x", compute) == {"a": [1, 2]} and len(calls) == 2
    (tmp_path / "cli-0000000000000000.json").write_text("{}")          # another source's entries
    cached("y", compute)
    assert [p.name for p in tmp_path.glob("cli-*.json")] == [f"cli-{source_key()}.json"]


def test_cache_folder_that_cannot_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli_cache import cached

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("WHEREWHEN_CACHE_DIR", str(blocker / "cache"))   # under a file: mkdir fails
    assert cached("x", lambda: [1]) == [1]


def test_a_no_op_extract_features_imports_no_torch(tiny_run, tmp_path: Path) -> None:
    """Planning a complete store and saying so is all a re-run does: no torch, timm, Prefect or Dask."""
    env = dict(local_env(tmp_path / "prefect-home"), WHEREWHEN_CACHE_DIR=str(tmp_path / "cache"))
    store_options = ("--segment-num-segments", "3", "--segment-frame-size", "64", "--shard-size", "32", "--workers", "0")
    args = (str(tiny_run.store.parent.parent), *store_options)
    _probe(env, tiny_run.dataset, "extract", *args)  # fills the option cache
    heavy = _probe(env, tiny_run.dataset, "extract", *args)
    assert [m for m in heavy if m in ("torch", "timm", "prefect", "distributed")] == []
