"""Fork settings that a binary file stored under BVLC's field numbers, read back.

DeepLab-v2 numbered ``interp_param`` 143 and SegNet ``upsample_param`` 137,
which BVLC Caffe gave to ``input_param`` and ``embed_param``. minicaffe keeps
BVLC's numbers (caffe.proto's header), so a binary net definition written by
one of those forks parses with the fork's settings inside the BVLC field
(as unknown fields protobuf keeps byte for byte). For a layer of the fork's
type, and only then, the bytes are moved to the field they were written as.
Text files name their fields and need none of this.
"""

from __future__ import annotations

# layer type -> (BVLC field holding the fork's bytes, the fork's field in minicaffe's schema)
_MOVED = {
    "Interp": ("input_param", "interp_param"),
    "Upsample": ("embed_param", "upsample_param"),
}

NOTE_FORK_FIELDS = "fork settings stored under BVLC field numbers -> interp_param/upsample_param"


def reread_fork_fields(net) -> bool:
    """Move Interp/Upsample settings out of input_param/embed_param, in place; True if any moved."""
    moved = False
    for layer in net.layer:
        fields = _MOVED.get(layer.type)
        if fields is None:
            continue
        bvlc_field, fork_field = fields
        if layer.HasField(bvlc_field) and not layer.HasField(fork_field):
            getattr(layer, fork_field).MergeFromString(getattr(layer, bvlc_field).SerializeToString())
            layer.ClearField(bvlc_field)
            moved = True
    return moved
