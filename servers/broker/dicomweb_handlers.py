"""The broker's DICOMweb pass-through (``{broker}/dicom-web``): QIDO-RS and WADO-RS, re-authorized on
every request (DESIGN.md "The flow" 6; SMART Imaging Access "Retrieval authorization").

The path is parsed here, segment by segment, into a :class:`DICOMwebPath` of validated UIDs (PS3.5
9.1), frame numbers and resource names (PS3.18 10.4.1 and 10.6.1 resource tables); the upstream path is
rebuilt from those parts alone, so no ``..``, ``%2F`` or other trick reaches the PACS. Then:

- QIDO-RS: the token's patient's PatientID is forced into the query and checked in every result;
- WADO-RS: the study (and series, instance) must belong to the token's patient, else 404; the PACS's
  answer is streamed through chunk by chunk with back-pressure; metadata is rewritten (BulkDataURI).

A PACS failure before the answer starts is a 502/503/504 status report; after it started, the
connection is closed without the final chunk / multipart delimiter, so the client sees a broken
transfer, never a complete-looking one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote

from tornado.iostream import IOStream, StreamClosedError

from s4s_jupyter.core.errors import DICOMwebError, UpstreamError
from s4s_jupyter.core.scopes import Interaction
from s4s_jupyter.core.uids import check_uid
from servers.base import DICOMwebHandler
from servers.broker.dicomweb_upstream import DICOMwebUpstream
from servers.broker.guard import GuardedMixin
from servers.broker.upstream import QueryLevel, UpstreamBroken, ZeroCopyStream
from servers.handoff import Handoff, HandoffError
from servers.runtime import SERVER_KEY

log = logging.getLogger("s4s.broker")

_FRAMES = re.compile(r"^[1-9][0-9]{0,8}(,[1-9][0-9]{0,8}){0,999}$")
_BULK_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LEAVES = ("metadata", "rendered", "thumbnail")
DICOM_JSON = "application/dicom+json"


@dataclass(frozen=True)
class DICOMwebPath:
    """One parsed DICOMweb request path."""

    kind: str  # "qido" | "retrieve" | "metadata"
    study: str | None = None
    series: str | None = None
    instance: str | None = None
    level: QueryLevel | None = None  # for qido
    upstream: str = ""  # path relative to the DICOMweb base, rebuilt from validated parts

    @classmethod
    def parse(cls, path: str) -> DICOMwebPath:
        not_found = DICOMwebError("no such DICOMweb resource", status=404)
        raw = path.strip("/")
        segs = [unquote(s) for s in raw.split("/")] if raw else []
        if not segs or any(not s for s in segs):
            raise not_found
        if len(segs) == 1:
            levels = {"studies": QueryLevel.STUDY, "series": QueryLevel.SERIES,
                      "instances": QueryLevel.INSTANCE}
            if segs[0] not in levels:
                raise not_found
            return cls("qido", level=levels[segs[0]], upstream=segs[0])
        if segs[0] != "studies":
            raise not_found
        study = check_uid(segs[1], "StudyInstanceUID")
        uids = [study]
        series = instance = None
        rest = segs[2:]
        if rest[:1] == ["series"] and len(rest) >= 2:
            series = check_uid(rest[1], "SeriesInstanceUID")
            uids.append(series)
            rest = rest[2:]
            if rest[:1] == ["instances"] and len(rest) >= 2:
                instance = check_uid(rest[1], "SOPInstanceUID")
                uids.append(instance)
                rest = rest[2:]
        base = "studies/" + study + (f"/series/{series}" if series else "") + (
            f"/instances/{instance}" if instance else "")
        if not rest:
            return cls("retrieve", study, series, instance, upstream=base)
        head = rest[0]
        if len(rest) == 1 and head == "metadata":
            return cls("metadata", study, series, instance, upstream=f"{base}/metadata")
        if len(rest) == 1 and head in _LEAVES:
            return cls("retrieve", study, series, instance, upstream=f"{base}/{head}")
        if len(rest) == 1 and instance is None and head in ("series", "instances"):
            level = QueryLevel.SERIES if head == "series" and series is None else QueryLevel.INSTANCE
            if head == "series" and series is not None:
                raise not_found
            return cls("qido", study, series, level=level, upstream=f"{base}/{head}")
        if instance and head == "frames" and len(rest) in (2, 3):
            if not _FRAMES.match(rest[1]):
                raise DICOMwebError(f"bad frame list {rest[1][:40]!r} (PS3.18 10.4.1.1.6)", status=400)
            if len(rest) == 3 and rest[2] not in ("rendered", "thumbnail"):
                raise not_found
            return cls("retrieve", study, series, instance, upstream=f"{base}/" + "/".join(rest))
        if instance and head in ("bulkdata", "bulk") and len(rest) >= 2 and all(
                _BULK_SEGMENT.match(s) for s in rest[1:]):
            return cls("retrieve", study, series, instance, upstream=f"{base}/" + "/".join(rest))
        raise not_found


def _accepts_json(accept: str | None) -> bool:
    if not accept:
        return True
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in ("*/*", "application/*", "application/json", DICOM_JSON):
            return True
    return False


class DICOMwebProxyHandler(GuardedMixin, DICOMwebHandler):
    """Every DICOMweb request under ``{broker}/dicom-web``."""

    async def get(self, _path: str | None = None) -> None:
        prefix = self.ctx.dicomweb_path
        path = DICOMwebPath.parse(self.request.path[len(prefix):])
        record = self.start_audit("query" if path.kind == "qido" else "retrieve")
        record.study_uid = path.study
        result = await self.introspect()
        if path.kind == "qido":
            access = await self.access(Interaction.SEARCH, result=result)
            if not _accepts_json(self.request.headers.get("Accept")):
                raise DICOMwebError("QIDO-RS answers application/dicom+json only", status=406)
            assert path.level is not None
            params = [(k, v) for k, v in self.query_pairs() if k != "access_token"]
            results = await self.ctx.service.qido(access.patient, path.level, params, path.study, path.series)
            if not results:
                self.set_status(204)  # PS3.18 10.6.3: no matches
                self.finish()
                return
            self.write_json(results, content_type=DICOM_JSON)
            return
        access = await self.access(Interaction.READ, result=result)
        assert path.study is not None
        if path.kind == "metadata":
            if not _accepts_json(self.request.headers.get("Accept")):
                raise DICOMwebError("metadata is served as application/dicom+json only", status=406)
            data = await self.ctx.service.metadata(access.patient, path.upstream, path.study, path.series,
                                                   path.instance)
            self.write_json(data, content_type=DICOM_JSON)
            return
        await self.ctx.service.check_owner(access.patient, path.study, path.series, path.instance)
        upstream = self.ctx.service.upstream
        client = getattr(self.request.connection, "stream", None)
        if ((self.ctx.settings.pacs_handoff or self.ctx.local_pacs) and isinstance(upstream, DICOMwebUpstream)
                and type(client) is IOStream and self.request.version == "HTTP/1.1"):
            await self._hand_off(path, upstream, client)
            return
        await self._stream(path)

    async def _hand_off(self, path: DICOMwebPath, upstream: DICOMwebUpstream, client: IOStream) -> None:
        """Have the PACS answer this request on the client's connection: the PACS's own process, given the
        connection (:mod:`servers.handoff`), or its application in this process
        (:mod:`servers.broker.local_pacs`). The audit records the status it answered. A connection that
        comes back is served again here, for the client's next request."""
        params = [(k, v) for k, v in self.query_pairs() if k != "access_token"]
        keep_alive = self.request.headers.get("Connection", "").lower() != "close"
        head = upstream.request_head(path.upstream, params, self.request.headers.get("Accept"), keep_alive)
        address = getattr(getattr(self.request.connection, "context", None), "address", ())
        local = self.ctx.local_pacs
        handoff = None
        if local is None:
            assert self.ctx.settings.pacs_handoff is not None
            handoff = Handoff.of(self.ctx.settings.pacs_handoff, client)
        kept = False
        try:
            if handoff is not None:
                try:
                    await handoff.connect()
                except HandoffError as exc:
                    log.error("%s", exc)
                    raise UpstreamError("the PACS cannot be reached") from None
            self.detach()  # from here on the answer is the PACS's (on ``client``, the stream detached)
            self._auto_finish = False
            if local is not None:
                status, back = await local.answer(head, client)
            else:
                assert handoff is not None
                try:
                    await handoff.give(head, client.socket)
                except HandoffError as exc:
                    log.error("%s", exc)
                    self.finish_audit(502, "the PACS did not take the connection")
                    return
                finally:
                    client.close()  # this process's descriptor only: the PACS holds the connection
                status, back = await handoff.outcome()
            self.finish_audit(status or 502, "" if status else "the PACS did not complete its answer")
            if back is not None:
                again = IOStream(back)
                if handoff is not None:
                    handoff.keep(again)
                kept = True
                self.settings[SERVER_KEY].handle_stream(again, address)
        finally:
            if handoff is not None and not kept:
                handoff.close()

    async def _stream(self, path: DICOMwebPath) -> None:
        params = [(k, v) for k, v in self.query_pairs() if k != "access_token"]
        upstream = self.ctx.service.upstream
        async with upstream.retrieve(path.upstream, params, self.request.headers.get("Accept")) as answer:
            self.set_status(answer.status)
            for name, value in answer.headers.items():
                if name == "content-location":
                    new = self.ctx.service.rewriter.header(value)
                    if new:
                        self.set_header("Content-Location", new)
                else:
                    self.set_header(name, value)
            client = getattr(self.request.connection, "stream", None)
            if (isinstance(answer, ZeroCopyStream) and answer.spliceable and type(client) is IOStream
                    and self.request.version == "HTTP/1.1"):
                await self._splice(answer, client)
                return
            try:
                await self.flush()  # the status line and headers go out as soon as the PACS sent its own
                connection = self.request.connection
                assert connection is not None
                async for chunk in answer.iter_bytes():
                    # straight to the connection (no copy into the handler's buffer); waiting for the
                    # write before the next read is the back-pressure that keeps memory flat
                    await connection.write(cast(bytes, chunk))
            except UpstreamBroken as exc:
                await self._break(str(exc))
                return
            except StreamClosedError:
                self.finish_audit(499, "client went away")
                self._auto_finish = False
                return

    async def _splice(self, answer: ZeroCopyStream, client: IOStream) -> None:
        """The body moves from the PACS's socket to the client's with ``splice(2)`` (no copy through
        Python). The connection closes after it (``Connection: close``): the body bypassed Tornado's
        accounting, so it cannot be reused."""
        self.set_header("Connection", "close")
        try:
            await self.flush()
            await answer.splice_to(client.socket.fileno())
        except UpstreamBroken as exc:
            await self._break(str(exc))
            return
        except (OSError, StreamClosedError, TimeoutError):
            self.finish_audit(499, "client went away")
        else:
            self.finish_audit(self.get_status())
        self._auto_finish = False
        self.request.connection.close()  # type: ignore[union-attr]

    async def _break(self, why: str) -> None:
        """End the answer as a broken transfer: what arrived goes out, then the connection closes
        without the final chunk / multipart close delimiter, so no client takes it for complete."""
        log.warning("%s: %s; closing the client connection mid-answer", self.request.path, why)
        self.finish_audit(502, "upstream broke off mid-answer")
        self._auto_finish = False
        with contextlib.suppress(StreamClosedError, TimeoutError):
            await asyncio.wait_for(self.flush(), 10)
        self.request.connection.close()  # type: ignore[union-attr]
