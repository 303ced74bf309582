"""Test helpers: read a payload's parts and metadata, and rewrite them as a faulty or hostile
peer could: through `seal_payload` where it accepts the content, else by hand in the same
layout (`write_header`)."""

import json

import numpy as np
from flwr.app import ConfigRecord

from flower_gd.codecs import (
    _HEAD,
    _MAGIC,
    PAYLOAD_FIELD,
    PAYLOAD_KEY,
    open_payload,
    payload_record,
    seal_payload,
)


def parts(content, key=PAYLOAD_KEY):
    """The payload's parts by name, as writable copies."""
    return {name: a.copy() for name, a in open_payload(content, key)[0].items()}


def meta(content, key=PAYLOAD_KEY):
    return dict(open_payload(content, key)[1])


def rewrite(content, key=PAYLOAD_KEY, arrays=None, **changes):
    """Replace the payload's parts (`arrays`) and metadata entries (`changes`; None drops
    one). Metadata JSON cannot hold (NaN, infinity) is written as Python's json module does."""
    new_arrays, new_meta = open_payload(content, key)
    new_arrays = dict(new_arrays if arrays is None else arrays)
    new_meta = dict(new_meta)
    for k, v in changes.items():
        if v is None:
            new_meta.pop(k, None)
        else:
            new_meta[k] = v
    try:
        content[key] = seal_payload(new_arrays, new_meta)
    except ValueError:  # a part type it refuses, or NaN or infinity in the metadata
        arrays = {n: np.ascontiguousarray(a) for n, a in new_arrays.items()}
        header = json.dumps({"meta": new_meta, "parts": [[n, a.dtype.str, list(a.shape)]
                                                         for n, a in arrays.items()]})
        write_header(content, header, b"".join(a.tobytes() for a in arrays.values()), key)
    return content


def header_and_body(content, key=PAYLOAD_KEY) -> tuple[str, bytes]:
    """The payload's JSON header as text, and the parts' bytes after it."""
    data = blob(content, key)
    _, length = _HEAD.unpack_from(data)
    return data[_HEAD.size:_HEAD.size + length].decode(), data[_HEAD.size + length:]


def write_header(content, header: str | bytes, body: bytes, key=PAYLOAD_KEY):
    """A payload with this header (any text or bytes, valid or not) before `body`."""
    text = header.encode() if isinstance(header, str) else header
    return write_blob(content, _HEAD.pack(_MAGIC, len(text)) + text + body, key)


def blob(content, key=PAYLOAD_KEY) -> bytes:
    return payload_record(content, key)[PAYLOAD_FIELD]


def write_blob(content, data, key=PAYLOAD_KEY, name=PAYLOAD_FIELD):
    """Put raw bytes (or any config value a peer could send) where the payload goes, under
    any field name."""
    content[key] = ConfigRecord({name: data})
    return content
