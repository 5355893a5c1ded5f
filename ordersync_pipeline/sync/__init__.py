"""Sync core: windows, page -> row normalisation (+ quarantine), the raw page lake, partition runners.

Nothing here imports Dagster. Submodules are imported directly (``from ordersync_pipeline.sync.lake
import PageLake``) so that importing one does not pull in pyarrow or the client for another.
"""
