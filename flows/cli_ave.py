"""``wherewhen features export-ave``: a feature store → AVE's released feature layout (for AVE's own code).

:data:`flows.cli.EXTENSIONS` imports this module when the ``features`` group is loaded; importing it
attaches :func:`export_ave_cmd` to that group. A plain command (no Prefect flow): it only rewrites the
store's files in another layout, like ``features info`` reads them. Errors (a folder that is not a
store, an AVE folder whose files disagree, too few ``--pad-classes``) are the CLI's one-line errors.
"""

from __future__ import annotations

from pathlib import Path
import click

from flows.cli_common import CONTEXT

__all__ = ["export_ave_cmd"]


@click.command(name="export-ave", context_settings=CONTEXT)
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for AVE's files (visual_feature.h5, audio_feature.h5, labels.h5, *_order.h5, ...).")
@click.option("--pad-classes", type=click.IntRange(min=2), default=None, metavar="W",
              help="Label columns (classes + padding + background last). AVE's dataloader.py reads 29.  "
                   "[default: classes + 1]")
# the choices are features.ave_interop.FeatureDtype (not imported here, so --help stays fast)
@click.option("--feature-dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True,
              help="dtype of the two feature files (AVE's release: float64; the values carry the store's float16 precision).")
def export_ave_cmd(store: Path, out_dir: Path, pad_classes: int | None, feature_dtype: str) -> None:
    """Export the feature STORE in AVE-ECCV18's layout into --out, readable by AVE's own dataloader.py.

    Keys `avadataset` (features, labels) and `order` (train/val/test_order.h5), features
    (N, T, H, W, C) / (N, T, Ca), labels (N, T, W) float32 one-hot with background last, plus
    clip_ids.txt, classes.txt and wherewhen_ave.json so that `wherewhen train OUT` reads it back.
    """
    from features.ave_interop import export_ave
    from features.store import FeatureStore

    fs = FeatureStore.open(store)
    out = export_ave(fs, out_dir, pad_classes=pad_classes, feature_dtype=feature_dtype)  # type: ignore[arg-type]
    back = FeatureStore.open(out)   # the export passes the reader's checks
    card, width = fs.card, pad_classes or len(fs.classes) + 1
    counts = " / ".join(str(len(back.positions(s))) for s in ("train", "val", "test"))
    click.echo(f"exported {len(fs)} clips of store {card.store_id} to {out}")
    click.echo(f"  visual_feature.h5 ({len(fs)}, {card.num_segments}, {', '.join(map(str, card.visual_shape))}) "
               f"{feature_dtype}; audio_feature.h5 ({len(fs)}, {card.num_segments}, {card.audio_dim}) {feature_dtype}")
    click.echo(f"  labels.h5 ({len(fs)}, {card.num_segments}, {width}) float32: {len(fs.classes)} classes, "
               f"background column {width - 1}; train/val/test orders {counts}")


def _attach() -> None:
    from flows.cli_features import features

    features.add_command(export_ave_cmd)


_attach()   # this module is an extension of the `features` group (flows.cli.EXTENSIONS)
