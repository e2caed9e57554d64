"""Auto-masking on exact ties (identity and reprojection errors both 0, as on saturated sky
or road pixels): where the 1e-5 noise is drawn and which side a tie falls on. Monodepth2
adds the noise to each source's identity error and takes the minimum over all 2n
candidates (min_reprojection); ManyDepth's and MISM's stage-1 code takes the minimum over
sources first, then adds one draw per pixel, and keeps a pixel on a tie
(automask_after_min). The noise is forced by replacing torch.randn_like."""
import pytest
import torch

from losses import IDENTITY_NOISE, automask_after_min, min_reprojection

pytestmark = pytest.mark.usefixtures("one_thread")


class ForcedNoise:
    """A stand-in for torch.randn_like: returns the given tensors in turn, records the shapes."""

    def __init__(self, *draws):
        self.draws, self.shapes = list(draws), []

    def __call__(self, like, **kwargs):
        self.shapes.append(tuple(like.shape))
        z = self.draws.pop(0)
        assert z.shape == like.shape, (z.shape, like.shape)
        return z.to(like.dtype)


def _tied_errors():
    """B=1, 2 sources, 4 x 6 pixels. Columns 0-1: every error 0 (exact ties); column 2: one
    identity error 0, the other 0.3, reprojection 0; column 3: reprojection 0.1 < identity
    0.2; column 4: reprojection 0.4 > identity 0.2; column 5: reprojection equal to the
    identity minimum, 0.25."""
    reprojection = torch.zeros(1, 2, 4, 6)
    identity = torch.zeros(1, 2, 4, 6)
    identity[:, 1, :, 2] = 0.3
    reprojection[:, :, :, 3], identity[:, :, :, 3] = 0.1, 0.2
    reprojection[:, :, :, 4], identity[:, :, :, 4] = 0.4, 0.2
    reprojection[:, :, :, 5], identity[:, 0, :, 5], identity[:, 1, :, 5] = 0.25, 0.25, 0.5
    return reprojection, identity


def test_after_min_draws_one_value_per_pixel_and_keeps_ties(monkeypatch):
    reprojection, identity = _tied_errors()
    z = torch.tensor([-1.0, 0.0, 1.0, 2.0, 0.5, -3.0])[None, None, None].repeat(1, 1, 4, 1)
    z[..., 0, :2] = 0.0  # exact ties with no noise at all: the reprojection side wins
    z[..., 1, :2] = -1e-3
    forced = ForcedNoise(z.clone())
    monkeypatch.setattr(torch, "randn_like", forced)
    r = reprojection.min(1, keepdim=True)[0]
    kept = automask_after_min(r, identity)
    assert forced.shapes == [(1, 1, 4, 6)]  # one draw per pixel, after the minimum over sources
    # the reference's rule in this test's words: argmin over [r, min_s(identity) + 1e-5 z], first wins
    noisy = identity.min(1, keepdim=True)[0] + IDENTITY_NOISE * z
    expected = torch.where(r <= noisy, 1.0, 0.0)
    assert torch.equal(kept, expected)
    assert kept.shape == (1, 1, 4, 6) and kept.dtype == torch.float32
    # column by column: ties follow the sign of the single draw (0 keeps), clear wins do not
    assert kept[0, 0, 0, :2].tolist() == [1.0, 1.0] and kept[0, 0, 1, :2].tolist() == [0.0, 0.0]
    assert kept[0, 0, 2:, 0].tolist() == [0.0, 0.0] and kept[0, 0, 2:, 1].tolist() == [1.0, 1.0]
    assert kept[0, 0, :, 2].tolist() == [1.0] * 4
    assert kept[0, 0, :, 3].tolist() == [1.0] * 4 and kept[0, 0, :, 4].tolist() == [0.0] * 4
    assert kept[0, 0, :, 5].tolist() == [0.0] * 4  # -3e-5 below the tie: masked
    photometric = (r * kept).sum() / (kept.sum() + 1e-7)
    assert float(photometric) == pytest.approx(float((r * expected).sum() / (expected.sum() + 1e-7)), rel=0)


def test_after_min_keeps_half_of_the_exact_ties():
    """With real draws a tie is kept with probability 1/2 (one draw per pixel); the noise
    before the minimum over two zero identity errors kept only 1/4 (min of two draws > 0)."""
    torch.manual_seed(0)
    n = 20000
    r = torch.zeros(1, 1, 1, n)
    identity = torch.zeros(1, 2, 1, n)
    kept = automask_after_min(r, identity)
    assert float(kept.mean()) == pytest.approx(0.5, abs=0.02)  # binomial std 0.0035
    before = (r <= (identity + torch.randn_like(identity) * IDENTITY_NOISE).min(1, keepdim=True)[0]).float()
    assert float(before.mean()) == pytest.approx(0.25, abs=0.02)


def test_monodepth2_noise_on_each_source_before_the_min_over_all_candidates(monkeypatch):
    """The baseline (min_reprojection) is Monodepth2's: noise added to each source's identity
    error, the minimum over [identity_1..n, reprojection_1..n], a tie going to the identity
    (the first candidate); the auto-mask is where a reprojection candidate won."""
    reprojection, identity = _tied_errors()
    z = torch.randint(-2, 3, identity.shape, generator=torch.Generator().manual_seed(0)).float()
    forced = ForcedNoise(z.clone())
    monkeypatch.setattr(torch, "randn_like", forced)
    to_optimise, automask = min_reprojection(reprojection, identity)
    assert forced.shapes == [(1, 2, 4, 6)]  # one draw per source, before any minimum
    candidates = torch.cat([identity + IDENTITY_NOISE * z, reprojection], 1)
    best = candidates.min(1)[0]
    first = (candidates == best.unsqueeze(1)).float().argmax(1)  # the first candidate reaching the minimum
    assert torch.equal(to_optimise, best)
    assert torch.equal(automask, (first >= 2).float().unsqueeze(1))
    # where every error is 0, a reprojection wins only if both draws are above 0: a draw of
    # exactly 0 ties with the reprojection and the identity (first) wins
    both_positive = ((z[:, 0] > 0) & (z[:, 1] > 0)).float()[:, None, :, :2]
    assert torch.equal(automask[..., :2], both_positive)
    assert bool(((z[:, :, :, :2] == 0).any(1) & (z[:, :, :, :2] >= 0).all(1)).any())  # such a tie occurs
