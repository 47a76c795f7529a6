"""TSIG keys for signed dynamic updates, read from BIND ``key`` statements.

The file format is the one ``tsig-keygen`` / ``rndc-confgen`` write and ``nsupdate -k`` reads::

    key "kms-update" {
        algorithm hmac-sha256;
        secret "base64==";
    };

The secret is kept in a :class:`~kmsadmin.values.Secret`: it is never printed, logged or put in a
report (only the key name and algorithm are shown).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmsadmin.errors import InvalidInput
from kmsadmin.values import Secret

#: algorithms dnspython signs with (dns.tsig); BIND's names
ALGORITHMS = ("hmac-md5", "hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512")

#: a quoted string (kept: base64 secrets contain "//") or a comment (dropped)
_COMMENT_RE = re.compile(r'("(?:[^"\\\n]|\\.)*")|/\*.*?\*/|//[^\n]*|#[^\n]*', re.S)
_KEY_RE = re.compile(r'key\s+"?(?P<name>[A-Za-z0-9._-]+)"?\s*\{(?P<body>[^{}]*)\}\s*;', re.S)
_ALG_RE = re.compile(r"algorithm\s+\"?(?P<alg>[A-Za-z0-9.-]+)\"?\s*;")
_SECRET_RE = re.compile(r'secret\s+"(?P<secret>[A-Za-z0-9+/=\s]+)"\s*;')


@dataclass(frozen=True, slots=True)
class TsigKey:
    """A TSIG key: name, algorithm and the base64 secret (as a :class:`Secret`)."""

    name: str
    algorithm: str
    secret: Secret

    def keyring(self) -> dict[Any, Any]:
        """A dnspython keyring holding this key."""
        import dns.name
        import dns.tsig

        key = dns.tsig.Key(dns.name.from_text(self.name), self.secret.value, self.algorithm)
        return {key.name: key}

    def keyname(self) -> Any:
        """The key name as a dnspython Name."""
        import dns.name

        return dns.name.from_text(self.name)

    def describe(self) -> str:
        """What may be shown: ``name (algorithm)``."""
        return f"{self.name} ({self.algorithm})"


def parse_key_text(text: str, *, source: str = "TSIG key file", name: str | None = None) -> TsigKey:
    """Read the first (or the named) ``key`` statement of a BIND configuration fragment."""
    clean = _COMMENT_RE.sub(lambda m: m.group(1) or "", text)
    found = list(_KEY_RE.finditer(clean))
    if name is not None:
        found = [m for m in found if m["name"].rstrip(".").lower() == name.rstrip(".").lower()]
    if not found:
        wanted = f' named "{name}"' if name else ""
        raise InvalidInput(
            source, "", f'no key statement{wanted} (expected: key "NAME" {{ algorithm ...; secret "..."; }};)'
        )
    match = found[0]
    body = match["body"]
    alg = _ALG_RE.search(body)
    secret = _SECRET_RE.search(body)
    if alg is None or secret is None:
        raise InvalidInput(source, match["name"], "the key statement needs both 'algorithm' and 'secret'")
    algorithm = alg["alg"].lower()
    if algorithm not in ALGORITHMS:
        raise InvalidInput(
            source, match["name"], f"unsupported algorithm {algorithm}; use one of {', '.join(ALGORITHMS)}"
        )
    value = "".join(secret["secret"].split())
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(source, match["name"], "the secret is not valid base64") from None
    return TsigKey(name=match["name"], algorithm=algorithm, secret=Secret(value))


def load_key_file(path: Path | str, *, name: str | None = None) -> TsigKey:
    """Read a BIND key file (exit 2 if it is missing or malformed; the secret is never echoed)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput("TSIG key file", str(file), f"cannot read: {exc.strerror}") from None
    return parse_key_text(text, source=f"TSIG key file {file}", name=name)


def key_text(key_name: str, secret_b64: str, algorithm: str = "hmac-sha256") -> str:
    """A BIND ``key`` statement (what ``tsig-keygen`` prints)."""
    return f'key "{key_name}" {{\n\talgorithm {algorithm};\n\tsecret "{secret_b64}";\n}};\n'
