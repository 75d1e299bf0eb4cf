"""Retrieval behaviour seen from the server side: the token only where the Endpoint asks for it,
``Retry-After`` honoured, a bounded number of connections per host, failures in the manifest."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from s4s_jupyter.client.retrieve import Retriever
from s4s_jupyter.client.retry import retry_after_seconds
from s4s_jupyter.client.targets import DICOMwebEndpoint, series_targets
from s4s_jupyter.core.errors import ClientError
from servers.demo_data.plan import DemoPlan
from servers.runtime import ServerLoop
from tests.client.proxy import ProxyState, make_proxy


def proxy(server_loop: ServerLoop, pacs: str, **kw: object) -> tuple[ProxyState, str]:
    state = ProxyState(pacs, **kw)  # type: ignore[arg-type]
    served = server_loop.serve(lambda url: make_proxy(state))
    return state, f"{served.url}/dicom-web"


def test_retry_after_is_honoured(server_loop: ServerLoop, pacs: str, kit_plan: DemoPlan,
                                 tmp_path: Path) -> None:
    state, url = proxy(server_loop, pacs, fail_first=2, retry_after="1")
    study = kit_plan.patients[0].studies[0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    with Retriever(connections_per_host=1, sleep=sleep) as r:
        targets = series_targets(study.study_uid, endpoint=DICOMwebEndpoint(url), qido=r.qido)
        manifest = r.download(targets, tmp_path, progress=False)
    assert set(manifest["status"]) == {"downloaded"} and len(manifest) == study.number_of_instances
    assert state.failed == 2 and slept == [1.0, 1.0]
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("120") == 120.0 and retry_after_seconds("soon") is None


def test_gives_up_after_max_attempts_and_says_so_in_the_manifest(server_loop: ServerLoop, pacs: str,
                                                                kit_plan: DemoPlan, tmp_path: Path) -> None:
    _, url = proxy(server_loop, pacs, fail_first=1000, retry_after="0")
    study = kit_plan.patients[0].studies[0]
    with Retriever(max_attempts=2, sleep=lambda s: None) as r:
        targets = series_targets(study.study_uid, endpoint=DICOMwebEndpoint(url), qido=r.qido)
        manifest = r.download(targets, tmp_path, progress=False)
    assert set(manifest["status"]) == {"failed"}
    assert manifest["error"].str.contains("503").all()
    assert not any(tmp_path.rglob("*.dcm"))


def test_connections_per_host_are_bounded(server_loop: ServerLoop, pacs: str, kit_plan: DemoPlan,
                                          tmp_path: Path) -> None:
    state, url = proxy(server_loop, pacs)
    studies = [s.study_uid for p in kit_plan.patients for s in p.studies]
    with Retriever(connections_per_host=2) as r:
        targets = series_targets(studies, endpoint=DICOMwebEndpoint(url), qido=r.qido)
        manifest = r.download(targets, tmp_path, progress=False)
    assert set(manifest["status"]) == {"downloaded"}
    assert len(manifest) == sum(s.number_of_instances for p in kit_plan.patients for s in p.studies)
    assert 1 <= state.max_in_flight <= 2


def test_token_goes_only_where_the_endpoint_requires_it(server_loop: ServerLoop, pacs: str,
                                                        kit_plan: DemoPlan) -> None:
    import httpx

    class FixedToken(httpx.Auth):
        def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
            request.headers["Authorization"] = "Bearer test-token"
            yield request

    state, url = proxy(server_loop, pacs)
    study = kit_plan.patients[0].studies[0]
    with Retriever(auth=FixedToken()) as r:
        r.load(series_targets(study.study_uid, endpoint=DICOMwebEndpoint(url, False), qido=r.qido),
               progress=False)
        assert state.seen and not any(auth for _, auth in state.seen)
        state.seen.clear()
        r.load(series_targets(study.study_uid, endpoint=DICOMwebEndpoint(url, True), qido=r.qido),
               progress=False)
        assert state.seen and all(auth for _, auth in state.seen)


def test_a_part_that_is_not_dicom_fails_without_leaving_files(server_loop: ServerLoop, pacs: str,
                                                             kit_plan: DemoPlan, tmp_path: Path) -> None:
    import pytest

    from s4s_jupyter.core.errors import ClientError

    _, url = proxy(server_loop, pacs, garbage=True)
    study = kit_plan.patients[0].studies[0]
    with Retriever(sleep=lambda s: None) as r:
        targets = series_targets(study.study_uid, endpoint=DICOMwebEndpoint(url), qido=r.qido)
        manifest = r.download(targets, tmp_path, progress=False)
        assert set(manifest["status"]) == {"failed"}
        assert manifest["error"].str.contains("not a DICOM file").all()
        assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name != ".s4s-manifest.jsonl"]
        with pytest.raises(ClientError, match="not a DICOM file"):
            r.load(targets, progress=False)


def test_instances_of_another_series_are_refused(server_loop: ServerLoop, pacs: str, kit_plan: DemoPlan,
                                                 tmp_path: Path) -> None:
    study = kit_plan.patients[0].studies[0]
    wanted, sent = study.series[0].series_uid, study.series[1].series_uid
    # the server answers a retrieval of series 0 with series 1 (its QIDO answers stay right)
    _, url = proxy(server_loop, pacs, rewrite={f"series/{wanted}": f"series/{sent}"})
    with Retriever(sleep=lambda s: None, connections_per_host=1) as r:
        targets = [t for t in series_targets(study.study_uid, endpoint=DICOMwebEndpoint(url), qido=r.qido)
                   if t.series_uid == wanted]
        manifest = r.download(targets, tmp_path, progress=False)
    assert set(manifest["status"]) == {"failed"}
    assert manifest["error"].str.contains("another series").all()
    assert not list(tmp_path.rglob("*.dcm"))


def test_progress_is_reported_per_instance_within_a_series_request(pacs: str, kit_plan: DemoPlan,
                                                                   tmp_path: Path) -> None:
    from s4s_jupyter.client.retrieve import RetrievalProgress

    study = kit_plan.patients[0].studies[0]
    seen: list[RetrievalProgress] = []
    with Retriever(connections_per_host=1) as r:  # one request per series: 3 instances each
        targets = series_targets(study.study_uid, endpoint=DICOMwebEndpoint(pacs), qido=r.qido)
        manifest = r.download(targets, tmp_path, progress=False, on_progress=seen.append)
        total = study.number_of_instances
        # the series query gave each series' count (Number of Series Related Instances): the total is
        # known from the start, without the instance lists
        assert all(t.count is not None and t.instances is None for t in targets)
        assert seen[0] == RetrievalProgress(0, total, 0)
        assert [p.instances_done for p in seen] == list(range(total + 1))
        assert {p.sop_uid for p in seen[1:]} == set(manifest["sop_uid"])
        assert {p.instances_total for p in seen} == {total}
        assert len(manifest) == total and set(manifest["status"]) == {"downloaded"}
        received = [p.bytes_received for p in seen]
        assert received == sorted(received) and received[-1] > manifest["size"].sum()  # framing too

        # a second call: the verified instances count as done, nothing is received
        again: list[RetrievalProgress] = []
        r.download(targets, tmp_path, progress=False, on_progress=again.append)
        assert again[-1].instances_done == total and again[-1].bytes_received == 0
        assert all(p.instances_total == total for p in again)  # resuming: the lists come first

        # into memory, likewise; a callback that raises stops the retrieval
        loaded: list[RetrievalProgress] = []
        assert len(r.load(targets, progress=False, on_progress=loaded.append)) == total
        assert loaded[-1].instances_done == total
        assert {p.instances_total for p in loaded} == {total}
        # without counts, each series is fetched while its instance list is asked for: the total is None
        # until the lists came
        uncounted = [replace(t, count=None) for t in targets]
        loaded = []
        assert len(r.load(uncounted, progress=False, on_progress=loaded.append)) == total
        assert {p.instances_total for p in loaded} <= {None, total}
        assert [p.instances_done for p in loaded] == list(range(total + 1))

        def stop(p: RetrievalProgress) -> None:
            if p.instances_done == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            r.load(targets, progress=False, on_progress=stop)


def test_whole_series_in_one_request_unless_asked_to_split(server_loop: ServerLoop, pacs: str,
                                                           kit_plan: DemoPlan, tmp_path: Path) -> None:
    import re

    study = kit_plan.patients[0].studies[0]
    for split, expected in ((False, len(study.series)), (True, study.number_of_instances)):
        state, url = proxy(server_loop, pacs)
        with Retriever(connections_per_host=4, split_series=split) as r:
            targets = series_targets(study.study_uid, endpoint=DICOMwebEndpoint(url), qido=r.qido)
            manifest = r.download(targets, tmp_path / str(split), progress=False)
        assert set(manifest["status"]) == {"downloaded"} and len(manifest) == study.number_of_instances
        retrievals = [p for p, _ in state.seen if re.search(r"/(series|instances)/[^/]+$", p)]
        assert len(retrievals) == expected


def _instance_lists(state: ProxyState) -> list[str]:
    return [p for p, _ in state.seen if p.endswith("/instances")]


def test_a_counted_series_that_came_whole_is_not_listed(server_loop: ServerLoop, pacs: str,
                                                         kit_plan: DemoPlan, tmp_path: Path) -> None:
    study = kit_plan.patients[0].studies[0]
    state, url = proxy(server_loop, pacs)
    with Retriever() as r:
        targets = series_targets(study.study_uid, endpoint=DICOMwebEndpoint(url), qido=r.qido)
        assert [t.count for t in targets] == [len(s.instance_uids) for s in study.series]
        manifest = r.download(targets, tmp_path, progress=False)
        datasets = r.load(targets, progress=False)
    assert set(manifest["status"]) == {"downloaded"} and len(manifest) == study.number_of_instances
    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(manifest["sop_uid"])
    # the manifest is in instance-number order within each series, as with the server's list
    for _, rows in manifest.groupby("series_uid", sort=False):
        assert list(rows["instance_number"]) == sorted(rows["instance_number"])
    assert _instance_lists(state) == []  # the counts said the series were complete


def test_a_counted_series_that_came_short_is_listed_and_the_missing_named(
        server_loop: ServerLoop, pacs: str, kit_plan: DemoPlan, tmp_path: Path) -> None:
    study = kit_plan.patients[0].studies[0]
    state, url = proxy(server_loop, pacs, drop_last_part=True)
    with Retriever() as r:
        targets = series_targets(study.study_uid, endpoint=DICOMwebEndpoint(url), qido=r.qido)
        manifest = r.download(targets, tmp_path, progress=False)
        assert len(_instance_lists(state)) == len(targets)  # each came one short: listed to name it
        missing = manifest[manifest["status"] == "missing"]
        assert len(missing) == len(targets) and len(manifest) == study.number_of_instances
        assert set(missing["error"]) == {"the server's answer did not include this instance"}
        on_disk = {p.stem for p in tmp_path.rglob("*.dcm")}
        assert on_disk == set(manifest.loc[manifest["status"] == "downloaded", "sop_uid"])
        assert not on_disk & set(missing["sop_uid"])
        with pytest.raises(ClientError, match=rf"did not send {len(targets)} instance\(s\)"):
            r.load(targets, progress=False)
