"""Planetary Computer signing of asset hrefs, at read time, in the process that reads.

Planetary Computer's STAC items point at Azure Blob Storage URLs that the service refuses
without a SAS token, and tokens expire (about an hour). geoxai therefore never signs at search
time: hrefs travel and are recorded unsigned, and the cube reader
(:class:`geoxai.io.cube._SignedReader`) asks :data:`SIGNER` for a token just before it opens an
asset, in the worker that reads it. Tokens are

- fetched from the ``planetary-computer`` package's token endpoint (its ``Settings``:
  ``PC_SDK_SAS_URL``, default Planetary Computer's ``/api/sas/v1/token``; the subscription key
  ``PC_SDK_SUBSCRIPTION_KEY`` sent as ``Ocp-Apim-Subscription-Key`` when set) and parsed with
  its ``SASToken`` model;
- cached per storage container and refreshed before expiry (when less than
  ``min(refresh_margin_s, lifetime / 4)`` is left), one request at a time per container, so a
  run makes about one token request per container per token lifetime, not one per asset;
- dropped and fetched again when a read is refused (HTTP 403): the reader retries once.

The package's own ``get_token`` is not used for the request itself: it has no timeout (a
hanging endpoint would hang the tile), refreshes only under a fixed 60 s margin (tokens shorter
than that would be fetched for every asset) and does not serialize concurrent requests for one
container. The request here is bounded: ``retries`` tries with a ``timeout_s`` each and
exponential backoff, then :class:`SigningError` (the tile fails with that reason, the run goes
on); a refused subscription key is :class:`SigningAuthError`.

No token reaches a record, log, config, STAC output or error message: hrefs are stored
unsigned, and every message that could hold a signed URL goes through :func:`redact`.

Selection (``stac.signing`` of the run config): ``"auto"`` signs for Planetary Computer's STAC
URL (host ``planetarycomputer.microsoft.com``) only; ``"planetary-computer"`` / ``"none"``
force it. Blob URLs are ``https://<account>.blob.core.windows.net/<container>/<blob>`` or, for
the Azure storage emulator convention, ``http(s)://<host>/<account>/<container>/<blob>``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from geoxai.errors import ConfigError, DataAccessError, InvalidInputError

__all__ = [
    "SIGNING_MODES",
    "PC_STAC_HOST",
    "BLOB_DOMAIN",
    "SigningError",
    "SigningAuthError",
    "resolve_signing",
    "blob_container",
    "redact",
    "TokenCache",
    "SIGNER",
]

SIGNING_MODES = ("auto", "planetary-computer", "none")
"""Values of ``stac.signing``."""

PC_STAC_HOST = "planetarycomputer.microsoft.com"
"""Host of Planetary Computer's STAC API: ``auto`` signs for it."""

BLOB_DOMAIN = ".blob.core.windows.net"
"""Azure Blob Storage host suffix (account-in-host URLs)."""

_QUERY = re.compile(r"(?P<url>[a-z][a-z0-9+.-]*://[^\s'\"?<>]+)\?[^\s'\"<>)]*", re.I)
_SAS_PARAM = re.compile(r"\b(sig|se|st|sv|sp|skoid|sktid|skt|ske|sks|skv)=[^\s&'\"<>)]+", re.I)


class SigningError(DataAccessError):
    """A SAS token could not be obtained (endpoint down or failing) or signing is impossible."""


class SigningAuthError(SigningError):
    """The token endpoint refused the request (subscription key refused or required)."""


def resolve_signing(mode: str, stac_url: str) -> str:
    """``"planetary-computer"`` or ``"none"`` for ``stac.signing = mode`` and the STAC URL."""
    if mode not in SIGNING_MODES:
        raise ConfigError(f"stac.signing must be one of {', '.join(SIGNING_MODES)}, got {mode!r}.")
    if mode != "auto":
        return mode
    host = (urlsplit(stac_url).hostname or "").lower()
    pc = host == PC_STAC_HOST or host.endswith("." + PC_STAC_HOST)
    return "planetary-computer" if pc else "none"


def redact(text: str) -> str:
    """``text`` with the query string of every URL and any SAS parameter replaced by
    ``<redacted>`` (signed URLs carry the token in the query)."""
    text = _QUERY.sub(lambda m: f"{m.group('url')}?<redacted>", text)
    return _SAS_PARAM.sub(lambda m: f"{m.group(1)}=<redacted>", text)


def blob_container(href: str) -> tuple[str, str]:
    """``(account, container)`` of a blob href (account in the host, or emulator-style path).

    Raises:
        InvalidInputError: not an http(s) URL with a container.
    """
    parts = urlsplit(href)
    segs = [s for s in parts.path.split("/") if s]
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidInputError(
            f"Asset {redact(href)} is not an http(s) blob URL, so it cannot be signed for "
            "Planetary Computer; set stac.signing: none for catalogues whose assets are "
            "public or on S3."
        )
    if host.endswith(BLOB_DOMAIN) and len(segs) >= 2:
        return host[: -len(BLOB_DOMAIN)], segs[0]
    if len(segs) >= 3:
        return segs[0], segs[1]
    raise InvalidInputError(
        f"Asset {redact(href)} names no blob container "
        "(https://<account>.blob.core.windows.net/<container>/<blob>); it cannot be signed."
    )


def _default_fetch(url: str, headers: dict[str, str], timeout_s: float) -> tuple[int, Any]:
    import requests  # lazy: the HTTP client only when a token is fetched

    r = requests.get(url, headers=headers, timeout=timeout_s)
    try:
        body = r.json()
    except ValueError:
        body = None
    return r.status_code, body


