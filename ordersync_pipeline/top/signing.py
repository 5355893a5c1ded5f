"""TOP request signing, shared by the client and the simulator so both follow one rule.

Algorithm (shared/reference/top-api.md section 1.4): every parameter except ``sign`` (and empty
values, which the official Java SDK drops) sorted by name in byte order, concatenated as
``name1value1name2value2``, digested as UTF-8, upper-case hex.

- ``md5``: MD5(secret + text + secret)
- ``hmac``: HMAC-MD5(key=secret, text)
- ``hmac-sha256``: HMAC-SHA256(key=secret, text)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal, get_args

SignMethod = Literal["md5", "hmac", "hmac-sha256"]
SIGN_METHODS: tuple[str, ...] = get_args(SignMethod)


def string_to_sign(params: Mapping[str, str]) -> str:
    """The concatenation the digest is taken over (``sign`` and empty values left out)."""
    return "".join(f"{k}{v}" for k, v in sorted(params.items()) if k != "sign" and k and v != "")


def sign(params: Mapping[str, str], secret: str, method: SignMethod) -> str:
    """Return the upper-case hex signature of ``params`` for ``method``."""
    text = string_to_sign(params).encode("utf-8")
    key = secret.encode("utf-8")
    if method == "md5":
        return hashlib.md5(key + text + key).hexdigest().upper()
    if method == "hmac":
        return hmac.new(key, text, hashlib.md5).hexdigest().upper()
    if method == "hmac-sha256":
        return hmac.new(key, text, hashlib.sha256).hexdigest().upper()
    raise ValueError(f"unknown sign_method {method!r}; expected one of {', '.join(SIGN_METHODS)}")


def verify(params: Mapping[str, str], secret: str) -> bool:
    """True when ``params['sign']`` matches the signature for ``params['sign_method']`` (md5 if absent)."""
    method = params.get("sign_method") or "md5"
    given = params.get("sign", "")
    if method not in SIGN_METHODS or not given:
        return False
    return hmac.compare_digest(given.upper(), sign(params, secret, method))  # type: ignore[arg-type]
