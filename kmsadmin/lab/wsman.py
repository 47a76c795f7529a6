"""WS-Management envelopes for the lab server: parse requests, build Windows-shaped responses and faults.

Responses are written as text with the exact prefixes Windows uses (``s``, ``a``, ``x``, ``w``, ``rsp``,
``p``, ``f``) instead of through ``ElementTree.register_namespace``: that registry is process-wide, and
changing it would also change the prefixes of the pypsrp/pywinrm clients running in the same process.
Shapes follow the recordings in ``shared/data/windows-wsman-recordings`` and [MS-WSMV].
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from xml.sax.saxutils import escape, quoteattr

NS_S = "http://www.w3.org/2003/05/soap-envelope"
NS_A = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_X = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
NS_W = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
NS_P = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"
NS_RSP = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
NS_F = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"
NS_E = "http://schemas.xmlsoap.org/ws/2004/08/eventing"
NS_N = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
NS_PWSH = "http://schemas.microsoft.com/powershell"

NAMESPACES = {
    "s": NS_S,
    "a": NS_A,
    "x": NS_X,
    "w": NS_W,
    "p": NS_P,
    "rsp": NS_RSP,
    "f": NS_F,
    "e": NS_E,
    "n": NS_N,
    "pwsh": NS_PWSH,
}

ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"

_TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
ACTION_CREATE = _TRANSFER + "Create"
ACTION_DELETE = _TRANSFER + "Delete"
ACTION_COMMAND = _SHELL + "Command"
ACTION_RECEIVE = _SHELL + "Receive"
ACTION_SEND = _SHELL + "Send"
ACTION_SIGNAL = _SHELL + "Signal"

COMMAND_STATE_DONE = _SHELL + "CommandState/Done"
COMMAND_STATE_RUNNING = _SHELL + "CommandState/Running"

RESOURCE_CMD = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
RESOURCE_PSRP_PREFIX = "http://schemas.microsoft.com/powershell/"

# WS-Man fault codes Windows puts in f:WSManFault/@Code (winerror.h ERROR_WSMAN_*).
CODE_ACCESS_DENIED = 5
CODE_INVALID_PARAMETER = 87
CODE_OPERATION_TIMEOUT = 2150858793
CODE_INVALID_SELECTORS = 2150858843
CODE_ACTION_NOT_SUPPORTED = 2150858771
CODE_INVALID_RESOURCE_URI = 2150858811
CODE_MAX_ENVELOPE_SIZE = 2150859025  # 0x80338111, "exceeded the configured MaxEnvelopeSize quota"
CODE_FILE_NOT_FOUND = 2147942402  # HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)
CODE_FILENAME_TOO_LONG = 2147942606  # HRESULT_FROM_WIN32(ERROR_FILENAME_EXCED_RANGE)

_DEFAULT_NS = ("s", "a", "x", "w", "rsp", "p")


class MalformedRequest(ValueError):
    """The HTTP body is not a WS-Man envelope the lab understands."""


@dataclass(frozen=True, slots=True)
class WsmanRequest:
    """The parts of a request envelope the lab acts on."""

    action: str
    message_id: str
    resource_uri: str
    selectors: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    #: seconds from w:OperationTimeout, None if absent
    operation_timeout: float | None = None
    max_envelope_size: int | None = None
    body: ET.Element | None = None

    @property
    def shell_id(self) -> str | None:
        return self.selectors.get("ShellId")

    def option_true(self, name: str) -> bool:
        return self.options.get(name, "").strip().lower() in ("true", "1", "yes")


@dataclass(slots=True)
class WsmanFault(Exception):
    """A SOAP fault to send back on HTTP 500."""

    subcode: str
    reason: str
    wsman_code: int
    code: str = "s:Receiver"
    fault_detail: str | None = None
    provider: str | None = None
    provider_path: str | None = None
    #: when set, f:Message carries a nested f:ProviderFault/f:WSManFault as Windows does for shell errors
    nested: bool = False

    def __str__(self) -> str:
        return f"{self.subcode} ({self.wsman_code}): {self.reason}"


def _q(ns: str, tag: str) -> str:
    """ElementTree's ``{namespace}tag`` name (a plain tag lets ``find`` skip ElementPath)."""
    return f"{{{ns}}}{tag}"


_ENVELOPE = _q(NS_S, "Envelope")
_HEADER = _q(NS_S, "Header")
_BODY = _q(NS_S, "Body")
_ACTION = _q(NS_A, "Action")
_MESSAGE_ID = _q(NS_A, "MessageID")
_RESOURCE_URI = _q(NS_W, "ResourceURI")
_OPERATION_TIMEOUT = _q(NS_W, "OperationTimeout")
_MAX_ENVELOPE_SIZE = _q(NS_W, "MaxEnvelopeSize")
_SELECTOR_SET = _q(NS_W, "SelectorSet")
_SELECTOR = _q(NS_W, "Selector")
_OPTION_SET = _q(NS_W, "OptionSet")
_OPTION = _q(NS_W, "Option")
_DURATION_RE = re.compile(r"\s*P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?\s*")


