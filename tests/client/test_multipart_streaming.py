"""The multipart parser as the kit's download path drives it: chunks of every size, parts whose bytes
look like the start of a delimiter across chunk boundaries, and chunks passed on without copying."""

from __future__ import annotations

import random

import pytest

from s4s_jupyter.core.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    closing,
    encode_parts,
    part_head,
)


def parse(body: bytes, boundary: str, sizes: list[int], views: bool = False,
          lengths: bool = False) -> list[bytes]:
    parser = MultipartParser(boundary, views=views, lengths=lengths)
    parts: list[bytes] = []
    pos = 0
    k = 0
    while pos < len(body):
        size = sizes[k % len(sizes)]
        k += 1
        for event in parser.feed(body[pos:pos + size]):
            if isinstance(event, PartStart):
                parts.append(b"")
            elif isinstance(event, PartData):
                assert isinstance(event.data, memoryview if views else bytes) and event.data
                parts[-1] += event.data
            else:
                assert isinstance(event, PartEnd)
        pos += size
    parser.close()
    return parts


def test_random_chunkings_of_parts_full_of_near_delimiters() -> None:
    rng = random.Random(5)
    boundary = "s4s-0123456789abcdef"
    near = [b"\r", b"\r\n", b"\r\n-", b"\r\n--", b"\r\n--s4s-0123", b"\r\n--s4s-0123456789abcde", b"x"]
    for _ in range(60):
        payloads = [b"".join(rng.choice(near) + rng.randbytes(rng.randrange(0, 40))
                             for _ in range(rng.randrange(0, 30))) for _ in range(rng.randrange(1, 5))]
        payloads = [p.replace(b"\r\n--" + boundary.encode(), b"") for p in payloads]  # no real delimiter
        body, _ = encode_parts([("application/dicom", p) for p in payloads], boundary)
        sizes = [rng.randrange(1, 90) for _ in range(7)]
        assert parse(body, boundary, sizes) == payloads
        assert parse(body, boundary, sizes, views=True) == payloads
        assert parse(body, boundary, [len(body)]) == payloads
        assert parse(body, boundary, [len(body)], views=True) == payloads
        framed = b"a preamble\r\n" + body + b"an epilogue\r\n--" + boundary.encode()
        assert parse(framed, boundary, sizes) == payloads


def test_a_chunk_inside_a_part_is_passed_on_as_it_is() -> None:
    payload = bytes(range(256)) * 1024
    body, boundary = encode_parts([("application/dicom", payload)])
    parser = MultipartParser(boundary)
    start = body.index(b"\r\n\r\n") + 4
    events = list(parser.feed(body[:start + 10]))
    assert isinstance(events[0], PartStart)
    middle = body[start + 10:start + 70000]
    data = [e for e in parser.feed(middle) if isinstance(e, PartData)]
    assert len(data) == 1 and data[0].data is middle  # no copy
    rest = list(parser.feed(body[start + 70000:]))
    parser.close()
    assert isinstance(rest[-1], PartEnd)


def test_views_are_slices_of_the_chunk_fed() -> None:
    payloads = [bytes(range(256)) * 40, b"second part"]
    body, boundary = encode_parts([("application/dicom", p) for p in payloads])
    parser = MultipartParser(boundary, views=True)
    data = [e.data for e in parser.feed(body) if isinstance(e, PartData)]
    parser.close()
    assert [bytes(d) for d in data] == payloads
    assert all(isinstance(d, memoryview) and d.obj is body for d in data)  # no copy


def with_lengths(payloads: list[bytes], boundary: str, lie: int = 0) -> bytes:
    """A body whose parts carry ``Content-Length`` (the last one off by ``lie``)."""
    chunks = []
    for i, p in enumerate(payloads):
        length = len(p) + (lie if i == len(payloads) - 1 else 0)
        chunks.append(part_head(boundary, "application/dicom", first=i == 0,
                                headers={"Content-Length": str(length)}))
        chunks.append(p)
    return b"".join(chunks) + closing(boundary)


def test_parts_taken_by_their_content_length_in_any_chunking() -> None:
    rng = random.Random(11)
    boundary = "s4s-fedcba9876543210"
    for _ in range(60):
        # bytes that look like delimiters, even the real one: a part with a length is not searched
        payloads = [b"".join(rng.choice([b"\r\n--" + boundary.encode(), b"\r", rng.randbytes(30)])
                             for _ in range(rng.randrange(0, 12))) for _ in range(rng.randrange(1, 5))]
        body = with_lengths(payloads, boundary)
        sizes = [rng.randrange(1, 90) for _ in range(7)]
        for views in (False, True):
            assert parse(body, boundary, sizes, views=views, lengths=True) == payloads
            assert parse(body, boundary, [len(body)], views=views, lengths=True) == payloads


def test_a_part_that_does_not_end_at_its_content_length_is_an_error() -> None:
    boundary = "s4s-fedcba9876543210"
    payloads = [b"x" * 500, b"y" * 300]
    for lie in (-1, 1, -300):
        body = with_lengths(payloads, boundary, lie)
        for sizes in ([64], [len(body)]):
            with pytest.raises(MultipartError):
                parse(body, boundary, sizes, lengths=True)
    # without lengths=True the header is ignored and the boundary found by search, as before
    assert parse(with_lengths(payloads, boundary, 7), boundary, [64]) == payloads
