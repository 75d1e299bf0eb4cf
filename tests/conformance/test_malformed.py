"""Malformed uploads and requests (tests/conformance/malformed.py): our PACS answers each in the
DICOMweb error form (the status PS3.18 gives, a JSON body) and never stores a bad object.

Orthanc's answers to the same requests are recorded in docs/conformance.md (``python -m
tests.conformance.report``), not asserted: where Orthanc differs from the standard, the standard wins.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest

from tests.conformance.compare import json_body
from tests.conformance.conftest import Pair
from tests.conformance.dataset import Instance
from tests.conformance.malformed import QIDO_CASES, STOW_CASES, WADO_CASES, Malformed

pytestmark = pytest.mark.orthanc


def stored_instances(base: str) -> set[str]:
    r = httpx.get(f"{base}/instances", timeout=30)
    assert r.status_code in (200, 204), r.status_code
    return {o["00080018"]["Value"][0] for o in r.json()} if r.status_code == 200 else set()


def _check_answer(case: Malformed, r: httpx.Response) -> None:
    assert r.status_code in case.expect, (
        f"{case.id}: answered {r.status_code}, {case.reference} gives {case.expect}: {r.text[:300]!r}")
    body = json_body(r)
    assert body, f"{case.id}: empty JSON body"


@pytest.mark.parametrize("case", STOW_CASES, ids=[c.id for c in STOW_CASES])
def test_bad_upload_is_refused_and_not_stored(fresh_pair: Pair, instances: Sequence[Instance],
                                              case: Malformed) -> None:
    before = stored_instances(fresh_pair.ours)
    r = case.send(fresh_pair.ours, instances)
    after = stored_instances(fresh_pair.ours)
    assert after == before, f"{case.id}: stored {sorted(after - before)}"
    for uid in case.not_stored(instances):
        assert uid not in after
    _check_answer(case, r)


@pytest.mark.parametrize("case", QIDO_CASES + WADO_CASES, ids=[c.id for c in QIDO_CASES + WADO_CASES])
def test_bad_request_gets_dicomweb_error(loaded: Pair, instances: Sequence[Instance],
                                         case: Malformed) -> None:
    _check_answer(case, case.send(loaded.ours, instances))
