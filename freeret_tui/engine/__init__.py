"""Headless engine: extract, embed, store, search, rerank and answer. Never imports textual or rich."""
