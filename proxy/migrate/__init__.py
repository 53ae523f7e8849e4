"""Migration jobs on the stores of a resource: backfill (copy every record to the other store)
and verify (prove the two stores equal), with checkpoints, segments and progress."""
