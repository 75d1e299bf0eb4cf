"""Rendered images and thumbnails (PS3.18 10.4.1.1.4 and 10.4.1.1.6, query parameters of 8.3.5.1).

A frame becomes an 8-bit image: modality LUT, a VOI window, MONOCHROME1 inversion, then JPEG or PNG
through Pillow, optionally fitted into a viewport.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s4s_jupyter.core.errors import DICOMwebError
from servers.pacs.wado import NotAcceptable, NotFound


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
    try:
        arr = pixel_array(ds, index=frame - 1)
    except Exception as exc:
        raise NotAcceptable(f"the pixel data cannot be decoded here, so it is not rendered: {exc}") from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 3 and arr.shape[-1] == 3:
        # pydicom's pixel_array already gives RGB for YBR photometric interpretations (as_rgb)
        if arr.dtype == np.uint8:
            img8 = arr
        else:
            top = float(2 ** int(ds.get("BitsStored", 8 * arr.dtype.itemsize)) - 1)
            img8 = np.round(np.clip(arr, 0, top) / top * 255.0).astype(np.uint8)
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
