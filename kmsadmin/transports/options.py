"""Connection options for one host, and how they are built.

Three sources feed :func:`build_options`, in this order of precedence:

1. explicit values (CLI flags), keyed by :class:`ConnectionOptions` field names;
2. Ansible inventory host vars (``ansible_host``, ``ansible_psrp_*``, ``ansible_winrm_*``...), so an
   Ansible inventory for Windows hosts works unchanged;
3. environment variables (``KMSADMIN_USER``, ``KMSADMIN_PASSWORD``...);

then the defaults below. The defaults are the secure ones: HTTPS on 5986, certificate validation on,
Negotiate auth, message encryption whenever the channel is plain HTTP, no proxy.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, get_args

from kmsadmin.errors import ConfigError
from kmsadmin.values import Secret

TransportName = Literal["psrp", "winrs", "pywinrm"]
AuthName = Literal["basic", "ntlm", "negotiate", "kerberos", "credssp", "certificate"]
EncryptionMode = Literal["auto", "always", "never"]

TRANSPORTS: tuple[str, ...] = get_args(TransportName)
AUTHS: tuple[str, ...] = get_args(AuthName)
ENCRYPTION_MODES: tuple[str, ...] = get_args(EncryptionMode)

#: WinRM's default listener ports (``winrm quickconfig``): 5985 HTTP, 5986 HTTPS.
HTTP_PORT = 5985
HTTPS_PORT = 5986


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """Everything needed to open a WinRM session to one host. Build it with :func:`build_options`."""

    #: inventory name, used in errors, logs and reports
    name: str
    #: address to connect to (``ansible_host``; the inventory name when unset)
    host: str
    port: int = HTTPS_PORT
    user: str | None = None
    password: Secret | None = None
    transport: TransportName = "psrp"
    auth: AuthName = "negotiate"
    https: bool = True
    #: WS-Man URL path (``/wsman`` on every Windows listener)
    path: str = "wsman"
    cert_validation: bool = True
    #: PEM bundle of CAs trusted for the host's HTTPS certificate (None: the system store)
    ca_bundle: str | None = None
    #: client certificate and key (PEM paths) for ``auth="certificate"``
    cert_pem: str | None = None
    cert_key_pem: str | None = None
    message_encryption: EncryptionMode = "auto"
    connection_timeout: float = 30.0
    #: must exceed operation_timeout: the host may legitimately hold a Receive that long
    read_timeout: float = 30.0
    #: WS-Man OperationTimeout: how long the host holds a Receive open when there is no output
    operation_timeout: int = 20
    proxy: str | None = None
    #: ignore HTTP(S)_PROXY from the controller's environment
    no_proxy: bool = True
    #: retries of a refused connection or HTTP 503/425/429, with backoff
    reconnection_retries: int = 2
    reconnection_backoff: float = 0.5
    #: PSRP session configuration (endpoint) name
    configuration_name: str = "Microsoft.PowerShell"
    #: seconds one step may take on this host, all round trips included
    deadline: float = 300.0
    #: Basic auth over plain HTTP sends the password readable by anyone on the path
    allow_unencrypted_basic: bool = False
    #: auth methods tried in order after ``auth`` when the host refuses it (an Ansible
    #: ``ansible_winrm_transport`` list such as ``[kerberos, ntlm]``)
    auth_fallbacks: tuple[AuthName, ...] = ()
    #: message_encryption "never" over plain HTTP sends every script (host keys included) readable
    allow_unencrypted: bool = False
    #: Kerberos: the host name in the service principal (None: see :attr:`spn_host`)
    kerberos_hostname: str | None = None
    #: Kerberos: the service in the service principal, ``HTTP/<fqdn>``
    kerberos_service: str = "HTTP"
    #: Kerberos: delegate (forward) the ticket to the host, for a second hop from it
    kerberos_delegation: bool = False
    #: Kerberos: the ticket cache to use (``FILE:/path``...; None: ``KRB5CCNAME`` or the default cache)
    kerberos_ccache: str | None = None
    #: Kerberos: a keytab to get the ticket from, for ``user`` (instead of a password or a cache)
    kerberos_keytab: str | None = None

    @property
    def scheme(self) -> str:
        """``https`` or ``http``."""
        return "https" if self.https else "http"

    @property
    def endpoint(self) -> str:
        """The WS-Man URL, for logs and error messages (never contains credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/{self.path}"

    @property
    def spn_host(self) -> str:
        """The host part of the Kerberos SPN: the override, else the DNS name connected to, else (when
        ``ansible_host`` is an IP address, which has no SPN) the inventory name."""
        if self.kerberos_hostname:
            return self.kerberos_hostname
        if _is_ip(self.host) and not _is_ip(self.name):
            return self.name
        return self.host

    @property
    def spn(self) -> str:
        """The service principal name Kerberos asks the KDC for, ``HTTP/<fqdn>``."""
        return f"{self.kerberos_service}/{self.spn_host}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


# --- raw value coercion -----------------------------------------------------------------------------

_TRUE = frozenset({"1", "true", "yes", "on", "y"})
_FALSE = frozenset({"0", "false", "no", "off", "n"})


def _as_bool(name: str, what: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name}: {what} must be true or false, not {value!r}")


def _as_int(name: str, what: str, value: object, *, minimum: int = 0) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ConfigError(f"{name}: {what} must be a whole number, not {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name}: {what} must be at least {minimum}, not {number}")
    return number


def _as_float(name: str, what: str, value: object, *, allow_zero: bool = False) -> float:
    try:
        number = float(str(value).strip()) if not isinstance(value, int | float) else float(value)
    except ValueError:
        raise ConfigError(f"{name}: {what} must be a number of seconds, not {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        allowed = "0 or more" if allow_zero else "more than 0"
        raise ConfigError(f"{name}: {what} must be a finite number of seconds, {allowed}, not {value!r}")
    return number


def _as_choice(name: str, what: str, value: object, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise ConfigError(f"{name}: {what} must be one of {', '.join(choices)}, not {value!r}")
    return text


def _as_str(value: object) -> str:
    return str(value).strip()


# --- the three sources, each reduced to {field name: raw value} -----------------------------------

#: environment variable -> ConnectionOptions field (or a pseudo field handled in _resolve)
ENV_VARS: Mapping[str, str] = {
    "KMSADMIN_USER": "user",
    "KMSADMIN_PASSWORD": "password",
    "KMSADMIN_PASSWORD_FILE": "password_file",
    "KMSADMIN_TRANSPORT": "transport",
    "KMSADMIN_AUTH": "auth",
    "KMSADMIN_PORT": "port",
    "KMSADMIN_SCHEME": "scheme",
    "KMSADMIN_CA_BUNDLE": "ca_bundle",
    "KMSADMIN_CERT_VALIDATION": "cert_validation",
    "KMSADMIN_CERT_PEM": "cert_pem",
    "KMSADMIN_CERT_KEY_PEM": "cert_key_pem",
    "KMSADMIN_MESSAGE_ENCRYPTION": "message_encryption",
    "KMSADMIN_CONNECTION_TIMEOUT": "connection_timeout",
    "KMSADMIN_READ_TIMEOUT": "read_timeout",
    "KMSADMIN_OPERATION_TIMEOUT": "operation_timeout",
    "KMSADMIN_PROXY": "proxy",
    "KMSADMIN_NO_PROXY": "no_proxy",
    "KMSADMIN_RECONNECTION_RETRIES": "reconnection_retries",
    "KMSADMIN_DEADLINE": "deadline",
    "KMSADMIN_ALLOW_UNENCRYPTED_BASIC": "allow_unencrypted_basic",
    "KMSADMIN_ALLOW_UNENCRYPTED": "allow_unencrypted",
    "KMSADMIN_KERBEROS_CCACHE": "kerberos_ccache",
    "KMSADMIN_KERBEROS_KEYTAB": "kerberos_keytab",
}

#: keys accepted besides the ConnectionOptions fields: ``scheme`` (http|https) sets ``https``;
#: ``password_file`` reads the password from a file
_PSEUDO_FIELDS = frozenset({"scheme", "password_file", "auth_list"})
_FIELD_NAMES = frozenset(f.name for f in fields(ConnectionOptions)) - {"name"}
_KNOWN_KEYS = _FIELD_NAMES | _PSEUDO_FIELDS

# Host vars of Ansible's psrp and winrm connection plugins, per plugin family. When a host uses one
# family, its own vars win and the other family's fill the gaps (a psrp inventory that kmsadmin is
# told to drive with pywinrm keeps its cert validation and CA settings).
_PSRP_VARS: Mapping[str, str] = {
    "ansible_psrp_user": "user",
    "ansible_psrp_password": "password",
    "ansible_psrp_port": "port",
    "ansible_psrp_protocol": "scheme",
    "ansible_psrp_path": "path",
    "ansible_psrp_auth": "auth",
    "ansible_psrp_cert_validation": "cert_validation",
    "ansible_psrp_ca_cert": "ca_bundle",
    "ansible_psrp_certificate_pem": "cert_pem",
    "ansible_psrp_certificate_key_pem": "cert_key_pem",
    "ansible_psrp_message_encryption": "message_encryption",
    "ansible_psrp_connection_timeout": "connection_timeout",
    "ansible_psrp_read_timeout": "read_timeout",
    "ansible_psrp_operation_timeout": "operation_timeout",
    "ansible_psrp_proxy": "proxy",
    "ansible_psrp_ignore_proxy": "no_proxy",
    "ansible_psrp_reconnection_retries": "reconnection_retries",
    "ansible_psrp_reconnection_backoff": "reconnection_backoff",
    "ansible_psrp_configuration_name": "configuration_name",
    "ansible_psrp_negotiate_hostname_override": "kerberos_hostname",
    "ansible_psrp_negotiate_service": "kerberos_service",
    "ansible_psrp_negotiate_delegate": "kerberos_delegation",
}
_WINRM_VARS: Mapping[str, str] = {
    "ansible_winrm_user": "user",
    "ansible_winrm_password": "password",
    "ansible_winrm_port": "port",
    "ansible_winrm_scheme": "scheme",
    "ansible_winrm_path": "path",
    "ansible_winrm_transport": "auth",
    "ansible_winrm_server_cert_validation": "cert_validation",
    "ansible_winrm_ca_trust_path": "ca_bundle",
    "ansible_winrm_cert_pem": "cert_pem",
    "ansible_winrm_cert_key_pem": "cert_key_pem",
    "ansible_winrm_message_encryption": "message_encryption",
    "ansible_winrm_read_timeout_sec": "read_timeout",
    "ansible_winrm_operation_timeout_sec": "operation_timeout",
    "ansible_winrm_proxy": "proxy",
    "ansible_winrm_kerberos_hostname_override": "kerberos_hostname",
    "ansible_winrm_service": "kerberos_service",
    "ansible_winrm_kerberos_delegation": "kerberos_delegation",
}
_GENERIC_VARS: Mapping[str, str] = {
    "ansible_host": "host",
    "ansible_port": "port",
    "ansible_user": "user",
    "ansible_password": "password",
    "kmsadmin_kerberos_ccache": "kerberos_ccache",
    "kmsadmin_kerberos_keytab": "kerberos_keytab",
    "kmsadmin_allow_unencrypted": "allow_unencrypted",
    "kmsadmin_deadline": "deadline",
}


#: every ``ansible_*`` host var kmsadmin reads (inventories warn once about the others)
ANSIBLE_VARS: frozenset[str] = frozenset(
    {*_PSRP_VARS, *_WINRM_VARS, *_GENERIC_VARS, "ansible_connection", "ansible_winrm_connection_timeout"}
)


def _winrm_transport_to_auth(value: object) -> dict[str, object]:
    """Ansible's ``ansible_winrm_transport`` is pywinrm's transport: a list, first supported wins.

    ``plaintext`` is Basic, ``ssl`` is Basic over HTTPS (a client certificate when one is given).
    """
    raw = value if isinstance(value, list | tuple) else str(value).split(",")
    names = [str(v).strip().lower() for v in raw if str(v).strip()]
    if not names:
        return {}
    auths = [_WINRM_TRANSPORT_AUTH.get(n, n) for n in names]
    first = names[0]
    # the whole list travels as the pseudo field auth_list: build_options keeps the rest as
    # auth_fallbacks only when the auth that wins is this list's first (no CLI --auth, no psrp var)
    if first == "ssl":
        return {"auth": "basic", "scheme": "https", "auth_list": auths}
    return {"auth": auths[0], "auth_list": auths}


#: pywinrm transport names that are not kmsadmin auth names
_WINRM_TRANSPORT_AUTH = {"plaintext": "basic", "ssl": "basic"}


def _from_hostvars(
    hostvars: Mapping[str, object], prefer: str, origin: dict[str, str] | None = None
) -> dict[str, object]:
    """Reduce Ansible host vars to raw option values. ``prefer`` is ``psrp`` or ``winrm``; ``origin``
    (when given) gets the host var each value came from, for error messages."""
    raw: dict[str, object] = {}
    origin = {} if origin is None else origin

    def take(table: Mapping[str, str]) -> None:
        for var, key in table.items():
            if var not in hostvars or hostvars[var] is None:
                continue
            value = hostvars[var]
            if var == "ansible_winrm_transport":
                raw.update(_winrm_transport_to_auth(value))
            elif var == "ansible_psrp_ignore_proxy":
                raw["no_proxy"] = value
            elif var in {"ansible_psrp_cert_validation", "ansible_winrm_server_cert_validation"}:
                raw["cert_validation"] = str(value).strip().lower() != "ignore"
            else:
                raw[key] = value
            origin[key] = var

    # Lowest first, so later tables overwrite: generic, other family, own family.
    take(_GENERIC_VARS)
    take(_WINRM_VARS if prefer == "psrp" else _PSRP_VARS)
    take(_PSRP_VARS if prefer == "psrp" else _WINRM_VARS)
    if "ansible_winrm_connection_timeout" in hostvars and prefer == "winrm":
        # Ansible's winrm plugin turns this one value into pywinrm's operation and read timeouts.
        seconds = hostvars["ansible_winrm_connection_timeout"]
        raw.setdefault("operation_timeout", seconds)
        raw.setdefault("read_timeout", _as_int("inventory", "ansible_winrm_connection_timeout", seconds) + 1)
        origin.setdefault("operation_timeout", "ansible_winrm_connection_timeout")
        origin.setdefault("read_timeout", "ansible_winrm_connection_timeout")
    return raw


def _hostvars_transport(name: str, hostvars: Mapping[str, object]) -> str | None:
    """The transport an inventory asks for: ``kmsadmin_transport``, else ``ansible_connection``."""
    if hostvars.get("kmsadmin_transport") is not None:
        return _as_choice(name, "kmsadmin_transport", hostvars["kmsadmin_transport"], TRANSPORTS)
    connection = hostvars.get("ansible_connection")
    if connection is None:
        return None
    text = str(connection).strip().lower().rsplit(".", 1)[-1]  # ansible.builtin.psrp -> psrp
    if text == "psrp":
        return "psrp"
    if text == "winrm":
        return "pywinrm"
    raise ConfigError(
        f"{name}: ansible_connection={connection!r} is not a WinRM connection; "
        "kmsadmin speaks psrp or winrm (set ansible_connection: psrp)"
    )


def _from_env(env: Mapping[str, str]) -> dict[str, object]:
    return {key: env[var] for var, key in ENV_VARS.items() if env.get(var, "").strip()}


def _read_password_file(name: str, path: object) -> Secret:
    try:
        text = Path(str(path)).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the password file {path}: {exc.strerror}") from None
    # One trailing newline is how editors and `echo` leave files; the password itself may end in spaces.
    return Secret(text.removesuffix("\n").removesuffix("\r"))


# --- resolution --------------------------------------------------------------------------------------


def _layered(*layers: Mapping[str, object]) -> dict[str, object]:
    """Merge raw layers, highest precedence first; None means "not given"."""
    merged: dict[str, object] = {}
    for layer in reversed(layers):
        merged.update({k: v for k, v in layer.items() if v is not None})
    return merged


def _password_from(name: str, layers: tuple[Mapping[str, object], ...]) -> Secret | None:
    # A password and a password file in the same layer: the password wins; across layers the
    # higher layer wins whichever of the two it gives.
    for layer in layers:
        if layer.get("password") is not None:
            value = layer["password"]
            return value if isinstance(value, Secret) else Secret(str(value))
        if layer.get("password_file") is not None:
            return _read_password_file(name, layer["password_file"])
    return None


_CONVERTERS: Mapping[str, Callable[[str, str, object], object]] = {
    "host": lambda n, w, v: _as_str(v),
    "user": lambda n, w, v: _as_str(v),
    "path": lambda n, w, v: _as_str(v).strip("/"),
    "ca_bundle": lambda n, w, v: _as_str(v),
    "cert_pem": lambda n, w, v: _as_str(v),
    "cert_key_pem": lambda n, w, v: _as_str(v),
    "proxy": lambda n, w, v: _as_str(v),
    "configuration_name": lambda n, w, v: _as_str(v),
    "kerberos_hostname": lambda n, w, v: _as_str(v),
    "kerberos_service": lambda n, w, v: _as_str(v),
    "kerberos_ccache": lambda n, w, v: _as_str(v),
    "kerberos_keytab": lambda n, w, v: _as_str(v),
    "kerberos_delegation": _as_bool,
    "port": lambda n, w, v: _as_int(n, w, v, minimum=1),
    "operation_timeout": lambda n, w, v: _as_int(n, w, v, minimum=1),
    "reconnection_retries": _as_int,
    "connection_timeout": _as_float,
    "read_timeout": _as_float,
    "reconnection_backoff": lambda n, w, v: _as_float(n, w, v, allow_zero=True),
    "deadline": _as_float,
    "https": _as_bool,
    "cert_validation": _as_bool,
    "no_proxy": _as_bool,
    "allow_unencrypted_basic": _as_bool,
    "allow_unencrypted": _as_bool,
    "transport": lambda n, w, v: _as_choice(n, w, v, TRANSPORTS),
    "auth": lambda n, w, v: _as_choice(n, w, v, AUTHS),
    "message_encryption": lambda n, w, v: _as_choice(n, w, v, ENCRYPTION_MODES),
}


#: environment variable of each ConnectionOptions field (for error messages)
_ENV_VAR_OF: Mapping[str, str] = {key: var for var, key in ENV_VARS.items()}


def _origin(
    key: str,
    explicit: Mapping[str, object],
    inventory_origin: Mapping[str, str],
    env_raw: Mapping[str, object],
) -> str:
    """How an error names the setting ``key`` came from: the option, else the host var or the
    environment variable that gave it (``deadline (kmsadmin_deadline)``)."""
    what = key.replace("_", " ")
    if explicit.get(key) is not None:
        return what
    if key in inventory_origin:
        return f"{what} ({inventory_origin[key]})"
    if key in env_raw and key in _ENV_VAR_OF:
        return f"{what} ({_ENV_VAR_OF[key]})"
    return what


def deadline_setting(
    name: str, hostvars: Mapping[str, object], env: Mapping[str, str] | None = None
) -> float | None:
    """Host ``name``'s deadline from its ``kmsadmin_deadline`` var, else ``KMSADMIN_DEADLINE`` (``env``,
    default ``os.environ``); None when neither is set. Raises :class:`ConfigError` naming the host and
    the variable for a value that is not a finite number of seconds above 0."""
    value = hostvars.get("kmsadmin_deadline")
    if value is not None:
        return _as_float(name, "deadline (kmsadmin_deadline)", value)
    text = (os.environ if env is None else env).get("KMSADMIN_DEADLINE", "").strip()
    return _as_float(name, "deadline (KMSADMIN_DEADLINE)", text) if text else None


def build_options(
    name: str,
    explicit: Mapping[str, object] | None = None,
    hostvars: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
) -> ConnectionOptions:
    """Build the connection options for inventory host ``name``.

    ``explicit`` holds CLI values keyed by :class:`ConnectionOptions` field names (plus ``scheme``
    = http|https and ``password_file``); None values count as not given. ``hostvars`` are the host's
    Ansible inventory vars. ``env`` defaults to ``os.environ``. Raises :class:`ConfigError` for
    anything invalid or insecure, naming the host and the fix.
    """
    explicit = dict(explicit or {})
    hostvars = dict(hostvars or {})
    env_raw = _from_env(os.environ if env is None else env)

    unknown = sorted(set(explicit) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{name}: unknown connection option(s): {', '.join(unknown)}")

    # The transport decides which Ansible plugin's vars are read first, so resolve it before the rest.
    inventory_transport = _hostvars_transport(name, hostvars)
    transport_raw = _layered(
        {"transport": explicit.get("transport")},
        {"transport": inventory_transport},
        {"transport": env_raw.get("transport")},
    ).get("transport", "psrp")
    transport = _as_choice(name, "transport", transport_raw, TRANSPORTS)
    inventory_origin: dict[str, str] = {}
    inventory_raw = _from_hostvars(hostvars, "winrm" if transport == "pywinrm" else "psrp", inventory_origin)

    layers: tuple[Mapping[str, object], ...] = (explicit, inventory_raw, env_raw)
    merged = _layered(*layers)
    merged["transport"] = transport

    values: dict[str, object] = {}
    for key, raw in merged.items():
        if key in _PSEUDO_FIELDS or key == "password":
            continue
        values[key] = _CONVERTERS[key](name, _origin(key, explicit, inventory_origin, env_raw), raw)

    # Scheme: an explicit https flag beats a scheme string from the same or a lower layer. When
    # neither is given anywhere, port 5985 means HTTP, as in Ansible's psrp and winrm plugins.
    if "https" not in values:
        if "scheme" in merged:
            values["https"] = _as_choice(name, "scheme", merged["scheme"], ("http", "https")) == "https"
        else:
            values["https"] = values.get("port") != HTTP_PORT
    if "port" not in values:
        values["port"] = HTTPS_PORT if values["https"] else HTTP_PORT
    values.setdefault("host", name)

    if values["transport"] == "pywinrm" and values.get("auth", "negotiate") == "negotiate":
        # pywinrm has no SPNEGO; its 'ntlm' answers the host's Negotiate challenge with NTLM.
        values["auth"] = "ntlm"

    auth_list = inventory_raw.get("auth_list")
    if isinstance(auth_list, list) and auth_list and values.get("auth") == auth_list[0]:
        rest = [_as_choice(name, "ansible_winrm_transport", a, AUTHS) for a in auth_list[1:]]
        values["auth_fallbacks"] = tuple(dict.fromkeys(a for a in rest if a != values["auth"]))

    password = _password_from(name, layers)
    options = ConnectionOptions(name=name, password=password, **values)  # type: ignore[arg-type]
    _check(options)
    for fallback in options.auth_fallbacks:
        _check(dataclasses.replace(options, auth=fallback, auth_fallbacks=()))
    warn_insecure(options)
    return options


#: the insecure settings already warned about in this process (one warning per kind and run)
_warned: set[str] = set()
_warned_lock = threading.Lock()


def insecure_settings(options: ConnectionOptions) -> list[tuple[str, str]]:
    """(kind, warning) for each insecure setting ``options`` use."""
    found: list[tuple[str, str]] = []
    if options.https and not options.cert_validation:
        if options.auth == "basic":
            found.append(
                (
                    "basic-no-validation",
                    "Basic authentication over HTTPS without certificate validation: the password goes "
                    "to whoever answers on the path",
                )
            )
        else:
            found.append(
                (
                    "no-cert-validation",
                    "certificate validation is off (--no-cert-validation / cert_validation: ignore): "
                    "anyone on the path can pose as the host",
                )
            )
    if not options.https and options.auth == "basic":
        found.append(
            (
                "unencrypted-basic",
                "Basic authentication over plain HTTP (--allow-unencrypted-basic): the password and "
                "every script cross the network readable",
            )
        )
    elif not options.https and options.message_encryption == "never" and options.auth != "certificate":
        found.append(
            (
                "unencrypted-messages",
                "message encryption is off over plain HTTP (--allow-unencrypted): every script, keys "
                "included, crosses the network readable",
            )
        )
    return found


def warn_insecure(options: ConnectionOptions) -> None:
    """Print each kind of insecure setting once per run (on stderr), naming the first host using it."""
    for kind, text in insecure_settings(options):
        with _warned_lock:
            if kind in _warned:
                continue
            _warned.add(kind)
        sys.stderr.write(f"kmsadmin: warning: {text} (first host: {options.name})\n")


def _needs_password(options: ConnectionOptions) -> bool:
    """Kerberos, and Negotiate without a user, may use the controller's ticket cache instead."""
    if options.auth in ("basic", "ntlm", "credssp"):
        return True
    return options.auth == "negotiate" and options.user is not None


def _check(options: ConnectionOptions) -> None:
    """Refuse combinations that cannot work or would leak credentials."""
    name = options.name
    if not options.host:
        raise ConfigError(f"{name}: no host address (set ansible_host or use a resolvable inventory name)")
    if options.read_timeout <= options.operation_timeout:
        raise ConfigError(
            f"{name}: read timeout ({options.read_timeout:g}s) must exceed the operation timeout "
            f"({options.operation_timeout}s), because the host may hold each Receive that long"
        )
    if options.auth == "basic" and not options.https and not options.allow_unencrypted_basic:
        raise ConfigError(
            f"{name}: refusing Basic authentication over plain HTTP ({options.endpoint}): the password "
            "and every script would cross the network unencrypted. Use HTTPS (port 5986, the default), "
            "or NTLM/Negotiate/Kerberos, which encrypt messages over HTTP; if you really must, pass "
            "allow_unencrypted_basic=True (--allow-unencrypted-basic) and set AllowUnencrypted on the host."
        )
    if (
        options.message_encryption == "never"
        and not options.https
        and options.auth not in ("basic", "certificate")
        and not options.allow_unencrypted
    ):
        raise ConfigError(
            f"{name}: refusing message_encryption 'never' over plain HTTP ({options.endpoint}): every "
            "script, and any KMS host key or product key in it, would cross the network readable by "
            "anyone on the path. Remove the setting (the default, 'auto', encrypts over HTTP) or use "
            "HTTPS; if you really must, pass allow_unencrypted=True (--allow-unencrypted, "
            "kmsadmin_allow_unencrypted: true) and set AllowUnencrypted on the host."
        )
    if options.auth == "certificate":
        if not options.https:
            raise ConfigError(f"{name}: certificate authentication needs HTTPS (port 5986)")
        if not (options.cert_pem and options.cert_key_pem):
            raise ConfigError(f"{name}: certificate authentication needs cert_pem and cert_key_pem")
    elif _needs_password(options) and (not options.user or options.password is None):
        raise ConfigError(
            f"{name}: {options.auth} authentication needs a user and a password "
            "(KMSADMIN_USER / KMSADMIN_PASSWORD or KMSADMIN_PASSWORD_FILE, "
            "or ansible_user / ansible_password)"
        )
    if options.message_encryption == "always" and options.auth in ("basic", "certificate"):
        raise ConfigError(
            f"{name}: message encryption 'always' needs NTLM, Negotiate, Kerberos or CredSSP, "
            f"not {options.auth}"
        )
    if options.ca_bundle and not Path(options.ca_bundle).expanduser().is_file():
        raise ConfigError(f"{name}: CA bundle {options.ca_bundle} is not a readable file")


__all__ = [
    "AUTHS",
    "ENCRYPTION_MODES",
    "ENV_VARS",
    "HTTPS_PORT",
    "HTTP_PORT",
    "TRANSPORTS",
    "AuthName",
    "ConnectionOptions",
    "EncryptionMode",
    "TransportName",
    "build_options",
    "deadline_setting",
]
