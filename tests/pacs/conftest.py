"""Fixtures of the PACS tests: the real PACS app on a free port, stores in temporary folders."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest

from s4s_jupyter.core.multipart import encode_parts, iter_parts, parse_content_type
from servers.demo_data.dicom import iter_plan
from servers.demo_data.plan import DemoPlan
from servers.pacs.app import make_app
from servers.pacs.handlers import PACSContext
from servers.pacs.seed import seed
from servers.pacs.settings import PACSSettings
from servers.pacs.store import Store
from servers.runtime import ServerLoop

STOW_TYPE = 'multipart/related; type="application/dicom"; boundary={}'


@dataclass
class PACS:
    """A running PACS: its DICOMweb base URL, its settings and an HTTP client."""

    url: str
    settings: PACSSettings
    http: httpx.Client
    ctx: PACSContext

    @property
    def store(self) -> Store:
        return self.ctx.store

    def stow(self, parts: list[bytes] | list[tuple[str, bytes]], study: str | None = None,
             content_type: str | None = None) -> httpx.Response:
        """POST a STOW-RS request with ``parts`` (bytes are sent as application/dicom)."""
        typed = [p if isinstance(p, tuple) else ("application/dicom", p) for p in parts]
        body, boundary = encode_parts(typed)
        url = f"{self.url}/studies" + (f"/{study}" if study else "")
        return self.http.post(url, content=body,
                              headers={"Content-Type": content_type or STOW_TYPE.format(boundary)})

    def get(self, path: str, accept: str | None = None, **params: str) -> httpx.Response:
        headers = {"Accept": accept} if accept else {}
        return self.http.get(self.url + path, headers=headers, params=params or None)


def start_pacs(loop: ServerLoop, settings: PACSSettings) -> PACS:
    served = loop.serve(lambda url: make_app(settings, url))
    return PACS(served.url + "/dicom-web", settings, httpx.Client(timeout=30), served.app.settings["pacs"])


@pytest.fixture
def pacs(server_loop: ServerLoop, tmp_path: Path) -> Iterator[PACS]:
    """An empty PACS of this test alone (upload limit 4 MiB so the 413 paths are cheap to reach)."""
    p = start_pacs(server_loop, PACSSettings(data_dir=tmp_path / "pacs", max_upload_bytes=4 * 1024 * 1024))
    yield p
    p.http.close()


@pytest.fixture(scope="module")
def loaded_pacs(server_loop: ServerLoop, small_plan: DemoPlan,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[PACS]:
    """A PACS holding the small plan's studies (read-only tests share it)."""
    p = start_pacs(server_loop, PACSSettings(data_dir=tmp_path_factory.mktemp("loaded") / "pacs"))
    seed(p.store, small_plan)
    yield p
    p.http.close()


@pytest.fixture(scope="session")
def plan_files(small_plan: DemoPlan) -> dict[str, bytes]:
    """SOP Instance UID -> Part 10 bytes of every instance of the small plan."""
    return dict(iter_plan(small_plan))


def parse_multipart(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    media, params = parse_content_type(response.headers["content-type"])
    assert media == "multipart/related", response.headers["content-type"]
    return list(iter_parts(response.content, params["boundary"]))


def read_dicom(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


