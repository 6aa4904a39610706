"""StreamingResampler: chunking does not change the output; no clicks at joins."""
import numpy as np
import pytest

from stream.resample import StreamingResampler


def tone(n, rate, freq=440.0, ch=1):
    t = np.arange(n) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return x if ch == 1 else np.stack([x, -x], axis=1)


@pytest.mark.parametrize("in_rate,out_rate", [(16000, 48000), (16000, 44100), (48000, 16000)])
def test_chunked_equals_one_shot(in_rate, out_rate):
    x = tone(in_rate, in_rate)
    one = StreamingResampler(in_rate, out_rate)
    ref = np.concatenate([one.process(x), one.flush()])
    rs = StreamingResampler(in_rate, out_rate)
    rng = np.random.default_rng(0)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 3000))
        parts.append(rs.process(x[i:i + n]))
        i += n
    parts.append(rs.flush())
    y = np.concatenate(parts)
    assert abs(len(y) - len(x) * out_rate / in_rate) <= 2
    assert len(y) == len(ref)
    np.testing.assert_allclose(y, ref, atol=1e-5)
    # no clicks: away from the edges, sample steps stay within the tone's slope
    core = y[200:-200]
    assert np.max(np.abs(np.diff(core))) < 0.5 * 2 * np.pi * 440 / out_rate * 1.1 + 1e-3


def test_multichannel_and_passthrough():
    rs = StreamingResampler(16000, 32000, channels=2)
    y = rs.process(tone(1600, 16000, ch=2))
    assert y.ndim == 2 and y.shape[1] == 2
    np.testing.assert_allclose(y[:, 0], -y[:, 1], atol=1e-6)
    same = StreamingResampler(16000, 16000)
    x = tone(100, 16000)
    np.testing.assert_array_equal(same.process(x), x)
    with pytest.raises(ValueError, match="2 channel"):
        rs.process(tone(10, 16000))
