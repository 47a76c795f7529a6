"""XML from hosts: DTDs refused on every path, the fast parser equal to defusedxml's on everything else."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest
from defusedxml import DTDForbidden
from defusedxml.ElementTree import fromstring as defused_fromstring
from hypothesis import given, settings
from hypothesis import strategies as st
from psrpcore import PSRPPayload, StreamType
from psrpcore._payload import create_fragment, create_message
from psrpcore.types import PSRPMessageType

from kmsadmin.transports.base import fromstring_untrusted
from kmsadmin.transports.psrp import _Pool
from tests.hostile import BOMB

XXE = '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><r>&xxe;</r>'
EXTERNAL = '<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd"><r/>'


@pytest.mark.parametrize("document", [BOMB, XXE, EXTERNAL], ids=["bomb", "xxe", "external-dtd"])
@pytest.mark.parametrize("form", ["text", "utf-8", "utf-16", "utf-8-bom"])
def test_a_dtd_is_refused_in_every_encoding(document: str, form: str) -> None:
    data: str | bytes
    if form == "text":
        data = document
    elif form == "utf-16":
        data = document.replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16")
    elif form == "utf-8-bom":
        data = b"\xef\xbb\xbf" + document.encode("utf-8")
    else:
        data = document.encode("utf-8")
    with pytest.raises(DTDForbidden):
        fromstring_untrusted(data)


def test_a_declared_encoding_does_not_change_how_utf8_bytes_are_read() -> None:
    # the bytes are UTF-8 whatever the declaration says: they are read as the text that was checked
    data = '<?xml version="1.0" encoding="UTF-16"?><r a="é">ü</r>'.encode()
    root = fromstring_untrusted(data)
    assert (root.tag, root.get("a"), root.text) == ("r", "é", "ü")


def test_utf16_without_a_dtd_is_read() -> None:
    data = '<?xml version="1.0" encoding="UTF-16"?><r>ok</r>'.encode("utf-16")
    assert fromstring_untrusted(data).text == "ok"


@pytest.mark.parametrize("data", [b"<r>", b"<r></s>", b"", b"\xff\xfe<", "<r>&undefined;</r>"])
def test_malformed_documents_are_parse_errors(data: bytes | str) -> None:
    with pytest.raises((ET.ParseError, ValueError)):
        fromstring_untrusted(data)


names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,8}", fullmatch=True)
texts = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufffe\uffff"), max_size=20
).filter(lambda t: all(c in "\t\n\r" or ord(c) >= 0x20 for c in t))


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> ET.Element:
    ns = draw(st.sampled_from(["", "{urn:a}", "{http://schemas.microsoft.com/wbem/wsman/1/windows/shell}"]))
    element = ET.Element(ns + draw(names), {draw(names): draw(texts) for _ in range(draw(st.integers(0, 2)))})
    element.text = draw(texts) or None
    if depth < 3:
        for _ in range(draw(st.integers(0, 3))):
            child = draw(trees(depth + 1))
            child.tail = draw(texts) or None
            element.append(child)
    return element


@settings(max_examples=200, deadline=None)
@given(trees(), st.booleans())
def test_the_fast_parser_reads_what_defusedxml_reads(tree: ET.Element, as_bytes: bool) -> None:
    data: bytes | str = (
        ET.tostring(tree, encoding="utf-8") if as_bytes else ET.tostring(tree, encoding="unicode")
    )
    ours = fromstring_untrusted(data)
    theirs = defused_fromstring(data, forbid_dtd=True)
    assert ET.tostring(ours) == ET.tostring(theirs)


def _pool_receiving(body: bytes, kind: PSRPMessageType) -> _Pool:
    pool = _Pool()
    message = create_message(False, kind, body, pool.runspace_pool_id, uuid.uuid4())
    pool.receive_data(PSRPPayload(create_fragment(1, 0, message, end=True), StreamType.default, None))
    return pool


@pytest.mark.parametrize(
    "kind", [PSRPMessageType.PipelineOutput, PSRPMessageType.ErrorRecord, PSRPMessageType.PipelineState]
)
@pytest.mark.parametrize("size", ["small", "large"])
def test_every_psrp_message_refuses_a_dtd(kind: PSRPMessageType, size: str) -> None:
    # output lines, error records and states: cached or not, none is parsed with a DTD
    padding = "x" * (4096 if size == "large" else 0)
    body = f'<!DOCTYPE r [<!ENTITY e "{padding}">]><S>&e;</S>'.encode()
    pool = _pool_receiving(body, kind)
    with pytest.raises(DTDForbidden):
        pool.next_event()


def test_psrp_output_without_a_dtd_is_read() -> None:
    pool = _pool_receiving(b"<S>facts</S>", PSRPMessageType.PipelineOutput)
    event = pool.next_event()
    assert event is not None and event.data == "facts"
