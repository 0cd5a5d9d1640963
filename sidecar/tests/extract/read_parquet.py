"""Reads `switchyard-sidecar extract`'s output with engines nobody here wrote — DuckDB and
pyarrow from PyPI — and prints, as one JSON object, what each of them sees: for sidecar/tests/
extract.rs to compare with what ExtractRealtime answers for the same images.

usage: read_parquet.py OUTPUT_DIR
"""

import json
import sys
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def main() -> None:
    out = Path(sys.argv[1])
    glob = str(out / "**" / "*.parquet")
    con = duckdb.connect()
    describe = con.sql(f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = true)").fetchall()
    rows = con.sql(
        f"""SELECT path, sha256, model_version, len(features), features, map_keys(quality_scores),
                   error_code, error_message, epoch_us(processed_at)
            FROM read_parquet('{glob}', hive_partitioning = true) ORDER BY path"""
    ).fetchall()
    duck = [
        {
            "path": r[0],
            "sha256": r[1],
            "model_version": r[2],
            "features_len": r[3],
            "features": r[4],
            "quality_scores": sorted(r[5]) if r[5] is not None else None,
            "error_code": r[6],
            "error_message": r[7],
            "processed_at_us": r[8],
        }
        for r in rows
    ]

    # pyarrow: the dataset as one table, Hive partitions decoded, and each file on its own
    # (every committed file must be a complete Parquet file with its footer).
    table = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    files = sorted(str(p) for p in out.rglob("*.parquet"))
    per_file = {f: pq.read_table(f).num_rows for f in files}
    features = {
        path: vec
        for path, vec in zip(table.column("path").to_pylist(), table.column("features").to_pylist())
    }
    print(
        json.dumps(
            {
                "duckdb": {"describe": [[c[0], c[1]] for c in describe], "rows": duck},
                "pyarrow": {
                    "num_rows": table.num_rows,
                    "features_type": str(table.schema.field("features").type),
                    "model_versions": sorted(set(v for v in table.column("model_version").to_pylist() if v is not None)),
                    "features": features,
                    "files": per_file,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
