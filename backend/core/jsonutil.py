"""orjson behind the `dumps`/`loads` interface python-socketio expects of a json module.

Socket.IO encodes each emitted packet once per emit (not once per client), so the encoder is on
the broadcast hot path; orjson is several times faster than the stdlib there.
"""

from __future__ import annotations

import orjson
from socketio import packet


def dumps(obj, **_kwargs) -> str:
    # python-socketio passes separators=...; orjson's output is already compact.
    return orjson.dumps(obj).decode()


def loads(data, **_kwargs):
    return orjson.loads(data)


class JsonPacket(packet.Packet):
    """Socket.IO packets whose payloads are plain JSON, never bytes.

    python-socketio walks every value of every emitted payload looking for binary attachments;
    for a 1000-event batch that walk cost 22 ms against 0.6 ms for encoding it, 21% of the
    server's CPU at 10k events/s to 50 clients. We never emit bytes, so skip it. (Incoming
    binary packets are still recognised: their type comes from the wire, not from this check.)"""

    @classmethod
    def data_is_binary(cls, data) -> bool:
        return False
