"""Computing a store: the per-image chain, guidance renderers, model files, the shard task and
the Dask run that maps it over shards (docs/architecture.md)."""
