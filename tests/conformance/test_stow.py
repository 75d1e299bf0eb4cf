"""STOW-RS side by side (PS3.18 10.5): both servers accept the same valid files and answer a Store
Instances Response (PS3.18 10.5.3.2); then partial success, conflicts and idempotence on our PACS."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from dicomweb_client.api import DICOMwebClient

from tests.conformance.compare import (
    FAILED_SOP_SEQUENCE,
    REFERENCED_SOP_SEQUENCE,
    RETRIEVE_URL,
    json_body,
    referenced_uids,
    stow,
)
from tests.conformance.conftest import Pair
from tests.conformance.dataset import Instance, part10, variant
from tests.conformance.test_malformed import stored_instances

pytestmark = pytest.mark.orthanc


def _study(instances: Sequence[Instance]) -> list[Instance]:
    uid = instances[0].study.study_uid
    return [i for i in instances if i.study.study_uid == uid]


def test_both_accept_a_valid_study_with_a_store_instances_response(fresh_pair: Pair,
                                                                    instances: Sequence[Instance]) -> None:
    study = _study(instances)
    uids = {i.sop_instance_uid for i in study}
    for name, base in (("reference", fresh_pair.reference), ("ours", fresh_pair.ours)):
        r = stow(base, [i.data for i in study], study_uid=study[0].study.study_uid)
        assert r.status_code == 200, (name, r.status_code, r.text[:300])
        body = json_body(r)
        assert referenced_uids(body, REFERENCED_SOP_SEQUENCE) == uids, name
        assert not referenced_uids(body, FAILED_SOP_SEQUENCE), name
        for item in body[REFERENCED_SOP_SEQUENCE]["Value"]:
            assert item[RETRIEVE_URL]["Value"][0].startswith(base), name
        assert uids <= stored_instances(base), name


def test_dicomweb_client_stores_on_both(fresh_pair: Pair, instances: Sequence[Instance]) -> None:
    """dicomweb-client's store_instances (a client we did not write) against both servers."""
    inst = instances[-1]
    for name, base in (("reference", fresh_pair.reference), ("ours", fresh_pair.ours)):
        result = DICOMwebClient(base).store_instances([inst.dataset()])
        assert inst.sop_instance_uid in {str(i.ReferencedSOPInstanceUID) for i in
                                         result.ReferencedSOPSequence}, name
        assert inst.sop_instance_uid in stored_instances(base), name


def test_storing_the_same_instance_twice_is_idempotent(fresh_pair: Pair,
                                                       instances: Sequence[Instance]) -> None:
    inst = instances[1]
    for _ in range(2):
        r = stow(fresh_pair.ours, [inst.data])
        assert r.status_code == 200, r.text[:300]
        assert referenced_uids(json_body(r), REFERENCED_SOP_SEQUENCE) == {inst.sop_instance_uid}
    assert DICOMwebClient(fresh_pair.ours).retrieve_instance(
        inst.study.study_uid, inst.series.series_uid, inst.sop_instance_uid).PixelData == \
        inst.dataset().PixelData


def test_partial_success_is_202_with_failed_sop_sequence(fresh_pair: Pair,
                                                         instances: Sequence[Instance]) -> None:
    """One good and one bad instance: 202, the good one stored and referenced, the bad one failed."""
    good = part10(variant(instances[2], "partial-good"))
    bad_ds = variant(instances[2], "partial-bad", StudyInstanceUID="1.2.840.abc")
    good_uid, bad_uid = str(variant(instances[2], "partial-good").SOPInstanceUID), str(bad_ds.SOPInstanceUID)
    r = stow(fresh_pair.ours, [good, part10(bad_ds)])
    assert r.status_code == 202, (r.status_code, r.text[:300])
    body = json_body(r)
    assert referenced_uids(body, REFERENCED_SOP_SEQUENCE) == {good_uid}
    assert referenced_uids(body, FAILED_SOP_SEQUENCE) == {bad_uid}
    stored = stored_instances(fresh_pair.ours)
    assert good_uid in stored and bad_uid not in stored


def test_different_object_under_a_stored_uid_is_409_and_keeps_the_original(
        fresh_pair: Pair, instances: Sequence[Instance]) -> None:
    inst = instances[3]
    assert stow(fresh_pair.ours, [inst.data]).status_code == 200
    other = inst.dataset()
    other.PatientName = "Impostor^Eve"
    r = stow(fresh_pair.ours, [part10(other)])
    assert r.status_code == 409, (r.status_code, r.text[:300])
    assert referenced_uids(json_body(r), FAILED_SOP_SEQUENCE) == {inst.sop_instance_uid}
    kept = DICOMwebClient(fresh_pair.ours).retrieve_instance(
        inst.study.study_uid, inst.series.series_uid, inst.sop_instance_uid)
    assert str(kept.PatientName) == inst.patient.dicom_name
