"""Reference semantics for ONNX recurrent layers: RNN, GRU and LSTM.

The three ops share everything except their cell: :func:`_recurrence` handles ``layout``,
directions (forward, reverse, bidirectional), ``sequence_lens`` (a batch entry past its length
keeps its state and outputs zeros; "reverse" reverses only the valid prefix), default initial
states, and the input projection, done for all time steps in one matmul up front.  The cells see
one step's projected input and the previous states; activations follow the ``activations`` /
``activation_alpha`` / ``activation_beta`` attributes, with ``clip`` applied to gate inputs.
"""

from __future__ import annotations

import numpy as np

from dcopt.ops.registry import reference


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# name -> (function of (x, alpha, beta), default alpha, default beta); alpha/beta are consumed
# from the attribute lists, in order, only by the activations that take them.
_ACTIVATIONS = {
    "tanh": (lambda x, a, b: np.tanh(x), None, None),
    "sigmoid": (lambda x, a, b: _sigmoid(x), None, None),
    "relu": (lambda x, a, b: np.maximum(x, 0), None, None),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, a * x), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: np.where(x > a, x, 0), 1.0, None),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1), 0.2, 0.5),
    "elu": (lambda x, a, b: np.where(x >= 0, x, a * (np.exp(x) - 1)), 1.0, None),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), None, None),
    "softplus": (lambda x, a, b: np.log1p(np.exp(x)), None, None),
}


def _activations(names, alphas, betas, defaults, n_dirs, clip, dtype):
    """Per direction, callables for the cell's f, g[, h]; clip applies to the gate inputs of f and g."""
    names = [n.decode() if isinstance(n, bytes) else n for n in (names or defaults * n_dirs)]
    if len(names) == len(defaults):
        names = names * n_dirs
    alphas, betas = list(alphas or []), list(betas or [])
    funcs = []
    for k, name in enumerate(names):
        fn, a, b = _ACTIVATIONS[name.lower()]
        a = alphas.pop(0) if a is not None and alphas else a
        b = betas.pop(0) if b is not None and betas else b
        lim = clip if k % len(defaults) < 2 else None  # LSTM's h acts on the cell state: not clipped
        funcs.append(lambda x, fn=fn, a=a, b=b, lim=lim: fn(x if lim is None else np.clip(x, -lim, lim), a, b)
                     .astype(dtype, copy=False))
    n = len(defaults)
    return [funcs[d * n:(d + 1) * n] for d in range(n_dirs)]


def _reverse_valid(a, lens):
    """Reverse axis 0 of a (seq, batch, ...) within each batch entry's first lens[b] steps."""
    t = np.arange(a.shape[0])[:, None]
    idx = np.where(t < lens[None, :], lens[None, :] - 1 - t, t)
    return np.take_along_axis(a, idx.reshape(idx.shape + (1,) * (a.ndim - 2)), axis=0)


def _recurrence(x, w, r, b, sequence_lens, initial, *, direction, layout, step):
    """Run ``step(d, xw_t, states) -> states`` over time; states[0] is the hidden state h.

    Returns Y (seq, dirs, batch, hidden) and the final states (dirs, batch, hidden), in ``layout``.
    """
    if layout:
        x = x.swapaxes(0, 1)
        initial = [None if s is None else s.swapaxes(0, 1) for s in initial]
    seq, batch = x.shape[:2]
    dirs, hidden = w.shape[0], r.shape[-1]
    gates = w.shape[1]
    dtype = x.dtype
    lens = np.full(batch, seq, np.int64) if sequence_lens is None else np.asarray(sequence_lens, np.int64)
    ys, finals = [], []
    for d in range(dirs):
        rev = direction == "reverse" or d == 1
        xd = _reverse_valid(x, lens) if rev else x
        xw = np.matmul(xd, w[d].T)
        if b is not None:
            xw = xw + b[d, :gates]
        states = [np.zeros((batch, hidden), dtype) if s is None else s[d].astype(dtype) for s in initial]
        out = np.zeros((seq, batch, hidden), dtype)
        for t in range(seq):
            new = step(d, xw[t], states)
            live = (t < lens)[:, None]
            states = [np.where(live, n, s) for n, s in zip(new, states)]
            out[t] = np.where(live, new[0], 0)
        ys.append(_reverse_valid(out, lens) if rev else out)
        finals.append(states)
    y = np.stack(ys, 1)
    finals = [np.stack([f[i] for f in finals]) for i in range(len(initial))]
    if layout:
        y = y.transpose(2, 0, 1, 3)
        finals = [f.swapaxes(0, 1) for f in finals]
    return (y.astype(dtype, copy=False), *(f.astype(dtype, copy=False) for f in finals))