class TokenCache:
    """SAS tokens per ``(token endpoint, account, container)``, refreshed before expiry.

    Args:
        refresh_margin_s: refresh when less than ``min(refresh_margin_s, lifetime / 4)``
            seconds are left on a token.
        retries: token requests per fetch before :class:`SigningError` (>= 1).
        timeout_s: timeout of one token request, seconds.
        backoff_s: sleep before the second try, doubled before each further one, seconds.
        fetch: ``fetch(url, headers, timeout_s) -> (status, json)``; default ``requests``.

    Attributes:
        requests: token requests made (successful or not), for tests and bounds.
    """

    def __init__(
        self,
        *,
        refresh_margin_s: float = 60.0,
        retries: int = 3,
        timeout_s: float = 10.0,
        backoff_s: float = 0.5,
        fetch: Callable[[str, dict[str, str], float], tuple[int, Any]] | None = None,
    ) -> None:
        if retries < 1 or timeout_s <= 0 or backoff_s < 0 or refresh_margin_s < 0:
            raise ConfigError(
                "TokenCache needs retries >= 1, timeout_s > 0, backoff_s >= 0 and "
                f"refresh_margin_s >= 0; got {retries}, {timeout_s}, {backoff_s}, "
                f"{refresh_margin_s}."
            )
        self.refresh_margin_s = refresh_margin_s
        self.retries = retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._fetch = fetch or _default_fetch
        self._tokens: dict[tuple[str, str, str], tuple[Any, float]] = {}  # key -> (token, life)
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self.requests = 0

    @staticmethod
    def _settings() -> Any:
        from planetary_computer.settings import Settings  # lazy: PC SDK only when signing

        return Settings.get()

    def _key(self, account: str, container: str) -> tuple[str, str, str]:
        sas_url = str(self._settings().sas_url).rstrip("/")
        return sas_url, account, container

    def _lock(self, key: tuple[str, str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def token(self, account: str, container: str) -> str:
        """A valid SAS token (query string) for the container; fetched only when needed.

        Raises:
            SigningAuthError: the endpoint refused the request (HTTP 401/403).
            SigningError: the endpoint is unreachable, failing or answers no token.
        """
        key = self._key(account, container)
        with self._lock(key):
            cached = self._tokens.get(key)
            if cached is not None:
                tok, life = cached
                if tok.ttl() > min(self.refresh_margin_s, life / 4):
                    return str(tok.token)
            tok = self._request(key)
            life = max(tok.ttl(), 0.0)
            self._tokens[key] = (tok, life)
            return str(tok.token)

    def invalidate(self, href: str, used: str | None = None) -> None:
        """Drop the cached token of ``href``'s container (only if it is ``used``, when given:
        of many readers refused at once, the first makes the next ``sign`` fetch anew)."""
        key = self._key(*blob_container(href))
        with self._lock(key):
            cached = self._tokens.get(key)
            if cached is not None and (used is None or str(cached[0].token) == used):
                del self._tokens[key]

    def sign(self, href: str) -> tuple[str, str]:
        """``(signed_href, token)``: ``href`` with its container's SAS token as query."""
        token = self.token(*blob_container(href))
        sep = "&" if urlsplit(href).query else "?"
        return f"{href}{sep}{token}", token

    def _request(self, key: tuple[str, str, str]) -> Any:
        from planetary_computer.sas import SASToken  # lazy: PC SDK only when signing

        sas_url, account, container = key
        settings = self._settings()
        headers = {}
        if settings.subscription_key:
            headers["Ocp-Apim-Subscription-Key"] = str(settings.subscription_key)
        url = f"{sas_url}/{account}/{container}"
        last = ""
        for attempt in range(self.retries):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            with self._guard:
                self.requests += 1
            try:
                status, body = self._fetch(url, headers, self.timeout_s)
            except OSError as exc:  # requests' ConnectionError/Timeout are OSErrors
                last = f"{type(exc).__name__}: {redact(str(exc))[:200]}"
                continue
            if status in (401, 403):
                has_key = "a subscription key (PC_SDK_SUBSCRIPTION_KEY)" if headers else "no key"
                raise SigningAuthError(
                    f"The Planetary Computer token endpoint {url} refused a token for container "
                    f"{account}/{container} (HTTP {status}) sent with {has_key}. Check or renew "
                    "PC_SDK_SUBSCRIPTION_KEY (or unset it for anonymous tokens); the key "
                    "itself is never logged."
                )
            if status == 200 and isinstance(body, dict):
                try:
                    return SASToken(**body)
                except ValueError as exc:
                    last = f"answer is not a token ({type(exc).__name__})"
                    continue
            last = f"HTTP {status}"
        raise SigningError(
            f"No SAS token for container {account}/{container} from {url} after "
            f"{self.retries} tries ({last}); assets there cannot be read. Check the network "
            "and PC_SDK_SAS_URL; the tile is recorded as failed and a rerun redoes it."
        )

    def clear(self) -> None:
        """Forget every cached token (e.g. after changing ``PC_SDK_SAS_URL``)."""
        with self._guard:
            self._tokens.clear()

    def expiry(self, account: str, container: str) -> datetime | None:
        """Expiry of the cached token of a container (None if none is cached)."""
        cached = self._tokens.get(self._key(account, container))
        return cached[0].expiry.astimezone(UTC) if cached else None


SIGNER = TokenCache()
"""The process's token cache (one per worker process, as the readers that use it)."""
