"""pandas frames as Dagster table metadata: the UI renders them as sortable tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    import pandas as pd

MAX_TABLE_ROWS = 200  # the UI shows a table inline; the CSV report has every row

_TYPES = {"i": "int", "u": "int", "f": "float", "b": "bool"}


def table_metadata(frame: pd.DataFrame, limit: int = MAX_TABLE_ROWS) -> dg.TableMetadataValue:
    columns = [dg.TableColumn(str(name), _TYPES.get(frame[name].dtype.kind, "string")) for name in frame.columns]
    records = [
        dg.TableRecord({str(k): (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
        for row in frame.head(limit).to_dict("records")
    ]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))
