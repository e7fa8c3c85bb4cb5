"""TanH: ``y = tanh(x)``; gradient ``dx = dy * (1 - y^2)`` (from the output, so it works in place).

CPU: numpy on chunks of the blob, run on minicaffe's threads
(:mod:`minicaffe.threads`; numpy's vectorized tanh releases the GIL); a small
blob stays on one thread.
"""

import numpy as np

from .. import threads
from ..layer import Layer
from ..registry import register


@register("TanH")
class TanHLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(-1)
        y = top[0].data.reshape(-1)
        threads.parallel_for(x.size, lambda start, stop: np.tanh(x[start:stop], out=y[start:stop]))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].data.reshape(-1)
        dy = top[0].diff.reshape(-1)
        dx = bottom[0].diff.reshape(-1)

        def chunk(start, stop):
            values = y[start:stop]
            dx[start:stop] = dy[start:stop] * (1 - values * values)

        threads.parallel_for(y.size, chunk)
