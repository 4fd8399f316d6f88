"""Dimension arithmetic over ints, named symbols and integer polynomials of symbols.

A dim (see :mod:`dcopt.ir.types`) is an ``int``, a ``str`` or ``None`` (unknown). Shape rules need
to add, multiply and divide dims that may be symbolic -- Reshape's ``-1`` is ``numel / known``,
Concat adds, Flatten multiplies -- and two tensors whose dims are the *same expression* must get
the *same string*, or broadcasting them later would have to give up. So a symbolic dim string is
either a symbol name (``"N"``) or the canonical text of an integer polynomial over symbols
(``"N*S"``, ``"2*N+1"``): terms sorted, highest degree first. Parsing such text gives the
polynomial back, so the strings survive serialization with their meaning.

Fresh symbols (``"?y_0"``, made by the shape-rule context) stand for sizes nothing pins down; they
take part in arithmetic like any symbol. Symbols stand for sizes, so they are never negative:
that is the only fact this module assumes about them.

Every function here returns ``None`` rather than guess: a division that is not exact, a
clamped slice length over symbols, a product with an unknown factor.
"""

from __future__ import annotations

import ast
import functools
from typing import Iterable, Mapping, Union

Dim = Union[int, str, None]
Monomial = tuple  # sorted tuple of symbol names (with repetition); () is the constant term


class Poly:
    """An integer polynomial over symbols: ``{monomial: coefficient}``, immutable."""

    __slots__ = ("terms", "_hash")

    def __init__(self, terms: Mapping[Monomial, int]):
        self.terms = tuple(sorted(((m, int(c)) for m, c in terms.items() if c), key=_term_order))
        self._hash = hash(self.terms)

    @staticmethod
    def const(value: int) -> "Poly":
        return Poly({(): int(value)})

    @staticmethod
    def atom(name: str) -> "Poly":
        return Poly({(name,): 1})

    @property
    def is_const(self) -> bool:
        return all(not m for m, _ in self.terms)

    @property
    def constant(self) -> int:
        return dict(self.terms).get((), 0)

    def __eq__(self, other) -> bool:
        return isinstance(other, Poly) and self.terms == other.terms

    def __hash__(self) -> int:
        return self._hash

    def __add__(self, other: "Poly") -> "Poly":
        out = dict(self.terms)
        for m, c in other.terms:
            out[m] = out.get(m, 0) + c
        return Poly(out)

    def __neg__(self) -> "Poly":
        return Poly({m: -c for m, c in self.terms})

    def __sub__(self, other: "Poly") -> "Poly":
        return self + (-other)

    def __mul__(self, other: "Poly") -> "Poly":
        out: dict = {}
        for m1, c1 in self.terms:
            for m2, c2 in other.terms:
                m = tuple(sorted(m1 + m2))
                out[m] = out.get(m, 0) + c1 * c2
        return Poly(out)

    def exact_div(self, other: "Poly") -> "Poly | None":
        """``self / other`` when ``other`` is one term dividing every term of ``self``; else None."""
        if len(other.terms) != 1:
            return Poly.const(1) if other == self and self.terms else None
        (dm, dc), = other.terms
        out = {}
        for m, c in self.terms:
            rest = list(m)
            for atom in dm:
                if atom not in rest:
                    return None
                rest.remove(atom)
            if c % dc:
                return None
            out[tuple(rest)] = c // dc
        return Poly(out)

    def nonnegative(self) -> bool:
        """True when every coefficient is >= 0 (then the value is, since symbols are sizes)."""
        return all(c >= 0 for _, c in self.terms)

    def __repr__(self) -> str:
        return f"Poly({render(self)!r})"


def _term_order(term):
    monomial, _ = term
    return (-len(monomial), monomial) if monomial else (1, ())


# ------------------------------------------------------------------------------ text <-> Poly

#: Rendered text -> polynomial, for expressions over atoms that are not identifiers ("?y_0",
#: "input.1") whose text cannot be parsed back. Bounded: cleared when it grows past the limit.
_INTERNED: dict[str, Poly] = {}
_INTERN_LIMIT = 1 << 16


