"""Drives the sidecar's Confluent Schema Registry API with confluent-kafka's own client and
protobuf serializer (PyPI `confluent-kafka`, installed by `cargo xtask setup`).

Usage: client.py <registry url> <admin url> <work dir> <write token>

Every check is an `assert` with the answer in its message; on success the last stdout line
is a JSON summary the Rust test checks further (ids, versions) and uses after a restart.
"""

import base64
import json
import os
import sys
import urllib.error
import urllib.request

from confluent_kafka.schema_registry import (
    Schema,
    SchemaReference,
    SchemaRegistryClient,
)
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.schema_registry.schema_registry_client import ServerConfig, ConfigCompatibilityLevel
from confluent_kafka.serialization import MessageField, SerializationContext

REGISTRY, ADMIN, WORK, TOKEN = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]

MONEY = """syntax = "proto3";
package common;

message Money {
  string currency = 1;
  int64 units = 2;
}
"""

ORDER_V1 = """syntax = "proto3";
package shop;

import "common/money.proto";
import "google/protobuf/timestamp.proto";

message Order {
  string id = 1;
  common.Money total = 2;
  google.protobuf.Timestamp placed_at = 3;
  message Line {
    string sku = 1;
    uint32 quantity = 2;
  }
  repeated Line lines = 4;
}
"""

# Compatible: a new field.
ORDER_V2 = ORDER_V1.replace("  repeated Line lines = 4;\n", "  repeated Line lines = 4;\n  string note = 5;\n")
# Breaking on the wire: `quantity` becomes a string (varint -> length-delimited).
ORDER_BREAKING = ORDER_V2.replace("uint32 quantity = 2;", "string quantity = 2;")

MONEY_REF = [SchemaReference("common/money.proto", "money", 1)]


def client():
    # A fresh client each time it matters: the client caches ids and schemas, and the
    # point is to ask the server.
    return SchemaRegistryClient({"url": REGISTRY})


