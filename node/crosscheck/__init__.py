"""Bulk cross-check (大数据比对): signed token filters and local intersection.

``gcs`` is the Golomb-coded-set codec, ``shards`` maps tokens to shards and values and runs
builds and intersections in a process pool, ``filterfmt`` is the signed header, the shard
digests, chunking and incremental refresh of a published filter.
"""
