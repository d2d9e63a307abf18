"""API keys (--api_keys_file): which routes need one, the accepted keys, and the comparison.

Off unless a keys file is given. Clients send ``Authorization: Bearer <key>`` (what the ``openai``
package sends for ``api_key=``, and what KServe's clients send with that header). The file holds one
key per line (blank lines and lines starting with ``#`` are skipped), so a new key can be added
before the old one is removed: rotation without downtime.

The file is re-read when it changes, checked with one ``stat`` per protected request. A Kubernetes
Secret volume updates in place by swapping a symlink (``..data``) to a new directory, so the path's
target gets a new inode: ``os.stat`` follows the link and sees it. (A ``subPath`` mount never
updates; the chart mounts the whole volume.) Keys are never logged; the request log says which
slot (0 = the file's first key) matched.

Open without a key: liveness, readiness (kubelet and Knative's queue-proxy probe without one; also
``/openai/health``, vLLM's readiness route, which vLLM leaves open too) and ``/metrics`` (scraped
from inside the cluster; the chart's NetworkPolicy limits who reaches it).
``GET /v1/models/<name>`` stays open too: it is KServe's v1 model-health route ("returns 200 if
model is ready to serve", kserve/protocol/rest/v1_endpoints.py), answers only the name and a
boolean like ``/v2/models/<name>/ready``, and is what v1-style readiness probes use.
Everything else, unknown routes included, needs a key (deny by default).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
from pathlib import Path

from predictor.errors import Unauthorized

log = logging.getLogger("predictor")

_OPEN = re.compile(
    r"/|/metrics|/v2/health/(?:live|ready)|/v2/models/[^/]+(?:/versions/[^/]+)?/ready"
    r"|/v1/models/[^/:]+|/openai/health"
)


def is_open(method: str, path: str) -> bool:
    """Routes anyone may call: probes and metrics (GET or HEAD only)."""
    return method in ("GET", "HEAD") and _OPEN.fullmatch(path) is not None


def digest(key: str) -> bytes:
    """Keys are compared as SHA-256 digests: equal length whatever was sent, so the comparison's
    time says nothing about the key's length either."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def match(presented: bytes, accepted: tuple[bytes, ...]) -> int | None:
    """The slot of the accepted digest equal to ``presented``, or None.

    Every slot is compared, each with hmac.compare_digest (constant time), whether or where a match
    is found: the time taken depends on the number of keys only.
    """
    equal = [hmac.compare_digest(presented, key) for key in accepted]
    return equal.index(True) if True in equal else None


def bearer(authorization: str | None) -> str:
    """The key of an ``Authorization: Bearer <key>`` header, or Unauthorized."""
    if not authorization:
        raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'", invalid=False)
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <key>'", invalid=False)
    return key.strip()


class ApiKeys:
    """The accepted keys, re-read from ``path`` when its target changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digests: tuple[bytes, ...] = ()
        self._stamp: tuple[int, ...] | None = None
        self._lock = threading.Lock()
        self._error: str | None = None  # the last re-read failure, logged once

    def load(self) -> ApiKeys:
        """Read the file now; at start-up a missing, unreadable or empty file is an error."""
        self.refresh(strict=True)
        if not self._digests:
            raise ValueError(f"--api_keys_file {self.path}: no keys in it (one key per line)")
        return self

    def refresh(self, strict: bool = False) -> None:
        """Re-read the file if it changed. Later failures keep the keys in use (a Secret update
        swaps the file atomically, so a read error is not an edit) and are logged."""
        try:
            info = os.stat(self.path)
            stamp = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
            if stamp == self._stamp:
                return
            with self._lock:
                if stamp == self._stamp:
                    return
                lines = self.path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
                keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
                self._digests, self._stamp = tuple(digest(key) for key in keys), stamp
        except OSError as exc:
            if strict:
                raise ValueError(f"--api_keys_file {self.path}: {exc.strerror or exc}") from None
            if str(exc) != self._error:
                log.warning(
                    "cannot re-read --api_keys_file %s (%s); the keys read before stay in use",
                    self.path,
                    exc.strerror or exc,
                )
            self._error = str(exc)
            return
        self._error = None
        log.info("API keys read from %s: %d key(s)", self.path, len(keys))
        if not keys:
            log.error("--api_keys_file %s holds no keys: every protected request gets 401", self.path)

    def slot(self, authorization: str | None) -> int:
        """The slot of the key this header carries, or Unauthorized."""
        key = bearer(authorization)
        self.refresh()
        found = match(digest(key), self._digests)
        if found is None:
            raise Unauthorized("invalid API key", invalid=True)
        return found
