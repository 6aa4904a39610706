"""Crossfader: sample accounting, power, continuity at joins."""
import numpy as np
import pytest

from stream.crossfade import Crossfader, fade_gains

SR = 16000


def hops_of(signal_fn, n_hops, hop, overlap, start=0, perturb=None):
    """Hop k gets samples [start + k*hop, start + k*hop + hop + overlap) of signal_fn."""
    for k in range(n_hops):
        s = start + k * hop
        x = signal_fn(np.arange(s, s + hop + overlap))
        if perturb is not None:
            x = perturb(k, x)
        yield s, x.astype(np.float32)


@pytest.mark.parametrize("hop,overlap", [(2048, 256), (512, 512), (2048, 0), (4096, 1024)])
def test_exact_sample_accounting(hop, overlap):
    xf = Crossfader(SR, overlap)
    starts, total = [], 0
    for s, x in hops_of(lambda t: np.sin(t * 0.01), 25, hop, overlap, start=-777):
        start, out = xf.process(s, x)
        assert out.shape == (hop,)
        starts.append(start)
        total += len(out)
    assert total == 25 * hop == xf.samples_out
    assert starts == [-777 + k * hop for k in range(25)]
    start, tail = xf.flush()
    assert start == -777 + 25 * hop and len(tail) == overlap


def test_gains_are_power_and_amplitude_complementary():
    out, inn = fade_gains(300, "equal_power")
    np.testing.assert_allclose(out ** 2 + inn ** 2, 1.0, atol=1e-6)
    assert np.all(np.diff(inn) > 0) and np.all(np.diff(out) < 0)
    out, inn = fade_gains(300, "linear")
    np.testing.assert_allclose(out + inn, 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="curve"):
        fade_gains(4, "cubic")


def test_uncorrelated_signals_keep_constant_power():
    rng = np.random.default_rng(0)
    hop, overlap, n = 1024, 512, 400
    xf = Crossfader(SR, overlap)
    # each window's audio is independent noise: the worst case for seams
    outs = [xf.process(k * hop, rng.standard_normal(hop + overlap).astype(np.float32))[1] for k in range(n)]
    y = np.stack(outs[1:])                       # (hops, hop)
    p_fade = np.mean(y[:, :overlap] ** 2)
    p_rest = np.mean(y[:, overlap:] ** 2)
    assert abs(p_fade / p_rest - 1.0) < 0.06
    # position by position inside the fade too (no dip in the middle)
    per_pos = np.mean(y[:, :overlap] ** 2, axis=0).reshape(8, -1).mean(axis=1)
    assert np.all(np.abs(per_pos - 1.0) < 0.15)


def test_constant_signal_stays_constant():
    hop, overlap = 1000, 400
    lin = Crossfader(SR, overlap, curve="linear")
    eq = Crossfader(SR, overlap)
    y_lin = np.concatenate([lin.process(s, x)[1] for s, x in hops_of(lambda t: 0.5 + 0 * t, 10, hop, overlap)])
    y_eq = np.concatenate([eq.process(s, x)[1] for s, x in hops_of(lambda t: 0.5 + 0 * t, 10, hop, overlap)])
    np.testing.assert_allclose(y_lin, 0.5, atol=1e-6)
    # equal power on *identical* signals: amplitude between 1 and sqrt(2) times, smooth
    assert y_eq.min() >= 0.5 - 1e-6 and y_eq.max() <= 0.5 * np.sqrt(2) + 1e-6
    assert np.max(np.abs(np.diff(y_eq))) < 0.5 * (np.sqrt(2) - 1) * 4 / overlap + 1e-4


def test_no_discontinuity_at_joins():
    hop, overlap = 2048, 256
    f = 2 * np.pi * 220 / SR
    # every window renders the tone with its own gain and phase error: hard cuts would click
    def perturb(k, x):
        t = np.arange(len(x))
        return (0.8 + 0.2 * ((k * 7) % 3) / 2) * np.sin(f * (t + k * hop) + 0.4 * ((k * 5) % 4))

    def run(o):
        xf = Crossfader(SR, o)
        return np.concatenate([xf.process(s, x)[1] for s, x in hops_of(lambda t: t * 0.0, 30, hop, o, perturb=perturb)])

    y_cut, y_fade = run(0), run(overlap)
    max_slope = f * 1.0  # the largest step of a unit tone between samples
    joins = np.arange(1, 30) * hop
    jump_cut = np.max(np.abs(y_cut[joins] - y_cut[joins - 1]))
    jump_fade = np.max(np.abs(np.diff(y_fade)))
    assert jump_cut > 5 * max_slope          # the test signal really has seams
    assert jump_fade < 2.0 * max_slope       # the crossfade removes them


def test_gap_resets_and_is_counted():
    xf = Crossfader(SR, 100)
    xf.process(0, np.ones(600, np.float32))
    start, out = xf.process(5000, np.full(600, 0.25, np.float32))  # a dropped window
    assert start == 5000 and np.all(out == 0.25)
    assert xf.discontinuities == 1


def test_multichannel_and_errors():
    xf = Crossfader(SR, 64)
    a = np.ones((300, 2), np.float32)
    xf.process(0, a)
    start, out = xf.process(236, a * 2)
    assert out.shape == (236, 2)
    with pytest.raises(ValueError, match="shorter than the crossfade"):
        xf.process(472, np.ones(100, np.float32))
    with pytest.raises(ValueError, match="H > 0"):
        xf.process(0, np.ones(64, np.float32))
    with pytest.raises(ValueError):
        Crossfader(SR, -1)
