"""The kit's session: one EHR, its imaging server, the patient's tokens, and every call a notebook needs.

>>> import s4s_jupyter as s4s                                              # doctest: +SKIP
>>> ehr = s4s.connect("http://127.0.0.1:8080/fhir")    # SMART login in the browser   # doctest: +SKIP
>>> labs = ehr.labs()                                   # DataFrame                    # doctest: +SKIP
>>> studies = ehr.imaging_studies()                     # one row per study            # doctest: +SKIP
>>> datasets = ehr.retrieve(studies.iloc[0])            # pydicom Datasets             # doctest: +SKIP
>>> manifest = ehr.download(studies, "images/")         # files + manifest DataFrame   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from s4s_jupyter.client import discovery, launch
from s4s_jupyter.client.auth import BearerAuth, LoginRequired, TokenManager
from s4s_jupyter.client.fhir import CATEGORIES, FHIRClient, IncrementalSync, Param, SearchResults
from s4s_jupyter.client.imaging import ImagingSearch
from s4s_jupyter.client.targets import DICOMwebEndpoint, SeriesTarget, series_targets
from s4s_jupyter.client.tokens import LoginKeys, TokenSet, TokenStore
from s4s_jupyter.core.errors import ClientError, OAuthError

if TYPE_CHECKING:
    from datetime import date, datetime
    from pathlib import Path

    import pandas as pd
    from pydicom import Dataset

    from s4s_jupyter.client.dicomweb import DicomwebClients
    from s4s_jupyter.client.retrieve import ProgressCallback, Retriever

log = logging.getLogger("s4s_jupyter.client")

#: What a research app asks for by default: the patient's records (SMART v2 read+search), its identity,
#: and a refresh token so long downloads survive expiry (SMART App Launch 2.x, "Scopes").
DEFAULT_SCOPES = "launch/patient openid fhirUser offline_access patient/*.rs"
DEFAULT_CLIENT_ID = "s4s-jupyter"


class Session:
    """A SMART session with an EHR (and its imaging server).

    Create it with :func:`connect`. ``imaging_base`` is the FHIR base of the imaging server; None takes
    the ``associated_endpoints`` entry with ``smart-imaging-access`` from the EHR's SMART configuration,
    else the EHR itself. ``token_store`` None keeps tokens in memory only.

    ``patient`` None: the session takes the last login stored for the EHR and client (whatever patient
    it is for); a patient id: only a login for that patient (:class:`~s4s_jupyter.client.tokens.LoginKeys`),
    and :meth:`login` asks the EHR for it. Either way, while the session holds tokens it is bound to their
    patient and never takes another patient's tokens from the store (after a logout, a session that
    asked for no patient may log in for any).
    """

    def __init__(self, fhir_base: str, *, client_id: str = DEFAULT_CLIENT_ID,
                 client_secret: str | None = None, scopes: str = DEFAULT_SCOPES,
                 imaging_base: str | None = None, token_store: TokenStore | None = None,
                 timeout: float = 60.0, connections_per_host: int = 4, patient: str | None = None) -> None:
        self.fhir_base = fhir_base.rstrip("/")
        self.client = launch.ClientCredentials(client_id, client_secret)
        self.scopes = scopes
        self.token_store = token_store
        self.timeout = timeout
        self.connections_per_host = connections_per_host
        self._oauth_http = httpx.Client(timeout=timeout)
        try:
            self.config: discovery.SmartConfiguration = discovery.discover(self._oauth_http, self.fhir_base)
        except BaseException:
            self._oauth_http.close()
            raise
        self.imaging_base = (imaging_base or self.config.imaging_endpoint or self.fhir_base).rstrip("/")
        self.requested_patient = patient
        keys = LoginKeys(self.fhir_base, client_id, patient)
        stored = token_store.load(keys) if token_store else None
        self.tokens = TokenManager(stored, self._refresh, store=token_store, key=keys)
        self.auth = BearerAuth(self.tokens)
        self._http = httpx.Client(timeout=timeout, auth=self.auth)
        self.fhir = FHIRClient(self._http, self.fhir_base)
        self.imaging_fhir = self.fhir if self.imaging_base == self.fhir_base else FHIRClient(
            self._http, self.imaging_base)
        self._imaging = ImagingSearch(self.imaging_fhir)
        self._sync = IncrementalSync(self.fhir)
        self._retriever: Retriever | None = None
        self._dicomweb: DicomwebClients | None = None

    def __repr__(self) -> str:
        return (f"<s4s Session {self.fhir_base} client={self.client.client_id} patient={self.patient} "
                f"logged_in={self.logged_in}>")

    # -- tokens ---------------------------------------------------------------------------------------

    def _refresh(self, tokens: TokenSet) -> TokenSet:
        return launch.refresh_tokens(self._oauth_http, self.config, self.client, tokens)

    @property
    def logged_in(self) -> bool:
        """Whether the session has a token that is valid or can be refreshed."""
        t = self.tokens.tokens
        return t is not None and (not t.expires_within(0) or bool(t.refresh_token))

    @property
    def patient(self) -> str | None:
        """The FHIR id of the patient the user chose at login (SMART launch context)."""
        t = self.tokens.tokens
        return t.patient if t else None

    def login(self, *, browser: launch.Browser | None = None,
              receiver: launch.RedirectReceiver | None = None, timeout: float = 300.0,
              launch_context: str | None = None, login_hint: str | None = None,
              authorize_params: Mapping[str, str] | None = None) -> TokenSet:
        """SMART standalone launch with PKCE S256 (SMART App Launch 2.x; RFC 8252 for the redirect).

        ``receiver`` catches the redirect (default: a one-shot :class:`LoopbackRedirect` on 127.0.0.1 and a
        random port; the Jupyter server extension passes its own). ``browser(url)`` shows the authorize URL
        to the user (default: open the system browser where there is one, and print/display the link);
        automation passes one that drives the pages (:class:`~s4s_jupyter.client.automation.FormLogin`)
        and may return the redirect URL itself.

        ``login_hint`` (OpenID Connect Core 3.1.2.1: who is expected to sign in) and ``authorize_params``
        (any other authorize parameters a standard defines, e.g. ``prompt``, ``ui_locales``) are added to
        the authorize URL; the parameters the kit sets itself (``state``, PKCE, ``aud``, ...,
        :data:`~s4s_jupyter.client.launch.KIT_AUTHORIZE_PARAMS`) raise :class:`ValueError`.
        """
        extra = launch.check_authorize_params(authorize_params)
        if login_hint is not None:
            extra["login_hint"] = login_hint
        wanted = self.requested_patient or self.tokens.patient
        if wanted is not None:
            extra.setdefault("patient", wanted)  # a hint (the demo EHR's auto-approve reads it)
        own = receiver is None
        rcv = receiver or launch.LoopbackRedirect()
        try:
            request = launch.authorization_request(self.config, self.client.client_id, rcv.redirect_uri,
                                                   self.scopes, self.fhir_base, launch=launch_context,
                                                   extra=extra)
            if isinstance(rcv, launch.LoopbackRedirect):
                rcv.request = request  # its page then tells the user whether the response was refused
            returned = (browser or launch.default_browser)(request.url)
            redirect_url = returned if isinstance(returned, str) else rcv.wait(timeout)
        finally:
            if own:
                rcv.close()
        code = launch.parse_redirect(request, redirect_url)
        tokens = launch.exchange_code(self._oauth_http, self.config, self.client, request, code)
        if wanted is not None and tokens.patient != wanted:
            self._discard(tokens)
            raise ClientError(f"the login was for patient {tokens.patient or '(none)'}, but this session is "
                              f"for patient {wanted}; its tokens were revoked, not kept. Sign in for "
                              f"{wanted}, or connect(..., patient=None) for whichever patient you choose",
                              status=409)
        self.tokens.set(tokens)
        return tokens

    def _discard(self, tokens: TokenSet) -> None:
        """Revoke a token set the session will not use (RFC 7009; best effort: it is never stored)."""
        if not self.config.revocation_endpoint:
            return
        for token, hint in ((tokens.refresh_token, "refresh_token"), (tokens.access_token, "access_token")):
            if token:
                try:
                    launch.revoke_token(self._oauth_http, self.config, self.client, token, hint)
                except (ClientError, httpx.HTTPError) as exc:
                    log.info("could not revoke an unused %s: %s", hint, exc)

    def ensure_login(self, **login_args: Any) -> None:
        """Log in unless the stored tokens still work (valid, or refreshable)."""
        if self.logged_in:
            try:
                self.tokens.access_token()
                return
            except (LoginRequired, OAuthError) as exc:
                log.info("stored tokens unusable (%s); logging in again", exc.message)
                self.tokens.set(None)
        self.login(**login_args)

    def logout(self) -> None:
        """Revoke the refresh and access tokens (RFC 7009) and forget them (also in the token store)."""
        tokens = self.tokens.tokens
        try:
            if tokens is not None and self.config.revocation_endpoint:
                if tokens.refresh_token:
                    launch.revoke_token(self._oauth_http, self.config, self.client, tokens.refresh_token,
                                        "refresh_token")
                launch.revoke_token(self._oauth_http, self.config, self.client, tokens.access_token,
                                    "access_token")
        finally:
            self.tokens.set(None)

    def close(self) -> None:
        """Close the HTTP connections (tokens stay in the store)."""
        if self._retriever is not None:
            self._retriever.close()
        if self._dicomweb is not None:
            self._dicomweb.close()
        self._http.close()
        self._oauth_http.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- FHIR --------------------------------------------------------------------------------------

    def _patient(self, patient: str | None) -> str:
        chosen = patient or self.patient
        if not chosen:
            raise ClientError("no patient: log in with launch/patient or pass patient=", status=400)
        return chosen

    def search(self, resource_type: str, **params: Param | None) -> pd.DataFrame:
        """Any FHIR search at the EHR as a DataFrame, following ``next`` links (columns:
        :mod:`s4s_jupyter.client.flatten`). ``resources()`` gives the same as raw resources."""
        return self.fhir.search(resource_type, **params)

    def resources(self, resource_type: str, *, imaging: bool = False,
                  **params: Param | None) -> SearchResults:
        """Any FHIR search as raw resources (JSON dicts), every page: at the EHR, or with ``imaging=True``
        at the imaging server (``ImagingStudy``, ``Endpoint``).

        The result is a list of the matches; its ``included`` attribute holds the resources
        ``_include``/``_revinclude`` added (:class:`~s4s_jupyter.client.fhir.SearchResults`), e.g.
        ``found = ehr.resources("ImagingStudy", imaging=True, patient=ehr.patient,
        _include="ImagingStudy:endpoint")`` gives the studies, and ``found.included`` their Endpoints."""
        return (self.imaging_fhir if imaging else self.fhir).resources(resource_type, **params)

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """One resource by id."""
        return self.fhir.read(resource_type, resource_id)

    def demographics(self, patient: str | None = None) -> pd.DataFrame:
        """The Patient resource as a one-row DataFrame (name, gender, birth date, MRN, address)."""
        from s4s_jupyter.client.flatten import to_frame

        return to_frame([self.read("Patient", self._patient(patient))], "Patient")

    def category(self, name: str, patient: str | None = None, **params: Param | None) -> pd.DataFrame:
        """One Sync for Science category by name (see :data:`s4s_jupyter.client.fhir.CATEGORIES`)."""
        if name not in CATEGORIES:
            raise ValueError(f"unknown category {name!r}; one of {', '.join(CATEGORIES)}")
        return self.fhir.category(name, self._patient(patient), **params)

    def conditions(self, patient: str | None = None, **params: Param | None) -> pd.DataFrame:
        """``Condition?patient=``"""
        return self.category("conditions", patient, **params)

    def medications(self, patient: str | None = None, **params: Param | None) -> pd.DataFrame:
        """``MedicationRequest?patient=`` and ``MedicationStatement?patient=`` (column ``resource_type``)."""
        return self.category("medications", patient, **params)

    def allergies(self, patient: str | None = None, **params: Param | None) -> pd.DataFrame:
        """``AllergyIntolerance?patient=``"""
        return self.category("allergies", patient, **params)

    def labs(self, patient: str | None = None, **params: Param | None) -> pd.DataFrame:
        """``Observation?patient=&category=laboratory``: one row per result (code, value, unit, effective)."""
        return self.category("labs", patient, **params)

    def vitals(self, patient: str | None = None, **params: Param | None) -> pd.DataFrame:
        """``Observation?patient=&category=vital-signs`` (blood pressure: one row per component)."""
        return self.category("vitals", patient, **params)

    def smoking_status(self, patient: str | None = None, **params: Param | None) -> pd.DataFrame:
        """``Observation?patient=&code=http://loinc.org|72166-2`` (``value_display``: the status)."""
        return self.category("smoking_status", patient, **params)

    def procedures(self, patient: str | None = None, **params: Param | None) -> pd.DataFrame:
        """``Procedure?patient=``"""
        return self.category("procedures", patient, **params)

    def immunizations(self, patient: str | None = None, **params: Param | None) -> pd.DataFrame:
        """``Immunization?patient=``"""
        return self.category("immunizations", patient, **params)

    def documents(self, patient: str | None = None, **params: Param | None) -> pd.DataFrame:
        """``DocumentReference?patient=``"""
        return self.category("documents", patient, **params)

    def radiology_reports(self, patient: str | None = None, **params: Param | None) -> pd.DataFrame:
        """``DiagnosticReport?patient=&category=RAD``. ``imaging_studies``: the studies each reports on, as
        Study Instance UIDs where the report names them by ``urn:dicom:uid`` identifier (else the
        referenced ImagingStudy ids), so ``reports.explode("imaging_studies")`` joins
        :meth:`imaging_studies` on ``study_uid``."""
        return self.category("radiology_reports", patient, **params)

    def sync(self, categories: list[str] | None = None, patient: str | None = None,
             state_file: str | Path | None = None) -> dict[str, pd.DataFrame]:
        """Incremental sync: per category, only what changed since this session's previous ``sync()``
        (the first call returns everything). ``state_file`` keeps the instants across sessions."""
        if state_file is not None and str(state_file) != str(self._sync.state_file):
            self._sync = IncrementalSync(self.fhir, state_file)
        return self._sync(self._patient(patient), categories)

    # -- imaging -----------------------------------------------------------------------------------

    def imaging_studies(self, patient: str | None = None, *, since: date | datetime | str | None = None,
                        until: date | datetime | str | None = None, modality: str | None = None,
                        study_uid: str | None = None, last_updated: Param | None = None) -> pd.DataFrame:
        """The patient's ImagingStudy resources at the imaging server, one row per study, newest first
        (columns :data:`s4s_jupyter.client.imaging.STUDY_COLUMNS`); see :meth:`ImagingSearch.studies`."""
        return self._imaging.studies(self._patient(patient), since=since, until=until, modality=modality,
                                     study_uid=study_uid, last_updated=last_updated)

    def series(self, studies: pd.DataFrame | pd.Series) -> pd.DataFrame:
        """The series of studies from :meth:`imaging_studies`, one row per series."""
        return self._imaging.series(studies)

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            from s4s_jupyter.client.retrieve import Retriever

            self._retriever = Retriever(auth=self.auth, connections_per_host=self.connections_per_host,
                                        timeout=max(self.timeout, 120.0))
        return self._retriever

    def targets(self, what: Any) -> list[SeriesTarget]:
        """The series a retrieval of ``what`` covers (a DataFrame or row of studies/series, a Study Instance
        UID at the imaging server's Endpoint, or an ImagingStudy resource)."""
        if isinstance(what, str):
            studies = self.imaging_studies(study_uid=what)
            if studies.empty:
                raise ClientError(f"study {what} not found for patient {self.patient}", status=404)
            what = studies
        return series_targets(what, endpoint=None, qido=self.retriever.qido,
                              resources=self._imaging.resources, endpoints=self._imaging.endpoints.values())

    def retrieve(self, what: Any, *, first_only: bool = False, progress: bool = True,
                 on_progress: ProgressCallback | None = None) -> list[Dataset]:
        """Studies, series or instances as pydicom Datasets in memory (WADO-RS through each study's
        Endpoint, with the token only where ``requires-access-token`` says so). ``first_only``: the first
        instance of each series. ``on_progress(RetrievalProgress)`` is called after every instance
        (:meth:`Retriever.download <s4s_jupyter.client.retrieve.Retriever.download>`)."""
        return self.retriever.load(self.targets(what), first_only=first_only, progress=progress,
                                   on_progress=on_progress)

    def download(self, what: Any, directory: str | os.PathLike[str], *, first_only: bool = False,
                 progress: bool = True, on_progress: ProgressCallback | None = None,
                 checksum: str = "crc32") -> pd.DataFrame:
        """Studies, series or instances to ``{directory}/{PatientID}/{StudyUID}/{SeriesUID}/{SOPUID}.dcm``,
        streamed, in parallel, resumable; returns the manifest DataFrame (FHIR ids, UIDs, paths, sizes,
        status, error). Call again to fetch only what is missing or damaged. ``checksum``: ``crc32`` or
        ``sha256``, recorded per file (see :meth:`Retriever.download
        <s4s_jupyter.client.retrieve.Retriever.download>`)."""
        return self.retriever.download(self.targets(what), directory, first_only=first_only,
                                       progress=progress, on_progress=on_progress, checksum=checksum)

    @property
    def dicomweb_clients(self) -> DicomwebClients:
        if self._dicomweb is None:
            from s4s_jupyter.client.dicomweb import DicomwebClients

            self._dicomweb = DicomwebClients(self.tokens, self.timeout)
        return self._dicomweb

    def metadata(self, what: Any, *, first_only: bool = False) -> list[Dataset]:
        """WADO-RS metadata only (no pixel data) as pydicom Datasets."""
        from s4s_jupyter.client.dicomweb import metadata

        return metadata(self.targets(what), self.dicomweb_clients, first_only)

    def thumbnails(self, what: Any, size: int = 128) -> pd.DataFrame:
        """A rendered PNG thumbnail of the first instance of each series (PIL images in column ``image``)."""
        from s4s_jupyter.client.dicomweb import thumbnails

        return thumbnails(self.targets(what), self.retriever, size)

    def dicomweb(self, endpoint: str | DICOMwebEndpoint | None = None) -> Any:
        """A :class:`~s4s_jupyter.client.dicomweb.DICOMweb` for an imaging Endpoint (QIDO-RS and the rest
        directly); default: the Endpoint of the patient's first study."""
        from s4s_jupyter.client.dicomweb import DICOMweb

        if endpoint is None:
            studies = self.imaging_studies()
            if studies.empty:
                raise ClientError("the patient has no imaging studies, so no Endpoint is known", status=404)
            endpoint = DICOMwebEndpoint(str(studies["endpoint"].iloc[0]),
                                        bool(studies["requires_access_token"].iloc[0]))
        ep = endpoint if isinstance(endpoint, DICOMwebEndpoint) else DICOMwebEndpoint(endpoint, True)
        return DICOMweb(ep.address, requires_access_token=ep.requires_access_token, tokens=self.tokens,
                        connections_per_host=self.connections_per_host)


