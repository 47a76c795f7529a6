"""Input validation done before anything is rendered into a script.

Values that can never be valid (host names, ports, product keys, DNS domains, intervals, firewall
profiles, Activation IDs, Confirmation IDs) are refused here with :class:`InvalidInput` (exit 2),
so templates only ever see well-formed values; the templates quote them anyway.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from kmsadmin.errors import InvalidInput

#: Product keys use 25 characters: the 24 of the classic key alphabet plus ``N``, which Windows 8
#: and later keys carry exactly once as a position marker (hence "at most one N").
PRODUCT_KEY_ALPHABET = "BCDFGHJKMNPQRTVWXY2346789"
_KEY_RE = re.compile(rf"^[{PRODUCT_KEY_ALPHABET}]{{5}}(-[{PRODUCT_KEY_ALPHABET}]{{5}}){{4}}$")
_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_KB_RE = re.compile(r"^KB\d{6,7}$")
#: activation object names and DNs kmsadmin accepts: letters, digits, space and . _ - (plus = and , in a
#: DN); LDAP DN metacharacters (+ " \\ < > ; #) never reach a script
_AO_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
_AO_DN_RE = re.compile(r"^[A-Za-z0-9 ._=,-]{1,512}$")

#: `Set-NetFirewallRule -Profile` accepts Any, Domain, Private, Public (PSDOCS NetSecurity).
FIREWALL_PROFILES = ("Domain", "Private", "Public", "Any")
#: SetVLActivationInterval / SetVLRenewalInterval: ">= 15 and <= 43200" minutes [SPPWMI].
INTERVAL_MIN, INTERVAL_MAX = 15, 43200


def product_key(value: str) -> str:
    """Normalise and check a product key: five groups of five from the product-key alphabet."""
    key = value.strip().upper().replace("\u2013", "-").replace("\u2014", "-")
    if not _KEY_RE.match(key):
        raise InvalidInput(
            "product key",
            _shown_key(value),
            f"expected five groups of five characters from {PRODUCT_KEY_ALPHABET} separated by '-'",
        )
    if key.count("N") > 1:
        raise InvalidInput("product key", _shown_key(value), "a product key holds at most one 'N'")
    return key


def _shown_key(value: str) -> str:
    """Never echo a whole (possibly secret) key back in an error: keep the last five characters."""
    stripped = value.strip()
    return ("…" + stripped[-5:]) if len(stripped) > 5 else stripped


def hostname(value: str, *, what: str = "host name") -> str:
    """A DNS host name (RFC 1123) or an IPv4/IPv6 address literal."""
    name = value.strip()
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        pass
    if not name or len(name) > 253:
        raise InvalidInput(what, value, "must be 1 to 253 characters")
    labels = name.rstrip(".").split(".")
    for label in labels:
        if not _LABEL_RE.match(label):
            raise InvalidInput(
                what, value, "each label is 1-63 letters, digits or '-', not starting/ending with '-'"
            )
    return name.rstrip(".")


def domain(value: str) -> str:
    """A DNS domain such as ``contoso.com`` (no address literals)."""
    name = hostname(value, what="DNS domain")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    raise InvalidInput("DNS domain", value, "an IP address is not a DNS domain")


def port(value: int | str) -> int:
    """A TCP port, 1..65535."""
    try:
        number = int(str(value).strip())
    except ValueError:
        raise InvalidInput("port", str(value), "must be a number from 1 to 65535") from None
    if not 1 <= number <= 65535:
        raise InvalidInput("port", str(value), "must be a number from 1 to 65535")
    return number


def host_port(value: str, *, default_port: int = 1688) -> tuple[str, int]:
    """``name[:port]`` or ``[v6addr]:port`` as given to ``slmgr /skms``."""
    text = value.strip()
    if text.startswith("["):
        addr, _, rest = text[1:].partition("]")
        return hostname(addr), port(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        name, _, number = text.partition(":")
        return hostname(name), port(number)
    return hostname(text), default_port


def interval(value: int | str, *, what: str = "interval") -> int:
    """An activation or renewal interval in minutes, 15..43200."""
    try:
        minutes = int(str(value).strip())
    except ValueError:
        raise InvalidInput(
            what, str(value), f"must be whole minutes from {INTERVAL_MIN} to {INTERVAL_MAX}"
        ) from None
    if not INTERVAL_MIN <= minutes <= INTERVAL_MAX:
        raise InvalidInput(what, str(value), f"must be whole minutes from {INTERVAL_MIN} to {INTERVAL_MAX}")
    return minutes


def firewall_profiles(values: Iterable[str] | str) -> tuple[str, ...]:
    """Firewall profiles for SPPSVC-In-TCP, e.g. ``Domain,Private``."""
    items = values.split(",") if isinstance(values, str) else list(values)
    result: list[str] = []
    for item in items:
        match = next((p for p in FIREWALL_PROFILES if p.lower() == item.strip().lower()), None)
        if match is None:
            raise InvalidInput("firewall profile", item, f"must be one of {', '.join(FIREWALL_PROFILES)}")
        if match not in result:
            result.append(match)
    if not result:
        raise InvalidInput("firewall profile", "", "give at least one profile")
    return tuple(result)


def remote_address(value: str) -> str:
    """One firewall remote address: an IPv4/IPv6 address or subnet, as ``network/prefix``.

    Set-NetFirewallRule -RemoteAddress accepts an address, a subnet by bit count (``1.2.3.0/24``) or,
    for IPv4, by mask (``1.2.3.0/255.255.255.0``) ([PSDOCS] NetSecurity/Set-NetFirewallRule.md); both
    forms come back as ``1.2.3.0/24`` here, so a scope read from a host compares with what was asked.
    The keywords ``Any`` and ``LocalSubnet`` are kept as Windows spells them.
    """
    text = value.strip()
    for keyword in ("Any", "LocalSubnet"):
        if text.lower() == keyword.lower():
            return keyword
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise InvalidInput(
            "remote address", value, "expected an address or subnet such as 10.0.0.0/8 or 192.168.1.0/24"
        ) from None


def remote_addresses(values: Iterable[str] | str) -> tuple[str, ...]:
    """Client subnets to allow, e.g. ``10.0.0.0/8,192.168.0.0/16`` (``--allow-from``)."""
    items = values.split(",") if isinstance(values, str) else list(values)
    result: list[str] = []
    for item in items:
        if not item.strip():
            continue
        address = remote_address(item)
        if address in ("Any", "LocalSubnet"):
            raise InvalidInput("remote address", item, "give the client subnets (e.g. 10.0.0.0/8)")
        if address not in result:
            result.append(address)
    if not result:
        raise InvalidInput("remote address", "", "give at least one subnet")
    return tuple(result)


def guid(value: str, *, what: str = "Activation ID") -> str:
    """A GUID such as an Activation ID or Application ID, lower-cased."""
    text = value.strip().strip("{}")
    if not _GUID_RE.match(text):
        raise InvalidInput(what, value, "expected a GUID like 55c92734-d682-4d71-983e-d6ec3f16059f")
    return text.lower()


def confirmation_id(value: str) -> str:
    """A phone-activation Confirmation ID: 48 digits (8 blocks of 6), separators ignored."""
    digits = re.sub(r"[\s-]", "", value)
    if not digits.isdigit() or len(digits) != 48:
        raise InvalidInput("Confirmation ID", value, "expected 48 digits (8 blocks of 6)")
    return digits


def kb_number(value: str) -> str:
    """A Microsoft update (KB) number such as ``KB5003646``."""
    text = value.strip().upper()
    if not text.startswith("KB"):
        text = "KB" + text
    if not _KB_RE.match(text):
        raise InvalidInput("update number", value, "expected KB followed by 6 or 7 digits")
    return text


def activation_object_name(value: str) -> str:
    """The name of an Active Directory activation object (``slmgr /ad-activation-online KEY NAME``)."""
    name = value.strip()
    if not _AO_NAME_RE.match(name):
        raise InvalidInput(
            "activation object name",
            value,
            "1-64 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def activation_object(value: str) -> str:
    """An activation object as ``slmgr /del-ao`` takes it: a DN, an RDN (``CN=name``) or a name."""
    text = value.strip()
    if "=" not in text:
        return activation_object_name(text)
    parts = [p.strip() for p in text.split(",")]
    if not _AO_DN_RE.match(text) or not all(
        p.count("=") == 1 and p.split("=")[0].upper() in ("CN", "DC") and p.split("=")[1] for p in parts
    ):
        raise InvalidInput("activation object", value, "a name, CN=name, or a DN of CN= and DC= parts")
    return text
