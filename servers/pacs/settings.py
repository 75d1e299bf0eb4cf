"""Settings of the PACS, one frozen value object handed to :func:`servers.pacs.app.make_app`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from servers.runtime import UNSENT_LIMIT_BYTES

#: URL path prefix of the DICOMweb service: the base URL is ``http://host:port/dicom-web``.
BASE_PATH = "/dicom-web"


@dataclass(frozen=True)
class PACSSettings:
    """What the PACS needs to run.

    - ``data_dir``: folder of the store (SQLite index ``index.sqlite3``, files under ``objects/``).
    - ``max_upload_bytes``: STOW-RS bodies larger than this are refused with 413 before being read.
    - ``max_part_bytes``: one STOW-RS part (one instance) is held in memory until it is stored; larger
      parts fail alone (FailureReason 0xA700, out of resources).
    - ``bulk_data_threshold``: binary values longer than this (bytes) are BulkDataURIs in metadata.
    - ``read_chunk_bytes``: chunk size when streaming stored files (large chunks: fewer syscalls/flushes).
    - ``workers``: threads for blocking work (SQLite, file I/O, pixel rendering).
    - ``fsync``: fsync each stored file and its folder before indexing it (crash safety; tests keep it on).
    - ``sendfile_min_bytes``: stored files at least this large are sent with ``sendfile(2)`` (no copy
      through Python) when the answer's length is known; smaller ones are read and sent in blocks, with
      their multipart delimiters, several files to a block. ``None`` turns zero-copy sending off. Each
      file sent with ``sendfile`` costs a delimiter write, a flush and a ``sendfile`` call, and saves a
      copy through Python: 64 KiB. On 128 KiB files (``make bench --size small``, two runs each, side by
      side with Orthanc) ``sendfile`` gave 4 concurrent retrieves 1.04x and 1.18x Orthanc against 0.95x
      and 0.89x for the block path, 8 concurrent 1.61-1.72x against 1.33-1.36x, one httpx stream
      1.26-1.45x against 1.44-1.63x (it had been 256 KiB while a slower httpx client favoured blocks).
    - ``unsent_limit_bytes``: on TCP connections answered with ``sendfile``, at most about this much
      data waits in the kernel's send queue unsent (``TCP_NOTSENT_LOWAT``; why:
      :func:`servers.runtime.limit_unsent`); ``None`` leaves the kernel's default (no limit).
    - ``shared_store``: the store's folder is owned by a supervisor process (``--processes N``): open it
      without locking or tidying it (see :class:`servers.pacs.store.Store`).
    """

    data_dir: Path
    max_upload_bytes: int = 2 * 1024**3
    max_part_bytes: int = 512 * 1024**2
    bulk_data_threshold: int = 1024
    read_chunk_bytes: int = 4 * 1024 * 1024
    workers: int = 8
    fsync: bool = True
    sendfile_min_bytes: int | None = 64 * 1024
    unsent_limit_bytes: int | None = UNSENT_LIMIT_BYTES
    shared_store: bool = False
