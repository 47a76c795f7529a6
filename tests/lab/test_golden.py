"""Golden shapes: the lab answers recorded Windows requests with responses shaped like Windows' own.

The requests in ``data/windows_wsman.yml`` were sent by pypsrp to a real Windows host; they are replayed
here against the lab (Basic over HTTP on an AllowUnencrypted host, so the bodies stay readable), with
the lab's ShellId/CommandId substituted. Each response is reduced to its element tree — tags with
namespaces, attributes, and the text of elements that do not carry ids, times, reasons or base64
payloads — and compared with the recorded response reduced the same way. Runs of sibling elements with
the same shape collapse to one, because Windows and the lab cut output into a different number of
``rsp:Stream`` elements.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from kmsadmin.lab.api import EndpointConfig
from kmsadmin.lab.server import LabServer
from tests.lab.conftest import PASSWORD, USER, LabFactory

pytestmark = pytest.mark.lab

DATA = yaml.safe_load((Path(__file__).parent / "data" / "windows_wsman.yml").read_text(encoding="utf-8"))

A = "{http://schemas.xmlsoap.org/ws/2004/08/addressing}"
W = "{http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd}"
P = "{http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd}"
RSP = "{http://schemas.microsoft.com/wbem/wsman/1/windows/shell}"
S = "{http://www.w3.org/2003/05/soap-envelope}"
F = "{http://schemas.microsoft.com/wbem/wsman/1/wsmanfault}"

#: elements whose text is an id, an address, a time-free but host-specific value, or prose
_VARIABLE_TEXT = {
    A + "MessageID",
    A + "RelatesTo",
    A + "Address",
    W + "Selector",
    RSP + "ShellId",
    RSP + "CommandId",
    RSP + "Owner",
    RSP + "ClientIP",
    RSP + "ProcessId",
    RSP + "Stream",
    S + "Text",
    F + "Message",
    F + "ProviderFault",
}
_VARIABLE_ATTRS = {"CommandId", "Machine", "ShellId"}
#: an activity-tracing header newer Windows builds add; clients ignore it
_DROPPED = {P + "ActivityId"}

Shape = tuple[str, tuple[tuple[str, str], ...], str, tuple[Any, ...]]


def shape(element: ET.Element) -> Shape:
    attrs = tuple(sorted((k, "*" if k in _VARIABLE_ATTRS else v) for k, v in element.attrib.items()))
    text = "*" if element.tag in _VARIABLE_TEXT else (element.text or "").strip()
    children: list[Shape] = []
    for child in element:
        if child.tag in _DROPPED:
            continue
        child_shape = shape(child)
        if not children or children[-1] != child_shape:
            children.append(child_shape)
    return element.tag, attrs, text, tuple(children)


def xml_shape(text: str) -> Shape:
    return shape(ET.fromstring(text))  # noqa: S314 - recorded data and our own server's output


class Replayer:
    """Posts recorded request envelopes to one lab host, swapping recorded ids for the lab's."""

    def __init__(self, lab: LabServer, name: str) -> None:
        self.url = lab.url(name)
        self.session = requests.Session()
        self.session.auth = (USER, PASSWORD)
        self.ids: dict[str, str] = {}

    def post(self, request: str, *, expect: int = 200) -> str:
        for recorded, ours in self.ids.items():
            request = request.replace(recorded, ours)
        response = self.session.post(
            self.url,
            data=request.encode("utf-8"),
            headers={"Content-Type": "application/soap+xml;charset=UTF-8"},
            timeout=10,
        )
        assert response.status_code == expect, response.text
        text = response.text
        sent = ET.fromstring(request).find(f"{S}Header/{A}MessageID")  # noqa: S314
        got = ET.fromstring(text).find(f"{S}Header/{A}RelatesTo")  # noqa: S314
        assert sent is not None and got is not None and got.text == sent.text
        return text

    def close(self) -> None:
        self.session.close()


@pytest.fixture
def replay(make_lab: LabFactory) -> Any:
    lab = make_lab(EndpointConfig("golden", allow_unencrypted=True), max_operation_wait=0.3)
    replayer = Replayer(lab, "golden")
    yield replayer
    replayer.close()


def _between(text: str, start: str, end: str) -> str:
    match = re.search(re.escape(start) + r"([^<]*)" + re.escape(end), text)
    assert match is not None, start
    return match.group(1)


