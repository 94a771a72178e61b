"""Opening a DOCX (a ZIP of XML parts) without trusting it.

Checked before python-docx sees the bytes, so a hostile file costs a bounded amount of memory and time and
is refused with its own reason (a 422/413, never a 500):

- an OLE compound file (CFB) is what Word writes for a password-protected DOCX (or a legacy .doc renamed):
  refused as encrypted;
- the central directory: at most `MAX_ZIP_MEMBERS` members (each costs a Python object before anything is
  read), and their declared sizes together within the budget (MAX_EXTRACTED_MB);
- every member is then inflated in blocks and counted, because declared sizes can lie (zipfile stops at the
  declared size and fails the CRC, but the count does not rely on that), and its XML prolog is read by
  libxml2 up to the root element: a DTD (`<!DOCTYPE`, the carrier of entity expansion, which OOXML never
  uses) is refused, whatever the part's encoding.

python-docx then re-reads the members (bounded by the same budget); its own parser has `resolve_entities=False`
and libxml2 limits amplification too, so a DTD that slipped past would still not expand.
"""

from __future__ import annotations

import io
import struct
import zipfile

from backend.errors import CorruptDocument, DocumentError, DocumentTooLarge

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# A real DOCX has tens of parts (hundreds with many images); a central directory of a million entries would
# cost hundreds of MB of ZipInfo objects before any budget is checked.
MAX_ZIP_MEMBERS = 10_000
READ_BLOCK = 1 << 20
MB = 1024 * 1024


def check_docx(data: bytes, name: str, max_bytes: int) -> None:
    """Raise `CorruptDocument` (encrypted, damaged zip, DTD/entities) or `DocumentTooLarge` (inflates past
    `max_bytes`) for a DOCX that must not reach python-docx; return quietly for one that may."""
    if data.startswith(OLE_MAGIC):
        if "EncryptionInfo".encode("utf-16-le") in data:
            raise CorruptDocument(
                f"{name}: an encrypted (password-protected) DOCX; remove the password in Word and upload it again"
            )
        raise CorruptDocument(
            f"{name}: an OLE compound file, not a DOCX: an encrypted DOCX or a legacy Word .doc; "
            "save it as an unencrypted .docx"
        )
    entries = _declared_entries(data)
    if entries is not None and entries > MAX_ZIP_MEMBERS:
        raise DocumentTooLarge(f"{name}: {entries} parts in the DOCX zip; at most {MAX_ZIP_MEMBERS}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, struct.error) as exc:
        raise CorruptDocument(f"{name}: not a valid DOCX file (a damaged or truncated zip: {exc})") from exc
    with archive:
        infos = archive.infolist()
        declared = sum(info.file_size for info in infos)
        if declared > max_bytes:
            raise DocumentTooLarge(
                f"{name}: its parts declare {declared / MB:.0f} MB unpacked; at most {max_bytes / MB:g} MB (MAX_EXTRACTED_MB, MAX_INFLATE_RATIO)"
            )
        inflated = 0
        for info in infos:
            if info.is_dir():
                continue
            prolog = _PrologCheck(name, info.filename)
            try:
                with archive.open(info) as member:
                    while block := member.read(READ_BLOCK):
                        inflated += len(block)
                        if inflated > max_bytes:
                            raise DocumentTooLarge(
                                f"{name}: inflates past {max_bytes / MB:g} MB (MAX_EXTRACTED_MB, MAX_INFLATE_RATIO) while unpacked "
                                f"(at {info.filename}; its declared sizes said {declared / MB:.1f} MB)"
                            )
                        prolog.feed(block)
            except DocumentError:
                raise
            except Exception as exc:  # zlib.error, BadZipFile (CRC), NotImplementedError (method), RuntimeError (encrypted member), ...
                raise CorruptDocument(
                    f"{name}: damaged DOCX part {info.filename} ({type(exc).__name__}: {exc})"
                ) from exc


def _declared_entries(data: bytes) -> int | None:
    """The member count from the end-of-central-directory record (zip64 too), read before zipfile builds an
    object per member; None when there is no such record (zipfile then reports the damage)."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if end < 0 or end + 22 > len(data):
        return None
    entries = struct.unpack_from("<H", data, end + 10)[0]
    if entries != 0xFFFF:
        return entries
    locator = end - 20  # zip64: the locator points at the zip64 end record, which holds the 8-byte count
    if locator < 0 or data[locator : locator + 4] != b"PK\x06\x07":
        return None
    record = struct.unpack_from("<Q", data, locator + 8)[0]
    if record + 56 > len(data) or data[record : record + 4] != b"PK\x06\x06":
        return None
    return struct.unpack_from("<Q", data, record + 32)[0]


class _Stop(Exception):
    """The root element was reached: the prolog held no DTD."""


class _PrologTarget:
    """An lxml parser target that looks at the prolog only: a doctype is refused, the root element ends it."""

    def __init__(self, name: str, part: str):
        self.name, self.part = name, part

    def doctype(self, root, public_id, system_url):
        raise CorruptDocument(
            f"{self.name}: {self.part} declares a DTD (<!DOCTYPE {root}>), which DOCX never uses: refused "
            "(entity expansion)"
        )

    def start(self, tag, attrib, nsmap=None):
        raise _Stop()

    def end(self, tag):
        pass

    def data(self, text):
        pass

    def close(self):
        return None


class _PrologCheck:
    """Feeds a member's first bytes to libxml2 (which decodes any encoding it declares) until its root element."""

    def __init__(self, name: str, part: str):
        from lxml import etree

        self._name, self._part = name, part
        # types-lxml's ParserTarget protocol asks for every callback (comment, pi, start_ns...), which lxml
        # itself treats as optional: it calls only those the target has.
        self._parser = etree.XMLParser(  # type: ignore[call-overload]
            target=_PrologTarget(name, part), resolve_entities=False, load_dtd=False, no_network=True
        )
        self._done = False

    def feed(self, block: bytes) -> None:
        if self._done:
            return
        from lxml import etree

        try:
            self._parser.feed(block)
        except _Stop:
            self._done = True
        except etree.XMLSyntaxError as exc:
            self._done = True
            if "entit" in str(exc).lower():  # libxml2's own amplification / entity-loop guards fired
                raise CorruptDocument(f"{self._name}: {self._part}: entity expansion refused ({exc})") from exc
            # Not XML (an image, a binary part): python-docx decides whether it needed it as XML.
