"""One driver per run root: a lease object in the store, renewed while its driver lives.

``<run root>/_driver_lease.json`` names the driver that holds the root (owner id, host, pid,
when it started) and until when (``expires_at``, Unix seconds). A driver takes the lease before
it plans anything and renews it every ``ttl_s / 3`` seconds from a background thread; a second
driver on the same root finds a live lease and stops with :class:`RunLockedError` naming the
holder. A killed driver stops renewing, so its lease expires ``ttl_s`` seconds after its last
renewal and the next driver takes the root over; on the same host a driver whose process is
gone (``kill -9``, a crashed machine's reboot) is seen at once and its lease taken over
without waiting.

Writes are whole-object PUTs (S3) or atomic renames (local); two drivers starting within the
same instant are told apart by reading the lease back after writing it: the one whose id is
not there stops. Expiry compares wall clocks: drivers on different hosts need clocks within a
small fraction of ``ttl_s`` of each other (NTP).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from geoxai.errors import GeoXAIError, StoreError
from geoxai.io.layout import LEASE_NAME, RunLayout
from geoxai.io.store import read_json, write_json

__all__ = ["LEASE_NAME", "DEFAULT_TTL_S", "RunLease", "RunLockedError"]

log = logging.getLogger("geoxai.lease")

DEFAULT_TTL_S = 120.0
"""Seconds a lease outlives its driver's last renewal."""

_SETTLE_S = 0.2
"""Pause between writing a lease and reading it back (a concurrent writer shows up)."""


class RunLockedError(GeoXAIError, RuntimeError):
    """Another live driver holds the run root."""


def _pid_gone(host: Any, pid: Any) -> bool:
    """True when ``pid`` on ``host`` is this host's and no such process exists."""
    if host != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="seconds")


class RunLease:
    """The lease of one driver on one run root; use as a context manager or call
    :meth:`release`.

    Args:
        layout: the run's layout (its root holds the lease object).
        ttl_s: seconds the lease lives after each renewal.
    """

    def __init__(self, layout: RunLayout, ttl_s: float = DEFAULT_TTL_S) -> None:
        if not ttl_s > 0:
            raise ValueError(f"lease ttl_s must be > 0 seconds, got {ttl_s!r}")
        self.layout = layout
        self.ttl_s = float(ttl_s)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.acquired_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.layout.lease_url()

    def _read(self) -> dict[str, Any] | None:
        try:
            doc = read_json(self.layout.at(self.layout.lease_url()), default=None)
        except StoreError as exc:
            if "not valid JSON" not in str(exc):
                raise
            log.warning("ignoring an unreadable lease %s: %s", self.url, exc)
            return None
        return doc if isinstance(doc, dict) else None

    def _write(self) -> None:
        now = time.time()
        write_json(
            {
                "owner": self.owner,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "acquired_at": _iso(self.acquired_at or now),
                "renewed_at": _iso(now),
                "expires_at": now + self.ttl_s,
                "ttl_s": self.ttl_s,
            },
            self.layout.at(self.layout.lease_url()),
        )

    def _refuse(self, held: dict[str, Any]) -> RunLockedError:
        left = max(0.0, float(held.get("expires_at", 0)) - time.time())
        return RunLockedError(
            f"Run root {self.layout.root} is in use by another driver (pid {held.get('pid')} "
            f"on {held.get('host')}, since {held.get('acquired_at')}); its lease expires in "
            f"{left:.0f} s unless that driver renews it. Wait for that run to end or stop it. "
            f"If it was killed, rerun after its lease expires (at most "
            f"{held.get('ttl_s', self.ttl_s):.0f} s), or delete {self.url} if no driver runs."
        )

    def acquire(self) -> RunLease:
        """Take the root (or raise :class:`RunLockedError`) and start renewing the lease.

        Raises:
            RunLockedError: a live lease of another driver holds the root.
            StoreError: the store cannot be read or written.
        """
        held = self._read()
        if held and held.get("owner") != self.owner:
            gone = _pid_gone(held.get("host"), held.get("pid"))
            if float(held.get("expires_at", 0)) > time.time() and not gone:
                raise self._refuse(held)
            log.warning(
                "taking over run root %s: driver pid %s on %s %s",
                self.layout.root,
                held.get("pid"),
                held.get("host"),
                "is gone" if gone else f"let its lease expire at {_iso(held['expires_at'])}",
            )
        self.acquired_at = time.time()
        self._write()
        time.sleep(_SETTLE_S)
        back = self._read()
        if not back or back.get("owner") != self.owner:
            raise self._refuse(back or {})
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="geoxai-lease", daemon=True)
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                held = self._read()
                if held and held.get("owner") != self.owner:
                    log.error(
                        "lost the lease on %s to driver pid %s on %s (this driver stalled "
                        "for longer than %.0f s); stop one of the two runs",
                        self.layout.root,
                        held.get("pid"),
                        held.get("host"),
                        self.ttl_s,
                    )
                    return
                self._write()
            except (StoreError, OSError) as exc:  # the store may come back: keep trying
                log.warning("could not renew the lease on %s: %s", self.layout.root, exc)

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still this driver's (best effort)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            held = self._read()
            if held and held.get("owner") == self.owner:
                loc = self.layout.at(self.layout.lease_url())
                fs = loc.filesystem()
                fs.rm_file(loc.path)
                if hasattr(fs, "invalidate_cache"):
                    fs.invalidate_cache()
        except (StoreError, OSError) as exc:
            log.warning(
                "could not release the lease on %s (%s); it expires within %.0f s",
                self.layout.root,
                exc,
                self.ttl_s,
            )

    def __enter__(self) -> RunLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
