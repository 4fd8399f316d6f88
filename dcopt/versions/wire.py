"""Just enough of the protobuf wire format to find where an ONNX file keeps each tensor's bytes
(and to write the few fields that reference them elsewhere: :mod:`dcopt.frontends.onnx_mapped`).

Why not parse with ``onnx`` and serialize again: protobuf serialization is not guaranteed to
give back the same bytes (field order, packed vs unpacked fields, unknown fields), and the
version store promises byte-identical checkouts. Reading the wire format gives the exact byte
range of every field, so a file can be cut into its parameter payloads and the rest, and put
back together bit for bit.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

VARINT, FIXED64, LENGTH, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


class Field(NamedTuple):
    number: int
    wire_type: int
    start: int  # where the field's value starts (after key and, for LENGTH, the length)
    end: int
    value: int  # the integer for VARINT fields, else 0


def read_varint(data: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError(f"truncated varint at byte {pos}")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise WireError(f"varint too long at byte {pos}")


def fields(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterator[Field]:
    """The fields of the message in ``data[start:end]``, in file order."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        key, pos = read_varint(data, pos, end)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {pos}")
        if wire_type == VARINT:
            value, after = read_varint(data, pos, end)
            yield Field(number, wire_type, pos, after, value)
            pos = after
            continue
        if wire_type == FIXED64:
            after = pos + 8
        elif wire_type == FIXED32:
            after = pos + 4
        elif wire_type == LENGTH:
            length, pos = read_varint(data, pos, end)
            after = pos + length
        else:
            raise WireError(f"unsupported wire type {wire_type} (field {number}) at byte {pos}")
        if after > end:
            raise WireError(f"field {number} runs past the end of its message (byte {after} > {end})")
        yield Field(number, wire_type, pos, after, 0)
        pos = after


def encode_varint(value: int) -> bytes:
    """``value`` (unsigned) as a varint."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def length_field(number: int, payload: bytes) -> bytes:
    """Field ``number`` holding ``payload`` (wire type LENGTH), key and length included."""
    return encode_varint(number << 3 | LENGTH) + encode_varint(len(payload)) + payload


def varints(data: bytes | memoryview) -> list[int]:
    """Every varint of a packed repeated field, as unsigned integers."""
    out, pos, end = [], 0, len(data)
    while pos < end:
        value, pos = read_varint(data, pos, end)
        out.append(value)
    return out