def render(p: Poly) -> Dim:
    """The dim a polynomial stands for: an int when constant, else its canonical text."""
    if p.is_const:
        return p.constant
    parts = []
    for monomial, c in p.terms:
        body = "*".join(monomial)
        if not monomial:
            text = str(abs(c))
        elif abs(c) == 1:
            text = body
        else:
            text = f"{abs(c)}*{body}"
        parts.append(("-" if c < 0 else "+") + text)
    text = "".join(parts)
    text = text[1:] if text.startswith("+") else text
    if len(_INTERNED) > _INTERN_LIMIT:
        _INTERNED.clear()
    _INTERNED[text] = p
    return text


@functools.lru_cache(maxsize=1 << 14)
def parse(text: str) -> Poly:
    """A symbolic dim's text as a polynomial (any text that is not + - * over names and ints is an atom)."""
    known = _INTERNED.get(text)
    if known is not None:
        return known
    if text.startswith("?"):
        return Poly.atom(text)
    try:
        return _from_ast(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, TypeError):
        return Poly.atom(text)


def _from_ast(node) -> Poly:
    if isinstance(node, ast.Name):
        return Poly.atom(node.id)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return Poly.const(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _from_ast(node.operand)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "min" and len(node.args) == 2 \
            and not node.keywords:
        return Poly.atom(_min_text(*(render(_from_ast(a)) for a in node.args)))
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
        left, right = _from_ast(node.left), _from_ast(node.right)
        return left + right if isinstance(node.op, ast.Add) else left - right if isinstance(node.op, ast.Sub) \
            else left * right
    raise ValueError("not a polynomial")


def as_poly(d: Dim) -> Poly | None:
    if d is None:
        return None
    if isinstance(d, str):
        return parse(d)
    return Poly.const(int(d))


def normalize(d) -> Dim:
    """A dim in canonical form: numpy ints -> int, polynomial text -> canonical text."""
    if d is None:
        return None
    if isinstance(d, str):
        return render(parse(d))
    if isinstance(d, Poly):
        return render(d)
    return int(d)


# ------------------------------------------------------------------------------ arithmetic on dims

def _lift2(fn):
    @functools.wraps(fn)
    def op(a: Dim, b: Dim) -> Dim:
        if a is None or b is None:
            return None
        if isinstance(a, int) and isinstance(b, int):
            return fn(a, b) if not isinstance(a, bool) else fn(int(a), int(b))
        result = fn(as_poly(a), as_poly(b))
        return None if result is None else render(result)

    return op


@_lift2
def add(a, b):
    return a + b


@_lift2
def sub(a, b):
    return a - b


@_lift2
def mul(a, b):
    return a * b


def div(a: Dim, b: Dim) -> Dim:
    """``a / b`` when it divides exactly (ints: when b divides a); else None."""
    if a is None or b is None:
        return None
    if isinstance(a, int) and isinstance(b, int):
        return a // b if b and a % b == 0 else None
    pa, pb = as_poly(a), as_poly(b)
    if pb.is_const and pb.constant == 0:
        return None
    result = pa.exact_div(pb)
    return None if result is None else render(result)


def floordiv(a: Dim, b: int) -> Dim:
    """``a // b`` for a positive int ``b``: exact for ints, for symbols only when b divides every term."""
    if a is None:
        return None
    if isinstance(a, int):
        return a // b
    return div(a, b)


def prod(dims: Iterable[Dim]) -> Dim:
    result: Dim = 1
    for d in dims:
        result = mul(result, d)
        if result is None:
            return None
    return result


def equal(a: Dim, b: Dim) -> bool | None:
    """True/False when the two dims are provably equal/different, None when not known."""
    if a is None or b is None:
        return None
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    pa, pb = as_poly(a), as_poly(b)
    if pa == pb:
        return True
    diff = pa - pb
    return False if diff.is_const else None


def _min_text(a: Dim, b: Dim) -> str:
    first, second = sorted((str(a), str(b)))
    return f"min({first},{second})"


def _min_args(d: Dim) -> tuple[Dim, Dim] | None:
    """The two operands of a ``min(a,b)`` dim; None for any other dim."""
    if not isinstance(d, str) or not d.startswith("min("):
        return None
    p = as_poly(d)
    if len(p.terms) != 1 or p.terms[0] != ((d,), 1):
        return None
    call = ast.parse(d, mode="eval").body
    return tuple(render(_from_ast(a)) for a in call.args)


def minimum(a: Dim, b: Dim) -> Dim:
    """min(a, b): exact for ints, equal dims, and a size against a bound <= 0; else the dim
    ``"min(a,b)"`` (a slice of a symbolic length out of a fixed table: ``min(seq,512)``)."""
    if a is None or b is None:
        return None
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    if equal(a, b):
        return a
    for x, y in ((a, b), (b, a)):
        if isinstance(y, int) and y <= 0 and is_negative_impossible(x):
            return y
        args = _min_args(x)
        if args is not None and any(equal(y, arg) for arg in args):
            return x  # min(min(p, q), p) = min(p, q)
    return _min_text(normalize(a), normalize(b))


def is_negative_impossible(d: Dim) -> bool:
    """True when ``d`` is provably >= 0."""
    if d is None:
        return False
    if isinstance(d, int):
        return d >= 0
    return as_poly(d).nonnegative()


def substitute(d: Dim, bindings: Mapping[str, int]) -> Dim:
    """``d`` with bound symbols replaced by their values (an int when every symbol is bound)."""
    if not isinstance(d, str) or not bindings:
        return d
    if d in bindings:
        return int(bindings[d])
    args = _min_args(d)
    if args is not None:
        return minimum(substitute(args[0], bindings), substitute(args[1], bindings))
    p = as_poly(d)
    out = Poly.const(0)
    for monomial, c in p.terms:
        term = Poly.const(c)
        for atom in monomial:
            value = substitute(atom, bindings) if atom != d else atom
            term = term * (as_poly(value) if value is not None else Poly.atom(atom))
        out = out + term
    return render(out)


# ------------------------------------------------------------------------------ shapes

def per_sample(shape) -> tuple[int, ...] | None:
    """``shape`` with its batch (first) dim as 1 when every other dim is static -- how a conv is
    decided and generated, image by image, whatever the batch (a symbol or a number); else None."""
    if shape is None or not shape or shape[0] is None or not all(isinstance(d, int) for d in shape[1:]):
        return None
    return (1, *shape[1:])


def broadcast(*dims: Dim) -> Dim:
    """numpy broadcasting of one axis: 1s drop out; two different known sizes are an error
    (raised as ValueError); a known size > 1 wins over symbols (which must then be 1 or it);
    several different symbols, or an unknown without a size > 1, give None."""
    sizes = {d for d in dims if isinstance(d, int) and d != 1}
    if len(sizes) > 1:
        raise ValueError(f"sizes {sorted(sizes)} do not broadcast")
    if sizes:
        return sizes.pop()
    symbolic = [d for d in dims if not isinstance(d, int)]
    if not symbolic:
        return 1
    if any(d is None for d in symbolic):
        return None
    distinct = []
    for d in symbolic:
        if not any(equal(d, seen) for seen in distinct):
            distinct.append(d)
    if len(distinct) == 1:
        return distinct[0]
    if len(distinct) == 2:  # min(p, q) broadcast against p is p: the larger wins, and min(p, q) <= p
        for x, y in (distinct, distinct[::-1]):
            args = _min_args(y)
            if args is not None and any(equal(x, arg) for arg in args):
                return x
    return None


def broadcast_shapes(*shapes: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """Multidirectional (numpy) broadcasting of shapes whose dims may be symbolic."""
    rank = max((len(s) for s in shapes), default=0)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    return tuple(broadcast(*column) for column in zip(*padded))


def merge(a: Dim, b: Dim) -> Dim:
    """The dim two values of one container share (If branches, loop iterations); None if they differ."""
    return a if equal(a, b) else None
