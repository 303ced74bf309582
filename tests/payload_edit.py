"""Test helpers: read a payload's parts and metadata, and rewrite them as a faulty or hostile
peer could (a rewritten payload is sealed in the real layout unless `raw_header` says how)."""

import json
import struct

import numpy as np
from flwr.app import Array, ArrayRecord

from flower_gd.codecs import PAYLOAD_ARRAY, PAYLOAD_KEY, PAYLOAD_STYPE, open_payload, seal_payload


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
    except ValueError:  # not JSON: NaN or infinity in the metadata
        header = json.dumps({"meta": new_meta, "parts": [[n, np.ascontiguousarray(a).dtype.str,
                                                          list(a.shape)]
                                                         for n, a in new_arrays.items()]})
        write_blob(content, b"FGD1" + struct.pack("<I", len(header)) + header.encode()
                   + b"".join(np.ascontiguousarray(a).tobytes() for a in new_arrays.values()),
                   key)
    return content


def blob(content, key=PAYLOAD_KEY) -> bytes:
    return bytes(content.array_records[key][PAYLOAD_ARRAY].data)


def write_blob(content, data: bytes, key=PAYLOAD_KEY, stype=PAYLOAD_STYPE, name=PAYLOAD_ARRAY):
    """Put raw bytes where the payload goes, under any array name and serialization type."""
    content[key] = ArrayRecord({name: Array(dtype="uint8", shape=(len(data),), stype=stype,
                                            data=data)})
    return content
