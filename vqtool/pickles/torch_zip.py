"""The pickle torch.load would unpickle from a zip checkpoint, found as torch's own reader finds it.

torch.load reads a zip with PyTorchStreamReader (miniz), not Python's zipfile:
the central directory is found from the end record at the end of the file
(a zip64 end record before it wins), the record prefix is the first central
entry's name up to its first ``/``, and a record (``data.pkl``, ``data/0``,
``version``...) is looked up as prefix + name, ignoring case, its bytes read
after the local header the central entry points to. Any other reader resolves
an unusual archive differently (data before the first entry, a second archive
appended, duplicate names, local headers that disagree with the directory), so
this module models none of that: :func:`data_pickle` accepts only an archive
laid out as torch.save lays it out, and refuses everything else with
:class:`Unusual`:

- entries one after another from offset 0, stored (not compressed or
  encrypted), each local header agreeing with its central entry, its data
  followed by a signed data descriptor when its flags say so, torch's ``FB``
  alignment padding as the only extra field;
- the central directory right after the last entry, then optionally a zip64
  end record and locator that agree with the end record, which ends the file
  (no comment, one disk);
- every name ASCII, under one root folder, unique ignoring case, and one of
  the records torch.save writes; ``data.pkl`` among them, its CRC right.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from typing import IO, NamedTuple

LOCAL = struct.Struct("<4sHHHHHIIIHH")
CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
END = struct.Struct("<4sHHHHIIH")
ZIP64_END = struct.Struct("<4sQHHIIQQQQ")
ZIP64_LOCATOR = struct.Struct("<4sIQI")
DESCRIPTOR = struct.Struct("<4sIII")
SIGNATURES = {LOCAL: b"PK\x03\x04", CENTRAL: b"PK\x01\x02", END: b"PK\x05\x06", ZIP64_END: b"PK\x06\x06",
              ZIP64_LOCATOR: b"PK\x06\x07", DESCRIPTOR: b"PK\x07\x08"}
RECORD_NAMES = {LOCAL: "a local header", CENTRAL: "a central directory entry", END: "its end record",
                ZIP64_END: "its zip64 end record", ZIP64_LOCATOR: "its zip64 locator", DESCRIPTOR: "a data descriptor"}
DESCRIPTOR_FLAG, UTF8_FLAG = 0x0008, 0x0800
STORED = 0
TOO_LARGE = 0xFFFFFFFF  # a 32-bit field that defers to a zip64 extra field (which torch.save writes only past 4 GB)
PADDING_ID = b"FB"  # torch.save's extra field, aligning each record's data to 64 bytes
# what torch.save writes under the root folder: the pickle, one file per storage, and small text records
RECORDS = re.compile(r"data\.pkl|data/\d+|version|\.data/version|\.data/serialization_id|byteorder"
                     r"|\.format_version|\.storage_alignment")
PICKLE = "data.pkl"


class Unusual(Exception):
    """Why an archive is not one torch.save writes, as the end of 'a zip archive ...'."""


class Entry(NamedTuple):
    name: str
    flags: int
    crc: int
    size: int
    offset: int  # of its local header


def data_pickle(f: IO[bytes]) -> bytes:
    """The bytes of the ``data.pkl`` torch.load would unpickle from the zip ``f``; Unusual for any other layout."""
    size = f.seek(0, os.SEEK_END)
    directory_end, count, directory_size, directory_at = _end_records(f, size)
    if directory_at + directory_size != directory_end:
        raise Unusual("with data between its central directory and its end record")
    entries = _central_directory(_read_at(f, directory_at, directory_size), count)
    root = _root_folder(entries)
    end = 0
    for entry in entries:
        if entry.offset != end:
            raise Unusual(f"with data before or between its members (at byte {min(end, entry.offset)})")
        end = _local_entry_end(f, entry)
    if end != directory_at:
        raise Unusual("with data between its last member and its central directory")
    pickle_entry = next(entry for entry in entries if entry.name == f"{root}/{PICKLE}")
    data = _read_at(f, pickle_entry.offset + _data_start(f, pickle_entry), pickle_entry.size)
    if zlib.crc32(data) != pickle_entry.crc:
        raise Unusual(f"whose {pickle_entry.name} fails its CRC check")
    return data


def _end_records(f: IO[bytes], size: int) -> tuple[int, int, int, int]:
    """(where the records after the central directory begin, entries, directory size, directory offset)."""
    end_at = size - END.size
    _, disk, directory_disk, here, count, directory_size, directory_at, comment = _unpack(END, f, end_at)
    if comment:
        raise Unusual("with a comment or data after its end record")
    if disk or directory_disk or here != count:
        raise Unusual("spanning several disks")
    locator_at = end_at - ZIP64_LOCATOR.size
    if locator_at < 0 or _read_at(f, locator_at, 4) != SIGNATURES[ZIP64_LOCATOR]:
        return end_at, count, directory_size, directory_at
    _, disk, record_at, disks = _unpack(ZIP64_LOCATOR, f, locator_at)
    if disk or disks != 1 or record_at != locator_at - ZIP64_END.size:
        raise Unusual("with a zip64 end record away from its end")
    _, record_size, _, _, disk, directory_disk, here, count64, size64, at64 = _unpack(ZIP64_END, f, record_at)
    if record_size != ZIP64_END.size - 12 or disk or directory_disk or here != count64:
        raise Unusual("with an unusual zip64 end record")
    for small, large, full in ((count, count64, 0xFFFF), (directory_size, size64, TOO_LARGE),
                               (directory_at, at64, TOO_LARGE)):
        if small not in (large, full):
            raise Unusual("whose zip64 and zip end records disagree")
    return record_at, count64, size64, at64


def _central_directory(data: bytes, count: int) -> list[Entry]:
    entries, at = [], 0
    for _ in range(count):
        (_, _, _, flags, method, _, _, crc, packed, size, name_length, extra_length, comment_length, disk, _, _,
         offset) = _unpack_from(CENTRAL, data, at)
        name = _name(data[at + CENTRAL.size:at + CENTRAL.size + name_length])
        if extra_length or comment_length or disk:
            raise Unusual(f"with extra fields or a comment on {name} in its central directory")
        _check_stored(name, flags, method, packed, size)
        entries.append(Entry(name, flags, crc, size, offset))
        at += CENTRAL.size + name_length
    if at != len(data):
        raise Unusual("whose central directory is not the size its end record says")
    if TOO_LARGE in (entry.offset for entry in entries):
        raise Unusual("with a member past 4 GB")
    return entries


def _check_stored(name: str, flags: int, method: int, packed: int, size: int) -> None:
    if flags & ~(DESCRIPTOR_FLAG | UTF8_FLAG):
        raise Unusual(f"with {name} encrypted or flagged unusually (flags {flags:#x})")
    if method != STORED or packed != size:
        raise Unusual(f"with {name} compressed")
    if size == TOO_LARGE:
        raise Unusual(f"with {name} of 4 GB or more")


def _name(raw: bytes) -> str:
    """A member's name: printable ASCII without backslashes, so that no reader can compare it differently."""
    if not raw or any(byte < 0x20 or byte > 0x7E or byte == 0x5C for byte in raw):
        raise Unusual(f"with a member name that is not plain ASCII ({raw[:60]!r})")
    return raw.decode("ascii")


