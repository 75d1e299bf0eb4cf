"""WADO-RS retrieval (PS3.18 10.4): instances, frames, bulk data and rendered images from the store.

Answers are described as a list of *segments* (bytes, a byte range of a stored file, or a callable that
produces bytes, e.g. a transcoded instance) and produced in blocks by :func:`iter_blocks`, so the handler
can stream a study of any size with bounded memory. When every segment's size is known (objects sent as
stored) the Content-Length is known too.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from s4s_jupyter.core.errors import DICOMwebError
from s4s_jupyter.core.multipart import closing, part_head
from servers.pacs.negotiation import AS_STORED
from servers.pacs.store import InstanceFile


class NotFound(DICOMwebError):
    status = 404


class NotAcceptable(DICOMwebError):
    status = 406


@dataclass(frozen=True)
class FileRange:
    path: Path
    offset: int
    length: int


Segment = bytes | FileRange | Callable[[], bytes]


def known_length(segments: list[Segment]) -> int | None:
    """The total size when no segment is computed lazily."""
    total = 0
    for s in segments:
        if isinstance(s, bytes):
            total += len(s)
        elif isinstance(s, FileRange):
            total += s.length
        else:
            return None
    return total


def iter_blocks(segments: list[Segment], block: int) -> Generator[bytes, None, None]:
    """Produce the segments' bytes in blocks of about ``block`` bytes (small pieces are coalesced, large
    files are read in ``block``-sized reads). Blocking: run each ``next()`` in a worker thread."""
    pieces: list[bytes] = []  # small pieces waiting to be sent together
    pending = 0
    for seg in segments:
        if isinstance(seg, FileRange):
            with open(seg.path, "rb", buffering=0) as f:
                f.seek(seg.offset)
                left = seg.length
                while left > 0:
                    data = f.read(min(left, block))
                    if not data:
                        raise OSError(f"stored file {seg.path.name} is shorter than indexed")
                    left -= len(data)
                    if pending + len(data) >= block and pieces:
                        pieces.append(data)
                        yield b"".join(pieces)
                        pieces, pending = [], 0
                    elif len(data) >= block:
                        yield data  # large reads go out as they are, without a copy
                    else:
                        pieces.append(data)
                        pending += len(data)
            continue
        data = seg if isinstance(seg, bytes) else seg()
        pieces.append(data)
        pending += len(data)
        if pending >= block:
            yield b"".join(pieces)
            pieces, pending = [], 0
    if pieces:
        yield b"".join(pieces)


def transcode(path: Path, syntax: str) -> bytes:
    """A stored object re-encoded in a native syntax (Explicit or Implicit VR Little Endian, PS3.5 A.1/A.2),
    decompressing its pixel data first when needed."""
    from pydicom import dcmread

    ds = dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()  # keeps the pixel module consistent (PhotometricInterpretation, ...)
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True,
               enforce_file_format=True)
    return buf.getvalue()


def instance_segments(files: list[InstanceFile], syntax: str, boundary: str) -> list[Segment]:
    """A ``multipart/related; type="application/dicom"`` body (PS3.18 10.4.1.1.1) of ``files``."""
    segments: list[Segment] = []
    for n, f in enumerate(files):
        if syntax in (AS_STORED, f.transfer_syntax):
            segments.append(part_head(boundary, f"application/dicom; transfer-syntax={f.transfer_syntax}",
                                      first=n == 0))
            segments.append(FileRange(f.path, 0, f.size))
        else:
            segments.append(part_head(boundary, f"application/dicom; transfer-syntax={syntax}", first=n == 0))
            segments.append(partial(transcode, f.path, syntax))
    segments.append(closing(boundary))
    return segments


def parse_frame_list(text: str, number_of_frames: int) -> list[int]:
    """``1,3,5`` -> [1, 3, 5]; 400 for garbage, 404 for frames the instance does not have."""
    parts = text.split(",")
    if not all(p.isdigit() for p in parts):
        raise DICOMwebError(f"frame list {text!r} is not a comma-separated list of numbers")
    frames = [int(p) for p in parts]
    if not frames or any(n < 1 for n in frames):
        raise DICOMwebError(f"frame numbers start at 1: {text!r}")
    for n in frames:
        if n > number_of_frames:
            raise NotFound(f"frame {n} does not exist (the instance has {number_of_frames})")
    return frames


def native_frame_size(meta: dict[str, Any]) -> int:
    def v(tag: str, default: int) -> int:
        el = meta.get(tag, {})
        vals = el.get("Value") or [default]
        return int(vals[0])

    return v("00280010", 0) * v("00280011", 0) * v("00280002", 1) * v("00280100", 16) // 8


def frame_segments(f: InstanceFile, meta_text: str, frames: list[int], syntax: str,
                   boundary: str) -> list[Segment]:
    """Frames (PS3.18 10.4.1.1.3) as ``multipart/related; type="application/octet-stream"``: native
    frames are byte ranges of the stored file; encapsulated ones are sent as stored or decoded."""
    segments: list[Segment] = []
    stored = UID(f.transfer_syntax)
    meta = json.loads(meta_text)
    if not stored.is_encapsulated:
        size = native_frame_size(meta)
        if f.pixel_offset is None or size == 0 or (f.bits_allocated or 16) < 8:
            for n, frame in enumerate(frames):
                segments.append(part_head(boundary, "application/octet-stream; transfer-syntax="
                                          f"{ExplicitVRLittleEndian}", first=n == 0))
                segments.append(partial(decoded_frame, f.path, frame))
        else:
            ts = f.transfer_syntax if syntax == AS_STORED else str(ExplicitVRLittleEndian)
            if stored == "1.2.840.10008.1.2.2" and syntax != AS_STORED:
                raise NotAcceptable("big endian pixel data can only be sent as stored")
            for n, frame in enumerate(frames):
                segments.append(part_head(boundary, f"application/octet-stream; transfer-syntax={ts}",
                                          first=n == 0))
                segments.append(FileRange(f.path, f.pixel_offset + (frame - 1) * size, size))
    else:
        for n, frame in enumerate(frames):
            if syntax == AS_STORED:
                segments.append(part_head(boundary, f"application/octet-stream; transfer-syntax={stored}",
                                          first=n == 0))
                segments.append(partial(encapsulated_frame, f.path, frame, f.number_of_frames or 1))
            else:
                segments.append(part_head(boundary, "application/octet-stream; transfer-syntax="
                                          f"{ExplicitVRLittleEndian}", first=n == 0))
                segments.append(partial(decoded_frame, f.path, frame))
    segments.append(closing(boundary))
    return segments


def encapsulated_frame(path: Path, frame: int, number_of_frames: int) -> bytes:
    from pydicom import dcmread
    from pydicom.encaps import get_frame

    ds = dcmread(path)
    return bytes(get_frame(ds.PixelData, frame - 1, number_of_frames=number_of_frames))


def decoded_frame(path: Path, frame: int) -> bytes:
    from pydicom import dcmread
    from pydicom.pixels import pixel_array

    ds = dcmread(path)
    arr = pixel_array(ds, index=frame - 1)
    return bytes(arr.astype(arr.dtype.newbyteorder("<")).tobytes())


def bulk_value(path: Path, tag_path: str) -> bytes:
    """The value of the element at ``tag_path`` (``TAG`` or ``SQTAG/item/TAG/...``) of a stored file."""
    from pydicom import dcmread

    ds = dcmread(path)
    parts = tag_path.split("/")
    node: Any = ds
    try:
        for i, p in enumerate(parts):
            if i % 2 == 0:
                tag = int(p, 16)
                if tag not in node:
                    raise NotFound(f"no element {p} at {tag_path}")
                elem = node[tag]
                node = elem if i == len(parts) - 1 else elem.value
            else:
                node = node[int(p)]
    except (ValueError, IndexError, TypeError):
        raise NotFound(f"no bulk data at {tag_path}") from None
    value = node.value
    if isinstance(value, str):
        return value.encode()
    if not isinstance(value, bytes | bytearray):
        raise NotFound(f"element {tag_path} has no binary value")
    return bytes(value)


# -- rendered resources (PS3.18 10.4.1.1.4 / 8.3.5.1) ------------------------------------------------------


@dataclass(frozen=True)
class RenderOptions:
    """``window=center,width[,function]``, ``viewport=vw,vh``, ``quality`` (PS3.18 8.3.5.1)."""

    media_type: str = "image/jpeg"
    window: tuple[float, float, str] | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90


def parse_render_options(args: dict[str, list[str]], media_type: str,
                         default_viewport: tuple[int, int] | None = None) -> RenderOptions:
    def one(name: str) -> str | None:
        v = args.get(name)
        if not v:
            return None
        if len(v) != 1:
            raise DICOMwebError(f"{name} given more than once")
        return v[0]

    window = None
    if (w := one("window")) is not None:
        parts = w.split(",")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            fn = parts[2].lower() if len(parts) == 3 else "linear"
            if fn not in ("linear", "linear_exact", "sigmoid"):
                raise ValueError
            window = (float(parts[0]), float(parts[1]), fn)
            if window[1] <= 0:
                raise ValueError
        except ValueError:
            raise DICOMwebError(f"window must be center,width[,linear|linear-exact|sigmoid]: {w!r}") from None
    viewport = default_viewport
    if (v := one("viewport")) is not None:
        parts = v.split(",")
        try:
            vw, vh = int(parts[0]), int(parts[1])
            if len(parts) not in (2, 6) or vw <= 0 or vh <= 0 or vw > 4096 or vh > 4096:
                raise ValueError
        except (ValueError, IndexError):
            raise DICOMwebError(f"viewport must be width,height (1..4096): {v!r}") from None
        viewport = (vw, vh)
    quality = 90
    if (qv := one("quality")) is not None:
        if not qv.isdigit() or not 1 <= int(qv) <= 100:
            raise DICOMwebError(f"quality must be 1..100: {qv!r}")
        quality = int(qv)
    return RenderOptions(media_type, window, viewport, quality)


def render(path: Path, frame: int, options: RenderOptions) -> bytes:
    """A frame as an 8-bit image: modality LUT (rescale), then the requested window, else the object's
    first WindowCenter/WindowWidth, else the frame's min..max (PS3.3 C.11.2.1.2); MONOCHROME1 inverted."""
    import numpy as np
    from PIL import Image
    from pydicom import dcmread
    from pydicom.pixels import pixel_array

    ds = dcmread(path)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if frame > n:
        raise NotFound(f"frame {frame} does not exist (the instance has {n})")
    arr = pixel_array(ds, index=frame - 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 3 and arr.shape[-1] == 3:
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        img8 = np.clip(arr, 0, 255).astype(np.uint8) if arr.dtype != np.uint8 else arr
        image = Image.fromarray(img8, "RGB")
    else:
        values: Any = arr.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(
            ds.get("RescaleIntercept", 0) or 0)
        if options.window is not None:
            centre, width, fn = options.window
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            wc, ww = ds.WindowCenter, ds.WindowWidth
            centre = float(wc[0] if hasattr(wc, "__len__") and not isinstance(wc, str) else wc)
            width = float(ww[0] if hasattr(ww, "__len__") and not isinstance(ww, str) else ww)
            fn = "linear"
        else:
            lo, hi = float(values.min()), float(values.max())
            centre, width, fn = (lo + hi) / 2.0, max(hi - lo, 1.0), "linear_exact"
        width = max(width, 1.0)
        if fn == "sigmoid":
            out = 1.0 / (1.0 + np.exp(-4.0 * (values - centre) / width))
        elif fn == "linear_exact":
            out = (values - (centre - width / 2.0)) / width
        else:  # PS3.3 C.11.2.1.2.1
            out = (values - (centre - 0.5)) / (width - 1.0) + 0.5 if width > 1 else (values >= centre) * 1.0
        out = np.clip(out, 0.0, 1.0)
        if photometric == "MONOCHROME1":
            out = 1.0 - out
        image = Image.fromarray(np.round(out * 255.0).astype(np.uint8), "L")
    if options.viewport is not None:
        image.thumbnail(options.viewport, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if options.media_type == "image/png":
        image.save(buf, format="PNG")
    else:
        image.save(buf, format="JPEG", quality=options.quality)
    return buf.getvalue()
