"""Malformed uploads and requests, and what PS3.18 says an origin server answers to each.

Every case is data: the request it sends, the status codes the standard allows, and the SOP Instance
UIDs that must not be stored afterwards. ``test_malformed.py`` runs them against our PACS (and asserts);
``python -m tests.conformance.report`` runs them against Orthanc and ours and prints what each answered,
which is how docs/conformance.md's table is made.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
from pydicom.uid import UID

from tests.conformance.compare import stow
from tests.conformance.dataset import Instance, new_uid, part10, variant

Send = Callable[[str, Sequence[Instance]], httpx.Response]

#: STOW-RS failures where nothing is stored: 400 (request malformed) or 409 (conflict: no instance could
#: be stored, PS3.18 10.5.3 Table 10.5.3-1), each with a JSON body.
NOTHING_STORED = (400, 409)


@dataclass(frozen=True)
class Malformed:
    """One malformed request: ``send(base_url, instances)``, the allowed answers, what must not be stored."""

    id: str
    send: Send
    expect: tuple[int, ...]
    reference: str  # the section of PS3.18 (or other standard) that says so
    not_stored: Callable[[Sequence[Instance]], list[str]] = field(default=lambda _: [])


def _src(instances: Sequence[Instance]) -> Instance:
    return instances[0]


def _uid(tag: str, instances: Sequence[Instance]) -> str:
    return new_uid(tag, _src(instances).sop_instance_uid)


def _file(tag: str, instances: Sequence[Instance], **changes: object) -> bytes:
    return part10(variant(_src(instances), tag, **changes))


def _pixel_data_short(instances: Sequence[Instance]) -> bytes:
    ds = variant(_src(instances), "short-pixels")
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    return part10(ds)


def _bad_uid_file(instances: Sequence[Instance]) -> bytes:
    # a component with a leading zero (PS3.5 9.1)
    ds = variant(_src(instances), "bad-sop-uid", SOPInstanceUID="1.2.03.4")
    with warnings.catch_warnings():  # pydicom warns about the invalid UID we mean to send
        warnings.simplefilter("ignore", UserWarning)
        ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.03.4")
    return part10(ds)


def _get(path: str, *, params: str = "", accept: str | None = None) -> Send:
    def send(base: str, instances: Sequence[Instance]) -> httpx.Response:
        inst = _src(instances)
        url = base + path.format(study=inst.study.study_uid, series=inst.series.series_uid,
                                 instance=inst.sop_instance_uid, unknown=new_uid("unknown-study"))
        headers = {"Accept": accept} if accept else {}
        return httpx.get(url + (f"?{params}" if params else ""), headers=headers, timeout=30)
    return send


NO_BOUNDARY = 'multipart/related; type="application/dicom"'
INSTANCE = "/studies/{study}/series/{series}/instances/{instance}"

STOW_CASES: list[Malformed] = [
    Malformed("stow-truncated-part10",
              lambda b, i: stow(b, [_file("truncated", i)[:-300]]), NOTHING_STORED,
              "PS3.18 10.5.3; PS3.10 7.1 (a Part 10 file whose last element is cut short)",
              lambda i: [_uid("truncated", i)]),
    Malformed("stow-truncated-header",
              lambda b, i: stow(b, [_file("truncated-header", i)[:400]]), NOTHING_STORED,
              "PS3.18 10.5.3; PS3.10 7.1", lambda i: [_uid("truncated-header", i)]),
    Malformed("stow-not-dicom",
              lambda b, i: stow(b, [b"%PDF-1.4 this is not a DICOM file\n" * 8]), NOTHING_STORED,
              "PS3.18 10.5.3 (a part that is not a DICOM Part 10 file)"),
    Malformed("stow-invalid-sop-instance-uid",
              lambda b, i: stow(b, [_bad_uid_file(i)]), NOTHING_STORED,
              "PS3.5 9.1; PS3.18 10.5.3", lambda i: ["1.2.03.4"]),
    Malformed("stow-invalid-study-uid",
              lambda b, i: stow(b, [_file("bad-study-uid", i, StudyInstanceUID="1.2.840.abc")]),
              NOTHING_STORED, "PS3.5 9.1; PS3.18 10.5.3", lambda i: [_uid("bad-study-uid", i)]),
    Malformed("stow-missing-sop-instance-uid",
              lambda b, i: stow(b, [_file("no-sop-uid", i, SOPInstanceUID=None)]), NOTHING_STORED,
              "PS3.3 C.12.1 (SOP Instance UID is Type 1); PS3.18 10.5.3", lambda i: [_uid("no-sop-uid", i)]),
    Malformed("stow-missing-study-uid",
              lambda b, i: stow(b, [_file("no-study-uid", i, StudyInstanceUID=None)]), NOTHING_STORED,
              "PS3.3 C.7.2.1 (Study Instance UID is Type 1); PS3.18 10.5.3",
              lambda i: [_uid("no-study-uid", i)]),
    Malformed("stow-pixel-data-shorter-than-rows-columns",
              lambda b, i: stow(b, [_pixel_data_short(i)]), NOTHING_STORED,
              "PS3.5 8.1.1 / PS3.3 C.7.6.3 (Pixel Data length = Rows x Columns x Bits Allocated / 8)",
              lambda i: [_uid("short-pixels", i)]),
    Malformed("stow-study-uid-mismatch",
              lambda b, i: stow(b, [_file("mismatch", i)], study_uid=new_uid("other-study")), (409,),
              "PS3.18 10.5.3 (instance not of the target study: 409 with Failed SOP Sequence)",
              lambda i: [_uid("mismatch", i)]),
    Malformed("stow-wrong-content-type",
              lambda b, i: httpx.post(f"{b}/studies", content=_file("json-type", i), timeout=30,
                                      headers={"Content-Type": "application/json"}),
              (415,), "PS3.18 10.5.1.2, 8.7.3 (415 Unsupported Media Type)",
              lambda i: [_uid("json-type", i)]),
    Malformed("stow-multipart-without-boundary",
              lambda b, i: httpx.post(f"{b}/studies", content=_file("no-boundary", i), timeout=30,
                                      headers={"Content-Type": NO_BOUNDARY}),
              (400, 415), "RFC 2046 5.1.1 (boundary is required); PS3.18 8.6.1.2",
              lambda i: [_uid("no-boundary", i)]),
    Malformed("stow-empty-multipart", lambda b, i: stow(b, []), (400,),
              "PS3.18 10.5.1 (the request has at least one instance)"),
]

QIDO_CASES: list[Malformed] = [
    Malformed("qido-date-not-a-date", _get("/studies", params="StudyDate=2022"), (400,),
              "PS3.18 8.3.4, PS3.5 6.2 (DA is YYYYMMDD)"),
    Malformed("qido-date-impossible", _get("/studies", params="StudyDate=20221341"), (400,),
              "PS3.18 8.3.4, PS3.5 6.2"),
    Malformed("qido-date-range-malformed", _get("/studies", params="StudyDate=20220101-2022"), (400,),
              "PS3.4 C.2.2.2.5 (range matching)"),
    Malformed("qido-unknown-attribute", _get("/studies", params="NotAnAttribute=1"), (400,),
              "PS3.18 8.3.4.1 (attributeID is a keyword or tag)"),
    Malformed("qido-includefield-unknown", _get("/studies", params="includefield=NotAnAttribute"), (400,),
              "PS3.18 8.3.4.3"),
    Malformed("qido-invalid-uid", _get("/studies", params="StudyInstanceUID=1.2.abc"), (400,),
              "PS3.5 9.1; PS3.18 8.3.4"),
    Malformed("qido-limit-not-a-number", _get("/studies", params="limit=ten"), (400,), "PS3.18 8.3.4.4"),
    Malformed("qido-limit-negative", _get("/studies", params="limit=-1"), (400,), "PS3.18 8.3.4.4"),
    Malformed("qido-offset-negative", _get("/studies", params="offset=-1"), (400,), "PS3.18 8.3.4.4"),
    Malformed("qido-offset-not-a-number", _get("/studies", params="offset=x"), (400,), "PS3.18 8.3.4.4"),
    Malformed("qido-fuzzymatching-not-boolean", _get("/studies", params="fuzzymatching=perhaps"), (400,),
              "PS3.18 8.3.4.2"),
    Malformed("qido-unacceptable-accept", _get("/studies", accept="application/pdf"), (406,),
              "PS3.18 8.7 (media types); RFC 9110 15.5.7 (406 Not Acceptable)"),
]

WADO_CASES: list[Malformed] = [
    Malformed("wado-invalid-study-uid", _get("/studies/1.2.abc"), (400,), "PS3.5 9.1; PS3.18 10.4.1"),
    Malformed("wado-unknown-study", _get("/studies/{unknown}"), (404,), "PS3.18 10.4.3 (404 Not Found)"),
    Malformed("wado-frame-zero", _get(INSTANCE + "/frames/0"), (400,),
              "PS3.18 10.4.1 (frame numbers are positive integers)"),
    Malformed("wado-frame-not-a-number", _get(INSTANCE + "/frames/x"), (400, 404),
              "PS3.18 10.4.1 (frame-list is a list of positive integers)"),
    Malformed("wado-frame-beyond-last", _get(INSTANCE + "/frames/99"), (400, 404), "PS3.18 10.4.3"),
    Malformed("wado-study-unacceptable-accept", _get("/studies/{study}", accept="application/pdf"), (406,),
              "PS3.18 8.7; RFC 9110 15.5.7"),
    Malformed("wado-metadata-unacceptable-accept",
              _get("/studies/{study}/metadata", accept="application/pdf"), (406,),
              "PS3.18 8.7; RFC 9110 15.5.7"),
    Malformed("wado-transfer-syntax-not-offered",
              _get("/studies/{study}",
                   accept=('multipart/related; type="application/dicom"; '
                           "transfer-syntax=1.2.840.10008.1.2.4.100")),
              (406,), "PS3.18 8.7 (a transfer syntax the server cannot serve: 406)"),
]

ALL_CASES = STOW_CASES + QIDO_CASES + WADO_CASES