def raw(method, url, body=None, headers=()):
    """(status, parsed JSON) of one request, for what the client does not expose."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/vnd.schemaregistry.v1+json")
    for name, value in headers:
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def expect_error(call, status, code, contains=""):
    try:
        call()
    except SchemaRegistryError as e:
        assert (e.http_status_code, e.error_code) == (status, code), f"{e.http_status_code} {e.error_code} {e.error_message}"
        assert contains in e.error_message, e.error_message
        return e.error_message
    raise AssertionError(f"expected HTTP {status} / {code}")


summary = {}
sr = client()

# Register a schema and one that imports it through a reference.
money_id = sr.register_schema("money", Schema(MONEY, "PROTOBUF"))
order_id = sr.register_schema("orders-value", Schema(ORDER_V1, "PROTOBUF", MONEY_REF))
assert money_id != order_id, (money_id, order_id)
# The same schema again (another client, so the server answers): the same id.
assert client().register_schema("orders-value", Schema(ORDER_V1, "PROTOBUF", MONEY_REF)) == order_id

latest = client().get_latest_version("orders-value")
assert (latest.version, latest.schema_id, latest.subject) == (1, order_id, "orders-value"), latest
assert latest.schema.schema_type == "PROTOBUF" and latest.schema.schema_str == ORDER_V1, latest.schema
assert [(r.name, r.subject, r.version) for r in latest.schema.references] == [("common/money.proto", "money", 1)], latest.schema.references
v1 = client().get_version("orders-value", 1)
assert v1.schema_id == order_id and v1.schema.schema_str == ORDER_V1, v1

by_id = client().get_schema(order_id)
assert by_id.schema_str == ORDER_V1 and by_id.schema_type == "PROTOBUF", by_id
assert [(r.name, r.subject, r.version) for r in by_id.references] == [("common/money.proto", "money", 1)], by_id.references
assert set(client().get_subjects()) >= {"money", "orders-value"}, client().get_subjects()
assert client().get_versions("orders-value") == [1]
assert [(v.subject, v.version) for v in client().get_schema_versions(order_id)] == [("orders-value", 1)]
found = client().lookup_schema("orders-value", Schema(ORDER_V1, "PROTOBUF", MONEY_REF))
assert (found.schema_id, found.version) == (order_id, 1), found

# Compatibility under the default mode (BACKWARD).
assert sr.test_compatibility("orders-value", Schema(ORDER_V2, "PROTOBUF", MONEY_REF)) is True
assert sr.test_compatibility("orders-value", Schema(ORDER_BREAKING, "PROTOBUF", MONEY_REF), version=1) is False
status, verbose = raw(
    "POST",
    f"{REGISTRY}/compatibility/subjects/orders-value/versions/latest?verbose=true",
    {"schema": ORDER_BREAKING, "schemaType": "PROTOBUF", "references": [{"name": "common/money.proto", "subject": "money", "version": 1}]},
)
assert status == 200 and verbose["is_compatible"] is False, verbose
assert any("FIELD_WIRE_COMPATIBLE_TYPE" in m and "schema.proto:" in m for m in verbose["messages"]), verbose
summary["verbose"] = verbose["messages"]

# Modes: per subject (a _TRANSITIVE one) and global.
sr.set_config("orders-value", ServerConfig(compatibility=ConfigCompatibilityLevel.FULL_TRANSITIVE))
assert client().get_config("orders-value").compatibility_level == ConfigCompatibilityLevel.FULL_TRANSITIVE
assert sr.set_compatibility(level="FORWARD") == {"compatibility": "FORWARD"}
assert client().get_compatibility() == "FORWARD"
assert client().get_config().compatibility_level == ConfigCompatibilityLevel.FORWARD
expect_error(lambda: sr.set_compatibility("orders-value", "SIDEWAYS"), 422, 42203)
# Writes: a wrong bearer token is refused even from loopback; the right one is accepted.
status, body = raw("PUT", f"{REGISTRY}/config/money", {"compatibility": "NONE"}, [("Authorization", "Bearer wrong")])
assert (status, body["error_code"]) == (401, 401), (status, body)
status, body = raw("PUT", f"{REGISTRY}/config/money", {"compatibility": "NONE"}, [("Authorization", f"Bearer {TOKEN}")])
assert (status, body) == (200, {"compatibility": "NONE"}), (status, body)
status, body = raw("DELETE", f"{REGISTRY}/config/money")
assert (status, body) == (200, {"compatibilityLevel": "NONE"}), (status, body)
status, body = raw("GET", f"{REGISTRY}/config/money")
assert (status, body["error_code"]) == (404, 40408), (status, body)

# Register a compatible v2, then an incompatible one: 409, and v2 stays latest.
order_v2_id = client().register_schema("orders-value", Schema(ORDER_V2, "PROTOBUF", MONEY_REF))
assert order_v2_id not in (money_id, order_id), order_v2_id
expect_error(
    lambda: client().register_schema("orders-value", Schema(ORDER_BREAKING, "PROTOBUF", MONEY_REF)),
    409, 409, "FIELD_WIRE_COMPATIBLE_TYPE",
)
assert client().get_latest_version("orders-value").version == 2

# Bad input: a syntax error (with the position), a dangling reference, another schema type.
message = expect_error(lambda: client().register_schema("orders-value", Schema(ORDER_V2.replace("string note = 5;", "string note = ;"), "PROTOBUF", MONEY_REF)), 422, 42201)
assert "schema.proto:16:" in message, message
expect_error(lambda: client().register_schema("orders-value", Schema(ORDER_V2, "PROTOBUF", [SchemaReference("common/money.proto", "money", 9)])), 422, 42201, "subject 'money' has no version 9")
expect_error(lambda: client().register_schema("avro-value", Schema('{"type": "string"}', "AVRO")), 422, 42201, "PROTOBUF")
expect_error(lambda: client().get_version("orders-value", 7), 404, 40402)
expect_error(lambda: client().get_latest_version("nope"), 404, 40401, "Subject 'nope' not found.")
expect_error(lambda: client().get_schema(9999), 404, 40403)
assert client().get_latest_version("orders-value").version == 2, "the last good version keeps serving"

# The serializer: generated classes for ORDER_V2 (protoc from grpcio-tools), framed records.
src, out = os.path.join(WORK, "proto"), os.path.join(WORK, "gen")
os.makedirs(os.path.join(src, "common"), exist_ok=True)
os.makedirs(out, exist_ok=True)
open(os.path.join(src, "common", "money.proto"), "w").write(MONEY)
open(os.path.join(src, "order.proto"), "w").write(ORDER_V2)
import grpc_tools
from grpc_tools import protoc

include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
assert protoc.main(["protoc", f"-I{src}", f"-I{include}", f"--python_out={out}", "common/money.proto", "order.proto"]) == 0
sys.path.insert(0, out)
import order_pb2  # noqa: E402

serialize = ProtobufSerializer(order_pb2.Order, client(), {"use.deprecated.format": False})
order = order_pb2.Order(id="o-1", note="gift", lines=[order_pb2.Order.Line(sku="a", quantity=3)])
order.total.currency, order.total.units = "EUR", 12
framed = serialize(order, SerializationContext("orders", MessageField.VALUE))
assert framed[0] == 0, framed[:8]
framed_id = int.from_bytes(framed[1:5], "big")
# The serializer sent a serialized descriptor, not text, and registered the import under
# its own subject: the same content, so the same ids.
assert framed_id == order_v2_id, (framed_id, order_v2_id)
ref_subject = client().get_latest_version("common/money.proto")
assert ref_subject.schema_id == money_id, (ref_subject.schema_id, money_id)


def validate(record):
    request = urllib.request.Request(f"{ADMIN}/v1/validate/confluent", data=record, method="POST")
    with urllib.request.urlopen(request) as r:
        return json.loads(r.read())


good = validate(framed)
assert good["valid"] is True and good["message_type"] == "shop.Order" and good["schema_id"] == order_v2_id, good
assert (good["subject"], good["version"]) == ("orders-value", 2), good
# Corrupted: the last length-delimited field cut short; and a schema id nobody registered.
truncated = validate(framed[:-1])
assert truncated["valid"] is False and truncated["violations"][0]["kind"] == "truncated", truncated
unknown = validate(framed[:1] + (4242).to_bytes(4, "big") + framed[5:])
assert unknown["valid"] is False and unknown["violations"][0]["kind"] == "bad_frame", unknown

summary.update(
    money_id=money_id,
    order_id=order_id,
    order_v2_id=order_v2_id,
    framed=base64.b64encode(framed).decode(),
)
print(json.dumps(summary))