#: environment variables the Jupyter server extension exports for its kernels (``s4s_jupyter.serverext.app``)
ENV_EHR_URL = "S4S_EHR_URL"
ENV_CLIENT_ID = "S4S_CLIENT_ID"
ENV_SCOPES = "S4S_SCOPES"
ENV_IMAGING_URL = "S4S_IMAGING_URL"


def _environment_defaults(fhir_base: str | None, client_id: str | None, scopes: str | None,
                          imaging_base: str | None) -> tuple[str, str, str, str | None]:
    """Fill what the caller left out from the environment the server extension exports.

    The EHR defaults to ``$S4S_EHR_URL``. The client id, scopes and imaging server default to
    ``$S4S_CLIENT_ID``, ``$S4S_SCOPES`` and ``$S4S_IMAGING_URL`` only for that same EHR (they describe the
    extension's registration there, under which it stores the tokens this kernel should reuse), else to
    the kit's own defaults.
    """
    env_ehr = os.environ.get(ENV_EHR_URL, "").strip().rstrip("/")
    if fhir_base is None or not str(fhir_base).strip():
        if not env_ehr:
            raise ClientError("no EHR given: pass its FHIR base URL, connect('https://ehr.example/fhir'), or "
                              f"set the environment variable {ENV_EHR_URL} (the Jupyter server extension "
                              "sets it for its kernels)", status=400)
        fhir_base = env_ehr
    same_ehr = bool(env_ehr) and fhir_base.strip().rstrip("/") == env_ehr

    def env(name: str) -> str | None:
        value = os.environ.get(name, "").strip() if same_ehr else ""
        return value or None

    return (fhir_base, client_id or env(ENV_CLIENT_ID) or DEFAULT_CLIENT_ID,
            scopes or env(ENV_SCOPES) or DEFAULT_SCOPES, imaging_base or env(ENV_IMAGING_URL))