def _root_folder(entries: list[Entry]) -> str:
    """The folder every name is under (torch takes it from the first entry); each name once, ignoring case."""
    if not entries:
        raise Unusual("without members")
    root, slash, _ = entries[0].name.partition("/")
    if not root or not slash:
        raise Unusual(f"whose first member {entries[0].name} is not in a folder")
    seen = set()
    for entry in entries:
        folder, _, record = entry.name.partition("/")
        if folder != root:
            raise Unusual(f"with members in two root folders ({root}/ and {entry.name})")
        if entry.name.lower() in seen:
            raise Unusual(f"with two members named {entry.name} (ignoring case, as torch looks them up)")
        seen.add(entry.name.lower())
        if not RECORDS.fullmatch(record):
            raise Unusual(f"with a member {entry.name}, which torch.save does not write")
    if f"{root}/{PICKLE}" not in (entry.name for entry in entries):
        raise Unusual(f"without {root}/{PICKLE}")
    return root


def _local_entry_end(f: IO[bytes], entry: Entry) -> int:
    """Where the next member must begin: after the local header, data and data descriptor of ``entry``."""
    _, _, flags, method, _, _, crc, packed, size, name_length, extra_length = _unpack(LOCAL, f, entry.offset)
    name = _read_at(f, entry.offset + LOCAL.size, name_length)
    extra = _read_at(f, entry.offset + LOCAL.size + name_length, extra_length)
    described = flags & DESCRIPTOR_FLAG
    sizes_agree = (crc, packed, size) in ((entry.crc, entry.size, entry.size), *([(0, 0, 0)] if described else []))
    if name != entry.name.encode() or flags != entry.flags or method != STORED or not sizes_agree:
        raise Unusual(f"whose local header of {entry.name} disagrees with its central directory")
    if extra and not (extra[:2] == PADDING_ID and int.from_bytes(extra[2:4], "little") == len(extra) - 4):
        raise Unusual(f"with extra fields on {entry.name} other than torch's padding")
    data_end = entry.offset + LOCAL.size + name_length + extra_length + entry.size
    if not described:
        return data_end
    if _unpack(DESCRIPTOR, f, data_end)[1:] != (entry.crc, entry.size, entry.size):
        raise Unusual(f"whose data descriptor of {entry.name} disagrees with its central directory")
    return data_end + DESCRIPTOR.size


def _data_start(f: IO[bytes], entry: Entry) -> int:
    """Where an entry's data begins, counted from its local header (as miniz counts it)."""
    *_, name_length, extra_length = _unpack(LOCAL, f, entry.offset)
    return LOCAL.size + name_length + extra_length


def _unpack(layout: struct.Struct, f: IO[bytes], offset: int) -> tuple:
    return _unpack_from(layout, _read_at(f, offset, layout.size), 0)


def _unpack_from(layout: struct.Struct, data: bytes, at: int) -> tuple:
    if at + layout.size > len(data) or data[at:at + 4] != SIGNATURES[layout]:
        raise Unusual(f"without {RECORD_NAMES[layout]} where it should be (damaged, cut short, or data appended)")
    return layout.unpack_from(data, at)


def _read_at(f: IO[bytes], offset: int, length: int) -> bytes:
    if offset < 0:
        raise Unusual("too short for its records")
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
        raise Unusual("cut short (truncated?)")
    return data
