"""An IPTC-IIM block (the caption, by-line, copyright and keywords an archive's older workflow,
FotoStation, Photo Mechanic, Photoshop before CS, wrote into its JPEGs and TIFFs) read into XMP,
where every output format has a place for it: without it a scan catalogued that way came out
with none of its record. Mapped as the IPTC Photo Metadata standard and the Metadata Working
Group map IIM to XMP; where the source's own XMP says a thing too, its XMP wins (the MWG rule
for a file that has both, written by an XMP-aware tool after the IIM).

No torch and no lxml: text in, an XMP packet out (writers.merged puts ours over it)."""

from __future__ import annotations

import binascii
import re
from xml.sax.saxutils import escape

# (record 2 dataset) -> (XMP property, kind): kind "alt" a language alternative, "seq"/"bag"
# repeatable, "text" one value. IPTC Photo Metadata 2019.1, "IIM mapping" column.
MAPPING = {
    5: ("dc:title", "alt"),
    15: ("photoshop:Category", "text"),
    20: ("photoshop:SupplementalCategories", "bag"),
    25: ("dc:subject", "bag"),
    40: ("photoshop:Instructions", "text"),
    55: ("photoshop:DateCreated", "date"),
    80: ("dc:creator", "seq"),
    85: ("photoshop:AuthorsPosition", "text"),
    90: ("photoshop:City", "text"),
    92: ("Iptc4xmpCore:Location", "text"),
    95: ("photoshop:State", "text"),
    100: ("Iptc4xmpCore:CountryCode", "text"),
    101: ("photoshop:Country", "text"),
    103: ("photoshop:TransmissionReference", "text"),
    105: ("photoshop:Headline", "text"),
    110: ("photoshop:Credit", "text"),
    115: ("photoshop:Source", "text"),
    116: ("dc:rights", "alt"),
    120: ("dc:description", "alt"),
    122: ("photoshop:CaptionWriter", "text"),
}
KINDS = {p: k for p, k in MAPPING.values()}
# A PNG's own keywords (PNG 1.2, 11.3.4.2) for the same things: in a PNG output they stay texts,
# in every output they are the XMP's too (a TIFF, JPEG or WebP has no place for a PNG text)
PNG_TEXT = {"Title": "dc:title", "Author": "dc:creator", "Description": "dc:description",
            "Copyright": "dc:rights"}
# A date's time of day (2:60 of 2:55): in XMP one value with the date (MWG)
TIMES = {60: 55}
# Datasets that say how the block is written (its version, the charset, the envelope), or of the
# preview it came with: nothing to carry. (2:62, 2:63, when the scan was made, MWG's
# xmp:CreateDate, which no output's XMP carries as the source file's: named as not carried.)
STRUCTURAL = {(1, n) for n in range(256)} | {(2, 0), (2, 200), (2, 201), (2, 202)}
NAMES = {5: "object name", 15: "category", 20: "supplemental categories", 25: "keywords",
         40: "instructions", 55: "date created", 80: "by-line", 85: "by-line title", 90: "city",
         92: "sub-location", 95: "province/state", 100: "country code", 101: "country",
         103: "transmission reference", 105: "headline", 110: "credit", 115: "source",
         116: "copyright notice", 120: "caption", 122: "caption writer"}
NS = {"dc": "http://purl.org/dc/elements/1.1/", "photoshop": "http://ns.adobe.com/photoshop/1.0/",
      "Iptc4xmpCore": "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/"}


def block(info: dict) -> bytes | None:
    """The IIM datasets a decoded file's info holds: a JPEG's Photoshop resource 0x0404 (Pillow:
    info["photoshop"]), a TIFF's tag 33723 as its bytes (imaging puts them in info["iptc"]), a
    PNG's "Raw profile type iptc" text (ImageMagick's and exiftool's hex)."""
    if data := (info.get("photoshop") or {}).get(0x0404):
        return bytes(data)
    if b"8BIM\x04\x04" in (app13 := info.get("app13") or b""):  # one Pillow could not parse
        return resource(app13[app13.index(b"8BIM"):], 0x0404) or b""
    if data := info.get("iptc"):
        return bytes(data)
    if text := info.get("Raw profile type iptc"):
        return _raw_profile(str(text)) or b""  # there, and unreadable: said so
    return None