def parse_duration(text: str | None) -> float | None:
    """Parse an xs:duration like ``PT20S``, ``PT1.5S`` or ``PT1M30S`` into seconds."""
    if not text:
        return None
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        return None
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def parse_request(data: bytes) -> WsmanRequest:
    """Parse a request envelope; raises :class:`MalformedRequest` for anything that is not one."""
    try:
        # The lab only listens on loopback for its own test clients; expat does not resolve
        # external entities, so ElementTree is adequate here.
        root = ET.fromstring(data)  # noqa: S314
    except ET.ParseError as exc:
        raise MalformedRequest(f"not XML: {exc}") from exc
    if root.tag != _ENVELOPE:
        raise MalformedRequest("not a SOAP envelope")
    header = root.find(_HEADER)
    if header is None:
        raise MalformedRequest("no SOAP header")

    def text(tag: str) -> str:
        el = header.find(tag)
        return (el.text or "").strip() if el is not None else ""

    def named(set_tag: str, item_tag: str) -> dict[str, str]:
        # the items of every set, in document order, as the path "set/item" selects them
        return {
            item.attrib.get("Name", ""): (item.text or "").strip()
            for found in header.findall(set_tag)
            for item in found.findall(item_tag)
        }

    max_env_text = text(_MAX_ENVELOPE_SIZE)
    return WsmanRequest(
        action=text(_ACTION),
        message_id=text(_MESSAGE_ID),
        resource_uri=text(_RESOURCE_URI),
        selectors=named(_SELECTOR_SET, _SELECTOR),
        options=named(_OPTION_SET, _OPTION),
        operation_timeout=parse_duration(text(_OPERATION_TIMEOUT)),
        max_envelope_size=int(max_env_text) if max_env_text.isdigit() else None,
        body=root.find(_BODY),
    )


def new_message_id() -> str:
    return f"uuid:{str(uuid.uuid4()).upper()}"


def element(tag: str, text: str | None = None, children: Iterable[str] = (), **attrs: str | None) -> str:
    """Serialise one element; ``tag`` carries its Windows prefix (e.g. ``rsp:Stream``)."""
    attr_text = "".join(f" {name}={quoteattr(value)}" for name, value in attrs.items() if value is not None)
    inner = escape(text) if text is not None else ""
    inner += "".join(children)
    if not inner and text is None:
        return f"<{tag}{attr_text}/>"
    return f"<{tag}{attr_text}>{inner}</{tag}>"


@lru_cache(maxsize=64)
def _ns_decl(prefixes: tuple[str, ...]) -> str:
    return "".join(f" xmlns:{p}={quoteattr(NAMESPACES[p])}" for p in prefixes)


_TO_ANONYMOUS = element("a:To", ANONYMOUS)


