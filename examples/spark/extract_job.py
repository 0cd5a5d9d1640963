"""Bulk feature extraction with Apache Spark, for collections that outgrow one host.

A table of image paths (a text file with one path a line, or Parquet with a `path` column) is
split into partitions; `mapInPandas` sends each partition's images through the sidecars'
`features.v1` `ExtractBatch` (a partition talks to one sidecar, chosen by partition id,
with `x-priority: low`), and the rows are written as Parquet partitioned by model version —
the same columns and layout as `switchyard-sidecar extract` writes, so one table definition
reads both. Images that fail are rows with an error code and message, not failed tasks.

Paths must be readable from the executors (a shared filesystem or object-store mount).

    spark-submit examples/spark/extract_job.py --paths paths.txt \\
        --targets sidecar-0:50051,sidecar-1:50051 --output /data/features

Prints one JSON line: rows written, failures, seconds.
"""

import argparse
import hashlib
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    FloatType,
    IntegerType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

# What `switchyard-sidecar extract` writes (features: Spark has no fixed-size list; the
# Parquet LIST is the same either way).
SCHEMA = StructType(
    [
        StructField("path", StringType(), False),
        StructField("sha256", StringType(), True),
        StructField("model_version", StringType(), True),
        StructField("features", ArrayType(FloatType(), False), True),
        StructField("quality_scores", MapType(StringType(), FloatType(), False), True),
        StructField("processed_at", TimestampType(), False),
        StructField("error_code", IntegerType(), True),
        StructField("error_message", StringType(), True),
    ]
)

PROTO = Path(__file__).resolve().parents[2] / "proto"


def build_stubs(proto_root: Path) -> Path:
    """Compiles features.v1 with grpc_tools' bundled protoc (no system protoc) into a zip the
    executors import (`SparkContext.addPyFile`)."""
    from grpc_tools import protoc
    import grpc_tools

    out = Path(tempfile.mkdtemp(prefix="switchyard-spark-stubs-"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(proto_root / "features/v1/features.proto"),
        ]
    )
    if rc != 0:
        sys.exit(f"protoc failed ({rc}) on {proto_root}/features/v1/features.proto")
    archive = out / "features_v1_stubs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in ("features/__init__.py", "features/v1/__init__.py"):
            z.writestr(f, "")
        for f in (out / "features/v1").glob("*.py"):
            z.write(f, f"features/v1/{f.name}")
    return archive


def extract_partitions(targets, batch_size, metadata, timeout_s):
    """The function mapInPandas runs on each partition: an iterator of pandas DataFrames of
    paths in, DataFrames of rows out."""

    def run(batches):
        import datetime

        import grpc
        import pandas as pd
        from pyspark import TaskContext

        from features.v1 import features_pb2 as pb
        from features.v1 import features_pb2_grpc as rpc

        partition = TaskContext.get().partitionId()
        target = targets[partition % len(targets)]
        options = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)]
        with grpc.insecure_channel(target, options=options) as channel:
            stub = rpc.FeatureExtractionServiceStub(channel)
            for frame in batches:
                paths = frame["path"].tolist()
                for start in range(0, len(paths), batch_size):
                    yield pd.DataFrame(call(stub, paths[start : start + batch_size], pb, metadata, timeout_s, target), columns=SCHEMA.fieldNames())

    def call(stub, paths, pb, metadata, timeout_s, target):
        import datetime

        now = lambda: datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        rows, sent = [None] * len(paths), []
        requests = []
        for i, path in enumerate(paths):
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                code = 5 if isinstance(e, FileNotFoundError) else 7 if isinstance(e, PermissionError) else 2
                rows[i] = (path, None, None, None, None, now(), code, f"cannot read {path}: {e}")
                continue
            sent.append((i, hashlib.sha256(data).hexdigest()))
            requests.append(pb.ExtractRealtimeRequest(request_id=str(i), image_data=data))
        if requests:
            # A failed call fails the task, and Spark retries it: it holds no partial output.
            answer = stub.ExtractBatch(iter(requests), metadata=metadata, timeout=timeout_s)
            if len(answer.items) != len(requests):
                raise RuntimeError(f"ExtractBatch to {target} answered {len(answer.items)} items for {len(requests)} images")
            for (i, sha), item in zip(sent, answer.items):
                if item.HasField("response"):
                    r = item.response
                    at = r.processed_at.ToDatetime() if r.HasField("processed_at") else now()
                    rows[i] = (paths[i], sha, r.model_version, list(r.feature_vector), dict(r.quality_scores), at, None, None)
                else:
                    rows[i] = (paths[i], sha, None, None, None, now(), item.error.code, item.error.message)
        return rows

    return run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paths", required=True, help="text file (one path a line) or Parquet with a `path` column")
    p.add_argument("--targets", required=True, help="sidecar gRPC addresses, host:port, comma-separated")
    p.add_argument("--output", required=True, help="output directory (appended to)")
    p.add_argument("--batch-size", type=int, default=32, help="images per ExtractBatch call")
    p.add_argument("--partitions", type=int, default=0, help="partitions of the path table (default: Spark's)")
    p.add_argument("--priority", default="low", help="x-priority on every call ('' for none)")
    p.add_argument("--model-version", help="pin a version (x-model-version)")
    p.add_argument("--timeout-s", type=float, default=600.0, help="deadline of one ExtractBatch call")
    p.add_argument("--proto", type=Path, default=PROTO, help="directory holding features/v1/features.proto")
    return p


def extract(spark: SparkSession, args: argparse.Namespace) -> dict:
    """Runs the job on `spark`; returns what it wrote."""
    started = time.monotonic()
    # Timestamps are UTC whatever the cluster's zone, and stored as Parquet TIMESTAMP(MICROS,
    # UTC) like the Rust writer's, not Spark's legacy INT96.
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    spark.sparkContext.addPyFile(str(build_stubs(args.proto)))

    if args.paths.endswith(".parquet") or Path(args.paths).is_dir():
        paths = spark.read.parquet(args.paths).select("path")
    else:
        paths = spark.read.text(args.paths).select(F.trim("value").alias("path")).where("path != '' AND NOT startswith(path, '#')")
    if args.partitions:
        paths = paths.repartition(args.partitions)
    metadata = []
    if args.priority:
        metadata.append(("x-priority", args.priority))
    if args.model_version:
        metadata.append(("x-model-version", args.model_version))
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    rows = paths.mapInPandas(extract_partitions(targets, args.batch_size, metadata, args.timeout_s), SCHEMA)
    # Hive-style model_version=<escaped>/ directories, as `switchyard-sidecar extract` writes.
    # Spark keeps the partition column in the path only; engines read it back from there.
    rows.write.mode("append").partitionBy("model_version").parquet(args.output)

    written = spark.read.parquet(args.output)
    return {
        "event": "spark_extracted",
        "rows": written.count(),
        "failed": written.where("error_code IS NOT NULL").count(),
        "seconds": time.monotonic() - started,
    }


def main() -> None:
    args = parser().parse_args()
    spark = SparkSession.builder.appName("switchyard-extract").getOrCreate()
    summary = extract(spark, args)
    spark.stop()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
