"""The PACS application factory: ``make_app(settings, base_url)`` builds the Tornado application."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tornado.web

from servers.base import log_request
from servers.pacs.handlers import NotFoundHandler, PACSContext, routes
from servers.pacs.qido import QidoService
from servers.pacs.settings import BASE_PATH, PACSSettings
from servers.pacs.store import Store
from servers.runtime import CLEANUP_KEY


def dicomweb_url(base_url: str) -> str:
    """The DICOMweb base URL of a PACS served at ``base_url`` (``http://host:port`` -> ``.../dicom-web``)."""
    return base_url.rstrip("/") + BASE_PATH


def make_app(settings: PACSSettings, base_url: str) -> tornado.web.Application:
    """The PACS at ``base_url`` (the server's root URL, e.g. ``http://127.0.0.1:8042``); its DICOMweb
    base URL is ``base_url + "/dicom-web"``. Opens (and, after a crash, tidies) the store in
    ``settings.data_dir``; the store and thread pool are released by the registered cleanup."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.data_dir, fsync=settings.fsync, bulk_data_threshold=settings.bulk_data_threshold,
                  shared=settings.shared_store)
    executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="s4s-pacs")
    ctx = PACSContext(settings, store, QidoService(store), executor, dicomweb_url(base_url))

    def cleanup() -> None:
        executor.shutdown(wait=True)
        store.close()

    app_settings: dict[str, Any] = {CLEANUP_KEY: [cleanup], "pacs": ctx, "log_function": log_request,
                                    "default_handler_class": NotFoundHandler}
    return tornado.web.Application(routes(ctx, BASE_PATH), **app_settings)