def envelope(
    action: str,
    relates_to: str,
    body: str,
    *,
    prefixes: Iterable[str] = _DEFAULT_NS,
) -> str:
    """A response envelope with the header fields Windows sends (Action, MessageID, To, RelatesTo)."""
    ns_decl = _ns_decl(tuple(prefixes))
    header = (
        element("a:Action", action)
        + element("a:MessageID", new_message_id())
        + _TO_ANONYMOUS
        + element("a:RelatesTo", relates_to)
    )
    return (
        f'<s:Envelope xml:lang="en-US"{ns_decl}>'
        f"<s:Header>{header}</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    )


def fault_envelope(fault: WsmanFault, relates_to: str, machine: str) -> str:
    """A SOAP 1.2 fault as Windows words it (see the TimedOut/InvalidSelectors recordings)."""
    f_ns = quoteattr(NS_F)
    if fault.nested:
        inner = element(
            "f:ProviderFault",
            children=[
                f'<f:WSManFault xmlns:f={f_ns} Code="{fault.wsman_code}" Machine={quoteattr(machine)}>'
                + element("f:Message", fault.reason)
                + "</f:WSManFault>"
            ],
            provider=fault.provider or "Shell provider",
            path=fault.provider_path or r"%systemroot%\system32\WsmSvc.dll",
        )
        message = element("f:Message", children=[inner])
    elif fault.provider:
        provider = element(
            "f:ProviderFault",
            fault.reason,
            provider=fault.provider,
            path=fault.provider_path or r"%systemroot%\system32\winrscmd.dll",
        )
        message = element("f:Message", children=[provider])
    else:
        message = element("f:Message", fault.reason)
    detail = element("w:FaultDetail", fault.fault_detail) if fault.fault_detail else ""
    detail += (
        f'<f:WSManFault xmlns:f={f_ns} Code="{fault.wsman_code}" Machine={quoteattr(machine)}>'
        f"{message}</f:WSManFault>"
    )
    body = element(
        "s:Fault",
        children=[
            element(
                "s:Code",
                children=[
                    element("s:Value", fault.code),
                    element("s:Subcode", children=[element("s:Value", fault.subcode)]),
                ],
            ),
            element("s:Reason", children=[f'<s:Text xml:lang="en-US">{escape(fault.reason)}</s:Text>']),
            f"<s:Detail>{detail}</s:Detail>",
        ],
    )
    return envelope(FAULT_ACTION, relates_to, body, prefixes=("s", "a", "x", "e", "n", "w", "p"))


# --- the faults the lab raises -------------------------------------------------------------------------


def operation_timeout_fault() -> WsmanFault:
    reason = (
        "The WS-Management service cannot complete the operation within the time specified in "
        "OperationTimeout.  "
    )
    return WsmanFault("w:TimedOut", reason, CODE_OPERATION_TIMEOUT)


def unknown_shell_fault() -> WsmanFault:
    reason = (
        "The WS-Management service cannot process the request because the request contained invalid "
        "selectors for the resource. "
    )
    return WsmanFault(
        "w:InvalidSelectors",
        reason,
        CODE_INVALID_SELECTORS,
        code="s:Sender",
        fault_detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
        nested=True,
    )


def unknown_command_fault() -> WsmanFault:
    reason = (
        "The Windows Remote Shell received a request to perform an operation on a command identifier that "
        "does not exist. Either the command has completed execution or the client specified an invalid "
        "command identifier. "
    )
    return WsmanFault(
        "w:InvalidSelectors",
        reason,
        CODE_INVALID_SELECTORS,
        code="s:Sender",
        fault_detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
    )


def envelope_too_large_fault() -> WsmanFault:
    reason = (
        "The WS-Management service cannot process the request because the request size exceeded the "
        "configured MaxEnvelopeSize quota. "
    )
    return WsmanFault(
        "w:EncodingLimit",
        reason,
        CODE_MAX_ENVELOPE_SIZE,
        code="s:Sender",
        fault_detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/MaxEnvelopeSize",
    )


def access_denied_fault() -> WsmanFault:
    # What WinRM answers when authentication succeeded but the token is not allowed by the listener's
    # SDDL, e.g. a local non-RID-500 administrator whose token UAC filtered (KB 951016).
    return WsmanFault("w:AccessDenied", "Access is denied. ", CODE_ACCESS_DENIED, code="s:Sender")


def action_not_supported_fault(action: str) -> WsmanFault:
    reason = f"The WS-Management service cannot process the request. The action {action!r} is not supported. "
    return WsmanFault(
        "a:ActionNotSupported",
        reason,
        CODE_ACTION_NOT_SUPPORTED,
        code="s:Sender",
        fault_detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/ActionMismatch",
    )


def invalid_resource_fault() -> WsmanFault:
    reason = (
        "The WS-Management service cannot process the request. The resource URI is not valid or the "
        "resource is not found. "
    )
    return WsmanFault("w:DestinationUnreachable", reason, CODE_INVALID_RESOURCE_URI, code="s:Sender")


def invalid_parameter_fault() -> WsmanFault:
    return WsmanFault(
        "w:InvalidParameter",
        "The parameter is incorrect. ",
        CODE_INVALID_PARAMETER,
        code="s:Sender",
        fault_detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/InvalidValue",
        provider="Shell cmd plugin",
    )


def file_not_found_fault() -> WsmanFault:
    return WsmanFault(
        "w:InternalError",
        "The system cannot find the file specified. ",
        CODE_FILE_NOT_FOUND,
        provider="Shell cmd plugin",
    )


def filename_too_long_fault() -> WsmanFault:
    return WsmanFault(
        "w:InternalError",
        "The filename or extension is too long. ",
        CODE_FILENAME_TOO_LONG,
        provider="Shell cmd plugin",
    )


# --- common response bodies ----------------------------------------------------------------------------


def create_response_body(
    *,
    address: str,
    resource_uri: str,
    shell_id: str,
    shell_fields: list[tuple[str, str]],
) -> str:
    """x:ResourceCreated plus the rsp:Shell block Windows appends to a CreateResponse."""
    created = element(
        "x:ResourceCreated",
        children=[
            element("a:Address", address),
            element(
                "a:ReferenceParameters",
                children=[
                    element("w:ResourceURI", resource_uri),
                    element("w:SelectorSet", children=[element("w:Selector", shell_id, Name="ShellId")]),
                ],
            ),
        ],
    )
    shell = f"<rsp:Shell xmlns:rsp={quoteattr(NS_RSP)}>" + "".join(
        element(f"rsp:{name}", value) for name, value in shell_fields
    )
    return created + shell + "</rsp:Shell>"


def stream_element(name: str, command_id: str | None, b64: str | None, *, end: bool = False) -> str:
    # Windows writes End markers as an explicit empty element, not a self-closing one.
    return element(
        "rsp:Stream",
        b64 if b64 is not None else "",
        Name=name,
        CommandId=command_id,
        End="true" if end else None,
    )


def command_state_element(command_id: str, state: str, exit_code: int | None) -> str:
    children = [element("rsp:ExitCode", str(exit_code))] if exit_code is not None else []
    return element("rsp:CommandState", children=children, CommandId=command_id, State=state)
