"""Markdown tables from data frames (pandas' own needs the optional `tabulate`)."""

from __future__ import annotations

import math

import pandas as pd


def cell(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def to_markdown(frame: pd.DataFrame, digits: int = 4, index: bool = False) -> str:
    table = frame.reset_index() if index else frame
    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(cell(v, digits) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"
