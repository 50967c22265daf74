"""The result cache: fingerprints of tasks, and the tiers that store their results.

Nothing is imported here eagerly: ``import notebook_sched`` must stay cheap, and a
worker process imports only the parts it uses (``cache.fingerprint`` is pure code).
"""
