"""What the two widgets share: how an error is shown, and a job run off the kernel's thread.

Both widgets run their slow calls (the kit's login, a retrieval) in a daemon thread, so the notebook
stays responsive; the caller gets a :class:`concurrent.futures.Future` and the widget's button is
disabled until the job ends.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from html import escape
from typing import TypeVar

import ipywidgets as w

T = TypeVar("T")


def error_message(exc: BaseException) -> str:
    """The kit's own message of an error (``ClientError.message``), else the exception's text."""
    return str(getattr(exc, "message", None) or exc)


def error_html(text: str) -> str:
    """``text`` as the widgets' error line (HTML-escaped)."""
    return f"<span class='s4s-error' style='color:#a40e26'>{escape(text)}</span>"


def run_in_background(name: str, button: w.Button, job: Callable[[], T],
                      failed: Callable[[Exception], None]) -> concurrent.futures.Future[T]:
    """Run ``job`` in a daemon thread called ``name`` with ``button`` disabled meanwhile; its result or
    exception goes to the returned future, and ``failed(exc)`` shows an exception first."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()
    button.disabled = True

    def run() -> None:
        try:
            future.set_result(job())
        except Exception as exc:
            failed(exc)
            future.set_exception(exc)
        finally:
            button.disabled = False

    threading.Thread(target=run, daemon=True, name=name).start()
    return future
