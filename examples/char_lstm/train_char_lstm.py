"""Train the character-level LSTM on corpus.txt, then let it write.

From the project's root::

    python examples/char_lstm/train_char_lstm.py [iterations] [--save PATH]

Trains ``char_lstm.prototxt`` with ``char_lstm_solver.prototxt`` (600 iterations
unless told otherwise), printing the loss, then runs ``char_lstm_deploy.prototxt``
one character at a time on the trained weights to write a few lines.
``--save`` also writes the weights as a ``.caffemodel``.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import minicaffe
from minicaffe.net import Net
from minicaffe.proto.text import read_solver

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus.txt")
TRAIN_NET = os.path.join(HERE, "char_lstm.prototxt")
DEPLOY_NET = os.path.join(HERE, "char_lstm_deploy.prototxt")
SOLVER = os.path.join(HERE, "char_lstm_solver.prototxt")


def read_corpus(path=CORPUS) -> np.ndarray:
    """The text as ASCII codes (the nets' Embed and output layers have 128 entries)."""
    with open(path, "rb") as handle:
        codes = np.frombuffer(handle.read(), dtype=np.uint8)
    if codes.size < 2 or codes.max() >= 128:
        raise ValueError(f"{path}: the corpus must be ASCII text of at least two characters")
    return codes


class Batches:
    """T x N batches: stream n reads its own stretch of the text, T characters per batch.

    A stream that reaches the end of its stretch starts it again, with ``cont`` 0
    at that step so the LSTM forgets what it read before.
    """

    def __init__(self, codes, steps, streams):
        self.codes = codes
        self.steps, self.streams = steps, streams
        self.span = (codes.size - 1) // streams
        if self.span < 1:
            raise ValueError("the corpus is too short for this many streams")
        self.starts = np.arange(streams) * self.span
        self.offset = 0

    def next(self):
        """(data, cont, target), each T x N floats."""
        within = np.repeat((self.offset + np.arange(self.steps)[:, None]) % self.span, self.streams, axis=1)
        positions = self.starts[None, :] + within
        self.offset += self.steps
        data = self.codes[positions].astype(np.float32)
        target = self.codes[positions + 1].astype(np.float32)
        cont = (within != 0).astype(np.float32)
        return data, cont, target


def feed(net, batch):
    for name, values in zip(("data", "cont", "target"), batch):
        net.blobs[name].data[...] = values


def train(iterations=None, report_every=100, report=print):
    """Train with the example's solver; returns the solver (its ``net`` holds the weights)."""
    param = read_solver(SOLVER)
    param.net = TRAIN_NET
    if iterations is not None:
        param.max_iter = int(iterations)
    solver = minicaffe.Solver(param, source=SOLVER)
    net = solver.net
    steps, streams = net.blobs["data"].shape
    batches = Batches(read_corpus(), steps, streams)
    solver.add_callback(on_start=lambda: feed(net, batches.next()))
    done = 0
    while done < param.max_iter:
        chunk = min(report_every, param.max_iter - done)
        solver.step(chunk)
        done += chunk
        if report:
            report(f"iteration {solver.iter}: loss {solver.smoothed_loss:.3f}")
    return solver


def write(train_net, prime="A recurrent net", length=200, temperature=0.5, seed=0) -> str:
    """Text from the deploy net on ``train_net``'s weights: ``prime``, then ``length`` sampled characters."""
    deploy = Net(DEPLOY_NET, minicaffe.TEST)
    deploy.share_with(train_net)
    random = np.random.default_rng(seed)
    text = list(prime.encode("ascii"))
    prob = None
    for index, code in enumerate(text):          # read the prime; the LSTM keeps its state
        prob = _step(deploy, code, cont=0 if index == 0 else 1)
    for _ in range(length):
        logits = np.log(np.maximum(prob, 1e-12)) / temperature
        weights = np.exp(logits - logits.max())
        code = int(random.choice(128, p=weights / weights.sum()))
        text.append(code)
        prob = _step(deploy, code, cont=1)
    return bytes(text).decode("ascii")


def _step(net, code, cont):
    net.blobs["data"].data[...] = code
    net.blobs["cont"].data[...] = cont
    return net.forward()["prob"].reshape(-1).astype(np.float64)


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    save = None
    if "--save" in args:
        where = args.index("--save")
        save = args[where + 1]
        del args[where:where + 2]
    iterations = int(args[0]) if args else None
    solver = train(iterations)
    if save:
        solver.net.save(save)
        print(f"weights written to {save}")
    print()
    print(write(solver.net))


if __name__ == "__main__":
    main()
