"""The download's sidecar: its CRC-32 (ISA-L when installed) has zlib's values, so sidecars written by
either verify with the other, piece by piece as a download feeds it, over bytes and over views; its
lines are what ``json.dumps`` writes."""

from __future__ import annotations

import random
import zlib

from s4s_jupyter.client import retrieve
from s4s_jupyter.client.retrieve import CHECKSUMS


def test_crc32_has_zlibs_values_piece_by_piece() -> None:
    rng = random.Random(3)
    for size in (0, 1, 7, 4096, 131_072, 1_000_003):
        data = rng.randbytes(size)
        digest = CHECKSUMS["crc32"]()
        pos = 0
        while pos < size:
            step = rng.randrange(1, 70_000)
            digest.update(memoryview(data)[pos:pos + step] if step % 2 else data[pos:pos + step])
            pos += step
        assert digest.hexdigest() == f"{zlib.crc32(data):08x}"


def test_isal_is_the_crc32_in_use() -> None:
    from isal import isal_zlib  # a declared dependency: the fast path is the one measured

    assert retrieve._crc32 is isal_zlib.crc32


def test_a_sidecar_line_is_what_json_dumps_writes() -> None:
    import json

    from s4s_jupyter.client.retrieve import _sidecar_line

    row = {"study_uid": "1.2.3", "series_uid": "1.2.3.4", "sop_uid": "1.2.3.4.5", "size": 132_572,
           "path": '/data/Müller "quoted"\\\n/1.2.3.4.5.dcm', "checksum": "crc32:0a1b2c3d", "status": "x"}
    keys = ("study_uid", "series_uid", "sop_uid", "path", "size", "checksum")
    assert _sidecar_line(row) == json.dumps({k: row[k] for k in keys}).encode() + b"\n"
