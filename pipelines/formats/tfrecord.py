"""TFRecord files, written and read without TensorFlow (format: length, crc, data, crc).

Each record is `uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)`,
little-endian, exactly what `tf.data.TFRecordDataset` reads. Files go through Beam's
`FileSystems` (local disk, GCS, S3) and are written atomically.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

import google_crc32c

from pipelines.formats.files import read_bytes, write_bytes

_MASK_DELTA = 0xA282EAD8


class CorruptRecordError(ValueError):
    """A TFRecord file is truncated or fails a checksum (the message names file and record)."""


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


_HEADERS: dict[int, bytes] = {}  # record length -> framed header (it depends on nothing else)


def encode_record(data: bytes) -> bytes:
    """One framed record: length, its masked crc, the data, the data's masked crc."""
    size = len(data)
    header = _HEADERS.get(size)
    if header is None:
        length = struct.pack("<Q", size)
        header = _HEADERS.setdefault(size, length + struct.pack("<I", masked_crc32c(length)))
    return b"".join((header, data, struct.pack("<I", masked_crc32c(data))))


def write_tfrecords(path: str, records: Iterable[bytes]) -> bytes:
    """Write records to `path` atomically (temporary name, then rename).

    Returns:
        The file's bytes (callers hash them for manifests).
    """
    data = b"".join(encode_record(record) for record in records)
    write_bytes(path, data)
    return data


def read_tfrecords(path: str, *, verify: bool = True) -> Iterator[bytes]:
    """Yield the records of one TFRecord file.

    Raises:
        CorruptRecordError: truncated file or a checksum mismatch (with the record number).
    """
    data = read_bytes(path)
    offset, number = 0, 0
    while offset < len(data):
        if offset + 12 > len(data):
            raise CorruptRecordError(f"{path}: truncated header at record {number}")
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
        start, end = offset + 12, offset + 12 + length
        if end + 4 > len(data):
            raise CorruptRecordError(f"{path}: truncated record {number}")
        record = data[start:end]
        if verify:
            (data_crc,) = struct.unpack("<I", data[end : end + 4])
            if header_crc != masked_crc32c(header) or data_crc != masked_crc32c(record):
                raise CorruptRecordError(f"{path}: checksum mismatch in record {number}")
        yield record
        offset, number = end + 4, number + 1
