"""WADO-RS retrieval (PS3.18 10.4): instances, frames and bulk data from the store.

Each answer is described as segments (:mod:`servers.pacs.segments`): multipart delimiters, byte ranges
of stored files (objects sent as stored, native frames, pixel data), and deferred producers for what must
be computed (a transcoded instance, a decoded or encapsulated frame, a nested bulk value).
"""

from __future__ import annotations

import io
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from s4s_jupyter.core.errors import DICOMwebError
from s4s_jupyter.core.multipart import closing, part_head
from servers.pacs.negotiation import AS_STORED
from servers.pacs.segments import FileRange, Segment
from servers.pacs.store import InstanceFile

log = logging.getLogger("s4s.pacs.wado")


class NotFound(DICOMwebError):
    status = 404


class NotAcceptable(DICOMwebError):
    status = 406


def transcode(path: Path, syntax: str) -> bytes:
    """A stored object re-encoded in a native syntax (Explicit or Implicit VR Little Endian, PS3.5 A.1/A.2),
    decompressing its pixel data first when needed; :class:`NotAcceptable` when pydicom cannot."""
    from pydicom import dcmread

    try:
        ds = dcmread(path)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()  # keeps the pixel module consistent (PhotometricInterpretation, ...)
        ds.file_meta.TransferSyntaxUID = UID(syntax)
        buf = io.BytesIO()
        ds.save_as(buf, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True,
                   enforce_file_format=True)
    except Exception as exc:
        raise NotAcceptable(f"this instance cannot be converted to {syntax}: {exc}") from exc
    return buf.getvalue()


def _transcoded_part(f: InstanceFile, syntax: str, boundary: str, first: bool, fallback: bool) -> bytes:
    """One part holding ``f`` in ``syntax``. When that fails and the client did not name the syntax
    (``fallback``), the part holds the stored object and says so in its Content-Type."""
    try:
        body = transcode(f.path, syntax)
    except NotAcceptable:
        if not fallback:
            raise
        log.warning("sending %s as stored (%s): it cannot be converted", f.sop_uid, f.transfer_syntax)
        return part_head(boundary, f"application/dicom; transfer-syntax={f.transfer_syntax}",
                         first=first) + f.path.read_bytes()
    return part_head(boundary, f"application/dicom; transfer-syntax={syntax}", first=first) + body


def instance_segments(files: list[InstanceFile], syntax: str, boundary: str,
                      fallback_as_stored: bool = False) -> list[Segment]:
    """A ``multipart/related; type="application/dicom"`` body (PS3.18 10.4.1.1.1) of ``files``.

    Objects already in ``syntax`` (or all, for ``*``) are byte ranges of their files, each part with its
    ``Content-Length`` (a client can take the part by its length instead of searching its bytes for the
    boundary); the others are converted when their turn comes. ``fallback_as_stored``: an object that
    cannot be converted is sent as stored (the default syntax was not asked for by name), rather than
    failing the answer.
    """
    segments: list[Segment] = []
    for n, f in enumerate(files):
        if syntax in (AS_STORED, f.transfer_syntax):
            segments.append(part_head(boundary, f"application/dicom; transfer-syntax={f.transfer_syntax}",
                                      first=n == 0, headers={"Content-Length": str(f.size)}))
            segments.append(FileRange(f.path, 0, f.size))
        else:
            segments.append(partial(_transcoded_part, f, syntax, boundary, n == 0, fallback_as_stored))
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
    try:
        return bytes(get_frame(ds.PixelData, frame - 1, number_of_frames=number_of_frames))
    except Exception as exc:
        raise NotAcceptable(f"frame {frame} cannot be found in the encapsulated pixel data: {exc}") from exc


def decoded_frame(path: Path, frame: int) -> bytes:
    from pydicom import dcmread
    from pydicom.pixels import pixel_array

    ds = dcmread(path)
    try:
        arr = pixel_array(ds, index=frame - 1)
    except Exception as exc:
        raise NotAcceptable(f"the pixel data cannot be decoded here: {exc}") from exc
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