def _raw_profile(text: str) -> bytes | None:
    """ImageMagick's "\\nIPTC profile\\n   LENGTH\\nHEX..." as bytes: a Photoshop resource block
    (8BIM) holding the datasets, or the datasets alone."""
    lines = text.strip().split("\n")
    try:
        data = binascii.unhexlify("".join(lines[2:]).replace(" ", ""))
    except (binascii.Error, ValueError, IndexError):
        return None
    return resource(data, 0x0404) if data.startswith(b"8BIM") else data


def resource(data: bytes, wanted: int) -> bytes | None:
    """One resource of a Photoshop resource block: '8BIM', id, a padded Pascal name, size."""
    i = 0
    while i + 12 <= len(data) and data[i:i + 4] == b"8BIM":
        rid = int.from_bytes(data[i + 4:i + 6], "big")
        n = data[i + 6]
        j = i + 6 + 1 + n + ((1 + n) % 2)
        size = int.from_bytes(data[j:j + 4], "big")
        if rid == wanted:
            return data[j + 4:j + 4 + size]
        i = j + 4 + size + size % 2
    return None


def edited_since_xmp(info: dict, data: bytes) -> bool:
    """True where the block was changed after an XMP-aware tool last wrote both: Photoshop
    keeps the MD5 of the block it wrote (resource 0x0425), and one that no longer matches means
    an IIM-only tool edited the record since, so the block's values are the newer (MWG)."""
    import hashlib

    said = (info.get("photoshop") or {}).get(0x0425)
    if said is None and info.get("photoshop_irb"):  # a TIFF's tag 34377
        said = resource(bytes(info["photoshop_irb"]), 0x0425)
    # a TIFF pads the block to whole LONGs, which the digest does not cover
    return said is not None and bytes(said) not in (hashlib.md5(data).digest(),
                                                    hashlib.md5(data[:_extent(data)]).digest())


def datasets(data: bytes) -> list[tuple[int, int, bytes]]:
    """(record, dataset, value) in the order written; stops at what is not a dataset (a
    block's padding, or damage), keeping what came before."""
    return _walk(data)[0]


def _extent(data: bytes) -> int:
    """Where the last whole dataset ends."""
    return _walk(data)[1]


def _walk(data: bytes) -> tuple[list[tuple[int, int, bytes]], int]:
    out, i, end = [], 0, 0
    while i + 5 <= len(data) and data[i] == 0x1C:
        rec, ds, n = data[i + 1], data[i + 2], int.from_bytes(data[i + 3:i + 5], "big")
        i += 5
        if n & 0x8000:  # an extended dataset: the next (n & 0x7fff) bytes give its length
            k = n & 0x7FFF
            if k > 4:
                break
            n, i = int.from_bytes(data[i:i + k], "big"), i + k
        if i + n > len(data):
            break
        out.append((rec, ds, data[i:i + n]))
        i += n
        end = i
    return out, end


def _text(value: bytes, utf8: bool) -> str:
    """A dataset's text: UTF-8 where the block says so (1:90 ESC % G) or where it reads as
    such; otherwise Windows-1252, what the tools that wrote no charset wrote."""
    value = value.rstrip(b"\0")
    try:
        text = value.decode("utf-8", "replace" if utf8 else "strict")
    except UnicodeDecodeError:
        text = value.decode("cp1252", "replace")
    # a caption's lines end in CR (the Mac's, where IIM began); XML holds no other control byte
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff\ud800-\udfff]")  # none is XML


