"""Proving the warehouse complete, and keeping it so when the platform or the scheduler has a bad hour.

Plain Python (no Dagster): the assets, sensors and schedules in defs/ and ``ordersync sync`` call it.

* ``daily``: the daily reconciliation (每日对账 + 补抓) of a shop's Asia/Shanghai day, per stream: the
  platform's count against the warehouse's; when they differ, the day's keys listed cheaply, diffed,
  the missing and stale records re-fetched (``source = "refetch"``) and diffed again.
* ``quality``: order quality checks over a shop's day (lines add up, refunds within payment, status
  transitions the platform makes, presale amounts).
* ``gaps``: closed increment windows never completed, cut into the fewest exact runs.
* ``breaker``: the failure-rate breaker (熔断降级) over the increment APIs; ``fullpull``: the degraded
  full pull it runs while open.
* ``records``: the ``reconciliation_daily`` and ``breaker_state`` rows; ``load``: re-fetched or pulled
  records into the warehouse by the partition runs' road.
* ``batch``: a run's per-day questions about a shop (stored counts, synced range, quality counts, the
  lake's partitions) asked once for all its days, and asked again after a re-fetch changed the answers.
"""
