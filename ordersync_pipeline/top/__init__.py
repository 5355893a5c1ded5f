"""The Taobao Open Platform (TOP) core: signing, envelopes, errors, retry, rate budget, paging.

Nothing in this package imports Dagster; the Dagster layer hands these objects out through resources.
"""
