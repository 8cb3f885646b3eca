"""Video in and out: the reference image, the streaming MP4 writer, and reading media back.

from streamavatar_cli.video import (Mp4Writer, check_output_path, choose_size,
                                    load_reference_image, reference_image_size)

w, h = choose_size(*reference_image_size("me.jpg"), stride=32, max_area=704 * 1280)
ref = load_reference_image("me.jpg", size=(w, h))          # [3, H, W] in [-1, 1]
check_output_path("out.mp4", overwrite=False)              # before any model is loaded
with Mp4Writer("out.mp4", w, h, audio=wave, total_frames=n) as out:
    for frames in chunks:                                  # [3, n, H, W] in [-1, 1]
        out.write(frames)
"""

from streamavatar_cli.video.image import (
    check_resolution,
    choose_size,
    fit_image,
    image_to_tensor,
    load_reference_image,
    open_reference_image,
    parse_resolution,
    reference_image_size,
)
from streamavatar_cli.video.probe import MediaInfo, probe_media, read_video_frames
from streamavatar_cli.video.writer import Mp4Writer, check_output_path, frames_to_uint8

__all__ = [
    "MediaInfo",
    "Mp4Writer",
    "check_output_path",
    "check_resolution",
    "choose_size",
    "fit_image",
    "frames_to_uint8",
    "image_to_tensor",
    "load_reference_image",
    "open_reference_image",
    "parse_resolution",
    "probe_media",
    "read_video_frames",
    "reference_image_size",
]
