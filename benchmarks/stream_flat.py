"""Streaming: time per chunk and peak memory stay flat however long the stream; the KV cache
beats recomputing the visible window (issue 7, items 1 and 2)."""

from streamavatar_cli.bench import script_main

if __name__ == "__main__":
    script_main(["stream_flat_cost", "stream_memory", "cache_speedup"], __doc__)
