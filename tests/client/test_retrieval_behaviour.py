"""Retrieval behaviour seen from the server side: the token only where the Endpoint asks for it,
``Retry-After`` honoured, a bounded number of connections per host, failures in the manifest."""

from __future__ import annotations

import time
from pathlib import Path

from s4s_jupyter.client.retrieve import Retriever
from s4s_jupyter.client.retry import retry_after_seconds
from s4s_jupyter.client.targets import DICOMwebEndpoint, series_targets
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
        # nothing recorded before: each series is fetched while its instance list is asked for, so the
        # total is None until the lists came (as for load below)
        assert seen[0] in (RetrievalProgress(0, None, 0), RetrievalProgress(0, total, 0))
        assert [p.instances_done for p in seen] == list(range(total + 1))
        assert {p.sop_uid for p in seen[1:]} == set(manifest["sop_uid"])
        assert {p.instances_total for p in seen} <= {None, total}
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
        assert all(t.instances is None for t in targets)  # listed by QIDO-RS while the series come
        assert len(r.load(targets, progress=False, on_progress=loaded.append)) == total
        assert loaded[-1].instances_done == total
        assert {p.instances_total for p in loaded} <= {None, total}  # None until the lists came
        assert [p.instances_done for p in loaded] == list(range(total + 1))

        def stop(p: RetrievalProgress) -> None:
            if p.instances_done == 2:
                raise KeyboardInterrupt

        import pytest

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
