"""Whole renders: the two-thread pipeline against the sequential render, and the small model's
real-time factor and first-frame delay (issue 7, items 4 and 5)."""

from streamavatar_cli.bench import script_main

if __name__ == "__main__":
    script_main(["pipeline_speedup", "render_speed"], __doc__)