def connect(fhir_base: str | None = None, *, client_id: str | None = None, client_secret: str | None = None,
            scopes: str | None = None, imaging_base: str | None = None, login: bool = True,
            browser: launch.Browser | None = None, receiver: launch.RedirectReceiver | None = None,
            token_store: TokenStore | str | os.PathLike[str] | bool | None = True,
            timeout: float = 60.0,
            connections_per_host: int = 4, login_hint: str | None = None,
            authorize_params: Mapping[str, str] | None = None, patient: str | None = None) -> Session:
    """Connect to a SMART on FHIR EHR and log in (unless stored tokens still work).

    - ``fhir_base``: the EHR's FHIR base URL; its ``.well-known/smart-configuration`` is read. None:
      ``$S4S_EHR_URL`` (set by the Jupyter server extension for its kernels); a :class:`ClientError` if
      neither is there.
    - ``client_id`` / ``client_secret``: the app's registration (public client by default, with PKCE).
      None: ``$S4S_CLIENT_ID`` when connecting to ``$S4S_EHR_URL``, else :data:`DEFAULT_CLIENT_ID`.
    - ``scopes``: None means ``$S4S_SCOPES`` (for ``$S4S_EHR_URL``), else :data:`DEFAULT_SCOPES` (the
      patient's records, identity, offline access).
    - ``imaging_base``: the imaging server's FHIR base; None means ``$S4S_IMAGING_URL`` (for
      ``$S4S_EHR_URL``), else the EHR's ``associated_endpoints``.
    - ``login``: False to skip the login (call :meth:`Session.login` later).
    - ``patient``: None reuses the last login stored for this EHR and client, whichever patient it is
      for; a patient id reuses that patient's stored login, or logs in for that patient (the id goes to
      the EHR as a ``patient`` hint; a login that comes back for another patient raises
      :class:`ClientError` and is revoked). The store keeps one login per patient, so a notebook can
      hold several (:class:`~s4s_jupyter.client.tokens.LoginKeys`).
    - ``browser`` / ``receiver`` / ``login_hint`` / ``authorize_params``: see :meth:`Session.login`
      (a bad ``authorize_params`` raises :class:`ValueError` before anything is sent).
    - ``token_store``: True for the default file (``$S4S_TOKEN_STORE``, else under the Jupyter data
      directory), a path or :class:`TokenStore`, or False/None to keep tokens in memory only.
    """
    launch.check_authorize_params(authorize_params)  # refuse before any network call
    fhir_base, client_id, scopes, imaging_base = _environment_defaults(fhir_base, client_id, scopes,
                                                                       imaging_base)
    store: TokenStore | None
    if token_store is True:
        store = TokenStore()
    elif token_store is False or token_store is None:
        store = None
    elif isinstance(token_store, TokenStore):
        store = token_store
    else:
        store = TokenStore(token_store)
    session = Session(fhir_base, client_id=client_id, client_secret=client_secret, scopes=scopes,
                      imaging_base=imaging_base, token_store=store, timeout=timeout,
                      connections_per_host=connections_per_host, patient=patient)
    if login:
        try:
            session.ensure_login(browser=browser, receiver=receiver, login_hint=login_hint,
                                 authorize_params=authorize_params)
        except BaseException:
            session.close()
            raise
    return session
