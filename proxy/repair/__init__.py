"""The repair log and the repairer: a dual write whose second store failed is made good later.

``config`` (the YAML section), ``log`` (the entry, the log protocol and its factory), one
module per log backend (``redis_log``, ``postgres_log``), ``repairer`` (copying a key's
current state, the loop and its metrics).

    log = open_repair_log(RepairConfig())              # Redis stream, or a PostgreSQL table
    await log.init()
    await log.append("users", key_text, "dynamodb put: StoreTimeout")   # on the write path
    repairer = Repairer(log, {"users": RepairTarget(pg, ddb, schema.parse_key)},
                        RepairMetrics.create(registry))
    spawn(repairer.run_forever(stop), name="repairer")  # or: await repairer.drain()

An entry carries only the key, never the record: a repair copies the primary's CURRENT state
of the key to the secondary (or deletes it there), so repairing is idempotent, duplicates
are harmless and the order entries are repaired in does not matter. ``repair_key`` re-reads
the primary after writing and goes again if the record moved meanwhile, so a repair racing
a newer successful dual write cannot leave the secondary on the older version.

Lifecycle of an entry: ``append`` → ``claim`` (invisible to other claimers for
``retry_after_seconds``) → ``done`` (removed) or ``failed`` (attempts + 1, claimable again
after ``retry_after_seconds``). After ``max_attempts`` failures an entry is *stuck*: no
longer claimed, still counted in ``depth()``, listed by ``stuck()`` and put back in play by
``retry_stuck()`` (``shadowproxy reconcile``). Nothing is ever dropped silently.
``claim(n, take_over=True)`` (reconcile again) also takes what other claimers hold, at once;
``done`` and ``failed`` of an entry taken over from under its claimer change nothing twice.
"""
