"""The audits domain: audit assets with their checks, the job that runs them all, and its daily schedule."""

import dagster as dg

from t2m_pipeline.defs.audits.assets import AUDIT_ASSETS
from t2m_pipeline.defs.audits.schedules import storage_audit, storage_audit_job

defs = dg.Definitions(assets=AUDIT_ASSETS, jobs=[storage_audit_job], schedules=[storage_audit])
