"""Shape rules of RNN, GRU and LSTM (mirrors :mod:`dcopt.ops.recurrent`).

``Y`` is (seq, directions, batch, hidden), or (batch, seq, directions, hidden) with ``layout=1``;
the final states ``Y_h`` (and LSTM's ``Y_c``) are (directions, batch, hidden), or batch-first.
The hidden size is the recurrence weight's last dim (``hidden_size`` when that is not known).
"""

from __future__ import annotations

from dcopt.ops.shapes.registry import shape_rule


@shape_rule("RNN", "GRU", "LSTM")
def recurrent(ctx):
    x, w, r = ctx.shape(0), ctx.shape(1), ctx.shape(2)
    layout = int(ctx.attrs.get("layout", 0))
    seq, batch = (x[1], x[0]) if layout else (x[0], x[1])
    directions = w[0]
    hidden = r[-1] if isinstance(r[-1], int) or ctx.attrs.get("hidden_size") is None else int(ctx.attrs["hidden_size"])
    dtype = ctx.dtype(0)
    if layout:
        y, state = (batch, seq, directions, hidden), (batch, directions, hidden)
    else:
        y, state = (seq, directions, batch, hidden), (directions, batch, hidden)
    return [ctx.tensor(dtype, y), ctx.tensor(dtype, state), ctx.tensor(dtype, state)]
