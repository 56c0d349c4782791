"""The CAs the broker trusts for its outbound HTTPS (Microsoft, webhook receivers).

Loading certifi's bundle into a new ``ssl.SSLContext`` costs tens of milliseconds of
CPU; a context is meant to be shared by every connection made with it. So each trust
store is built once per process and handed to every client that asks: an extra CA
bundle gets its own context, built again only if that file changes.

A returned context is shared: never change it (no ``load_cert_chain``, no HTTP/2).
It offers HTTP/1.1 by ALPN from the start, which is what httpcore sets again on each
new connection of an HTTP/1.1 client, so those calls change nothing.
"""

from __future__ import annotations

import os
import ssl
import threading

import certifi

_lock = threading.Lock()
_contexts: dict[tuple[str | None, tuple[int, ...] | None], ssl.SSLContext] = {}
_MAX_CONTEXTS = 16  # bundles that changed under a long-lived process: keep the newest


def trusted_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """Public CAs (certifi), plus those in the PEM file ``ca_bundle`` when given.

    Verification is the default's: certificates and host names checked. A missing
    or unreadable bundle raises as ``load_verify_locations`` does, every time.
    """
    ca_bundle = ca_bundle or None
    key = (ca_bundle, _stamp(ca_bundle))
    with _lock:
        known = _contexts.get(key)
    if known is not None:
        return known
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    context.set_alpn_protocols(["http/1.1"])
    with _lock:
        while len(_contexts) >= _MAX_CONTEXTS:
            _contexts.pop(next(iter(_contexts)))
        return _contexts.setdefault(key, context)


def _stamp(path: str | None) -> tuple[int, ...] | None:
    """What changes when the file is replaced or rewritten (a copy that keeps its mtime
    still gets a new inode or change time)."""
    if not path:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None  # not cached: loading it raises below
    return (status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)
