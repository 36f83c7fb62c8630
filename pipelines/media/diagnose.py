"""Why a video file cannot be used, in words a person can act on.

:func:`sniff_file` rejects missing, empty and non-video files before any decoder opens them;
:func:`diagnose` turns the error text a decord child reported into a :class:`MediaError`
(``truncated``, ``corrupt``, ``not_video``, ...) or, for decord's resize bug, a ValueError
about the configuration; :func:`explain` writes the message for each error code.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MediaError", "ERROR_CODES", "sniff_file", "explain", "diagnose"]

# container signatures at their byte offsets; the last one is weak and only used after decord failed
_MAGIC = (
    (4, b"ftyp"),  # mp4 / mov / m4v / 3gp
    (0, b"\x1a\x45\xdf\xa3"),  # matroska / webm
    (0, b"RIFF"),  # avi
    (0, b"FLV"),
    (0, b"OggS"),
    (0, b"\x00\x00\x01\xba"),  # mpeg-ps
    (0, b"\x47"),  # mpeg-ts sync byte (weak)
)

ERROR_CODES = ("missing_file", "empty_file", "not_video", "no_video_stream", "truncated", "corrupt", "timeout", "crashed")


class MediaError(RuntimeError):
    """A file that cannot be probed or decoded.

    Attributes:
        path: the file.
        error: a short code, one of :data:`ERROR_CODES`: ``missing_file``, ``empty_file``,
            ``not_video``, ``no_video_stream`` (a container with audio only), ``truncated``, ``corrupt``, ``timeout`` or ``crashed``.
        message: what is wrong and what a person can do about it.
    """

    def __init__(self, path: Path | str, error: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)
        self.error = error
        self.message = message


def _has_magic(head: bytes, weak: bool) -> bool:
    signatures = _MAGIC if weak else _MAGIC[:-1]
    return any(head[off : off + len(m)] == m for off, m in signatures)


def sniff_file(path: Path) -> str | None:
    """Cheap checks before decord opens a file.

    Returns None when the file may be a video, otherwise an error code (``missing_file``,
    ``empty_file``, ``not_video``). Never reads more than 4 KiB.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing_file"
    if not path.is_file():
        return "not_video"
    if size == 0:
        return "empty_file"
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if _has_magic(head, weak=False):
        return None
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "not_video"  # readable text, not a container
        except UnicodeDecodeError:
            pass
    return None


def explain(path: Path, error: str, detail: str = "", timeout_s: float | None = None) -> MediaError:
    """The MediaError for ``error`` (one of :data:`ERROR_CODES`): which file, what is wrong, what to do.

    ``detail`` is the decoder's own words (truncated, corrupt, crashed); ``timeout_s`` the limit
    that ran out (timeout).
    """
    name = str(path)
    messages = {
        "missing_file": f"{name} does not exist; put the video there or remove its row from the annotations",
        "empty_file": f"{name} is empty (0 bytes); re-copy or re-download it, or remove its row from the annotations",
        "not_video": f"{name} is not a video file (its content is text or an unknown format); replace it with the real video or remove its row",
        "no_video_stream": f"{name} has no video stream ({detail or 'audio only'}); it cannot give frames: use the video it was cut from, or remove its row",
        "truncated": f"{name} is truncated or was not finished writing ({detail}); re-download or re-copy the complete file",
        "corrupt": f"{name} cannot be decoded ({detail}); re-download it or re-encode it (e.g. to h264 + AAC mp4)",
        "timeout": f"{name}: decoding did not finish within {timeout_s} s and was stopped; the file is probably damaged: re-download or re-encode it",
        "crashed": f"{name}: the decoder process died while reading it ({detail}); the file is probably damaged: re-download or re-encode it",
    }
    return MediaError(path, error, messages[error])


def diagnose(path: Path, child_error: str, frame_size: int | None = None) -> MediaError | ValueError:
    """The exception for a probe or decode that the decord child reported as failed.

    Args:
        path: the file the child was asked to read.
        child_error: the child's error text (``"<ExceptionType>: <message>"``).
        frame_size: the requested frame side for a decode, None for a probe.

    Returns:
        ValueError when decord cannot resize to ``frame_size`` (a decord 0.6 bug at a few
        sizes: the configuration is at fault, not the file); otherwise a :class:`MediaError`
        classified from the file's bytes and decord's message.
    """
    if frame_size is not None and "DECORDArrayCopyFromTo" in child_error:
        return ValueError(
            f"decord cannot resize frames to frame_size={frame_size} (a decord 0.6 bug at some sizes, "
            "e.g. 16, 24, 48); choose another frame_size such as 32, 64, 112 or 224"
        )
    path = Path(path)
    sniff = sniff_file(path)
    if sniff is not None:
        return explain(path, sniff)
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[4:8] == b"ftyp" and _mp4_incomplete(path):
        return explain(path, "truncated", "its mp4 boxes end early or the 'moov' index is missing")
    if "moov atom not found" in child_error:
        return explain(path, "truncated", _first_line(child_error))
    if "cannot find video stream" in child_error:   # decord's words for a container without video
        return explain(path, "no_video_stream", _streams(path))
    if not _has_magic(head, weak=True):
        return explain(path, "not_video")
    return explain(path, "corrupt", _first_line(child_error))


def _streams(path: Path) -> str:
    """What the container holds instead, e.g. "streams: 1 audio (aac, 44100 Hz)"; "" when unreadable."""
    try:
        import av

        with av.open(str(path)) as container:
            parts = [f"{s.type} ({s.codec_context.name}" + (f", {s.rate} Hz)" if s.type == "audio" else ")")
                     for s in container.streams]
    except Exception:  # noqa: BLE001 - only words for the message
        return ""
    return "streams: " + ", ".join(parts) if parts else "no streams"


def _mp4_incomplete(path: Path) -> bool:
    """Walk the top-level ISO-BMFF boxes: True when a box runs past the end or 'moov' is missing."""
    size = path.stat().st_size
    offset, seen_moov = 0, False
    with open(path, "rb") as fh:
        while offset < size:
            fh.seek(offset)
            hdr = fh.read(16)
            if len(hdr) < 8:
                return True
            box = int.from_bytes(hdr[:4], "big")
            kind = hdr[4:8]
            if box == 1:
                if len(hdr) < 16:
                    return True
                box = int.from_bytes(hdr[8:16], "big")
            elif box == 0:
                box = size - offset
            if box < 8:
                return True
            if kind == b"moov":
                seen_moov = True
            if offset + box > size:
                return True
            offset += box
    return not seen_moov


def _first_line(text: str) -> str:
    """The useful line of a decoder message (decord puts it first, under a traceback or not)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in lines:
        if "Error" in ln or "error" in ln or "not found" in ln:
            return ln[:300]
    return (lines[0] if lines else "unknown error")[:300]
