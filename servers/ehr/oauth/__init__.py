"""The EHR's SMART App Launch 2.x authorization server.

Authlib's OAuth 2.0 server machinery (RFC 6749 grants, RFC 7636 PKCE, RFC 7662 introspection, RFC 7009
revocation) does the protocol work under a thin Tornado adapter (:mod:`.server`). What is written by hand
is only what Authlib does not do: SMART launch context (patient, ``aud``, id_token claims), loopback
redirect matching with any port (RFC 8252 7.3), refresh-token family revocation and code-reuse revocation
(RFC 9700 4.14, RFC 6749 4.1.2), the login / patient picker / consent pages, and the SQLite store.

Modules: :mod:`.endpoints` (URL layout), :mod:`.clients` (client registry from JSON), :mod:`.users`
(demo logins, hashed passwords), :mod:`.store` (SQLite: codes, tokens, pending requests), :mod:`.grants`
(Authlib grants with SMART rules), :mod:`.idtoken` (signing key, JWKS, id_token), :mod:`.server` (the
Authlib AuthorizationServer for Tornado), :mod:`.introspector` (in-process introspection for resource
servers), :mod:`.smart_config` (``.well-known/smart-configuration``), :mod:`.pages` (authorize endpoint,
login, patient picker, consent), :mod:`.consent_text` (scope descriptions), :mod:`.handlers` (token,
introspection, revocation, JWKS, discovery; the URL rules).
"""
