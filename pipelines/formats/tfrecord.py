"""TFRecord files, written and read without TensorFlow (format: length, crc, data, crc).

Each record is `uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)`,
little-endian, exactly what `tf.data.TFRecordDataset` reads. Files go through Beam's
`FileSystems` (local disk, GCS, S3) and are written atomically.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence

import google_crc32c
import numpy as np

from pipelines.formats.example_encoder import distinct_sizes
from pipelines.formats.files import read_bytes, write_bytes

_MASK_DELTA = 0xA282EAD8
_CRC = struct.Struct("<I")


class CorruptRecordError(ValueError):
    """A TFRecord file is truncated or fails a checksum (the message names file and record)."""


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


_HEADERS: dict[int, bytes] = {}  # record length -> framed header (it depends on nothing else)


def encode_record(data: bytes) -> bytes:
    """One framed record: length, its masked crc, the data, the data's masked crc."""
    return b"".join((_header(len(data)), data, struct.pack("<I", masked_crc32c(data))))


def _header(size: int) -> bytes:
    header = _HEADERS.get(size)
    if header is None:
        length = struct.pack("<Q", size)
        header = _HEADERS.setdefault(size, length + struct.pack("<I", masked_crc32c(length)))
    return header


class RecordFile(Sequence):
    """Records already framed as one TFRecord file in memory (`frame_records`).

    A sequence of the records' bytes (compares equal to another `RecordFile` of the same
    bytes); `write_tfrecords` writes `data` as it is.

    Attributes:
        data: the file's bytes.
        starts, ends: int64 `[n]` where each record's data lies in `data`.
    """

    def __init__(self, data: bytes, starts: np.ndarray, ends: np.ndarray):
        self.data, self.starts, self.ends = data, starts, ends

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return bytes(self.data[self.starts[index] : self.ends[index]])

    def __eq__(self, other) -> bool:
        if isinstance(other, RecordFile):
            return self.data == other.data
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None


def frame_records(parts: np.ndarray, sizes: np.ndarray) -> RecordFile:
    """Frame n records given as pieces into one TFRecord file, without a Python-level loop.

    Args:
        parts: object `[n, k]`; record i is the concatenation of row i's bytes-like pieces.
        sizes: int64 `[n]` each record's size.
    """
    n = len(sizes)
    sizes = np.asarray(sizes, dtype=np.int64)
    distinct, inverse = distinct_sizes(sizes)
    headers = np.fromiter(map(_header, distinct.tolist()), dtype=object, count=len(distinct))
    # Columns as lists, zipped: no list per record stays alive (millions of live containers
    # would set off the cyclic garbage collector again and again).
    records = list(map(b"".join, zip(*(column.tolist() for column in parts.T), strict=True)))
    # google_crc32c takes bytes only (no memoryview), hence one bytes object per record.
    crcs = np.fromiter(map(google_crc32c.value, records), dtype=np.uint64, count=n)
    masked = ((crcs >> np.uint64(15)) | (crcs << np.uint64(17))) + np.uint64(_MASK_DELTA)
    framed = np.empty((n, 3), dtype=object)
    framed[:, 0] = headers[inverse]
    framed[:, 1] = records
    framed[:, 2] = list(map(_CRC.pack, (masked & np.uint64(0xFFFFFFFF)).tolist()))
    ends = np.cumsum(sizes + 16) - 4
    return RecordFile(b"".join(framed.ravel().tolist()), ends - sizes, ends)


def write_tfrecords(path: str, records: Iterable[bytes] | RecordFile) -> bytes:
    """Write records to `path` atomically (temporary name, then rename).

    Returns:
        The file's bytes (callers hash them for manifests).
    """
    if isinstance(records, RecordFile):
        data = records.data
    else:
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
