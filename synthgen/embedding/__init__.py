"""Embeddings: an offline sentence-transformers encoder and what is built on it."""
