"""The ingest stage: the worker loop, one source per transport, the batch processor."""
