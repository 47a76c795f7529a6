"""psrpcore runspace pools that serialize and deserialize repeated PSRP messages once per process.

A fleet run sends the same pool-open messages to every host and the same few pipelines to many of
them (every client of one KMS host gets the same steps), and the hosts answer with the same
capability, private-data and state messages. psrpcore builds and parses a full object tree for each
message, which was the largest part of both the client's and the lab's CPU per host. A message's
body depends only on its content: pool and pipeline ids travel in the message header. So
:class:`MessageCachePool` keeps bodies it serialized by a content key its subclass chooses, and
objects it deserialized by message type and bytes; only the header is built per host, with
psrpcore's ``create_message`` and ``PSRPMessage`` (internal API: psrpcore is pinned to 0.3).

Deserialized objects are shared between pools and only read. The caches are bounded; a message
carrying a secret must never get a send key (callers decide; see ``send_key``).
"""

from __future__ import annotations

import threading
import uuid
import xml.etree.ElementTree as ET
from typing import Any

from psrpcore import PSRPEvent, StreamType
from psrpcore._payload import PSRPMessage, create_message
from psrpcore.types import EndOfPipelineInput, PSObject, PSRPMessageType, deserialize, serialize

from kmsadmin.transports.base import fromstring_untrusted

_LIMIT = 128
_SMALL = 2048
_lock = threading.Lock()
_serialized: dict[tuple[str, ...], bytes] = {}
_deserialized: dict[tuple[int, bytes], Any] = {}


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    with _lock:
        if len(cache) >= _LIMIT:
            cache.clear()
        cache[key] = value


class MessageCachePool:
    """Mixin for a psrpcore ``ClientRunspacePool`` or ``ServerRunspacePool`` (listed first in the bases)."""

    #: incoming message types deserialized once per distinct content
    deserialize_once: frozenset[PSRPMessageType] = frozenset()
    #: incoming messages of these types are kept only up to this many bytes (output lines: the short
    #: results many hosts answer alike, not each host's own facts)
    deserialize_small: frozenset[PSRPMessageType] = frozenset()

    # provided by psrpcore's RunspacePool
    runspace_pool_id: uuid.UUID
    our_capability: Any
    their_capability: Any
    _cipher: Any
    _is_client: bool
    _send_buffer: list[PSRPMessage]
    _fragment_counter: int

    def send_key(
        self, message: PSObject, message_type: PSRPMessageType | None, pipeline_id: uuid.UUID | None
    ) -> tuple[str, ...] | None:
        """The content key of an outgoing message whose body may be reused, or None to serialize it."""
        return None

    def prepare_message(
        self,
        message: PSObject | None,
        message_type: PSRPMessageType | None = None,
        pipeline_id: uuid.UUID | None = None,
        stream_type: StreamType = StreamType.default,
    ) -> None:
        key = None if message is None else self.send_key(message, message_type, pipeline_id)
        if key is None or message is None:
            super().prepare_message(message, message_type, pipeline_id, stream_type)  # type: ignore[misc]
            return
        data = _serialized.get(key)
        if data is None:
            element = serialize(
                message,
                self._cipher,
                our_capability=self.our_capability,
                their_capability=self.their_capability,
            )
            data = ET.tostring(element, encoding="utf-8", method="xml")
            _remember(_serialized, key, data)
        kind = message_type or PSRPMessageType.get_message_id(type(message))
        raw = create_message(self._is_client, kind, data, self.runspace_pool_id, pipeline_id)
        self._send_buffer.append(
            PSRPMessage(
                kind, bytearray(raw), self.runspace_pool_id, pipeline_id, self._fragment_counter, stream_type
            )
        )

    def _process_message(self, message: PSRPMessage) -> PSRPEvent[Any, Any]:
        # psrpcore's own version parses with the unguarded ElementTree.fromstring: every message is
        # read here instead, DTDs refused (errors become the caller's ProtocolViolation).
        kind = message.message_type
        data = bytes(message.data)
        ps_object: Any
        if kind == PSRPMessageType.EndOfPipelineInput:
            ps_object = EndOfPipelineInput()
        elif kind == PSRPMessageType.PipelineOutput and not data:
            ps_object = None
        elif kind in self.deserialize_once or (kind in self.deserialize_small and len(data) <= _SMALL):
            key = (kind.value, data)
            ps_object = _deserialized.get(key)
            if ps_object is None:
                ps_object = self._deserialize(data)
                _remember(_deserialized, key, ps_object)
        else:
            ps_object = self._deserialize(data)
        event = PSRPEvent.create(kind, ps_object, message.runspace_pool_id, message.pipeline_id)
        handler = getattr(self, f"_process_{kind.name}", None)
        if handler is not None:
            handler(event)
        return event

    def _deserialize(self, data: bytes) -> Any:
        return deserialize(
            fromstring_untrusted(data),
            cipher=self._cipher,
            our_capability=self.our_capability,
            their_capability=self.their_capability,
        )
