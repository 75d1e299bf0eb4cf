"""The jupyter_server ExtensionApp: configuration (traitlets) and wiring of the login handlers.

Configure it like any Jupyter application, e.g. in ``jupyter_server_config.py``::

    c.S4SExtension.ehr_url = "http://127.0.0.1:8080/fhir"
    c.S4SExtension.client_id = "s4s-jupyter"

or on the command line (``--S4SExtension.ehr_url=...``), or through the environment variables the
defaults read (``S4S_EHR_URL``, ``S4S_CLIENT_ID``, ``S4S_SCOPES``, ``S4S_TOKEN_STORE``,
``S4S_IMAGING_URL``). The server exports the effective values, and ``S4S_JUPYTER_BASE_URL``, into its own
environment, which every kernel it starts inherits: that is how a notebook's widgets find the
extension and the EHR (``docs/jupyter.md``).
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, List, Unicode, default

from s4s_jupyter.serverext.handlers import handlers
from s4s_jupyter.serverext.logins import ClientRegistration, PendingLogins, SmartLogins

#: environment variables the extension exports for its kernels (and reads as defaults)
ENV_BASE_URL = "S4S_JUPYTER_BASE_URL"
ENV_EHR_URL = "S4S_EHR_URL"
ENV_CLIENT_ID = "S4S_CLIENT_ID"
ENV_SCOPES = "S4S_SCOPES"
ENV_TOKEN_STORE = "S4S_TOKEN_STORE"
ENV_IMAGING_URL = "S4S_IMAGING_URL"


class S4SExtension(ExtensionApp):
    """SMART on FHIR login for notebooks: the OAuth redirect and the shared token store."""

    name = "s4s_jupyter"
    description = "SMART on FHIR login (redirect, tokens) for the s4s-jupyter research kit"
    load_other_extensions = True

    ehr_url = Unicode("", config=True,
                      help="FHIR base URL of the SMART EHR to log in to (default: $S4S_EHR_URL).")
    allowed_ehr_urls = List(Unicode(), default_value=[], config=True,
                            help="Further EHR FHIR base URLs a login may name with ?ehr= (public client "
                                 "client_id; no other EHR is ever contacted).")
    client_id = Unicode("", config=True,
                        help="OAuth client id registered at the EHR (default: $S4S_CLIENT_ID or "
                             "'s4s-jupyter').")
    client_secret = Unicode(None, allow_none=True, config=True,
                            help="Client secret for a confidential client (client_secret_basic); None for a "
                                 "public client, which relies on PKCE.")
    scopes = Unicode("", config=True, help="Scopes to request (default: $S4S_SCOPES or the kit's "
                                           "DEFAULT_SCOPES).")
    token_store_path = Unicode("", config=True,
                               help="The token store file shared with kernels (default: $S4S_TOKEN_STORE or "
                                    "{jupyter_data_dir}/s4s_jupyter/tokens.json).")
    imaging_url = Unicode("", config=True,
                          help="FHIR base of the imaging server (default: $S4S_IMAGING_URL, else the EHR's "
                               "associated_endpoints); passed to kernels.")
    redirect_uri = Unicode("", config=True,
                           help="Fixed redirect URI registered at the EHR (default: derived from the "
                                "request: {scheme}://{host}{base_url}s4s/oauth/callback). Set it behind a "
                                "proxy.")
    login_ttl = Float(600.0, config=True, help="Seconds a started login waits for its callback.")

    @default("ehr_url")
    def _default_ehr_url(self) -> str:
        return os.environ.get(ENV_EHR_URL, "")

    @default("client_id")
    def _default_client_id(self) -> str:
        return os.environ.get(ENV_CLIENT_ID, "") or "s4s-jupyter"

    @default("scopes")
    def _default_scopes(self) -> str:
        from s4s_jupyter.client.session import DEFAULT_SCOPES

        return os.environ.get(ENV_SCOPES, "") or DEFAULT_SCOPES

    @default("token_store_path")
    def _default_token_store_path(self) -> str:
        if os.environ.get(ENV_TOKEN_STORE):
            return os.environ[ENV_TOKEN_STORE]
        from s4s_jupyter.client.tokens import default_token_path

        return str(default_token_path())

    @default("imaging_url")
    def _default_imaging_url(self) -> str:
        return os.environ.get(ENV_IMAGING_URL, "")

    def registrations(self) -> list[ClientRegistration]:
        regs: list[ClientRegistration] = []
        if self.ehr_url:
            regs.append(ClientRegistration(self.ehr_url.rstrip("/"), self.client_id,
                                           self.client_secret or None))
        for url in self.allowed_ehr_urls:
            if url.rstrip("/") != self.ehr_url.rstrip("/"):
                regs.append(ClientRegistration(url.rstrip("/"), self.client_id))
        return regs

    def initialize_settings(self) -> None:
        from s4s_jupyter.client.tokens import TokenStore

        self.logins = SmartLogins(self.registrations(), TokenStore(self.token_store_path), scopes=self.scopes,
                                  pending=PendingLogins(ttl=self.login_ttl))
        self.export_environment()
        self.log.info("s4s_jupyter: SMART login for %s (client %s) at %ss4s/login",
                      self.ehr_url or "(no EHR)", self.client_id,
                      self.serverapp.base_url if self.serverapp else "/")

    def export_environment(self) -> None:
        """Put the effective configuration into this process's environment for the kernels it starts."""
        values: dict[str, Any] = {
            ENV_BASE_URL: self.serverapp.base_url if self.serverapp else "/",
            ENV_EHR_URL: self.ehr_url, ENV_CLIENT_ID: self.client_id, ENV_SCOPES: self.scopes,
            ENV_TOKEN_STORE: self.token_store_path, ENV_IMAGING_URL: self.imaging_url,
        }
        for name, value in values.items():
            if value:
                os.environ[name] = str(value)

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers(self.logins, self.redirect_uri))
