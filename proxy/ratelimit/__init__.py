"""Per-requester token buckets: the ``rate_limits:`` section (config), the bucket math and
the in-process buckets (bucket), the fleet's buckets in Redis (redis_buckets), and the
check both modes make before the primary is touched (limiter)."""
