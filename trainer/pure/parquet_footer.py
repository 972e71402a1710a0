"""A Parquet file's row count, read from its footer without pyarrow.

The app counts the train rows of a Parquet split to show the epochs a preset implies, and
must not import pyarrow to do it (it has to start fast). A Parquet file ends with its
metadata, a Thrift struct in the compact protocol, then the metadata's length (4 bytes,
little-endian) and the magic ``PAR1``. The row count is field 3 (``num_rows``, an i64) of
that struct, FileMetaData; the fields before it (the schema) are skipped, not decoded.
"""

from __future__ import annotations

from pathlib import Path

MAGIC = b"PAR1"
# Files with an encrypted footer end with this instead; their metadata cannot be read.
ENCRYPTED_MAGIC = b"PARE"
_NUM_ROWS_FIELD = 3

# Compact protocol type ids (Thrift's TCompactProtocol).
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT, _UUID = range(1, 14)
# Nesting no real footer comes near; a corrupt one could otherwise recurse without end.
_MAX_DEPTH = 64


class FooterError(ValueError):
    """The footer is missing or does not decode; the message says why, without the path."""


def parquet_num_rows(path: Path) -> int:
    """The number of rows a Parquet file declares in its footer."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        if size < 2 * len(MAGIC) + 4:
            raise FooterError("too short to be a Parquet file")
        fh.seek(size - 8)
        tail = fh.read(8)
        if tail[4:] == ENCRYPTED_MAGIC:
            raise FooterError("the footer is encrypted")
        if tail[4:] != MAGIC:
            raise FooterError("no PAR1 footer")
        length = int.from_bytes(tail[:4], "little")
        if length > size - 8 - len(MAGIC):
            raise FooterError("the footer length points outside the file")
        fh.seek(size - 8 - length)
        metadata = fh.read(length)
    return _num_rows(metadata)


def _num_rows(metadata: bytes) -> int:
    reader = _CompactReader(metadata)
    field_id = 0
    while True:
        kind, field_id = reader.field_header(field_id)
        if kind is None:
            raise FooterError("the footer has no row count")
        if field_id == _NUM_ROWS_FIELD and kind == _I64:
            return reader.zigzag()
        reader.skip(kind, depth=1)


class _CompactReader:
    """Reads values of the Thrift compact protocol from a byte string, front to back."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FooterError("the footer is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 70:
                raise FooterError("the footer holds a malformed number")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def field_header(self, last_id: int) -> tuple[int | None, int]:
        """(type, field id) of the next field of a struct; type None at the struct's end."""
        b = self.byte()
        if b == 0:
            return None, last_id
        delta, kind = b >> 4, b & 0x0F
        return kind, (last_id + delta if delta else self.zigzag())

    def skip(self, kind: int, depth: int, in_container: bool = False) -> None:
        if depth > _MAX_DEPTH:
            raise FooterError("the footer nests too deeply")
        if kind in (_TRUE, _FALSE):
            # A struct field carries a boolean in its type; a list element takes a byte.
            if in_container:
                self.take(1)
        elif kind == _BYTE:
            self.take(1)
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.take(8)
        elif kind == _BINARY:
            self.take(self.varint())
        elif kind == _UUID:
            self.take(16)
        elif kind in (_LIST, _SET):
            header = self.byte()
            count, element = header >> 4, header & 0x0F
            if count == 15:
                count = self.varint()
            for _ in range(count):
                self.skip(element, depth + 1, in_container=True)
        elif kind == _MAP:
            count = self.varint()
            if count:
                types = self.byte()
                for _ in range(count):
                    self.skip(types >> 4, depth + 1, in_container=True)
                    self.skip(types & 0x0F, depth + 1, in_container=True)
        elif kind == _STRUCT:
            field_id = 0
            while True:
                member, field_id = self.field_header(field_id)
                if member is None:
                    return
                self.skip(member, depth + 1)
        else:
            raise FooterError(f"the footer holds an unknown Thrift type {kind}")
