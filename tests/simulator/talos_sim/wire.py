"""Wire-level pieces: the collection's message classes, a pass-through codec, raw protobuf helpers.

The message classes come from the collection's compiled proto subset
(plugins/module_utils/_talos_api_pb.py), which mirrors Talos' package, message names and
field numbers. Only that generated table is shared with the collection; everything the
simulator does with the messages is its own.
"""

from __future__ import annotations

import importlib.util
import os

from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec

try:
    from ansible_collections.talosops.pki.plugins.module_utils._talos_api_pb import METHODS, message_class
except ImportError:
    # `python -m talos_sim` runs without the collection on sys.path: load the generated
    # module straight from this checkout (it only needs the protobuf runtime).
    _PATH = os.path.join(os.path.dirname(__file__), "..", "..", "..", "plugins", "module_utils", "_talos_api_pb.py")
    _SPEC = importlib.util.spec_from_file_location("_talos_sim_talos_api_pb", os.path.abspath(_PATH))
    _MODULE = importlib.util.module_from_spec(_SPEC)
    _SPEC.loader.exec_module(_MODULE)
    METHODS, message_class = _MODULE.METHODS, _MODULE.message_class

__all__ = ["METHODS", "Codec", "Raw", "Status", "field", "message_class", "read_varint", "varint"]


class Raw:
    """Marker message type: the codec hands the serialized bytes through untouched."""


class Codec(ProtoCodec):
    """Protobuf codec that also sends/receives raw bytes, so the proxy forwards replies verbatim."""

    def encode(self, message, message_type) -> bytes:
        if isinstance(message, (bytes, bytearray)):
            return bytes(message)
        return super().encode(message, message_type)

    def decode(self, data: bytes, message_type):
        if message_type is Raw:
            return bytes(data)
        return super().decode(data, message_type)


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """(value, next offset)."""
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7


def field(number: int, payload) -> bytes:
    """One length-delimited field (bytes, string or embedded message)."""
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(number << 3 | 2) + varint(len(payload)) + payload
