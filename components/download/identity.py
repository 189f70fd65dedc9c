"""A source's content identity as one string: what makes the download step's
cache key honest (it changes exactly when the bytes behind a URL change) and what
the download is verified against.
"""

from __future__ import annotations

import json

FIELDS = ("size", "etag", "last_modified", "md5")


def identity_of(resolved: dict, source: str) -> str:
    """``resolve_sources()``'s fields for one source (wikipedia, cc100, unidic, vibrato_dict) as canonical JSON."""
    return json.dumps({k: resolved.get(f"{source}_{k}", "") for k in FIELDS}, sort_keys=True)


def verification_of(identity: str) -> dict:
    """``download()`` keyword arguments that check the bytes against the identity."""
    ident = json.loads(identity) if identity else {}
    out = {}
    if isinstance(ident.get("size"), int) and ident["size"] >= 0:
        out["expected_size"] = ident["size"]
    if ident.get("md5"):
        out["md5"] = ident["md5"]
    return out
