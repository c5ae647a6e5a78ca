"""SPACE (Lin et al., ICLR 2020), written from the paper and sized for a CPU, and its detector.

The image is a mixture of a foreground and a background. The foreground is a grid of G_h x G_w
cells; each cell has z_pres (relaxed Bernoulli), z_where (box scale and a shift of its centre
relative to the cell), z_depth and z_what (the appearance of a glimpse cut out of the image at
the box by a spatial transformer). Each z_what is decoded into an RGB glimpse and an alpha mask
that is drawn back into a window of ``render_cells`` cells around its cell; objects are
composited by depth. The background is a mixture of K components with stick-breaking masks.
The loss is the negative ELBO: a fixed-sigma Gaussian likelihood of the pixel mixture
``alpha * N(fg) + (1 - alpha) * sum_k pi_k N(bg_k)`` and the KL terms, with annealed priors.

Sizes that make this fit a CPU: small inputs (a crop of the play field resized to ~128 px), a
few strided convolutions for the cell encoder, tiny glimpses (8 px, anti-aliased) encoded and
decoded by MLPs, each object drawn only into the window of cells around its own cell (the
windows are added into the image with one ``index_add``), and the background decoded at low
resolution. Detection reports each object's centre and size from its decoded alpha mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import RelaxedBernoulli

from diffses.detection import Detection, Detector
from diffses.errors import UserError
from diffses.io import atomic_save
from diffses.utils import resolve_device
from space.config import (LossConfig, ModelConfig, SpaceConfig, config_from, encoder_strides,
                          to_dict)
from space.data import preprocess, to_native
from space.palette import Palette
from space.register import Registration, drawn

EPS = 1e-5


class Hyper(NamedTuple):
    """The annealed loss settings at one training step."""

    tau: float
    pres_prior: float
    scale_mean: float
    scale_std: float
    fixed_alpha: float | None
    boundary_weight: float


def schedule(loss: LossConfig, step: int) -> Hyper:
    """The values of the schedules in ``loss`` at ``step``."""
    return Hyper(tau=loss.tau.at(step), pres_prior=loss.pres_prior.at(step),
                 scale_mean=loss.scale_mean.at(step), scale_std=loss.scale_std,
                 fixed_alpha=loss.fix_alpha_value if step < loss.fix_alpha_steps else None,
                 boundary_weight=loss.boundary_weight if step < loss.boundary_until else 0.0)


def gaussian_kl(mu: torch.Tensor, sd: torch.Tensor, prior_mu: float, prior_sd: float
                ) -> torch.Tensor:
    """KL(N(mu, sd) || N(prior_mu, prior_sd)), elementwise."""
    return (math.log(prior_sd) - torch.log(sd)
            + (sd ** 2 + (mu - prior_mu) ** 2) / (2 * prior_sd ** 2) - 0.5)


def bernoulli_kl(q: torch.Tensor, p: float) -> torch.Tensor:
    """KL(Bernoulli(q) || Bernoulli(p)), elementwise."""
    q = q.clamp(EPS, 1 - EPS)
    return q * (torch.log(q) - math.log(p)) + (1 - q) * (torch.log(1 - q) - math.log(1 - p))


def normal_logpdf(x: torch.Tensor, mu: torch.Tensor, sigma: float) -> torch.Tensor:
    """log N(x; mu, sigma), elementwise."""
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)


def pixel_grid(n: int) -> torch.Tensor:
    """Centres of an n x n pixel grid in [-1, 1] coordinates, (n, n, 2) with x first."""
    base = (2 * torch.arange(n) + 1) / n - 1
    by, bx = torch.meshgrid(base, base, indexing="ij")
    return torch.stack([bx, by], -1).float()


def sample_normal(mu: torch.Tensor, sd: torch.Tensor, sample: bool) -> torch.Tensor:
    """A reparameterised sample, or the mean."""
    return mu + sd * torch.randn_like(sd) if sample else mu


def split_stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Last dimension (2D) -> mean (D) and a positive standard deviation (D)."""
    mu, raw = t.chunk(2, dim=-1)
    return mu, F.softplus(raw) + 1e-4


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with CELU between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.CELU())
    return nn.Sequential(*layers)


