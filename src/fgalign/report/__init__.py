"""Reports: tables, plots, token heatmaps."""