def read(data: bytes) -> tuple[dict[str, list[str]], list[str]]:
    """The XMP properties the block says, each a list of values, and the names of the datasets
    it holds that have no place in XMP here (said in the row's notes)."""
    found = datasets(data)
    utf8 = any(r == 1 and d == 90 and b"\x1b%G" in v for r, d, v in found)
    props: dict[str, list[str]] = {}
    left, when = [], {}
    for rec, ds, value in found:
        if rec == 2 and (ds in TIMES or ds in TIMES.values()):
            when.setdefault(ds, _text(value, utf8).strip())  # IIM's are not repeatable
        elif rec == 2 and ds in MAPPING:
            text = _text(value, utf8).strip()
            if text and (MAPPING[ds][1] in ("seq", "bag") or MAPPING[ds][0] not in props):
                props.setdefault(MAPPING[ds][0], []).append(text)
        elif (rec, ds) not in STRUCTURAL:
            left.append(f"{rec}:{ds:02d}")
    for t, ds in TIMES.items():
        if ds not in when and t not in when:
            continue
        date, whole = _date(when.get(ds, ""))
        time = _time(when[t]) if t in when else ""
        if date:
            props[MAPPING[ds][0]] = [date + (time if whole else "")]
        left += [f"2:{n:02d}" for n, bad in ((ds, ds in when and not date),
                                            (t, t in when and not (whole and time))) if bad]
    return props, sorted(set(left))


def _date(text: str) -> tuple[str, bool]:
    """IIM's CCYYMMDD as XMP's date, partial where the block says 00 (a month or day not known):
    ('1931-02', False) of 19310200, ('1931', False) of 19310002 (a day without its month);
    whole: all three known, a time may follow. ('', False) where it is no such date."""
    import datetime as dt

    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", text)
    if not m or m[1] == "0000" or int(m[2]) > 12 or int(m[3]) > 31:
        return "", False
    parts = [m[1]] + ([m[2]] + ([m[3]] if m[3] != "00" else []) if m[2] != "00" else [])
    if len(parts) == 3:
        try:
            dt.date(*map(int, parts))
        except ValueError:  # 19310231: no such day
            return "", False
    return "-".join(parts), len(parts) == 3


def _time(text: str) -> str:
    """IIM's HHMMSS+HHMM (the zone optional, as some tools wrote it) as XMP's 'T14:30:00+01:00'."""
    m = re.fullmatch(r"(\d{2})(\d{2})(\d{2})(?:([+-]\d{2})(\d{2}))?", text)
    if not m or int(m[1]) > 23 or int(m[2]) > 59 or int(m[3]) > 60 or (m[4] and (abs(int(m[4])) > 14 or int(m[5]) > 59)):
        return ""
    return f"T{m[1]}:{m[2]}:{m[3]}" + (f"{m[4]}:{m[5]}" if m[4] else "")


def packet(props: dict[str, list[str]]) -> bytes:
    """An XMP packet of the properties (writers merge it with the source's and ours)."""
    body = []
    for prop, values in props.items():
        values = [_CONTROL.sub("", v) for v in values]  # XML holds no other control byte
        kind = KINDS[prop]
        if kind == "alt":
            inner = f'<rdf:Alt><rdf:li xml:lang="x-default">{escape(values[0])}</rdf:li></rdf:Alt>'
        elif kind in ("seq", "bag"):
            tag = "rdf:Seq" if kind == "seq" else "rdf:Bag"
            inner = f"<{tag}>" + "".join(f"<rdf:li>{escape(v)}</rdf:li>" for v in values) + f"</{tag}>"
        else:
            inner = escape(values[0])
        body.append(f"<{prop}>{inner}</{prop}>")
    xmlns = " ".join(f'xmlns:{p}="{u}"' for p, u in NS.items())
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf='
            f'"http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" {xmlns}>'
            + "".join(body) + "</rdf:Description></rdf:RDF></x:xmpmeta>").encode("utf-8")


def tags(props) -> list[str]:
    """The properties as lxml names them: '{http://purl.org/dc/elements/1.1/}title'."""
    return [f"{{{NS[p.split(':')[0]]}}}{p.split(':')[1]}" for p in props]


def said(tags_: list[str]) -> str:
    """What a row's note names: 'caption, by-line, copyright notice'."""
    by_tag = dict(zip(tags(p for p, _ in MAPPING.values()), (NAMES[ds] for ds in MAPPING), strict=True))
    return ", ".join(by_tag[t] for t in tags_)