def _n_dirs(direction):
    return 2 if direction == "bidirectional" else 1


def _recurrent_bias(b, r, dirs, gates):
    return np.zeros((dirs, gates), r.dtype) if b is None else b[:, gates:]


@reference("RNN")
def rnn(x, w, r, b=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
        activations=None, clip=None, direction="forward", hidden_size=None, layout=0, output_sequence=0):
    acts = _activations(activations, activation_alpha, activation_beta, ["Tanh"], _n_dirs(direction), clip, x.dtype)
    rb = _recurrent_bias(b, r, w.shape[0], w.shape[1])

    def step(d, xw, states):
        (f,) = acts[d]
        return [f(xw + states[0] @ r[d].T + rb[d])]

    return _recurrence(x, w, r, b, sequence_lens, [initial_h], direction=direction, layout=layout, step=step)


@reference("GRU")
def gru(x, w, r, b=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
        activations=None, clip=None, direction="forward", hidden_size=None, layout=0, linear_before_reset=0,
        output_sequence=0):
    direction = "forward" if direction == "foward" else direction  # GRU-1's schema default has this typo
    acts = _activations(activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh"], _n_dirs(direction),
                        clip, x.dtype)
    hs = r.shape[-1]
    rb = _recurrent_bias(b, r, w.shape[0], w.shape[1])

    def step(d, xw, states):
        f, g = acts[d]
        (h,) = states
        rz = h @ r[d, :2 * hs].T + rb[d, :2 * hs]
        z = f(xw[:, :hs] + rz[:, :hs])
        reset = f(xw[:, hs:2 * hs] + rz[:, hs:])
        if linear_before_reset:
            cand = g(xw[:, 2 * hs:] + reset * (h @ r[d, 2 * hs:].T + rb[d, 2 * hs:]))
        else:
            cand = g(xw[:, 2 * hs:] + (reset * h) @ r[d, 2 * hs:].T + rb[d, 2 * hs:])
        return [(1 - z) * cand + z * h]

    return _recurrence(x, w, r, b, sequence_lens, [initial_h], direction=direction, layout=layout, step=step)


@reference("LSTM")
def lstm(x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, *, activation_alpha=None,
         activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None, input_forget=0,
         layout=0, output_sequence=0):
    acts = _activations(activations, activation_alpha, activation_beta, ["Sigmoid", "Tanh", "Tanh"],
                        _n_dirs(direction), clip, x.dtype)
    hs = r.shape[-1]
    rb = _recurrent_bias(b, r, w.shape[0], w.shape[1])
    p = np.zeros((w.shape[0], 3 * hs), x.dtype) if p is None else p

    def step(d, xw, states):
        f, g, h_act = acts[d]
        h, c = states
        gates = xw + h @ r[d].T + rb[d]
        i = f(gates[:, :hs] + p[d, :hs] * c)
        forget = 1 - i if input_forget else f(gates[:, 2 * hs:3 * hs] + p[d, 2 * hs:] * c)
        c_new = forget * c + i * g(gates[:, 3 * hs:])
        o = f(gates[:, hs:2 * hs] + p[d, hs:2 * hs] * c_new)
        return [o * h_act(c_new), c_new]

    return _recurrence(x, w, r, b, sequence_lens, [initial_h, initial_c], direction=direction, layout=layout,
                       step=step)
