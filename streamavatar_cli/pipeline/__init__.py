"""Inference pipeline: the few-step sampler, the streaming generator, rendering."""

from streamavatar_cli.pipeline.stream import ChunkTrace, StreamingGenerator

__all__ = ["ChunkTrace", "StreamingGenerator"]
