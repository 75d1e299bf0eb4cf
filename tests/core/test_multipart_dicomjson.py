import pytest

from s4s_jupyter.core import dicomjson
from s4s_jupyter.core.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    encode_parts,
    iter_parts,
    parse_content_type,
)


def test_round_trip_in_every_chunking() -> None:
    parts = [("application/dicom", b"\x00" * 100 + b"\r\n--" + b"x" * 50), ("application/dicom", b""),
             ("application/octet-stream", bytes(range(256)) * 4)]
    body, boundary = encode_parts(parts)
    for size in (1, 2, 7, 64, 1000, len(body)):
        parser = MultipartParser(boundary)
        got: list[tuple[dict[str, str], bytes]] = []
        for i in range(0, len(body), size):
            for ev in parser.feed(body[i:i + size]):
                if isinstance(ev, PartStart):
                    got.append((ev.headers, b""))
                elif isinstance(ev, PartData):
                    got[-1] = (got[-1][0], got[-1][1] + ev.data)
                else:
                    assert isinstance(ev, PartEnd)
        parser.close()
        assert [(h["content-type"], d) for h, d in got] == parts


def test_preamble_and_epilogue_are_ignored() -> None:
    body = b"preamble\r\n--b\r\nContent-Type: a/b\r\n\r\nhello\r\n--b--\r\nepilogue"
    assert list(iter_parts(body, "b")) == [({"content-type": "a/b"}, b"hello")]


def test_truncated_body_is_an_error() -> None:
    body, boundary = encode_parts([("application/dicom", b"abc")])
    with pytest.raises(MultipartError):
        list(iter_parts(body[:-10], boundary))


def test_content_type_parameters() -> None:
    media, params = parse_content_type('multipart/related; type="application/dicom"; boundary=abc')
    assert media == "multipart/related" and params == {"type": "application/dicom", "boundary": "abc"}
    assert parse_content_type("garbage")[0] == ""


def test_dicom_json_accessors() -> None:
    obj = dicomjson.build(StudyInstanceUID="1.2.3", ModalitiesInStudy=["CT", "MR"], PatientName="Doe^Jane",
                          NumberOfStudyRelatedSeries=2, StudyDescription=None)
    assert obj["0020000D"] == {"vr": "UI", "Value": ["1.2.3"]}
    assert dicomjson.first(obj, "PatientName") == "Doe^Jane"
    assert dicomjson.values(obj, "ModalitiesInStudy") == ["CT", "MR"]
    assert dicomjson.first(obj, "00201206") == 2
    assert dicomjson.first(obj, "StudyDescription", "none") == "none"
    assert dicomjson.tag_of(0x0020000D) == "0020000D"
    with pytest.raises(KeyError):
        dicomjson.tag_of("NotAKeyword")
