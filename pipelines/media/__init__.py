"""Probing and decoding video files with decord, in a child process that can be killed.

decord can hang or crash on broken files (dmlc/decord issue 373), so every call that opens a
file with decord runs in a child process. The package has one module per job:

- :mod:`pipelines.media.decoder`: the parent side, :class:`ClipDecoder` (one long-lived child
  for many clips; killed and replaced after a timeout or crash) and the one-shot :func:`probe` /
  :func:`decode_clip`;
- :mod:`pipelines.media.child`: the child process (``python -m pipelines.media.child``);
- :mod:`pipelines.media.protocol`: the requests and replies between them and the shared-memory
  layout decoded clips come back in (:class:`MediaInfo` is the probe reply);
- :mod:`pipelines.media.diagnose`: a failure turned into :class:`MediaError` with a reason a
  person can act on.
"""

from pipelines.media.decoder import ClipDecoder, DecodedClip, decode_clip, probe
from pipelines.media.diagnose import MediaError, sniff_file
from pipelines.media.protocol import MediaInfo

__all__ = ["MediaInfo", "DecodedClip", "MediaError", "ClipDecoder", "probe", "decode_clip", "sniff_file"]
