"""Benchmark: the command line as a person meets it — wall time of real ``wherewhen`` processes.

    .venv/bin/python bench/cli.py                       # 100+ test clips for evaluate, 3 repeats of the fast commands
    .venv/bin/python bench/cli.py --test-clips 8 --repeats 1 --no-docs   # smoke run

Measures, in one run and on the same machine state, with no Prefect API configured (the stages run
in the command's process, as a newcomer's first commands do):

* ``wherewhen extract-features DATASET --out ROOT`` on a store that is already complete (a no-op);
* ``wherewhen dataset info DATASET``;
* ``wherewhen <command> --help`` for every command and subcommand;
* ``wherewhen evaluate RUN --store STORE --out DIR`` with the defaults (the fast explainers) on a
  test split of ``--test-clips`` clips.

Each fast command runs ``--repeats`` times after one warm-up call (the warm-up fills the command
line's option cache, ``flows.cli_cache``; its time is reported as the cold figure); the median and
the slowest repeat (wall) and the median CPU time are reported. An edit in the checkout during the
run (other engineers share it) changes the cache's key: such a repeat is refilled and run again. The dataset (synthetic, 8 classes, ``--test-clips / 0.45`` clips),
its store and a STAN run are made once under ``--work`` with the library. Writes/replaces its
section of ``docs/BENCHMARKS.md``. Goals (issue 16): no-op extract-features and dataset info
≤ 2 s, every ``--help`` ≤ 1 s, evaluate with defaults on 100 clips ≤ 3 min, on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from docs_section import publish_section  # noqa: E402

log = logging.getLogger("bench.cli")
WHEREWHEN = Path(sys.executable).parent / "wherewhen"
GOALS = {"extract-features (no-op)": 2.0, "dataset info": 2.0, "--help": 1.0, "evaluate": 180.0}


def prepare(work: Path, test_clips: int, seed: int) -> tuple[Path, Path, Path]:
    """Dataset → store → trained STAN run under ``work``, each step skipped when already there."""
    from features.extract import ExtractConfig, extract_features
    from pipelines.build import BuildConfig, build_dataset
    from pipelines.sources.synthetic import SyntheticSource
    from stan_head.train import TrainConfig, train_head

    clips = max(8, round(test_clips / 0.45))
    dataset = work / f"ds-{clips}"
    if not (dataset / "dataset.json").is_file():
        build_dataset(BuildConfig(source=SyntheticSource(clips=clips, classes=8, seed=seed), out=dataset, workers=2,
                                  split_fractions=(0.45, 0.1, 0.45)))
    store = extract_features(ExtractConfig(dataset_dir=dataset, out_root=work / "features"), progress=False)
    run = work / f"run-{store.store_id}"
    config = TrainConfig(store=store.store_dir, out=run, device="cpu", progress=False, seed=seed)
    try:  # a finished run of the same configuration resumes at once (its test pass only)
        train_head(config)
    except ValueError as exc:  # made by another version of the head or trainer: the bench's own folder, redo it
        log.info("%s; training it again", exc)
        shutil.rmtree(run)
        train_head(config)
    return dataset, Path(store.store_dir), run


def _env(work: Path) -> dict[str, str]:
    """No Prefect API (in-process stages, the default); the option cache and Prefect's home under ``work``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(work / "prefect-home"), WHEREWHEN_CACHE_DIR=str(work / "cli-cache"))
    return env


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the process and the children it waited for, stdout) of ``wherewhen *args``."""
    c0, t0 = _cpu(), time.perf_counter()
    proc = subprocess.run([str(WHEREWHEN), *args], env=env, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    if proc.returncode != 0:
        raise RuntimeError(f"wherewhen {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds, cpu, proc.stdout


def _commands() -> list[list[str]]:
    """Every command path of the command line (asked of its groups, which load commands lazily)."""
    import click

    from flows.cli import main

    def walk(group: click.Group, prefix: list[str]) -> list[list[str]]:
        out = [prefix]
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            out += walk(cmd, [*prefix, name]) if isinstance(cmd, click.Group) else [[*prefix, name]]
        return out

    return walk(main, [])


def _steady(args: list[str], env: dict[str, str], warmed: dict[tuple[str, ...], str]) -> tuple[float, float]:
    """One timed run with the option cache filled for the current source and no edit during the run.

    An edit in the checkout (e.g. another engineer's) changes the cache's key: the command is then run once
    untimed to refill it, and a run during which the source changed is run again. ``warmed`` maps a command
    to the source key its cache entries were last filled for.
    """
    from flows.cli_cache import source_key

    for _ in range(5):
        key = source_key()
        if warmed.get(tuple(args)) != key:
            _timed(args, env)
            warmed[tuple(args)] = key if source_key() == key else ""
            continue
        wall, cpu, _ = _timed(args, env)
        if source_key() == key:
            return wall, cpu
        log.info("the source changed during `wherewhen %s`: run again", " ".join(args))
    raise RuntimeError("the source keeps changing; run the benchmark on a quiet checkout")


def _repeat(args: list[str], env: dict[str, str], repeats: int) -> dict[str, float]:
    from flows.cli_cache import source_key

    key = source_key()
    cold = _timed(args, env)[0]
    warmed = {tuple(args): key if source_key() == key else ""}
    runs = [_steady(args, env, warmed) for _ in range(repeats)]
    walls = [w for w, _ in runs]
    return {"cold": cold, "median": statistics.median(walls), "max": max(walls),
            "cpu": statistics.median(c for _, c in runs)}


_WHO_IMPORTS_TORCH = """
import sys, traceback
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and "torch" not in sys.modules and not getattr(self, "seen", False):
            self.seen = True
            frames = [f for f in traceback.extract_stack() if f.filename.startswith(ROOT) and "/.venv/" not in f.filename]
            if frames:
                print("torch-importer " + frames[-1].filename[len(ROOT) + 1:] + ":" + str(frames[-1].lineno), file=sys.stderr)
        return None
sys.meta_path.insert(0, Spy())
from flows.cli import main
sys.argv[0] = "wherewhen"
main()
"""


def _torch_import(args: list[str], env: dict[str, str]) -> tuple[float, str] | None:
    """(seconds, the project's line that imports it) of torch's import in ``wherewhen *args``
    (``python -X importtime`` and an import hook), or None when the command imports no torch."""
    code = f"ROOT = {str(ROOT)!r}\n" + _WHO_IMPORTS_TORCH
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *args], env=env, capture_output=True,
                          text=True)
    seconds = next((int(line.split("|")[1]) / 1e6 for line in proc.stderr.splitlines()
                    if line.startswith("import time:") and line.split("|")[-1].strip() == "torch"), None)
    who = next((line.split(" ", 1)[1] for line in proc.stderr.splitlines() if line.startswith("torch-importer ")), "?")
    return None if seconds is None else (seconds, who)


def _row(name: str, t: dict[str, float], goal: float) -> str:
    ok = "yes" if t["max"] <= goal else "**no**"
    return f"| {name} | {t['median']:.2f} | {t['max']:.2f} | {t['cpu']:.2f} | {t['cold']:.2f} | ≤ {goal:g} | {ok} |"


def _commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return head + (" (with uncommitted changes in the checkout)" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/wherewhen-bench-cli"))
    p.add_argument("--test-clips", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/BENCHMARKS.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    dataset, store, run = prepare(args.work, args.test_clips, args.seed)
    env = _env(args.work)
    rows = []
    load_before = os.getloadavg()[0]
    rows.append(("extract-features (no-op)", _repeat(["extract-features", str(dataset), "--out", str(store.parents[1])],
                                                     env, args.repeats), GOALS["extract-features (no-op)"]))
    noop_torch = _torch_import(["extract-features", str(dataset), "--out", str(store.parents[1])], env)
    rows.append(("dataset info", _repeat(["dataset", "info", str(dataset)], env, args.repeats), GOALS["dataset info"]))
    helps = {" ".join(c): _repeat([*c, "--help"], env, args.repeats) for c in _commands()}
    slowest = max(helps, key=lambda k: helps[k]["max"])
    rows.append((f"`--help`, the slowest of {len(helps)} commands (`{f'wherewhen {slowest}'.strip()} --help`)",
                 helps[slowest], GOALS["--help"]))
    all_help = [t["median"] for t in helps.values()]
    out = args.work / "report"
    evaluate_s, evaluate_cpu, stdout = _timed(["evaluate", str(run), "--store", str(store), "--out", str(out)], env)
    clips = next((w.split("=")[1] for w in stdout.split() if w.startswith("clips=")), "?")
    rows.append((f"evaluate, defaults ({clips} test clips)",
                 {"cold": evaluate_s, "median": evaluate_s, "max": evaluate_s, "cpu": evaluate_cpu}, GOALS["evaluate"]))
    load_after = os.getloadavg()[0]

    cmd = " ".join([".venv/bin/python", "bench/cli.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [
        "## The command line (bench/cli.py)",
        "",
        f"`{cmd}` — commit {_commit()}; {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average {load_before:.1f} before, {load_after:.1f} after. Real "
        f"`wherewhen` processes, no Prefect API (stages in-process); wall seconds per process, median and slowest of "
        f"{args.repeats} after a warm-up call, and the median CPU seconds (user + system, the process and the children "
        f"it waited for: what a loaded machine does not inflate); \"cold\" is the warm-up's wall time (the first "
        f"command after an install or a code change fills the option cache; a repeat is taken with the cache filled for "
        f"the checkout's current source, and again if the source changed while it ran). The goals are on wall time.",
        "",
        "| command | median wall s | slowest wall s | CPU s | cold wall s | goal s | met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | :---: |",
        *[_row(name, t, goal) for name, t, goal in rows],
        "",
        f"`--help` of all {len(helps)} commands: median {statistics.median(all_help):.2f} s, "
        f"range {min(all_help):.2f}–{max(all_help):.2f} s.",
    ]
    if noop_torch is not None:
        lines += ["", f"Where the no-op's time goes (`python -X importtime`, same command): importing torch takes "
                      f"{noop_torch[0]:.2f} s, first imported by `{noop_torch[1]}` (the library's modules import it at "
                      f"module level, though a complete store needs no tensor)."]
    publish_section(args.docs, "bench/cli.py", "\n".join(lines), write=not args.no_docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