class BroadcastDecoder(nn.Module):
    """Spatial broadcast decoder: a latent tiled over a grid with x/y coordinates, then convs."""

    def __init__(self, z_dim: int, out_channels: int, channels: int, size: tuple[int, int]):
        super().__init__()
        ys = torch.linspace(-1, 1, size[0])
        xs = torch.linspace(-1, 1, size[1])
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))          # (2, h, w)
        self.register_buffer("coords", grid[None], persistent=False)      # (1, 2, h, w)
        self.net = nn.Sequential(
            nn.Conv2d(z_dim + 2, channels, 3, padding=1), nn.CELU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.CELU(),
            nn.Conv2d(channels, out_channels, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        m = z.shape[0]
        h, w = self.coords.shape[-2:]
        tiled = z[:, :, None, None].expand(m, z.shape[1], h, w)            # (M, Z, h, w)
        return self.net(torch.cat([tiled, self.coords.expand(m, 2, h, w)], 1))


class Foreground(nn.Module):
    """The grid of object cells: cell encoder, glimpse encoder/decoder and the compositor."""

    def __init__(self, m: ModelConfig, image_size: tuple[int, int], boundary_margin: float):
        super().__init__()
        self.m = m
        self.image_size = image_size
        self.boundary_margin = boundary_margin
        gh, gw = m.grid
        self.cell = (image_size[0] // gh, image_size[1] // gw)
        layers: list[nn.Module] = []
        c_in = 3
        for c, stride in zip(m.enc_channels, encoder_strides(m)):
            layers += [nn.Conv2d(c_in, c, 4, stride=stride, padding=(4 - stride) // 2),
                       nn.CELU()]
            c_in = c
        for _ in range(m.feat_layers):
            layers += [nn.Conv2d(c_in, m.feat_channels, 3, padding=1), nn.CELU()]
            c_in = m.feat_channels
        self.encoder = nn.Sequential(*layers)
        # per cell: pres logit (1), scale (2 mean, 2 std), shift (2 + 2), depth (1 + 1)
        self.head = nn.Conv2d(c_in, 11, 1)
        g = m.glimpse
        self.what_encoder = mlp([3 * g * g, m.glimpse_hidden, m.glimpse_hidden, 2 * m.z_what])
        self.what_decoder = mlp([m.z_what, m.glimpse_hidden, m.glimpse_hidden, 4 * g * g])
        self._make_buffers()

    def _make_buffers(self) -> None:
        (gh, gw), (h, w), (ch, cw) = self.m.grid, self.image_size, self.cell
        rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        rows, cols = rows.reshape(-1, 1), cols.reshape(-1, 1)             # (N, 1) each
        centres = torch.cat([(2 * cols + 1) / gw - 1, (2 * rows + 1) / gh - 1], -1)
        self.register_buffer("cell_centres", centres.float(), persistent=False)  # (N, 2) x, y
        self.register_buffer("cell_extent", torch.tensor([2 / gw, 2 / gh]),
                             persistent=False)                             # (2,)
        g = self.m.glimpse
        self.register_buffer("glimpse_base", pixel_grid(g), persistent=False)  # (g, g, 2)
        self.register_buffer("sample_base", pixel_grid(g * self.m.glimpse_supersample),
                             persistent=False)                             # (s*g, s*g, 2)
        r = self.m.render_cells
        lh, lw = r * ch, r * cw
        py = (rows - r // 2) * ch + torch.arange(lh)                      # (N, Lh) pixel rows
        px = (cols - r // 2) * cw + torch.arange(lw)                      # (N, Lw) pixel cols
        self.register_buffer("window_y", (2 * (py + 0.5) / h - 1).float(), persistent=False)
        self.register_buffer("window_x", (2 * (px + 0.5) / w - 1).float(), persistent=False)
        inside = ((py >= 0) & (py < h))[:, :, None] & ((px >= 0) & (px < w))[:, None, :]
        flat = torch.where(inside, py[:, :, None] * w + px[:, None, :], h * w)
        self.register_buffer("window_index", flat.reshape(len(flat), -1),
                             persistent=False)                             # (N, Lh*Lw)
        inside_y = (torch.arange(lh) + 0.5 - lh / 2).abs() <= (0.5 + self.boundary_margin) * ch
        inside_x = (torch.arange(lw) + 0.5 - lw / 2).abs() <= (0.5 + self.boundary_margin) * cw
        self.register_buffer("outside", (~(inside_y[:, None] & inside_x[None, :])).float(),
                             persistent=False)                             # (Lh, Lw)

    def cells(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Posterior parameters per cell of images ``x`` (B, 3, H, W) in [0, 1]."""
        out = self.head(self.encoder(x)).flatten(2).transpose(1, 2)       # (B, N, 11)
        scale_mu, scale_sd = split_stats(out[..., 1:5])                   # (B, N, 2) each
        shift_mu, shift_sd = split_stats(out[..., 5:9])                   # (B, N, 2) each
        depth_mu, depth_sd = split_stats(out[..., 9:11])                  # (B, N, 1) each
        return {"pres_logit": out[..., 0].clamp(-12, 12),                 # (B, N)
                "scale_mu": scale_mu, "scale_sd": scale_sd, "shift_mu": shift_mu,
                "shift_sd": shift_sd, "depth_mu": depth_mu, "depth_sd": depth_sd}

    def boxes(self, z_scale: torch.Tensor, z_shift: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Box centres in [-1, 1] and sizes as a fraction of the image side, both (B, N, 2)."""
        centre = self.cell_centres + self.m.shift_range * torch.tanh(z_shift) * self.cell_extent
        return centre, torch.sigmoid(z_scale)

    def glimpses(self, x: torch.Tensor, centre: torch.Tensor, size: torch.Tensor
                 ) -> torch.Tensor:
        """Glimpses (B, M, 3, g, g) of images ``x`` at boxes ``centre``/``size`` (B, M, 2)."""
        b, n = centre.shape[:2]
        g, s = self.m.glimpse, self.m.glimpse_supersample
        if n == 0:
            return x.new_zeros(b, 0, 3, g, g)
        grid = centre[:, :, None, None] + size[:, :, None, None] * self.sample_base  # (B,M,sg,sg,2)
        out = F.grid_sample(x, grid.reshape(b, n * s * g, s * g, 2), align_corners=False)
        if s > 1:
            out = F.avg_pool2d(out, s)                                    # (B, 3, M*g, g)
        return out.view(b, 3, n, g, g).transpose(1, 2)

    def encode_what(self, glimpses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_what mean and std (..., D) of glimpses (..., 3, g, g)."""
        return split_stats(self.what_encoder(glimpses.flatten(-3)))

    def decode_what(self, z_what: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB (..., 3, g, g) and alpha (..., 1, g, g) glimpses of z_what (..., D)."""
        g = self.m.glimpse
        out = torch.sigmoid(self.what_decoder(z_what)).unflatten(-1, (4, g, g))
        return out[..., :3, :, :], out[..., 3:, :, :]

    def render(self, batch: torch.Tensor, cell: torch.Tensor, z_pres: torch.Tensor,
               z_depth: torch.Tensor, rgba: torch.Tensor, centre: torch.Tensor,
               size: torch.Tensor, n_images: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw M objects into their cells' windows and composite them by depth.

        ``batch``/``cell`` (M,) say whose object each is; ``z_pres`` (M,), ``z_depth`` (M, 1),
        ``rgba`` (M, 4, g, g), ``centre``/``size`` (M, 2). Returns the foreground
        (B, 3, H, W), its alpha (B, 1, H, W) and each object's alpha in its window
        (M, Lh, Lw)."""
        m = len(batch)
        lh, lw = self.window_y.shape[1], self.window_x.shape[1]
        h, w = self.image_size
        gx = (self.window_x[cell] - centre[:, :1]) / size[:, :1]          # (M, Lw)
        gy = (self.window_y[cell] - centre[:, 1:]) / size[:, 1:]          # (M, Lh)
        grid = torch.stack([gx[:, None, :].expand(m, lh, lw),
                            gy[:, :, None].expand(m, lh, lw)], -1)        # (M, Lh, Lw, 2)
        drawn = F.grid_sample(rgba, grid, align_corners=False)            # (M, 4, Lh, Lw)
        obj_alpha = z_pres[:, None, None] * drawn[:, 3]                   # (M, Lh, Lw)
        weight = obj_alpha * torch.sigmoid(-z_depth)[:, :, None]          # (M, Lh, Lw)
        parts = torch.cat([weight[:, None] * drawn[:, :3], weight[:, None],
                           obj_alpha[:, None]], 1)                        # (M, 5, Lh, Lw)
        index = batch[:, None] * (h * w + 1) + self.window_index[cell]    # (M, Lh*Lw)
        canvas = parts.new_zeros(n_images * (h * w + 1), 5).index_add(
            0, index.flatten(), parts.flatten(2).transpose(1, 2).reshape(-1, 5))
        canvas = canvas.view(n_images, h * w + 1, 5)[:, :-1].transpose(1, 2)
        canvas = canvas.reshape(n_images, 5, h, w)                        # (B, 5, H, W)
        fg = canvas[:, :3] / (canvas[:, 3:4] + EPS)                       # (B, 3, H, W)
        return fg, canvas[:, 4:].clamp(max=1.0), obj_alpha

    def forward(self, x: torch.Tensor, hp: Hyper) -> dict[str, torch.Tensor]:
        """Sample (in training mode) or take the means of every latent and render the
        foreground; returns the images, the boxes and the KL terms (B,)."""
        sample = self.training
        b = x.shape[0]
        p = self.cells(x)
        pres_prob = torch.sigmoid(p["pres_logit"])                        # (B, N)
        if sample:
            z_pres = RelaxedBernoulli(torch.tensor(hp.tau, device=x.device),
                                      logits=p["pres_logit"]).rsample()  # (B, N)
        else:
            z_pres = pres_prob
        z_scale = sample_normal(p["scale_mu"], p["scale_sd"], sample)    # (B, N, 2)
        z_shift = sample_normal(p["shift_mu"], p["shift_sd"], sample)    # (B, N, 2)
        z_depth = sample_normal(p["depth_mu"], p["depth_sd"], sample)    # (B, N, 1)
        centre, size = self.boxes(z_scale, z_shift)                       # (B, N, 2) each
        active = z_pres > self.m.render_threshold                         # (B, N)
        batch, cell = active.nonzero(as_tuple=True)                       # (M,) each
        glimpses = self.glimpses(x, centre, size)[batch, cell]            # (M, 3, g, g)
        what_mu, what_sd = self.encode_what(glimpses)                     # (M, D)
        z_what = sample_normal(what_mu, what_sd, sample)                  # (M, D)
        rgb, alpha = self.decode_what(z_what)                             # (M, 3|1, g, g)
        pres = z_pres[batch, cell]                                        # (M,)
        fg, fg_alpha, obj_alpha = self.render(batch, cell, pres, z_depth[batch, cell],
                                              torch.cat([rgb, alpha], 1), centre[batch, cell],
                                              size[batch, cell], b)
        kl_where = (gaussian_kl(p["scale_mu"], p["scale_sd"], hp.scale_mean, hp.scale_std)
                    + gaussian_kl(p["shift_mu"], p["shift_sd"], 0.0, 1.0)).sum(-1)  # (B, N)
        kl_depth = gaussian_kl(p["depth_mu"], p["depth_sd"], 0.0, 1.0).sum(-1)       # (B, N)
        kl_what = pres * gaussian_kl(what_mu, what_sd, 0.0, 1.0).sum(-1)  # (M,)
        boundary = (obj_alpha * self.outside).flatten(1).sum(1)           # (M,)
        per_image = x.new_zeros(b, 2).index_add(0, batch, torch.stack([kl_what, boundary], 1))
        return {
            "fg": fg, "fg_alpha": fg_alpha, "pres_prob": pres_prob, "centre": centre,
            "size": size, "rendered": active.float().sum(1),
            "kl_pres": bernoulli_kl(pres_prob, hp.pres_prior).sum(1),
            "kl_where": (z_pres * kl_where).sum(1),
            "kl_depth": (z_pres * kl_depth).sum(1),
            "kl_what": per_image[:, 0],
            "boundary": per_image[:, 1],
        }


class Background(nn.Module):
    """A mixture of K components: stick-breaking masks and component images, each decoded
    from its own latent; a component's latent is inferred from the image under its mask."""

    def __init__(self, m: ModelConfig, image_size: tuple[int, int]):
        super().__init__()
        self.m = m
        self.image_size = image_size
        c = m.bg_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c, 4, stride=2, padding=1), nn.CELU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.CELU(),
            nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.CELU(),
            nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.CELU())
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        k = m.bg_components
        self.mask_head = mlp([2 * c * 16, 128, 2 * m.z_mask * max(k - 1, 1)])
        self.comp_head = mlp([2 * c + 1, 64, 2 * m.z_comp])
        self.mask_decoder = BroadcastDecoder(m.z_mask, 1, c, m.bg_decode_size)
        self.comp_decoder = BroadcastDecoder(m.z_comp, 3, c, m.bg_decode_size)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        sample = self.training
        b, k = x.shape[0], self.m.bg_components
        size = self.image_size
        feats = self.encoder(x)                                           # (B, C, h', w')
        kl = x.new_zeros(b)
        if k > 1:
            mask_mu, mask_sd = split_stats(
                self.mask_head(self.pool(feats).flatten(1)).view(b, k - 1, -1))  # (B, K-1, Zm)
            z_mask = sample_normal(mask_mu, mask_sd, sample)
            logits = self.mask_decoder(z_mask.flatten(0, 1))              # (B*(K-1), 1, h, w)
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            logits = logits.view(b, k - 1, 1, *size)                      # (B, K-1, 1, H, W)
            rest = torch.cumsum(-F.softplus(logits), 1)                  # log prod (1 - s_j)
            before = torch.cat([torch.zeros_like(rest[:, :1]), rest[:, :-1]], 1)
            log_pi = torch.cat([before - F.softplus(-logits), rest[:, -1:]], 1)  # (B,K,1,H,W)
            kl = kl + gaussian_kl(mask_mu, mask_sd, 0.0, 1.0).flatten(1).sum(1)
        else:
            log_pi = x.new_zeros(b, 1, 1, *size)
        pi_small = F.adaptive_avg_pool2d(log_pi.exp().flatten(0, 1), feats.shape[-2:])
        pi_small = pi_small.view(b, k, 1, *feats.shape[-2:])              # (B, K, 1, h', w')
        pooled = (pi_small * feats[:, None]).sum((-2, -1)) / (pi_small.sum((-2, -1)) + EPS)
        share = pi_small.mean((-2, -1))                                   # (B, K, 1)
        comp_mu, comp_sd = split_stats(self.comp_head(torch.cat([pooled, share], -1)))
        z_comp = sample_normal(comp_mu, comp_sd, sample)                  # (B, K, Zc)
        comps = torch.sigmoid(self.comp_decoder(z_comp.flatten(0, 1)))    # (B*K, 3, h, w)
        comps = F.interpolate(comps, size=size, mode="bilinear", align_corners=False)
        comps = comps.view(b, k, 3, *size)                                # (B, K, 3, H, W)
        kl = kl + gaussian_kl(comp_mu, comp_sd, 0.0, 1.0).flatten(1).sum(1)
        return {"log_pi": log_pi, "comps": comps, "kl_bg": kl,
                "bg": (log_pi.exp() * comps).sum(1)}                      # (B, 3, H, W)


class Space(nn.Module):
    """The full model: foreground + background and the negative ELBO."""

    def __init__(self, m: ModelConfig, image_size: tuple[int, int], boundary_margin: float = 0.5):
        super().__init__()
        self.m = m
        self.fg = Foreground(m, image_size, boundary_margin)
        self.bg = Background(m, image_size)

    def forward(self, x: torch.Tensor, hp: Hyper) -> dict[str, torch.Tensor]:
        """Images ``x`` (B, 3, H, W) in [0, 1] -> loss (scalar), per-term means and images."""
        fg = self.fg(x, hp)
        bg = self.bg(x)
        alpha = fg["fg_alpha"]
        if hp.fixed_alpha is not None:
            alpha = torch.full_like(alpha, hp.fixed_alpha)
        alpha = alpha.clamp(EPS, 1 - EPS)                                 # (B, 1, H, W)
        log_fg = normal_logpdf(x, fg["fg"], self.m.fg_sigma).sum(1, keepdim=True)  # (B,1,H,W)
        log_bg = normal_logpdf(x[:, None], bg["comps"], self.m.bg_sigma).sum(2)   # (B,K,H,W)
        mixture = torch.cat([torch.log(alpha) + log_fg,
                             torch.log(1 - alpha) + bg["log_pi"][:, :, 0] + log_bg], 1)
        loglik = torch.logsumexp(mixture, 1).flatten(1).sum(1)            # (B,)
        kl = fg["kl_pres"] + fg["kl_where"] + fg["kl_depth"] + fg["kl_what"] + bg["kl_bg"]
        loss = (-loglik + kl + hp.boundary_weight * fg["boundary"]).mean()
        recon = alpha * fg["fg"] + (1 - alpha) * bg["bg"]                 # (B, 3, H, W)
        terms = {"loglik": loglik.mean(), "elbo": (loglik - kl).mean(),
                 **{k: fg[k].mean() for k in ("kl_pres", "kl_where", "kl_depth", "kl_what",
                                              "boundary")},
                 "kl_bg": bg["kl_bg"].mean(), "mse": ((recon - x) ** 2).mean(),
                 "objects": (fg["pres_prob"] > 0.5).float().sum(1).mean(),
                 "rendered": fg["rendered"].mean()}
        return {"loss": loss, "terms": terms, "recon": recon, "fg": fg["fg"], "alpha": alpha,
                "bg": bg["bg"], "pres_prob": fg["pres_prob"], "centre": fg["centre"],
                "size": fg["size"]}

    @torch.no_grad()
    def infer(self, x: torch.Tensor, threshold: float, alpha_boxes: bool = True
              ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per image of ``x`` (B, 3, H, W): (prob (M,), centre (M, 2), size (M, 2),
        z_what (M, D)) of the cells whose z_pres probability exceeds ``threshold``, from the
        posterior means. ``alpha_boxes``: centre and size from the moments of the decoded
        alpha mask instead of the glimpse box."""
        p = self.fg.cells(x)
        prob = torch.sigmoid(p["pres_logit"])                             # (B, N)
        centre, size = self.fg.boxes(p["scale_mu"], p["shift_mu"])        # (B, N, 2) each
        most = int((prob > threshold).sum(1).max()) if len(x) else 0
        prob, order = prob.topk(most, dim=1)                              # (B, K) each
        centre = centre.gather(1, order[..., None].expand(-1, -1, 2))     # (B, K, 2)
        size = size.gather(1, order[..., None].expand(-1, -1, 2))         # (B, K, 2)
        keep = prob > threshold                                           # (B, K)
        centre, size, z_what = self._objects(x, centre, size, keep, alpha_boxes)
        counts = keep.sum(1).tolist()
        return list(zip(*(t.split(counts) for t in (prob[keep], centre, size, z_what))))

    @torch.no_grad()
    def cell_objects(self, x: torch.Tensor, threshold: float, alpha_boxes: bool = True
                     ) -> dict[str, torch.Tensor]:
        """Every cell of images ``x`` (B, 3, H, W): ``prob`` (B, N), ``keep`` (B, N) where it
        exceeds ``threshold``, and the kept cells' ``centre``, ``size`` (M, 2) and ``z_what``
        (M, D) in the order of ``keep`` (as :meth:`infer` gives them)."""
        p = self.fg.cells(x)
        prob = torch.sigmoid(p["pres_logit"])                             # (B, N)
        centre, size = self.fg.boxes(p["scale_mu"], p["shift_mu"])        # (B, N, 2) each
        keep = prob > threshold
        centre, size, z_what = self._objects(x, centre, size, keep, alpha_boxes)
        return {"prob": prob, "keep": keep, "centre": centre, "size": size, "z_what": z_what}

    def _objects(self, x: torch.Tensor, centre: torch.Tensor, size: torch.Tensor,
                 keep: torch.Tensor, alpha_boxes: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Centre, size (M, 2) and z_what (M, D) of the ``keep`` (B, K) boxes of ``centre`` and
        ``size`` (B, K, 2)."""
        z_what = self.fg.encode_what(self.fg.glimpses(x, centre, size)[keep])[0]  # (M, D)
        centre, size = centre[keep], size[keep]                           # (M, 2) each
        if alpha_boxes and len(centre):
            centre, size = self._alpha_boxes(z_what, centre, size)
        return centre, size, z_what

    def _alpha_boxes(self, z_what: torch.Tensor, centre: torch.Tensor, size: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Centre and size (M, 2) of each decoded alpha mask: its mean and, from its variance,
        the width of a uniform mask with the same spread."""
        g = self.m.glimpse
        alpha = self.fg.decode_what(z_what)[1][:, 0]                      # (M, g, g)
        mass = alpha.sum((1, 2))[:, None].clamp(min=EPS)                  # (M, 1)
        base = self.fg.glimpse_base                                       # (g, g, 2)
        mean = (alpha[..., None] * base).sum((1, 2)) / mass               # (M, 2)
        var = (alpha[..., None] * (base - mean[:, None, None]) ** 2).sum((1, 2)) / mass
        width = torch.sqrt(12 * var + (2 / g) ** 2)                       # (M, 2) glimpse units
        return centre + size * mean, size * width / 2


@dataclass
class TypeModel:
    """Object types: k-means centroids over centred z_what (one scale for all dimensions, so
    dimensions the model leaves unused stay small), ids ordered by cluster size."""

    mean: np.ndarray        # (D,)
    scale: float
    centroids: np.ndarray   # (k, D), in scaled units

    def predict(self, z_what: np.ndarray) -> np.ndarray:
        """Type ids (M,) of z_what vectors (M, D): the nearest centroid."""
        if len(z_what) == 0:
            return np.zeros(0, np.int64)
        z = (z_what - self.mean) / self.scale
        dist = ((z[:, None, :] - self.centroids[None]) ** 2).sum(-1)     # (M, k)
        return dist.argmin(1)

    def state(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "scale": self.scale,
                "centroids": self.centroids.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "TypeModel":
        return cls(np.asarray(state["mean"], np.float64), float(state["scale"]),
                   np.asarray(state["centroids"], np.float64))


#: colour units per size unit in an appearance vector (a pixel of width weighs as 16 levels)
COLOUR_SCALE = 16.0
#: length of an appearance vector: width, height, R, G, B
APPEARANCE_DIM = 5


def appearance(frame: np.ndarray, centre: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(M, :data:`APPEARANCE_DIM`) appearance of the boxes ``centre``, ``size`` (M, 2; native
    pixels) in ``frame`` (H, W, 3) uint8: width, height and the mean colour (over
    :data:`COLOUR_SCALE`) of the box's drawn pixels, those away from the frame's background
    colour (:func:`space.register.drawn`; all the box's pixels where none are)."""
    mask = drawn(frame)
    h, w = frame.shape[:2]
    lo = np.floor(centre - size / 2).astype(int)
    hi = np.ceil(centre + size / 2).astype(int)
    out = np.zeros((len(centre), APPEARANCE_DIM))
    for i in range(len(centre)):
        x0, y0 = np.clip(lo[i], 0, (w - 1, h - 1))
        x1, y1 = np.clip(hi[i], (x0 + 1, y0 + 1), (w, h))
        pixels = frame[y0:y1, x0:x1].reshape(-1, 3).astype(np.float64)
        objects = pixels[mask[y0:y1, x0:x1].reshape(-1)]
        out[i, :2] = size[i]
        out[i, 2:] = (objects if len(objects) else pixels).mean(0) / COLOUR_SCALE
    return out


def type_input(obj: dict[str, np.ndarray], cfg: SpaceConfig) -> np.ndarray:
    """(M, D) float64: what the types of one frame's objects (as :meth:`SpaceDetector.raw`
    gives them) are read from, as ``detect.type_by`` says."""
    return obj[cfg.detect.type_by].astype(np.float64)


def fit_types(z_what: np.ndarray, k: int | None, max_k: int, seed: int
              ) -> tuple[TypeModel, dict[str, Any]]:
    """k-means over z_what (M, D); ``k`` None: the k in 2..max_k with the best silhouette."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    dim = z_what.shape[1]
    if len(z_what) == 0:
        return TypeModel(np.zeros(dim), 1.0, np.zeros((1, dim))), {"k": 1, "objects": 0}
    mean = z_what.mean(0)
    scale = float(z_what.std()) + 1e-6
    z = (z_what - mean) / scale
    n_distinct = len(np.unique(z.round(6), axis=0))
    info: dict[str, Any] = {"objects": int(len(z))}
    if k is None:
        rng = np.random.default_rng(seed)
        sub = z[rng.choice(len(z), min(len(z), 3000), replace=False)]
        scores = {}
        for cand in range(2, min(max_k, n_distinct - 1) + 1):
            labels = KMeans(cand, n_init=4, random_state=seed).fit_predict(sub)
            scores[cand] = round(float(silhouette_score(sub, labels)), 4)
        k = max(scores, key=scores.get) if scores else 1
        info["silhouette"] = scores
    k = max(1, min(k, n_distinct))
    km = KMeans(k, n_init=10, random_state=seed).fit(z)
    order = np.argsort(-np.bincount(km.labels_, minlength=k), kind="stable")
    info.update(k=int(k), sizes=np.bincount(km.labels_, minlength=k)[order].tolist())
    return TypeModel(mean, scale, km.cluster_centers_[order]), info


def save_checkpoint(path: str | Path, model: Space, cfg: SpaceConfig, step: int,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write a self-describing checkpoint (config, weights, step, extras) atomically."""
    payload = {"format": "diffses-space-1", "config": to_dict(cfg), "step": int(step),
               "model": model.state_dict(), **(extra or {})}
    return atomic_save(path, lambda buf: torch.save(payload, buf))


def amend_checkpoint(path: str | Path, **items: Any) -> None:
    """Set ``items`` in the checkpoint at ``path`` (atomically)."""
    payload = read_checkpoint(path)
    payload.update(items)
    atomic_save(path, lambda buf: torch.save(payload, buf))


def read_checkpoint(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """A checkpoint's contents; a missing or foreign file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no SPACE checkpoint at {path}; train one with "
                        f"`python space/main.py --task train ...` or pass another run")
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:
        raise UserError(f"{path} is not a readable checkpoint: {err}") from None
    if not isinstance(payload, dict) or payload.get("format") != "diffses-space-1":
        raise UserError(f"{path} is not a SPACE checkpoint of this project")
    return payload


def build_model(cfg: SpaceConfig) -> Space:
    """A fresh model for ``cfg``; boxes start at the size the z_scale prior expects."""
    model = Space(cfg.model, cfg.data.image_size, cfg.loss.boundary_margin)
    with torch.no_grad():
        model.fg.head.bias[1:3].fill_(cfg.loss.scale_mean.start)
    return model


class SpaceDetector(Detector):
    """A trained SPACE model as a :class:`Detector` on native RGB frames."""

    def __init__(self, model: Space, cfg: SpaceConfig, types: TypeModel | None,
                 device: str = "cpu", name: str = "space", env_id: str | None = None,
                 fast: nn.Module | None = None, palette: np.ndarray | None = None,
                 registration: dict[str, list[float]] | None = None):
        self.model = model.to(device).eval()
        #: the projection frames go through first, when ``detect.palette`` is on
        self.palette = Palette(palette) if cfg.detect.palette and palette is not None else None
        #: moves each frame's picture back to the training frames' layout, when
        #: ``detect.register`` is on
        self.registration = (Registration(registration["rows"], registration["cols"])
                             if cfg.detect.register and registration else None)
        #: the fast student (``space/fast.py``) detection runs through, when there is one and
        #: ``detect.fast`` is on
        self.fast = fast.to(device).eval() if fast is not None and cfg.detect.fast else None
        self.cfg, self.types, self.device, self.name = cfg, types, device, name
        self.env_id = env_id
        k = len(types.centroids) if types is not None else 1
        self.type_names = {i: f"type{i}" for i in range(k)}
        self.env_kwargs = {"native_frames": True}
        self.coast = cfg.detect.coast
        #: type id -> (dx, dy) added to its objects' centres after snapping
        #: (``detect.calibrate``)
        self.offsets: dict[int, np.ndarray] = {}
        weak = cfg.detect.track_threshold
        banded = weak is not None and weak < cfg.detect.threshold
        self.confirm = cfg.detect.threshold if banded else 0.0
        self.lowest = weak if banded else cfg.detect.threshold

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", name: str | None = None,
             overrides: dict[str, Any] | None = None) -> "SpaceDetector":
        """Load ``checkpoint.pt`` (or any checkpoint of a run); ``overrides`` change detection
        settings such as ``detect.threshold``."""
        device = resolve_device(device)
        return cls.from_payload(read_checkpoint(path, device), device, name or str(path),
                                overrides)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], device: str = "auto", name: str = "space",
                     overrides: dict[str, Any] | None = None) -> "SpaceDetector":
        """A detector from what :func:`read_checkpoint` returned; the overrides are checked
        before the device is resolved."""
        cfg = config_from(payload["config"], overrides)
        device = resolve_device(device)
        model = build_model(cfg)
        model.load_state_dict(payload["model"])
        types = TypeModel.from_state(payload["types"]) if payload.get("types") else None
        fast = None
        if payload.get("fast") and cfg.detect.fast:
            from space.fast import load_fast
            fast = load_fast(payload["fast"], cfg, model)
        if cfg.detect.palette and payload.get("palette") is None:
            raise UserError(f"{name} holds no palette for detect.palette; record one with `python "
                            f"space/main.py --task eval --checkpoint {name} --frames RUN "
                            f"eval.palette=true`")
        registration = payload.get("registration")
        if cfg.detect.register and not (isinstance(registration, dict)
                                        and {"rows", "cols"} <= set(registration)):
            raise UserError(f"{name} holds no layout profiles for detect.register; record them "
                            f"with `python space/main.py --task eval --checkpoint {name} "
                            f"--frames RUN eval.register=true`")
        detector = cls(model, cfg, types, device, name, payload.get("env_id"), fast,
                       payload.get("palette"), registration)
        detector.classes = {int(t): str(c) for t, c in
                            (payload.get("type_classes") or {}).items()}
        if cfg.detect.calibrate and payload.get("type_offsets"):
            detector.offsets = {int(t): np.asarray(xy, np.float64)
                                for t, xy in payload["type_offsets"].items()}
        return detector

    def raw(self, frames: np.ndarray, threshold: float | None = None
            ) -> list[dict[str, np.ndarray]]:
        """Per frame: ``prob`` (M,), ``centre`` and ``size`` (M, 2) in native pixels and
        ``z_what`` (M, D) of the objects above ``threshold`` (default ``detect.threshold``);
        through the fast student, ``type`` (M,) instead of ``z_what``; with
        ``detect.type_by=appearance``, their ``appearance`` (M, 5) too."""
        threshold = self.cfg.detect.threshold if threshold is None else threshold
        out = []
        shape = frames.shape[1:]
        if self.palette is not None:
            frames = self.palette(frames)
        if self.registration is not None:
            frames = self.registration(frames)
        for start in range(0, len(frames), self.cfg.detect.batch_size):
            chunk = frames[start:start + self.cfg.detect.batch_size]
            if self.fast is not None:
                x = torch.from_numpy(self.fast.inputs(chunk, self.cfg.data))
                found = self.fast.infer(x.to(self.device).float() / 255, threshold)
            else:
                x = torch.from_numpy(preprocess(chunk, self.cfg.data)).to(self.device).float() / 255
                found = self.model.infer(x, threshold, self.cfg.detect.alpha_boxes)
            for frame, (prob, centre, size, last) in zip(chunk, found):
                prob, centre, size, last = (np.asarray(t.cpu() if torch.is_tensor(t) else t)
                                            for t in (prob, centre, size, last))
                c, s = to_native(centre.astype(np.float64), size.astype(np.float64),
                                 self.cfg.data, shape)
                obj = {"prob": prob, "centre": c, "size": s,
                       "type" if self.fast is not None else "z_what": last}
                if self.cfg.detect.type_by == "appearance":
                    obj["appearance"] = appearance(frame, c, s)
                out.append(obj)
        return out

    def detect(self, frames: np.ndarray, infos: Sequence[dict[str, Any]] | None = None
               ) -> list[list[Detection]]:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (B, H, W, 3) uint8 RGB, got {frames.shape} "
                             f"{frames.dtype}")
        result = []
        for obj in self.raw(frames, self.lowest):
            n = len(obj["prob"])
            z_what = obj.get("z_what", [None] * n)
            types = (obj["type"] if "type" in obj else
                     self.types.predict(type_input(obj, self.cfg)) if self.types is not None
                     else np.zeros(n, np.int64))
            if self.cfg.detect.snap:
                obj["centre"] = np.round(obj["centre"])
            if self.offsets:
                obj["centre"] = obj["centre"] + np.array(
                    [self.offsets.get(int(t), (0.0, 0.0)) for t in types]).reshape(-1, 2)
            result.append([Detection(x=float(c[0]), y=float(c[1]), w=float(s[0]), h=float(s[1]),
                                     type=int(t), confidence=float(p), z_what=z)
                           for p, c, s, z, t in zip(obj["prob"], obj["centre"], obj["size"],
                                                    z_what, types)])
        return result