def test_winrs_exchange_matches_windows(replay: Replayer) -> None:
    messages = DATA["winrs"]["messages"]
    create, command, receive, signal, delete = messages

    ours = replay.post(create["request"])
    assert xml_shape(ours) == xml_shape(create["response"])
    replay.ids[_between(create["response"], "<rsp:ShellId>", "</rsp:ShellId>")] = _between(
        ours, "<rsp:ShellId>", "</rsp:ShellId>"
    )

    # The recording ran "cmd.exe /c echo hi"; the lab runs powershell, so send that instead.
    encoded = base64.b64encode("hi".encode("utf-16-le")).decode()
    request = re.sub(
        r"<rsp:CommandLine>.*</rsp:CommandLine>",
        f"<rsp:CommandLine><rsp:Command>powershell -EncodedCommand {encoded}</rsp:Command></rsp:CommandLine>",
        command["request"],
    )
    ours = replay.post(request)
    assert xml_shape(ours) == xml_shape(command["response"])
    replay.ids[_between(command["response"], "<rsp:CommandId>", "</rsp:CommandId>")] = _between(
        ours, "<rsp:CommandId>", "</rsp:CommandId>"
    )

    for recorded in (receive, signal, delete):
        ours = replay.post(recorded["request"])
        assert xml_shape(ours) == xml_shape(recorded["response"])


def test_psrp_exchange_matches_windows(replay: Replayer) -> None:
    create, pool_receive, command, pipe_receive, signal, delete = DATA["psrp"]["messages"]
    for recorded in (create, pool_receive, command, pipe_receive, signal, delete):
        ours = replay.post(recorded["request"])
        assert xml_shape(ours) == xml_shape(recorded["response"]), recorded["request"][:200]


def test_timed_out_fault_matches_windows(replay: Replayer) -> None:
    create = DATA["psrp"]["messages"][0]
    pool_receive = DATA["psrp"]["messages"][1]
    replay.post(create["request"])
    replay.post(pool_receive["request"])
    # Nothing more is queued for the pool, so the next Receive waits out its OperationTimeout.
    ours = replay.post(pool_receive["request"], expect=500)
    assert xml_shape(ours) == xml_shape(DATA["timed_out"]["messages"][0]["response"])


def test_unknown_shell_fault_matches_windows(replay: Replayer) -> None:
    # Windows answered a Get on a deleted shell; the lab answers every verb on an unknown ShellId alike.
    receive = DATA["winrs"]["messages"][2]["request"]
    ours = replay.post(receive, expect=500)
    assert xml_shape(ours) == xml_shape(DATA["unknown_shell"]["messages"][0]["response"])


def test_unknown_command_fault_matches_windows(replay: Replayer) -> None:
    create = DATA["winrs"]["messages"][0]
    ours = replay.post(create["request"])
    replay.ids[_between(create["response"], "<rsp:ShellId>", "</rsp:ShellId>")] = _between(
        ours, "<rsp:ShellId>", "</rsp:ShellId>"
    )
    ours = replay.post(
        DATA["unknown_command"]["messages"][0]["request"].replace(
            _between(DATA["unknown_command"]["messages"][0]["request"], 'Name="ShellId">', "</"),
            _between(ours, "<rsp:ShellId>", "</rsp:ShellId>"),
        ),
        expect=500,
    )
    assert xml_shape(ours) == xml_shape(DATA["unknown_command"]["messages"][0]["response"])


def test_the_comparison_sees_differences() -> None:
    recorded = DATA["psrp"]["messages"][0]["response"]
    assert xml_shape(recorded) != xml_shape(
        recorded.replace("<rsp:ProfileLoaded>Yes</rsp:ProfileLoaded>", "")
    )
    assert xml_shape(recorded) != xml_shape(recorded.replace("CreateResponse<", "Create<"))
    timed_out = DATA["timed_out"]["messages"][0]["response"]
    assert xml_shape(timed_out) != xml_shape(timed_out.replace('Code="2150858793"', 'Code="2150858843"'))
    receive = DATA["winrs"]["messages"][2]["response"]
    assert xml_shape(receive) != xml_shape(receive.replace("CommandState/Done", "CommandState/Running"))
