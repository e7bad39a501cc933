"""Typed, validated settings: one section model per stage, composed in `pipeline.config`."""
