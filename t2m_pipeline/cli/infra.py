"""`t2m infra`: the environment's buckets on an S3-compatible endpoint (Terraform owns them on AWS)."""

from __future__ import annotations

import typer

from t2m_pipeline.cli.output import emit_json, table
from t2m_pipeline.config import load_settings
from t2m_pipeline.storage.bootstrap import bootstrap_bucket
from t2m_pipeline.storage.bucket_settings import declared_buckets
from t2m_pipeline.storage.s3 import make_s3_client

app = typer.Typer(help="Buckets and their declared settings.", no_args_is_help=True)


@app.command()
def bootstrap(json_output: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Create the four buckets with versioning, encryption, public access block, TLS policy and lifecycle. Idempotent."""
    settings = load_settings()
    client = make_s3_client(settings)
    results = [
        {"kind": spec.kind, "bucket": spec.name, "created": bootstrap_bucket(client, spec, settings.region)}
        for spec in declared_buckets(settings)
    ]
    if json_output:
        emit_json(results)
    else:
        table("Buckets", ["kind", "bucket", "action"], [[r["kind"], r["bucket"], "created" if r["created"] else "configured"] for r in results])
