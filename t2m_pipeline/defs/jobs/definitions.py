"""The jobs domain: sensors that turn job rows into runs and write run failures back to the job rows."""

import dagster as dg

from t2m_pipeline.defs.jobs.sensors import PIPELINE_SENSORS

defs = dg.Definitions(sensors=PIPELINE_SENSORS)
