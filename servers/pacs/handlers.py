"""HTTP handlers of the PACS: parse the request, call the domain (store, QIDO, WADO, STOW), write the answer.

Errors are raised as :mod:`s4s_jupyter.core.errors` types and written by
:class:`servers.base.DICOMwebHandler` (status code plus JSON status report). Blocking work runs in the
application's thread pool; retrievals are streamed in large blocks with a flush between blocks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import tornado.web

from s4s_jupyter.core.errors import DICOMwebError
from s4s_jupyter.core.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    new_boundary,
    parse_content_type,
    related_content_type,
)
from s4s_jupyter.core.uids import check_uid
from servers import handoff
from servers.base import DICOMwebHandler
from servers.pacs import negotiation as neg
from servers.pacs import rendering, wado
from servers.pacs.qido import BadQuery, QidoService, QueryLevel, parse_query
from servers.pacs.segments import Segment
from servers.pacs.settings import PACSSettings
from servers.pacs.store import BASE, Store
from servers.pacs.stow import PayloadTooLarge, StoreTransaction, UnsupportedMediaType
from servers.pacs.streaming import send

T = TypeVar("T")
log = logging.getLogger("s4s.pacs")
DICOM_JSON = "application/dicom+json"
UID = r"([^/]+)"


@dataclass
class PACSContext:
    """What every handler needs: the settings, the store, the QIDO service, the pool, the base URL."""

    settings: PACSSettings
    store: Store
    qido: QidoService
    executor: ThreadPoolExecutor
    base_url: str  # the DICOMweb base URL, e.g. http://127.0.0.1:8042/dicom-web


class PACSHandler(DICOMwebHandler):
    ctx: PACSContext

    def initialize(self, ctx: PACSContext) -> None:
        self.ctx = ctx

    def on_finish(self) -> None:
        handoff.report(self.request, self.get_status())  # a connection a broker handed over: its status

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.ctx.executor, fn, *args)

    def accept(self) -> list[neg.MediaRange]:
        return neg.parse_accept(self.request.headers.get("Accept"))

    def uid(self, value: str, what: str) -> str:
        return check_uid(value, what)

    def query_args(self) -> dict[str, list[str]]:
        try:
            return {k: [v.decode("utf-8") for v in vs] for k, vs in self.request.query_arguments.items()}
        except UnicodeDecodeError:
            raise BadQuery("query parameters must be UTF-8") from None

    def write_text(self, text: str, content_type: str) -> None:
        body = text.encode("utf-8")
        self.set_header("Content-Type", content_type)
        self.set_header("Content-Length", str(len(body)))
        self.finish(body)

    async def stream(self, segments: list[Segment], content_type: str) -> None:
        """Send ``segments`` as the body (see :func:`servers.pacs.streaming.send`)."""
        settings = self.ctx.settings
        await send(self, segments, content_type, self.ctx.executor, settings.read_chunk_bytes,
                   settings.sendfile_min_bytes, settings.unsent_limit_bytes)


# -- QIDO-RS -------------------------------------------------------------------------------------------


class SearchMixin(PACSHandler):
    async def search(self, level: QueryLevel, study: str | None = None, series: str | None = None) -> None:
        """Search Transaction (PS3.18 10.6): 200 with a JSON array, 204 when nothing matches."""
        if not neg.choose_json(self.accept()):
            raise wado.NotAcceptable("QIDO-RS answers application/dicom+json only")
        q = parse_query(level, self.query_args(),
                        study_uid=self.uid(study, "StudyInstanceUID") if study else None,
                        series_uid=self.uid(series, "SeriesInstanceUID") if series else None)
        text = await self.run(self.ctx.qido.search, q, self.ctx.base_url)
        if text is None:
            self.set_status(204)
            self.finish()
            return
        self.write_text(text, DICOM_JSON)


class SeriesSearchHandler(SearchMixin):
    async def get(self, study: str | None = None) -> None:
        await self.search(QueryLevel.SERIES, study)


class InstanceSearchHandler(SearchMixin):
    async def get(self, study: str | None = None, series: str | None = None) -> None:
        await self.search(QueryLevel.INSTANCE, study, series)


# -- STOW-RS (and the resources that share its URLs) -------------------------------------------------------


@tornado.web.stream_request_body
class StudiesHandler(SearchMixin):
    """``/studies``: GET searches for studies (QIDO-RS), POST stores instances (STOW-RS, PS3.18 10.5).
    ``/studies/{study}``: GET retrieves the study (WADO-RS), POST stores instances of that study."""

    _parser: MultipartParser | None = None
    _tx: StoreTransaction
    _received: int = 0
    _too_large: bool = False
    _malformed: str | None = None
    _part_type: str = ""
    _part: list[bytes]
    _part_size: int = 0
    _study: str | None = None
    _refusal: DICOMwebError | None = None
    _pending: set[asyncio.Future[None]]

    async def prepare(self) -> None:
        if self.request.method != "POST":
            return
        settings = self.ctx.settings
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > settings.max_upload_bytes:
            # answered now, before the body is read; the connection is closed afterwards
            raise PayloadTooLarge(f"the body ({length} bytes) exceeds the limit of "
                                  f"{settings.max_upload_bytes} bytes")
        # tornado's own limit would cut the connection; ours answers 413 (chunked bodies: a hard cap)
        connection = self.request.connection
        if connection is not None and hasattr(connection, "set_max_body_size"):
            connection.set_max_body_size(2 * settings.max_upload_bytes + 1024 * 1024)
        try:
            self._parser = self._start()
        except DICOMwebError as exc:
            # other refusals are answered once the (bounded) body is consumed, so the client reads them
            self._refusal = exc

    def _start(self) -> MultipartParser:
        media, params = parse_content_type(self.request.headers.get("Content-Type", ""))
        if media != "multipart/related":
            raise UnsupportedMediaType(
                f"STOW-RS takes multipart/related; type=\"application/dicom\", not {media or 'no type'!r}")
        part_type = params.get("type", "application/dicom").lower()
        if part_type != "application/dicom":
            raise UnsupportedMediaType(f"parts of type {part_type!r} are not supported; "
                                       "send application/dicom")
        boundary = params.get("boundary")
        if not boundary:
            raise DICOMwebError("multipart/related body without a boundary parameter")
        path_args = self.path_args
        self._study = self.uid(path_args[0], "StudyInstanceUID") if path_args else None
        try:
            parser = MultipartParser(boundary)
        except MultipartError as exc:
            raise DICOMwebError(str(exc)) from None
        self._tx = StoreTransaction(self._study)
        self._part = []
        self._pending = set()
        return parser

    async def data_received(self, chunk: bytes) -> None:
        if self._parser is None or self._too_large or self._malformed:
            return
        self._received += len(chunk)
        if self._received > self.ctx.settings.max_upload_bytes:
            # a chunked body past the limit: answer now; Tornado discards the rest and then closes
            self._too_large = True
            self._part = []
            exc = PayloadTooLarge(
                f"the body exceeds the limit of {self.ctx.settings.max_upload_bytes} bytes; "
                f"{len(self._tx.stored)} instance(s) completed before the limit were stored")
            self.send_error(413, exc_info=(PayloadTooLarge, exc, None))
            return
        try:
            events = list(self._parser.feed(chunk))
        except MultipartError as exc:
            self._malformed = str(exc)
            return
        for event in events:
            if isinstance(event, PartStart):
                self._part_type = event.headers.get("content-type", "application/dicom")
                self._part = []
                self._part_size = 0
            elif isinstance(event, PartData):
                self._part_size += len(event.data)
                if self._part_size <= self.ctx.settings.max_part_bytes:
                    self._part.append(bytes(event.data))  # bytes already (the parser makes no views)
                else:
                    self._part = []  # a part is held in memory until it is stored: drop it
            elif isinstance(event, PartEnd):
                if self._part_size > self.ctx.settings.max_part_bytes:
                    self._tx.add_oversized(self._part_size, self.ctx.settings.max_part_bytes)
                    continue
                data, self._part = b"".join(self._part), []
                media, _ = parse_content_type(self._part_type)
                if media != "application/dicom":
                    self._tx.add_unsupported(self._part_type)
                    continue
                if not self.ctx.store.fsync:
                    # storing is then CPU and page-cache writes only: done here, on the event loop. In
                    # worker threads it cost GIL hand-offs and lock convoys (4 connections: 314-338
                    # against 364-393 instances/s here; 1 connection level), docs/pacs.md
                    self._store_here(data)
                    continue
                # parts are stored concurrently (fsync latency overlaps), a few at a time (bounded memory)
                self._pending.add(asyncio.ensure_future(self._store_part(data)))
                if len(self._pending) >= self.ctx.settings.workers:
                    _, self._pending = await asyncio.wait(self._pending, return_when=asyncio.FIRST_COMPLETED)

    async def _store_part(self, data: bytes) -> None:
        try:
            stored = await self.run(self.ctx.store.put, data, self._study)
        except Exception as exc:  # an unexpected failure of one part must not lose the others' outcome
            self._failed(data, exc)
        else:
            self._tx.add_stored(stored)

    def _store_here(self, data: bytes) -> None:
        try:
            stored = self.ctx.store.put(data, self._study)
        except Exception as exc:
            self._failed(data, exc)
        else:
            self._tx.add_stored(stored)

    def _failed(self, data: bytes, exc: Exception) -> None:
        if not isinstance(exc, DICOMwebError):
            log.error("storing a part failed", exc_info=exc)
        self._tx.add_failure(data, exc)

    def on_connection_close(self) -> None:
        for task in getattr(self, "_pending", ()):
            task.cancel()

    async def post(self, study: str | None = None) -> None:
        if self._refusal is not None:
            raise self._refusal
        if self._pending:
            await asyncio.gather(*self._pending)
            self._pending = set()
        if self._finished:  # already answered (413 while the body was arriving)
            return
        if self._malformed:
            raise DICOMwebError(f"malformed multipart/related body: {self._malformed}")
        assert self._parser is not None
        try:
            self._parser.close()
        except MultipartError as exc:
            raise DICOMwebError(f"malformed multipart/related body: {exc}") from None
        tx = self._tx
        if not tx.stored and not tx.failed:
            raise DICOMwebError("the multipart/related body holds no part")
        self.set_status(tx.status())
        summary = "".join(ch if " " <= ch <= "~" and ch != '"' else " " for ch in tx.message())[:1000]
        self.set_header("Warning", f'299 - "{summary}"')
        body = json.dumps(tx.response(), separators=(",", ":"), ensure_ascii=False)
        body = body.replace(BASE, self.ctx.base_url)
        self.write_text(body, DICOM_JSON)

    async def get(self, study: str | None = None) -> None:
        if study is None:
            await self.search(QueryLevel.STUDY)
        else:
            await retrieve(self, study)


# -- WADO-RS ---------------------------------------------------------------------------------------------


async def retrieve(h: PACSHandler, study: str, series: str | None = None,
                   instance: str | None = None) -> None:
    """Retrieve Study / Series / Instance (PS3.18 10.4.1.1.1) as multipart/related application/dicom."""
    study = h.uid(study, "StudyInstanceUID")
    series = h.uid(series, "SeriesInstanceUID") if series else None
    instance = h.uid(instance, "SOPInstanceUID") if instance else None
    files = await h.run(h.ctx.store.instance_files, study, series, instance)
    if not files:
        raise wado.NotFound("no such " + ("instance" if instance else "series" if series else "study"))
    choice = neg.choose_dicom_syntax(h.accept(), {f.transfer_syntax for f in files})
    if choice is None:
        raise wado.NotAcceptable("cannot send these objects in the media type / transfer syntax asked for; "
                                 "supported: application/dicom with transfer-syntax=* (as stored), "
                                 "1.2.840.10008.1.2.1 or 1.2.840.10008.1.2")
    syntax, named = choice
    boundary = new_boundary()
    await h.stream(wado.instance_segments(files, syntax, boundary, fallback_as_stored=not named),
                   related_content_type(boundary, "application/dicom"))


class SeriesHandler(PACSHandler):
    async def get(self, study: str, series: str) -> None:
        await retrieve(self, study, series)


class InstanceHandler(PACSHandler):
    async def get(self, study: str, series: str, instance: str) -> None:
        await retrieve(self, study, series, instance)


class MetadataHandler(PACSHandler):
    """Retrieve Metadata (PS3.18 10.4.1.1.2): the stored DICOM JSON, never a parsed file."""

    async def get(self, study: str, series: str | None = None, instance: str | None = None) -> None:
        if not neg.choose_json(self.accept()):
            raise wado.NotAcceptable("metadata is available as application/dicom+json only")
        study = self.uid(study, "StudyInstanceUID")
        series = self.uid(series, "SeriesInstanceUID") if series else None
        instance = self.uid(instance, "SOPInstanceUID") if instance else None
        texts = await self.run(self.ctx.store.metadata, study, series, instance)
        if not texts:
            raise wado.NotFound("no such " + ("instance" if instance else "series" if series else "study"))
        self.write_text(("[" + ",".join(texts) + "]").replace(BASE, self.ctx.base_url), DICOM_JSON)


async def _one_instance(h: PACSHandler, study: str, series: str, instance: str) -> Any:
    files = await h.run(h.ctx.store.instance_files, h.uid(study, "StudyInstanceUID"),
                        h.uid(series, "SeriesInstanceUID"), h.uid(instance, "SOPInstanceUID"))
    if not files:
        raise wado.NotFound("no such instance")
    return files[0]


class FramesHandler(PACSHandler):
    """Retrieve Frames (PS3.18 10.4.1.1.3) as multipart/related application/octet-stream."""

    async def get(self, study: str, series: str, instance: str, frame_list: str) -> None:
        f = await _one_instance(self, study, series, instance)
        if f.pixel_length is None:
            raise wado.NotFound("the instance has no pixel data")
        frames = wado.parse_frame_list(frame_list, f.number_of_frames or 1)
        syntax = neg.choose_frame_syntax(self.accept(), f.transfer_syntax)
        if syntax is None:
            raise wado.NotAcceptable("frames are available as application/octet-stream with "
                                     f"transfer-syntax=* ({f.transfer_syntax}) or 1.2.840.10008.1.2.1")
        meta = (await self.run(self.ctx.store.metadata, f.study_uid, f.series_uid, f.sop_uid))[0]
        boundary = new_boundary()
        await self.stream(wado.frame_segments(f, meta, frames, syntax, boundary),
                          related_content_type(boundary, "application/octet-stream"))


class BulkDataHandler(PACSHandler):
    """Retrieve Bulkdata (PS3.18 10.4.1.1.5): the targets of the BulkDataURIs in metadata."""

    async def get(self, study: str, series: str, instance: str, tag_path: str) -> None:
        f = await _one_instance(self, study, series, instance)
        tag_path = tag_path.strip("/").upper()
        if tag_path == "7FE00010":
            if f.pixel_length is None:
                raise wado.NotFound("the instance has no pixel data")
            syntax = neg.choose_frame_syntax(self.accept(), f.transfer_syntax)
            if syntax is None:
                raise wado.NotAcceptable("pixel data is available as application/octet-stream with "
                                         f"transfer-syntax=* ({f.transfer_syntax}) or 1.2.840.10008.1.2.1")
            meta = (await self.run(self.ctx.store.metadata, f.study_uid, f.series_uid, f.sop_uid))[0]
            frames = list(range(1, (f.number_of_frames or 1) + 1))
            boundary = new_boundary()
            await self.stream(wado.frame_segments(f, meta, frames, syntax, boundary),
                              related_content_type(boundary, "application/octet-stream"))
            return
        if not all(p.isdigit() or len(p) == 8 for p in tag_path.split("/")):
            raise wado.NotFound(f"no bulk data at {tag_path}")
        if not any(m.media_type in ("multipart/related", "application/octet-stream", "*/*", "multipart/*")
                   for m in self.accept()):
            raise wado.NotAcceptable("bulk data is available as multipart/related application/octet-stream")
        value = await self.run(wado.bulk_value, f.path, tag_path)
        boundary = new_boundary()
        from s4s_jupyter.core.multipart import closing, part_head

        await self.stream([part_head(boundary, "application/octet-stream", first=True), value,
                           closing(boundary)], related_content_type(boundary, "application/octet-stream"))


class RenderedHandler(PACSHandler):
    """Rendered (PS3.18 10.4.1.1.4) and thumbnail (10.4.1.1.6) images of an instance or frame."""

    thumbnail: bool = False

    def initialize(self, ctx: PACSContext, thumbnail: bool = False) -> None:
        self.ctx = ctx
        self.thumbnail = thumbnail

    async def get(self, study: str, series: str | None = None, instance: str | None = None,
                  frame_list: str | None = None) -> None:
        media = neg.choose_image(self.accept())
        if media is None:
            raise wado.NotAcceptable("rendered images are available as image/jpeg or image/png")
        options = rendering.parse_render_options(self.query_args(), media,
                                                 (128, 128) if self.thumbnail else None)
        study = self.uid(study, "StudyInstanceUID")
        files = await self.run(self.ctx.store.instance_files, study,
                               self.uid(series, "SeriesInstanceUID") if series else None,
                               self.uid(instance, "SOPInstanceUID") if instance else None)
        files = [f for f in files if f.pixel_length is not None]
        if not files:
            raise wado.NotFound("nothing to render here")
        f = files[len(files) // 2]  # study/series thumbnails show a representative (middle) instance
        frame = 1
        if frame_list is not None:
            frames = wado.parse_frame_list(frame_list, f.number_of_frames or 1)
            if len(frames) != 1:
                raise DICOMwebError("render one frame at a time")
            frame = frames[0]
        elif f.number_of_frames and not self.thumbnail:
            frame = 1
        if not neg.can_decode(f.transfer_syntax):
            raise wado.NotAcceptable(f"cannot decode pixel data in {f.transfer_syntax}")
        image = await self.run(rendering.render, f.path, frame, options)
        self.set_header("Content-Type", media)
        self.set_header("Content-Length", str(len(image)))
        self.finish(image)


class NotFoundHandler(DICOMwebHandler):
    """Every other URL: 404 in the DICOMweb error form (not Tornado's HTML page)."""

    def prepare(self) -> None:
        raise wado.NotFound(f"no DICOMweb resource at {self.request.path}")


def routes(ctx: PACSContext, prefix: str) -> list[tornado.web.URLSpec]:
    """The DICOMweb resources under ``prefix`` (PS3.18 10.4-10.6)."""
    p = prefix.rstrip("/")
    study = f"{p}/studies/{UID}"
    series = f"{study}/series/{UID}"
    instance = f"{series}/instances/{UID}"
    frames = f"{instance}/frames/([^/]+)"
    kw = {"ctx": ctx}
    thumb = {"ctx": ctx, "thumbnail": True}
    return [
        tornado.web.url(f"{p}/studies", StudiesHandler, kw),
        tornado.web.url(f"{p}/series", SeriesSearchHandler, kw),
        tornado.web.url(f"{p}/instances", InstanceSearchHandler, kw),
        tornado.web.url(study, StudiesHandler, kw),
        tornado.web.url(f"{study}/metadata", MetadataHandler, kw),
        tornado.web.url(f"{study}/series", SeriesSearchHandler, kw),
        tornado.web.url(f"{study}/instances", InstanceSearchHandler, kw),
        tornado.web.url(f"{study}/thumbnail", RenderedHandler, thumb),
        tornado.web.url(series, SeriesHandler, kw),
        tornado.web.url(f"{series}/metadata", MetadataHandler, kw),
        tornado.web.url(f"{series}/instances", InstanceSearchHandler, kw),
        tornado.web.url(f"{series}/thumbnail", RenderedHandler, thumb),
        tornado.web.url(instance, InstanceHandler, kw),
        tornado.web.url(f"{instance}/metadata", MetadataHandler, kw),
        tornado.web.url(f"{instance}/rendered", RenderedHandler, kw),
        tornado.web.url(f"{instance}/thumbnail", RenderedHandler, thumb),
        tornado.web.url(f"{instance}/bulkdata/(.+)", BulkDataHandler, kw),
        tornado.web.url(frames, FramesHandler, kw),
        tornado.web.url(f"{frames}/rendered", RenderedHandler, kw),
        tornado.web.url(f"{frames}/thumbnail", RenderedHandler, thumb),
    ]
