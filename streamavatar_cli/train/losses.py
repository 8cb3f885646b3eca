"""Losses of the training stages. Flow matching: x_sigma = (1 - sigma) x0 + sigma noise and the
network predicts v = noise - x0 (pipeline/sampler.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from streamavatar_cli.train.config import check_box


def shifted_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """u in [0, 1] -> sigma with the same warp as the sampler (StreamConfig.sigmas)."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def motion_weights(
    x: torch.Tensor, gain: float, tau: float, anchor: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Per-position loss weights [B, 1, F, H, W] = 1 + gain * min(|x - anchor| / tau, 1), or
    None (the plain mean) when gain <= 0.

    What an avatar adds to its reference is motion: the open mouth, a nod, a hand. Those pixels
    are a few percent of a frame, so a plain mean lets a model that copies the reference reach
    almost the whole loss; weighting what moves keeps that gradient from being drowned. The
    weights carry no gradient.

    x [B, C, F, H, W]; anchor broadcastable to it, by default the window's mean frame. Not the
    reference latent: a causal VAE encodes frame 0 alone and every later latent from 4 frames,
    so in latent space every position differs from the reference (median 0.48 on the tiny VAE's
    unit-scale latents) while the deviation from the mean frame is 0.10 and peaks at the head
    and hands.
    """
    if gain <= 0:
        return None
    with torch.no_grad():
        if anchor is None:
            anchor = x.mean(dim=2, keepdim=True)
        moved = (x.float() - anchor.float()).abs().mean(dim=1, keepdim=True)
        return 1.0 + gain * (moved / tau).clamp(max=1.0)


def region_weights(
    height: int, width: int, box: tuple[float, ...], gain: float
) -> torch.Tensor | None:
    """Loss weights [1, 1, 1, height, width] = 1 + gain * (the cell's area inside `box`), or None
    when gain <= 0.

    `box` = (x0, y0, x1, y1) in fractions of the frame. For an aligned domain (the puppets'
    fixed layout; face-aligned crops of real video) the mouth is always in the same place, and
    it is where the audio shows: a few cells of the latent grid that the plain mean drowns in
    everything the reference already explains. Cells cut by the box edge get their covered part.
    """
    if gain <= 0:
        return None
    return (1.0 + gain * region_coverage(height, width, box)).view(1, 1, 1, height, width)


def region_coverage(height: int, width: int, box: tuple[float, ...]) -> torch.Tensor:
    """[height, width]: the part of each latent cell inside `box` (fractions of the frame)."""
    check_box(box)

    def coverage(n: int, lo: float, hi: float) -> torch.Tensor:
        edges = torch.arange(n + 1, dtype=torch.float32) / n
        covered = edges[1:].clamp(max=hi) - edges[:-1].clamp(min=lo)
        return covered.clamp(min=0) * n

    return coverage(height, box[1], box[3])[:, None] * coverage(width, box[0], box[2])[None]


def latent_loss_weights(
    x0: torch.Tensor,
    motion_weight: float,
    motion_tau: float,
    region_box: tuple[float, ...],
    region_weight: float,
    listen: torch.Tensor | None = None,
    listen_weight: float = 0.0,
    listen_region_box: tuple[float, ...] = (),
    listen_region_weight: float = 0.0,
) -> torch.Tensor | None:
    """What the DiT stages weight their per-position latent losses with: motion x region x
    listen frames (`listen_frame_weights`), where the region is the listen region on listen
    frames when one is set (`listen_region_weights`); the listen terms read the undropped
    listen windows; any may be off; None when all are."""
    motion = motion_weights(x0, motion_weight, motion_tau)
    region = region_weights(x0.shape[-2], x0.shape[-1], region_box, region_weight)
    if listen is None:
        return combined_weights(motion, region)
    if listen_region_weight > 0:
        region = listen_region_weights(
            listen, x0.shape[-2], x0.shape[-1], listen_region_box, listen_region_weight, region
        )
    return combined_weights(
        combined_weights(motion, region), listen_frame_weights(listen, listen_weight)
    )


def listen_share(listen: torch.Tensor) -> torch.Tensor:
    """[B, F]: the share of each latent frame's audio window that is listen audio.

    `listen` is the (undropped) listen windows [B, F, window, L, D]: zero on talk frames by
    construction (features x (1 - mask)), so no mask needs storing.
    """
    heard = (listen.abs().flatten(3).amax(dim=3) > 0).float()  # [B, F, window]
    return heard.mean(dim=2)


def listen_frame_weights(listen: torch.Tensor, gain: float) -> torch.Tensor | None:
    """Per-latent-frame loss weights [B, 1, F, 1, 1] = 1 + gain * `listen_share`, or None when
    gain <= 0.

    Listening is the quieter half of the task: a nod moves a few latent cells for a few
    frames, while the mouth box, weighted for lip-sync, takes about half the loss on every
    frame; this gives the listen frames their own share.
    """
    if gain <= 0:
        return None
    with torch.no_grad():
        return (1.0 + gain * listen_share(listen))[:, None, :, None, None]


def listen_region_weights(
    listen: torch.Tensor,
    height: int,
    width: int,
    box: tuple[float, ...],
    gain: float,
    talk_region: torch.Tensor | None = None,
) -> torch.Tensor:
    """Region weights [B, 1, F, height, width] that switch with the frame: `talk_region` (the
    mouth box's weights, or 1) on talk audio, 1 + gain * (the cell's area inside `box`) on
    listen audio, mixed by `listen_share` where a window holds both.

    For the nods of an aligned domain: the head's shift while listening is a fraction of a
    latent cell spread over the head's cells, mostly under the motion weight's threshold, and
    a mouth box on every frame would keep half of a listen frame's loss on a mouth that is
    shut and still. On listen frames the head box takes the mouth box's place.
    """
    with torch.no_grad():
        share = listen_share(listen)[:, None, :, None, None]  # [B, 1, F, 1, 1]
        heard = 1.0 + gain * region_coverage(height, width, box)  # [H, W]
        talked = talk_region if talk_region is not None else torch.ones(())
        return (1 - share) * talked + share * heard


def combined_weights(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """The product of two optional weightings (None: that one is off; both off: None)."""
    if a is None or b is None:
        return a if b is None else b
    return a * b


def weighted_mean(err: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of err [B, C, F, H, W] under per-position weights (normalised: same scale as .mean());
    0 where every weight is 0."""
    if weights is None:
        return err.mean()
    weights = weights.expand_as(err)
    return (err * weights).sum() / weights.sum().clamp_min(1e-12)


def box_frame_weights(
    shape: tuple[int, ...], box: tuple[float, ...], frame_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Weights [B, 1, F, h, w] for latents of `shape` [B, C, F, h, w]: the part of each cell
    inside `box` (fractions of the frame; 1 everywhere when `box` is empty) times each latent
    frame's weight in `frame_weights` [B, F] (1 when None), on `frame_weights`' device."""
    b, _, f, h, w = shape
    frames = torch.ones(b, f) if frame_weights is None else frame_weights.float()
    cells = region_coverage(h, w, box) if box else torch.ones(h, w)
    return frames[:, None, :, None, None] * cells.to(frames.device)


def temporal_change_l1(
    recon: torch.Tensor, video: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """L1 between the frame-to-frame changes of `recon` and `video` [B, C, F, H, W], under
    per-position `weights` (those of the later frame of each pair; a weight with one frame
    applies to all). A reconstruction that holds one frame for a latent's 4 scores 0 change
    where the video moves: this term sees that, the plain L1 mostly does not."""
    if weights is not None and weights.shape[2] > 1:
        weights = weights[:, :, 1:]
    change = (recon[:, :, 1:] - recon[:, :, :-1]) - (video[:, :, 1:] - video[:, :, :-1])
    return weighted_mean(change.abs(), weights)


def flow_matching_loss(
    v: torch.Tensor, noise: torch.Tensor, x0: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    return weighted_mean((v.float() - (noise - x0).float()).pow(2), weights)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean SSIM of two image batches [N, 3, H, W] in [-1, 1], box-filtered local statistics."""
    a, b = (a + 1) / 2, (b + 1) / 2
    c1, c2 = 0.01**2, 0.03**2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, window, stride=1, padding=window // 2, count_include_pad=False)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).mean()


def kl_to_standard_normal(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    log_var = log_var.clamp(-30.0, 20.0)
    return 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var).mean()


def sid_generator_loss(
    x_g: torch.Tensor, real_x0: torch.Tensor, fake_x0: torch.Tensor, alpha: float
) -> torch.Tensor:
    """Score identity Distillation's generator loss (Zhou et al. 2024, eq. 8 in x0 form):

        (f_real - f_fake) . ((f_real - x_g) - alpha (f_real - f_fake)) / w,

    w = mean |x_g - f_real| per sample (no gradient), alpha = 1.2 by default. Gradients reach
    the generator through x_g and through the noisy input both score networks saw.
    """
    dims = list(range(1, x_g.ndim))
    with torch.no_grad():
        weight = (x_g - real_x0).abs().float().mean(dim=dims, keepdim=True).clamp_min(1e-5)
    diff = real_x0 - fake_x0
    loss = diff * ((real_x0 - x_g) - alpha * diff) / weight
    return loss.mean()


def relativistic_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic pairing loss (RpGAN): softplus(-(D(real) - D(fake)))."""
    return F.softplus(-(real_logits - fake_logits)).mean()


def relativistic_g_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-(fake_logits - real_logits)).mean()
