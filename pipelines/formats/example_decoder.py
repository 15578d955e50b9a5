"""tf.train.Example parsing without importing TensorFlow.

The Example schema (tensorflow/core/example/{feature,example}.proto) is rebuilt in a private
protobuf descriptor pool, so checks and tests parse the records TensorFlow reads without paying
for a TensorFlow import, and without clashing with TensorFlow's own classes when both are
loaded. (Writing goes through `example_encoder.py`, which is faster for whole columns of records.)
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FIELD = descriptor_pb2.FieldDescriptorProto


def _build_example_class():
    proto = descriptor_pb2.FileDescriptorProto(
        name="two_tower/example.proto", package="tensorflow", syntax="proto3"
    )

    def message(name, fields, nested=None, oneofs=None, map_entry=False):
        msg = (
            proto.message_type.add(name=name)
            if nested is None
            else nested.nested_type.add(name=name)
        )
        if map_entry:
            msg.options.map_entry = True
        for oneof in oneofs or []:
            msg.oneof_decl.add(name=oneof)
        for number, (fname, ftype, label, type_name, oneof_index) in enumerate(fields, start=1):
            field = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name
            if oneof_index is not None:
                field.oneof_index = oneof_index
        return msg

    rep, opt = _FIELD.LABEL_REPEATED, _FIELD.LABEL_OPTIONAL
    message("BytesList", [("value", _FIELD.TYPE_BYTES, rep, None, None)])
    message("FloatList", [("value", _FIELD.TYPE_FLOAT, rep, None, None)])
    message("Int64List", [("value", _FIELD.TYPE_INT64, rep, None, None)])
    message(
        "Feature",
        [
            ("bytes_list", _FIELD.TYPE_MESSAGE, opt, ".tensorflow.BytesList", 0),
            ("float_list", _FIELD.TYPE_MESSAGE, opt, ".tensorflow.FloatList", 0),
            ("int64_list", _FIELD.TYPE_MESSAGE, opt, ".tensorflow.Int64List", 0),
        ],
        oneofs=["kind"],
    )
    features = message(
        "Features",
        [("feature", _FIELD.TYPE_MESSAGE, rep, ".tensorflow.Features.FeatureEntry", None)],
    )
    message(
        "FeatureEntry",
        [
            ("key", _FIELD.TYPE_STRING, opt, None, None),
            ("value", _FIELD.TYPE_MESSAGE, opt, ".tensorflow.Feature", None),
        ],
        nested=features,
        map_entry=True,
    )
    message("Example", [("features", _FIELD.TYPE_MESSAGE, opt, ".tensorflow.Features", None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


Example = _build_example_class()


def decode_example(data: bytes) -> dict[str, list]:
    """Parse a serialized Example into `{name: [values]}` (bytes, ints or floats)."""
    example = Example.FromString(data)
    out: dict[str, list] = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = list(getattr(feature, kind).value) if kind else []
    return out
