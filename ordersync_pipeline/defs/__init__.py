"""The Dagster layer: thin assets over the core in ordersync_pipeline.sync / top / warehouse."""
