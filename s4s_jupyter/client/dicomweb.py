"""A DICOMweb server used directly: QIDO-RS search into pandas (PS3.18 10.6), WADO-RS metadata and
through dicomweb-client (PS3.18 10.4.1.1.2), bulk retrieval and rendered thumbnails (10.4.1.1.4) through
:class:`~s4s_jupyter.client.retrieve.Retriever`.

Works with any DICOMweb origin server (Orthanc, dcm4chee, this project's PACS) without authorization,
and with an imaging server that wants the SMART access token (``requires_access_token=True``): the token
then rides on every request, refreshed as needed by the session's :class:`TokenManager`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from s4s_jupyter.client.targets import DICOMwebEndpoint, SeriesTarget, series_targets
from s4s_jupyter.core import dicomjson
from s4s_jupyter.core.errors import ClientError
from s4s_jupyter.core.imaging_study import dicom_datetime

if TYPE_CHECKING:
    import os

    import pandas as pd
    from dicomweb_client import DICOMwebClient
    from pydicom import Dataset

    from s4s_jupyter.client.auth import TokenManager
    from s4s_jupyter.client.retrieve import ProgressCallback, Retriever

STUDY_COLUMNS = ["study_uid", "patient_id", "patient_name", "started", "accession", "description",
                 "modalities", "number_of_series", "number_of_instances", "endpoint", "requires_access_token"]
SERIES_COLUMNS = ["study_uid", "series_uid", "number", "modality", "description", "number_of_instances",
                  "endpoint", "requires_access_token"]
_STUDY_FIELDS = ["StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                 "NumberOfStudyRelatedInstances", "TimezoneOffsetFromUTC"]
_SERIES_FIELDS = ["SeriesDescription", "NumberOfSeriesRelatedInstances"]


class DicomwebClients:
    """One dicomweb-client per endpoint, with the access token where the endpoint requires it."""

    def __init__(self, tokens: TokenManager | None = None, timeout: float = 60.0) -> None:
        self.tokens = tokens
        self.timeout = timeout
        self._clients: dict[DICOMwebEndpoint, DICOMwebClient] = {}

    def __call__(self, endpoint: DICOMwebEndpoint) -> DICOMwebClient:
        if endpoint not in self._clients:
            import requests
            from dicomweb_client import DICOMwebClient

            session = requests.Session()
            if endpoint.requires_access_token:
                if self.tokens is None:
                    raise ClientError(f"{endpoint.address} requires an access token; log in first",
                                      status=401)
                from s4s_jupyter.client.auth import requests_auth

                session.auth = requests_auth(self.tokens)
            self._clients[endpoint] = DICOMwebClient(endpoint.address, session=session, timeout=self.timeout)
        return self._clients[endpoint]

    def close(self) -> None:
        for client in self._clients.values():
            client._session.close()
        self._clients.clear()


def _started(obj: Mapping[str, Any]) -> str | None:
    return dicom_datetime(dicomjson.first(obj, "StudyDate"), dicomjson.first(obj, "StudyTime"),
                          dicomjson.first(obj, "TimezoneOffsetFromUTC"))


def studies_frame(found: Sequence[Mapping[str, Any]], endpoint: DICOMwebEndpoint) -> pd.DataFrame:
    """QIDO-RS study results as a DataFrame (:data:`STUDY_COLUMNS`)."""
    import pandas as pd

    from s4s_jupyter.client.flatten import to_datetime

    rows = [{
        "study_uid": dicomjson.first(s, "StudyInstanceUID"), "patient_id": dicomjson.first(s, "PatientID"),
        "patient_name": dicomjson.first(s, "PatientName"), "started": _started(s),
        "accession": dicomjson.first(s, "AccessionNumber"),
        "description": dicomjson.first(s, "StudyDescription"),
        "modalities": ",".join(dicomjson.values(s, "ModalitiesInStudy")) or None,
        "number_of_series": dicomjson.first(s, "NumberOfStudyRelatedSeries"),
        "number_of_instances": dicomjson.first(s, "NumberOfStudyRelatedInstances"),
        "endpoint": endpoint.address, "requires_access_token": endpoint.requires_access_token,
    } for s in found]
    frame = pd.DataFrame(rows, columns=STUDY_COLUMNS)
    frame["started"] = to_datetime(frame["started"])
    for name in ("number_of_series", "number_of_instances"):
        frame[name] = frame[name].astype("Int64")
    return frame


def series_frame(found: Sequence[Mapping[str, Any]], study_uid: str, endpoint: DICOMwebEndpoint
                 ) -> pd.DataFrame:
    import pandas as pd

    rows = [{
        "study_uid": study_uid, "series_uid": dicomjson.first(s, "SeriesInstanceUID"),
        "number": dicomjson.first(s, "SeriesNumber"), "modality": dicomjson.first(s, "Modality"),
        "description": dicomjson.first(s, "SeriesDescription"),
        "number_of_instances": dicomjson.first(s, "NumberOfSeriesRelatedInstances"),
        "endpoint": endpoint.address, "requires_access_token": endpoint.requires_access_token,
    } for s in found]
    frame = pd.DataFrame(rows, columns=SERIES_COLUMNS)
    for name in ("number", "number_of_instances"):
        frame[name] = frame[name].astype("Int64")
    return frame.sort_values(["number", "series_uid"], ignore_index=True)


def metadata(targets: Sequence[SeriesTarget], clients: Callable[[DICOMwebEndpoint], DICOMwebClient],
             first_only: bool = False) -> list[Dataset]:
    """WADO-RS metadata of the targets' instances as pydicom Datasets, without bulk data (PS3.18
    10.4.1.1.2). Attributes the server sends as ``BulkDataURI`` (pixel data) are left out."""
    from pydicom import Dataset

    out: list[Dataset] = []
    for t in targets:
        found = clients(t.endpoint).retrieve_series_metadata(t.study_uid, t.series_uid)
        found.sort(key=lambda m: (int(dicomjson.first(m, "InstanceNumber", 0) or 0),
                                  str(dicomjson.first(m, "SOPInstanceUID", ""))))
        if t.only is not None:
            found = [m for m in found if dicomjson.first(m, "SOPInstanceUID") in t.only]
        for item in found[:1] if first_only else found:
            out.append(Dataset.from_json(_without_bulk_data(item)))
    return out


def _without_bulk_data(obj: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag, element in obj.items():
        if not isinstance(element, Mapping) or "BulkDataURI" in element:
            continue
        if element.get("vr") == "SQ" and element.get("Value"):
            element = {**element, "Value": [_without_bulk_data(i) for i in element["Value"]]}
        out[tag] = element
    return out


def thumbnails(targets: Sequence[SeriesTarget], retriever: Retriever, size: int = 128) -> pd.DataFrame:
    """One rendered PNG per series (its first instance, ``viewport={size},{size}``, PS3.18 8.3.5.1.3) as
    PIL images in a DataFrame (columns ``study_uid``, ``series_uid``, ``sop_uid``, ``image``)."""
    import pandas as pd
    from PIL import Image

    rows = []
    for t in retriever.resolve(targets):
        expected = t.expected() or ()
        if not expected:
            continue
        png = retriever.rendered(t, expected[0].sop_uid, size)
        image = Image.open(io.BytesIO(png))
        image.load()
        rows.append({"study_uid": t.study_uid, "series_uid": t.series_uid, "sop_uid": expected[0].sop_uid,
                     "image": image})
    return pd.DataFrame(rows, columns=["study_uid", "series_uid", "sop_uid", "image"])


class DICOMweb:
    """A DICOMweb server (base URL ``.../dicom-web``) used directly.

    >>> pacs = DICOMweb("http://127.0.0.1:8042/dicom-web")           # doctest: +SKIP
    >>> studies = pacs.studies(PatientID="MRN100001")                 # doctest: +SKIP
    >>> datasets = pacs.retrieve(studies.iloc[0])                     # doctest: +SKIP
    >>> manifest = pacs.download(studies, "images/")                  # doctest: +SKIP
    """

    def __init__(self, url: str, *, requires_access_token: bool = False, tokens: TokenManager | None = None,
                 connections_per_host: int = 4, timeout: float = 120.0) -> None:
        from s4s_jupyter.client.auth import BearerAuth
        from s4s_jupyter.client.retrieve import Retriever

        self.endpoint = DICOMwebEndpoint(url, requires_access_token)
        self.clients = DicomwebClients(tokens, timeout)
        self.retriever: Retriever = Retriever(auth=BearerAuth(tokens) if tokens else None,
                                              connections_per_host=connections_per_host, timeout=timeout)

    def close(self) -> None:
        self.retriever.close()
        self.clients.close()

    def __enter__(self) -> DICOMweb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def studies(self, **filters: str) -> pd.DataFrame:
        """QIDO-RS study search; ``filters`` are attribute keywords (``PatientID="MRN1"``,
        ``StudyDate="20200101-"``, ``ModalitiesInStudy="CT"``), PS3.18 10.6.1.2."""
        found = self.clients(self.endpoint).search_for_studies(search_filters=filters or None,
                                                               fields=_STUDY_FIELDS)
        return studies_frame(found, self.endpoint)

    def series(self, study_uid: str) -> pd.DataFrame:
        """The series of a study (QIDO-RS)."""
        found = self.clients(self.endpoint).search_for_series(study_uid, fields=_SERIES_FIELDS)
        return series_frame(found, study_uid, self.endpoint)

    def targets(self, what: Any) -> list[SeriesTarget]:
        return series_targets(what, endpoint=self.endpoint, qido=self.retriever.qido)

    def retrieve(self, what: Any, *, first_only: bool = False, progress: bool = True,
                 on_progress: ProgressCallback | None = None) -> list[Dataset]:
        """Instances as pydicom Datasets (``what``: study UID, DataFrame/row of studies or series)."""
        return self.retriever.load(self.targets(what), first_only=first_only, progress=progress,
                                   on_progress=on_progress)

    def download(self, what: Any, directory: str | os.PathLike[str], *, first_only: bool = False,
                 progress: bool = True, on_progress: ProgressCallback | None = None,
                 checksum: str = "crc32") -> pd.DataFrame:
        """Instances to files under ``directory``; returns the manifest (see :meth:`Retriever.download`)."""
        return self.retriever.download(self.targets(what), directory, first_only=first_only,
                                       progress=progress, on_progress=on_progress, checksum=checksum)

    def metadata(self, what: Any, *, first_only: bool = False) -> list[Dataset]:
        return metadata(self.targets(what), self.clients, first_only)

    def thumbnails(self, what: Any, size: int = 128) -> pd.DataFrame:
        """A rendered PNG thumbnail of the first instance of each series (PIL images in ``image``)."""
        return thumbnails(self.targets(what), self.retriever, size)
