"""dmu-migrate: upgrade the embedding model behind a vector database without backfilling."""

__version__ = "0.1.0"
