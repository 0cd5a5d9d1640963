"""Runs the Spark example job (examples/spark/extract_job.py) in Spark's local mode, then
reads `switchyard-sidecar extract`'s output with the same Spark session — one JVM for both —
and prints, as one JSON object, what Spark wrote and what it read.

usage: spark_run.py RUST_OUTPUT -- JOB_ARGS...
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples" / "spark"))

import extract_job  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402


def main() -> None:
    rust_output = sys.argv[1]
    assert sys.argv[2] == "--", "usage: spark_run.py RUST_OUTPUT -- JOB_ARGS..."
    args = extract_job.parser().parse_args(sys.argv[3:])
    started = time.monotonic()
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("switchyard-extract-test")
        # Small and quiet: two cores shared with the model server.
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    session_s = time.monotonic() - started
    job = extract_job.extract(spark, args)

    def rows(df):
        return {
            r["path"]: {
                "model_version": r["model_version"],
                "features": r["features"],
                "error_code": r["error_code"],
                "sha256": r["sha256"],
            }
            for r in df.collect()
        }

    written = spark.read.parquet(args.output)
    rust = spark.read.parquet(rust_output)
    print(
        json.dumps(
            {
                "job": job,
                "session_seconds": session_s,
                "total_seconds": time.monotonic() - started,
                "spark_output": rows(written),
                "rust_output": {"schema": rust.schema.simpleString(), "rows": rows(rust)},
            }
        )
    )
    spark.stop()


if __name__ == "__main__":
    main()
