"""The login widget: who is signed in, for which patient, with which scopes; sign in and out.

Two ways to sign in, chosen by where the kernel runs:

- **Through the Jupyter server extension** (its server exported ``S4S_JUPYTER_BASE_URL`` into the
  kernel's environment and shares this session's token store): the widget shows a link styled as a
  button, ``{base_url}s4s/login?ehr=...``, which opens the EHR's pages in a new tab; the extension
  catches the redirect and writes the tokens into the shared store. A path-absolute link, so it works on
  whatever host and prefix the user reached JupyterLab at, without JavaScript.
- **Through the kit's loopback flow** elsewhere (a plain kernel, a console): the button runs
  :meth:`Session.login` in a thread (one-shot listener on 127.0.0.1, RFC 8252) and shows the authorize
  link; ``browser=`` (e.g. :class:`~s4s_jupyter.client.automation.FormLogin`) completes it unattended.

Either way the widget watches the token store (one ``stat`` per ``poll_interval``) and takes over what
another process wrote: the extension's login, another kernel's refresh, a logout elsewhere.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import ipywidgets as w

from s4s_jupyter.client.tokens import TokenSet
from s4s_jupyter.widgets.common import error_html, error_message, run_in_background

if TYPE_CHECKING:
    from s4s_jupyter.client.launch import Browser
    from s4s_jupyter.client.session import Session

#: environment the server extension exports for its kernels (s4s_jupyter.serverext.app)
ENV_BASE_URL = "S4S_JUPYTER_BASE_URL"
ENV_EHR_URL = "S4S_EHR_URL"
ENV_TOKEN_STORE = "S4S_TOKEN_STORE"


def extension_base_url(session: Session) -> str | None:
    """The Jupyter server's ``base_url`` when its s4s extension can sign this session in, else None.

    It can when the kernel was started by a server running the extension (``S4S_JUPYTER_BASE_URL``), the
    session keeps its tokens in the extension's store, and the extension is configured for its EHR.
    """
    base = os.environ.get(ENV_BASE_URL)
    if not base or session.token_store is None:
        return None
    store = os.environ.get(ENV_TOKEN_STORE)
    if store and Path(store).resolve() != Path(session.token_store.path).resolve():
        return None
    ehr = os.environ.get(ENV_EHR_URL, "").rstrip("/")
    if ehr and ehr != session.fhir_base:
        return None
    return base if base.endswith("/") else base + "/"


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "no expiry given"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class LoginWidget(w.VBox):
    """Sign in to the session's EHR and show the login (patient, scopes, expiry).

    ``server_base_url``: the extension's base URL (default: detected, :func:`extension_base_url`);
    pass ``False`` to force the loopback flow. ``browser``: for the loopback flow, a callable that shows
    or completes the authorize URL (default: a link in the widget).
    """

    def __init__(self, session: Session, *, server_base_url: str | bool | None = None,
                 browser: Browser | None = None, poll_interval: float = 1.0,
                 login_timeout: float = 300.0) -> None:
        self.session = session
        self.browser = browser
        self.login_timeout = login_timeout
        base = extension_base_url(session) if server_base_url is None else server_base_url
        self.server_base_url: str | None = base if isinstance(base, str) and base else None
        self.status = w.HTML(layout=w.Layout(min_width="30em"))
        self.message = w.HTML()
        self.link = w.HTML()
        self.login_button = w.Button(description="Sign in", button_style="primary", icon="sign-in",
                                     tooltip="Sign in at the EHR (SMART standalone launch)")
        self.logout_button = w.Button(description="Sign out", icon="sign-out",
                                      tooltip="Revoke the tokens at the EHR and forget them")
        self.login_button.on_click(lambda _: self.start_login())
        self.logout_button.on_click(lambda _: self.logout())
        self.pending: concurrent.futures.Future[Any] | None = None
        self._patient_names: dict[str, str] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._stamp: tuple[float, int] | None = self._store_stamp()
        super().__init__([w.HTML("<b>SMART on FHIR login</b>"), self.status,
                          w.HBox([self.login_button, self.link, self.logout_button]), self.message])
        self.add_class("s4s-login")
        if self.server_base_url:
            self.link.value = self._extension_link()
            self.login_button.layout.display = "none"
        self.render()
        self._poller: threading.Thread | None = None
        if session.token_store is not None and poll_interval > 0:
            self._poller = threading.Thread(target=self._poll, args=(poll_interval,), daemon=True,
                                            name="s4s-login-widget")
            self._poller.start()

    # -- what the widget shows -------------------------------------------------------------------

    @property
    def tokens(self) -> TokenSet | None:
        return self.session.tokens.tokens

    def _extension_link(self) -> str:
        assert self.server_base_url is not None
        query = urlencode({"ehr": self.session.fhir_base, "client_id": self.session.client.client_id,
                           "scope": self.session.scopes})
        href = escape(f"{self.server_base_url}s4s/login?{query}")
        return (f'<a class="s4s-login-link jupyter-button widget-button mod-primary" href="{href}" '
                'target="_blank" rel="noopener" style="text-decoration:none;padding:0 1em">'
                "Sign in at the EHR</a>")

    def _patient_name(self, patient: str) -> str:
        if patient not in self._patient_names:
            try:
                resource = self.session.read("Patient", patient)
                names = resource.get("name") or [{}]
                name = names[0].get("text") or " ".join(
                    [*names[0].get("given", []), names[0].get("family", "")]).strip()
            except Exception as exc:  # shown in the widget, not lost in a log
                self.show_error(f"could not read Patient/{patient}: {error_message(exc)}")
                name = ""
            self._patient_names[patient] = name
        return self._patient_names[patient]

    def render(self) -> None:
        """Show the current login (from the session's tokens)."""
        tokens = self.tokens
        ehr = escape(self.session.fhir_base)
        signed_in = tokens is not None and self.session.logged_in
        # offer the sign-in while signed out; the sign-out while signed in
        self.link.layout.display = "none" if signed_in and self.server_base_url else None
        self.logout_button.layout.display = None if signed_in else "none"
        if tokens is None or not signed_in:
            self.status.value = (f"<span class='s4s-status' data-logged-in='false'>Not signed in at "
                                 f"{ehr}.</span>")
            self.logout_button.disabled = True
            return
        patient = tokens.patient or ""
        name = self._patient_name(patient) if patient else ""
        scopes = " ".join(f"<code>{escape(s)}</code>" for s in tokens.scopes)
        who = (f"patient <b class='s4s-patient' data-patient='{escape(patient)}'>{escape(patient)}</b>"
               + (f" ({escape(name)})" if name else "")) if patient else "no patient context"
        self.status.value = (
            f"<span class='s4s-status' data-logged-in='true'>Signed in at {ehr} for {who}.</span><br>"
            f"Scopes: {scopes}<br>Access token valid until {_when(tokens.expires_at)}"
            + (", refreshable." if tokens.refresh_token else "."))
        self.logout_button.disabled = False

    def show_error(self, text: str) -> None:
        self.message.value = error_html(text)

    # -- the shared token store ----------------------------------------------------------------

    def _store_stamp(self) -> tuple[float, int] | None:
        store = self.session.token_store
        if store is None:
            return None
        try:
            st = os.stat(store.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime, st.st_ino)

    def refresh(self) -> bool:
        """Take over the store's token set for this session if another process changed it; True if the
        login changed. (The poller calls this; a notebook may too.)"""
        with self._lock:
            self._stamp = self._store_stamp()
            # the store's entry for this session's login (its patient's, or the last login); only a
            # newer set of the same patient is taken, and nothing is written back
            if not self.session.tokens.reload():
                return False
        self.message.value = ""
        self.render()
        return True

    def _poll(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if self._store_stamp() != self._stamp:
                try:
                    self.refresh()
                except Exception as exc:  # a broken store must not kill the poller silently
                    self.show_error(f"token store: {exc}")

    # -- actions --------------------------------------------------------------------------------

    def start_login(self) -> concurrent.futures.Future[Any] | None:
        """Sign in. Through the extension: show the link (the login finishes in the browser tab, the
        poller picks it up). Loopback: run the kit's login in a thread; returns its future."""
        self.message.value = ""
        if self.server_base_url:
            self.link.value = self._extension_link()
            return None
        if self.pending is not None and not self.pending.done():
            return self.pending

        def login() -> TokenSet:
            tokens = self.session.login(browser=self.browser or self._show_authorize_link,
                                        timeout=self.login_timeout)
            self.link.value = ""
            self.render()
            return tokens

        self.pending = run_in_background(
            "s4s-login", self.login_button, login,
            lambda exc: self.show_error(f"sign-in failed: {error_message(exc)}"))
        return self.pending

    def _show_authorize_link(self, url: str) -> None:
        self.link.value = (f'<a class="s4s-authorize-link" href="{escape(url)}" target="_blank" '
                           'rel="noopener">Open the EHR sign-in page</a>')

    def logout(self) -> None:
        """Revoke at the EHR and forget the tokens (the session's and the shared store's)."""
        self.message.value = ""
        try:
            self.session.logout()
        except Exception as exc:
            self.show_error(f"sign-out: the revocation at the EHR failed ({error_message(exc)}); "
                            "the tokens were forgotten here")
        with self._lock:
            self._stamp = self._store_stamp()
        self.render()

    def close(self) -> None:
        self._stop.set()
        super().close()
