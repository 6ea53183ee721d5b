"""The record in every file: an XMP packet (what museum image databases and exiftool read) saying
which object the image shows (the catalogue's accession number and title, the source's name) and
that its colour is a trained model's (IPTC digital source type), by which checkpoint, when."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

# Colour made by a trained model, joined with the scan's own lightness: a composite with trained
# algorithmic media, in IPTC's vocabulary (trainedAlgorithmicMedia alone would say the whole
# picture was generated).
DIGITAL_SOURCE_TYPE = ("http://cv.iptc.org/newscodes/digitalsourcetype/"
                       "compositeWithTrainedAlgorithmicMedia")
NS_COLORIZE = "https://github.com/archive-colorizer/ns/1.0/"
# Which catalogue column fills which XMP field when --metadata-columns says nothing: the first
# column whose name (case and spaces aside) is one of these.
GUESSES = {
    "identifier": ("accession", "accession number", "accession no", "accessionnumber",
                   "accession_number", "inventory number", "inventory no", "inventarnummer",
                   "inventarnr", "inventar-nr", "inv-nr", "inv.-nr.", "objektnummer",
                   "object number", "objectnumber", "object id", "signatur", "shelfmark",
                   "call number", "identifier", "id"),
    "title": ("title", "titel", "caption", "bildtitel", "objekttitel", "object title", "name",
              "description", "beschreibung"),
}
FIELDS = tuple(GUESSES)


def parse_columns(spec: str) -> dict[str, str]:
    """'identifier=Inventarnummer,title=Titel' -> {field: column}; 'auto' and 'none' -> {}."""
    if spec.strip().lower() in ("auto", "none", ""):
        return {}
    out = {}
    for part in spec.split(","):
        key, sep, col = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in FIELDS or not col.strip():
            raise ValueError(f"{part!r}: say FIELD=COLUMN, FIELD one of {', '.join(FIELDS)}")
        out[key] = col.strip()
    return out


def resolve_columns(spec: str, columns: list[str]) -> str:
    """The job's mapping as written into job.json: the user's, checked against the catalogue's
    columns, or for 'auto' the columns guessed by name ('none': no catalogue fields)."""
    if spec.strip().lower() == "none":
        return "none"
    chosen = parse_columns(spec)
    missing = [c for c in chosen.values() if c not in columns]
    if missing:
        raise ValueError(f"no column {missing[0]!r} in the catalogue (columns: "
                         f"{', '.join(columns) or 'none'})")
    if spec.strip().lower() == "auto":
        norm = {c.strip().lower(): c for c in reversed(columns)}  # the first of equals wins
        for key, names in GUESSES.items():
            hit = next((norm[n] for n in names if n in norm), None)
            if hit is not None and hit not in chosen.values():
                chosen[key] = hit
    return ",".join(f"{k}={v}" for k, v in chosen.items()) or "none"


def record(mapping: str, cell, source_name: str) -> dict:
    """What an output says about its object: each mapped field's cell (cell(column) gives it),
    and the source's name."""
    out = {k: v for k, col in parse_columns(mapping).items() if (v := cell(col)) not in (None, "")}
    out["source"] = source_name
    return out


def _alt(text: str) -> str:
    return (f"<rdf:Alt><rdf:li xml:lang=\"x-default\">{_xml(text)}</rdf:li></rdf:Alt>")


def _clean(text: str) -> str:
    # XML 1.0 cannot hold most control characters, even escaped; a catalogue cell rarely has them
    return "".join(ch for ch in str(text) if ch >= " " or ch in "\t\n\r")


def _xml(text: str) -> str:
    return escape(_clean(text))


def packet(provenance: dict, description: str) -> bytes:
    """The XMP packet (UTF-8) for one output. provenance: software, checkpoint_sha256, date,
    source_sha256 and, when the job has a catalogue, record (identifier, title, source)."""
    rec = provenance.get("record") or {}
    attrs = {
        "xmp:CreatorTool": provenance["software"],
        "Iptc4xmpExt:DigitalSourceType": DIGITAL_SOURCE_TYPE,
        "colorize:CheckpointSHA256": provenance["checkpoint_sha256"],
    }
    if provenance.get("date"):
        attrs["xmp:MetadataDate"] = provenance["date"]
    if provenance.get("source_sha256"):
        attrs["colorize:SourceSHA256"] = provenance["source_sha256"]
    body = []
    if rec.get("identifier"):
        body.append(f"<dc:identifier>{_xml(rec['identifier'])}</dc:identifier>")
    if rec.get("title"):
        body.append(f"<dc:title>{_alt(rec['title'])}</dc:title>")
    if rec.get("source"):
        body.append(f"<dc:source>{_xml(rec['source'])}</dc:source>")
    body.append(f"<dc:description>{_alt(description)}</dc:description>")
    attr_text = "".join(f"\n    {k}={quoteattr(_clean(v))}" for k, v in attrs.items())
    xml = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        f'    xmlns:colorize="{NS_COLORIZE}"{attr_text}>\n   '
        + "\n   ".join(body)
        + "\n  </rdf:Description>\n </rdf:RDF>\n</x:xmpmeta>\n<?xpacket end=\"w\"?>"
    )
    return xml.encode("utf-8")
