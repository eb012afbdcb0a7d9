"""Tables, plots (matplotlib, Agg) and markdown reports."""
