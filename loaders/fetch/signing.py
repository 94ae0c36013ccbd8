"""Request signers for bill APIs (pluggable: ``signer: "package.module:function"`` in the config).

A signer is ``fn(request: SignRequest, secret: str) -> SignRequest | None``: it may change
``request.params`` (the query for GET, the form for POST) and ``request.headers`` in place, or
return a new :class:`SignRequest`. ``secret`` is the value of ``secret_env`` (or the Airflow
connection's password / ``secret`` extra): an HMAC key or a PEM private key. Signers must not log it.

Built-ins, in the style of the Chinese channels' v2/open APIs:

* :func:`hmac_sha256` (``auth: hmac``): parameters with a value, sorted by name, joined as
  ``k=v&k=v`` then ``&key=<secret>``; HMAC-SHA256 with the secret, upper-case hex, in ``sign``
  (``sign_type=HMAC-SHA256``), as WeChat Pay v2 does.
* :func:`rsa_sha256` (``auth: rsa``): ``sign_type=RSA2``; parameters with a value except ``sign``,
  sorted, joined as ``k=v&k=v``; RSA PKCS#1 v1.5 with SHA-256 over the UTF-8 bytes; base64 in
  ``sign``, as Alipay's open API does.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
from dataclasses import dataclass, field
from typing import Callable

from loaders.fetch.base import FetchError


@dataclass
class SignRequest:
    method: str
    url: str                                       # without the query string
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


Signer = Callable[[SignRequest, str], "SignRequest | None"]


def string_to_sign(params: dict[str, str]) -> str:
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k] not in ("", None))


def hmac_sha256(req: SignRequest, secret: str) -> None:
    req.params["sign_type"] = "HMAC-SHA256"
    text = string_to_sign(req.params) + "&key=" + secret
    req.params["sign"] = hmac.new(secret.encode(), text.encode("utf-8"), hashlib.sha256).hexdigest().upper()


def rsa_sha256(req: SignRequest, secret: str) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        key = serialization.load_pem_private_key(secret.encode(), password=None)
    except (ValueError, TypeError):
        raise FetchError("rsa signer: the secret is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise FetchError("rsa signer: the secret is not an RSA private key")
    req.params["sign_type"] = "RSA2"
    sig = key.sign(string_to_sign(req.params).encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    req.params["sign"] = base64.b64encode(sig).decode()


BUILTIN = {"hmac": "loaders.fetch.signing:hmac_sha256", "rsa": "loaders.fetch.signing:rsa_sha256"}


def load_signer(name: str) -> Signer:
    """Import ``"package.module:function"`` (or ``package.module.function``)."""
    mod_name, sep, fn_name = name.partition(":")
    if not sep:
        mod_name, _, fn_name = name.rpartition(".")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise FetchError(f"signer {name!r} cannot be imported: {type(exc).__name__}: {exc}") from None
    if not callable(fn):
        raise FetchError(f"signer {name!r} is not a function")
    return fn
