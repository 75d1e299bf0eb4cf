"""The multipart parser as the kit's download path drives it: chunks of every size, parts whose bytes
look like the start of a delimiter across chunk boundaries, and chunks passed on without copying."""

from __future__ import annotations

import random

from s4s_jupyter.core.multipart import MultipartParser, PartData, PartEnd, PartStart, encode_parts


def parse(body: bytes, boundary: str, sizes: list[int], views: bool = False) -> list[bytes]:
    parser = MultipartParser(boundary, views=views)
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
