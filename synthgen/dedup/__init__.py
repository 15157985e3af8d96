"""Duplicate detection: text normalisation, MinHash signatures, a verified LSH index."""
