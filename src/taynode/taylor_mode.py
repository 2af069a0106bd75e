"""Incremental Taylor mode: the solution's Taylor coefficients, one order per pass through f.

For y' = f(t, y, args) the solution through (t, y) has the series y(t + h) = Σ_k y_k h^k with
y_0 = y and the ODE closes a loop: y_{k+1} = f_k / (k + 1), where f_k is the k-th Taylor
coefficient of s ↦ f(t + s, y(t + s), args). So y_K needs K passes through f, each pass adding
one order to every intermediate value of f and keeping the orders already computed.

The field is traced once (`jax.make_jaxpr`) and its jaxpr interpreted order by order:

- every intermediate holds a list of normalised Taylor coefficients; `None` stands for a
  coefficient known to be zero and is never materialised or multiplied (parameters are
  constants, the time input has coefficients (t, 1, 0, 0, …), a bias only touches order 0);
- a product (`mul`, `dot_general`, `conv_general_dilated`) of a varying and a constant operand
  costs one product per new order; of two varying operands, the Cauchy sum of the known terms;
- an elementwise function costs O(k) per new order through the ODE it satisfies
  (tanh' = 1 − tanh², σ' = σ(1 − σ), exp' = exp, log, log1p, expm1, sin, cos, sqrt, rsqrt,
  powers, division; Griewank & Walther, *Evaluating Derivatives*, ch. 13);
- structural and linear operations (reshape, broadcast, concatenate, slicing, transposes,
  sums, add/sub/neg, …) act on each new coefficient; `max`, `min`, `abs`, `select_n`, `clamp`
  choose by the order-0 values; integer and boolean values have no higher coefficients;
- `jit`, `custom_jvp_call` and `custom_vjp_call` are inlined (their primal implementation is
  expanded).

An operation with no rule raises `NotImplementedError` naming its primitive.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax import lax
from jax.extend import core as jcore

__all__ = ["taylor_coefficients", "taylor_derivatives", "SUPPORTED_PRIMITIVES"]


class _Series:
    """Normalised Taylor coefficients of one value; `None` is a known zero.

    `closed=True`: every coefficient past the stored ones is zero (constants, the time input).
    """

    __slots__ = ("terms", "closed", "aval")

    def __init__(self, terms, closed, aval):
        self.terms = list(terms)
        self.closed = closed
        self.aval = aval

    @property
    def const(self) -> bool:
        return self.closed and len(self.terms) == 1

    def __getitem__(self, k):
        if k < len(self.terms):
            return self.terms[k]
        if self.closed:
            return None
        raise IndexError(f"coefficient {k} not computed yet")


def _zeros(aval):
    return jnp.zeros(aval.shape, aval.dtype)


def _fit(x, aval):
    """Broadcast and cast a coefficient to the output's shape and dtype."""
    if x.shape != aval.shape:
        x = jnp.broadcast_to(x, aval.shape)
    return x.astype(aval.dtype) if x.dtype != aval.dtype else x


def _sum(terms, aval):
    terms = [t for t in terms if t is not None]
    if not terms:
        return None
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return _fit(out, aval)


def _cauchy(k, a, b, prod, aval, lo=0, hi=None):
    """Σ_{j=lo}^{hi} prod(a_j, b_{k-j}) over the terms that are not known zeros."""
    hi = k if hi is None else hi
    return _sum([prod(a[j], b[k - j]) for j in range(lo, hi + 1) if a[j] is not None and b[k - j] is not None], aval)


def _mul(x, y):
    return None if x is None or y is None else x * y


def _scale(c, x):
    return None if x is None else c * x


# --------------------------------------------------------------------------------------------
# Rules. Each computes coefficient k >= 1 of the outputs from coefficients 0..k of the inputs and
# 0..k-1 of the outputs; `aux` is a per-equation dict for auxiliary series.
# --------------------------------------------------------------------------------------------


def _linear(k, ins, outs, eqn, aux):
    """Operations linear in every input (reshape, broadcast, transpose, slice, neg, sums, …)."""
    xs = [s[k] for s in ins]
    if all(x is None for x in xs):
        return [None] * len(outs)
    if len(xs) == 1:
        res = eqn.primitive.bind(xs[0], **eqn.params)
    else:
        res = eqn.primitive.bind(*[_zeros(s.aval) if x is None else x for s, x in zip(ins, xs)], **eqn.params)
    return list(res) if eqn.primitive.multiple_results else [res]


def _add(k, ins, outs, eqn, aux):
    a, b = ins[0][k], ins[1][k]
    aval = outs[0].aval
    if a is None and b is None:
        return [None]
    if b is None:
        return [_fit(a, aval)]
    if a is None:
        return [_fit(-b if eqn.primitive is lax.sub_p else b, aval)]
    return [eqn.primitive.bind(a, b, **eqn.params)]


def _first_operand_linear(k, ins, outs, eqn, aux):
    """Linear in operand 0; the other operands (indices) act through their order-0 values."""
    x = ins[0][k]
    if x is None:
        return [None]
    return [eqn.primitive.bind(x, *[s[0] for s in ins[1:]], **eqn.params)]


def _pad(k, ins, outs, eqn, aux):
    x = ins[0][k]
    if x is None:
        return [None]
    v = ins[1][k]
    v = jnp.zeros((), x.dtype) if v is None else v
    return [eqn.primitive.bind(x, v, **eqn.params)]


def _dynamic_update_slice(k, ins, outs, eqn, aux):
    x, u = ins[0][k], ins[1][k]
    if x is None and u is None:
        return [None]
    x = _zeros(ins[0].aval) if x is None else x
    u = _zeros(ins[1].aval) if u is None else u
    return [eqn.primitive.bind(x, u, *[s[0] for s in ins[2:]], **eqn.params)]


def _bilinear(k, ins, outs, eqn, aux):
    """mul, dot_general, conv: Σ_j a_j ⊗ b_{k-j}; one product when an operand is constant."""
    return [_cauchy(k, ins[0], ins[1], lambda x, y: eqn.primitive.bind(x, y, **eqn.params), outs[0].aval)]


def _square(k, ins, outs, eqn, aux):
    u = ins[0]
    half = [_mul(u[j], u[k - j]) for j in range((k + 1) // 2)]
    mid = [_mul(u[k // 2], u[k // 2])] if k % 2 == 0 else []
    return [_sum([_scale(2.0, h) for h in half] + mid, outs[0].aval)]


def _div(k, ins, outs, eqn, aux):
    a, b, c = ins[0], ins[1], outs[0]
    # c b = a  =>  c_k = (a_k - Σ_{j<k} c_j b_{k-j}) / b_0
    rest = _cauchy(k, c, b, lambda x, y: x * y, c.aval, hi=k - 1)
    num = a[k] if rest is None else (rest * -1.0 if a[k] is None else a[k] - rest)
    return [None if num is None else _fit(num / b[0], c.aval)]


def _ode_rule(weight: Callable):
    """v' = w(v, u) u' with w a series built alongside v: v_k = (1/k) Σ_{j=1}^k j u_j w_{k-j}.

    `weight(j, u, v, w)` returns w_j from u_0..u_j, v_0..v_j, w_0..w_{j-1}.
    """

    def rule(k, ins, outs, eqn, aux):
        u, v = ins[0], outs[0]
        w = aux.setdefault("w", [])
        while len(w) < k:
            w.append(weight(len(w), u, v, w))
        ju = _scaled_terms(u, k, aux)
        s = _sum([_mul(ju[j], w[k - j]) for j in range(1, k + 1)], v.aval)
        return [None if s is None else s * (1.0 / k)]

    return rule


def _scaled_terms(u, k, aux):
    """The list (0, u_1, 2 u_2, ..., k u_k), each j u_j formed once and kept in `aux`."""
    ju = aux.setdefault("ju", [None])
    while len(ju) <= k:
        ju.append(_scale(float(len(ju)), u[len(ju)]))
    return ju


def _self_square(j, v):
    """Coefficient j of v²."""
    half = [_mul(v[i], v[j - i]) for i in range((j + 1) // 2)]
    mid = [_mul(v[j // 2], v[j // 2])] if j % 2 == 0 else []
    return _sum([_scale(2.0, h) for h in half] + mid, v.aval)


def _tanh_weight(j, u, v, w):  # 1 - v²
    sq = _self_square(j, v)
    if j == 0:
        return 1.0 - sq
    return None if sq is None else -sq


def _logistic_weight(j, u, v, w):  # v - v²
    sq = _self_square(j, v)
    return v[j] if sq is None else (-sq if v[j] is None else v[j] - sq)


def _exp_weight(j, u, v, w):  # v
    return v[j]


def _expm1_weight(j, u, v, w):  # 1 + v
    return 1.0 + v[0] if j == 0 else v[j]


def _log_rule(shift: float):
    """v = log(shift + u): (shift + u) v' = u', v_k = (u_k - (1/k) Σ_{j=1}^{k-1} j v_j u_{k-j}) / (shift + u_0)."""

    def rule(k, ins, outs, eqn, aux):
        u, v = ins[0], outs[0]
        rest = _sum([_scale(j / k, _mul(v[j], u[k - j])) for j in range(1, k)], v.aval)
        num = u[k] if rest is None else (-rest if u[k] is None else u[k] - rest)
        return [None if num is None else _fit(num / (shift + u[0]), v.aval)]

    return rule


def _power_series(k, u, v, p, aval):
    """v = u^p, p a constant: u v' = p u' v, v_k = Σ_{j=1}^k (p j - (k - j)) u_j v_{k-j} / (k u_0)."""
    terms = [_scale((p * j - (k - j)) / k, _mul(u[j], v[k - j])) for j in range(1, k + 1)]
    s = _sum(terms, aval)
    return None if s is None else _fit(s / u[0], aval)


def _sqrt(k, ins, outs, eqn, aux):
    # v² = u  =>  v_k = (u_k - Σ_{j=1}^{k-1} v_j v_{k-j}) / (2 v_0)
    u, v = ins[0], outs[0]
    rest = _sum([_mul(v[j], v[k - j]) for j in range(1, k)], v.aval)
    num = u[k] if rest is None else (-rest if u[k] is None else u[k] - rest)
    return [None if num is None else _fit(num / (2.0 * v[0]), v.aval)]


def _rsqrt(k, ins, outs, eqn, aux):
    return [_power_series(k, ins[0], outs[0], -0.5, outs[0].aval)]


def _pow(k, ins, outs, eqn, aux):
    if not ins[1].const:
        raise NotImplementedError("method='taylor' supports the primitive 'pow' only with a constant exponent")
    p = ins[1][0]
    if jnp.ndim(p) != 0:
        raise NotImplementedError("method='taylor' supports the primitive 'pow' only with a scalar exponent")
    return [_power_series(k, ins[0], outs[0], p, outs[0].aval)]


def _integer_pow(k, ins, outs, eqn, aux):
    n = eqn.params["y"]
    u, aval = ins[0], outs[0].aval
    if n == 0:
        return [None]
    if n == 1:
        return [None if u[k] is None else _fit(u[k], aval)]
    # u^|n| as a chain of products p_m = p_{m-1} u, each series extended one order per pass
    chain = aux.setdefault("chain", [_Series([u[0] ** m], False, aval) for m in range(2, abs(n) + 1)])
    prev = u
    for p in chain:
        p.terms.append(_cauchy(k, prev, u, lambda x, y: x * y, aval))
        prev = p
    if n > 0:
        return [prev[k]]
    # v = 1 / q  =>  v_k = -(Σ_{j=1}^k q_j v_{k-j}) / q_0
    s = _cauchy(k, prev, outs[0], lambda x, y: x * y, aval, lo=1)
    return [None if s is None else -s / prev[0]]


def _sincos(this_sign: float):
    """sin: v' = c u', c' = -v u'; cos: v' = -s u', s' = v u' (the partner series kept in aux)."""

    def rule(k, ins, outs, eqn, aux):
        u, v = ins[0], outs[0]
        other = aux.get("other")
        if other is None:
            other = aux["other"] = [jnp.cos(u[0]) if this_sign > 0 else jnp.sin(u[0])]
        while len(other) < k:
            j = len(other)
            terms = [_scale(-this_sign * i / j, _mul(u[i], v[j - i])) for i in range(1, j + 1)]
            other.append(_sum(terms, v.aval))
        terms = [_scale(this_sign * j / k, _mul(u[j], other[k - j])) for j in range(1, k + 1)]
        return [_sum(terms, v.aval)]

    return rule


def _choose(pick: Callable):
    """max/min: the coefficient of the operand chosen at order 0 (the mean of both at ties, as jax)."""

    def rule(k, ins, outs, eqn, aux):
        a, b = ins[0][k], ins[1][k]
        aval = outs[0].aval
        if a is None and b is None:
            return [None]
        if "masks" not in aux:
            a0, b0 = ins[0][0], ins[1][0]
            aux["masks"] = (pick(a0, b0), a0 == b0)
        first, tie = aux["masks"]
        a = _zeros(aval) if a is None else a
        b = _zeros(aval) if b is None else b
        return [_fit(jnp.where(tie, 0.5 * (a + b), jnp.where(first, a, b)), aval)]

    return rule


def _abs(k, ins, outs, eqn, aux):
    x = ins[0][k]
    if x is None:
        return [None]
    if "sign" not in aux:
        aux["sign"] = jnp.sign(ins[0][0])
    return [aux["sign"] * x]


def _select_n(k, ins, outs, eqn, aux):
    cases = [s[k] for s in ins[1:]]
    if all(c is None for c in cases):
        return [None]
    aval = outs[0].aval
    return [lax.select_n(ins[0][0], *[_zeros(aval) if c is None else _fit(c, aval) for c in cases])]


def _clamp(k, ins, outs, eqn, aux):
    lo, x, hi = (s[k] for s in ins)
    aval = outs[0].aval
    if lo is None and x is None and hi is None:
        return [None]
    if "masks" not in aux:
        lo0, x0, hi0 = (s[0] for s in ins)
        aux["masks"] = (x0 < lo0, x0 > hi0)
    below, above = aux["masks"]
    lo, x, hi = (_zeros(aval) if c is None else _fit(c, aval) for c in (lo, x, hi))
    return [jnp.where(below, lo, jnp.where(above, hi, x))]


def _convert(k, ins, outs, eqn, aux):
    x = ins[0][k]
    return [None if x is None else eqn.primitive.bind(x, **eqn.params)]


def _zero(k, ins, outs, eqn, aux):
    return [None] * len(outs)


_LINEAR = (
    "neg", "reshape", "broadcast_in_dim", "squeeze", "expand_dims", "transpose", "slice", "rev",
    "reduce_sum", "concatenate", "split", "copy", "copy_p", "cumsum", "reduce_precision", "real",
    "imag", "conj", "complex",
)  # fmt: skip
_ZERO = ("sign", "floor", "ceil", "round", "stop_gradient", "iota")

_RULES: dict[str, Callable] = {
    **{name: _linear for name in _LINEAR},
    **{name: _zero for name in _ZERO},
    "add": _add,
    "add_any": _add,
    "sub": _add,
    "mul": _bilinear,
    "dot_general": _bilinear,
    "conv_general_dilated": _bilinear,
    "div": _div,
    "square": _square,
    "integer_pow": _integer_pow,
    "pow": _pow,
    "sqrt": _sqrt,
    "rsqrt": _rsqrt,
    "exp": _ode_rule(_exp_weight),
    "expm1": _ode_rule(_expm1_weight),
    "tanh": _ode_rule(_tanh_weight),
    "logistic": _ode_rule(_logistic_weight),
    "log": _log_rule(0.0),
    "log1p": _log_rule(1.0),
    "sin": _sincos(1.0),
    "cos": _sincos(-1.0),
    "max": _choose(lambda a, b: a > b),
    "min": _choose(lambda a, b: a < b),
    "abs": _abs,
    "select_n": _select_n,
    "clamp": _clamp,
    "convert_element_type": _convert,
    "pad": _pad,
    "dynamic_slice": _first_operand_linear,
    "gather": _first_operand_linear,
    "dynamic_update_slice": _dynamic_update_slice,
}

# Higher-order primitives whose primal implementation is interpreted in place.
_INLINE = ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
           "custom_vjp_call_jaxpr", "checkpoint", "remat")  # fmt: skip

SUPPORTED_PRIMITIVES = tuple(sorted((*_RULES, *_INLINE)))


def _sub_jaxpr(eqn):
    for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(name)
        if isinstance(sub, jcore.ClosedJaxpr):
            return sub.jaxpr, sub.consts
        if isinstance(sub, jcore.Jaxpr):
            return sub, ()
    raise NotImplementedError(f"method='taylor' found no inner jaxpr in the primitive '{eqn.primitive.name}'")


# --------------------------------------------------------------------------------------------
# The interpreter
# --------------------------------------------------------------------------------------------


class _Interpreter:
    """Adds one Taylor order per `run(k)` to every value of a jaxpr, keeping the lower orders."""

    def __init__(self, jaxpr, consts, inputs):
        self.jaxpr = jaxpr
        self.env = {}
        for v, c in zip(jaxpr.constvars, consts):
            self.env[v] = _Series([c], True, v.aval)
        for v, s in zip(jaxpr.invars, inputs):
            self.env[v] = s
        self.aux = [{} for _ in jaxpr.eqns]

    def read(self, v) -> _Series:
        if isinstance(v, jcore.Literal):
            return _Series([v.val], True, v.aval)
        return self.env[v]

    def outputs(self) -> list[_Series]:
        return [self.read(v) for v in self.jaxpr.outvars]

    def run(self, k: int):
        for eqn, aux in zip(self.jaxpr.eqns, self.aux):
            if k == 0:
                self._start(eqn, aux)
            elif "inner" in aux:
                aux["inner"].run(k)
            elif not all(s.closed for s in aux["outs"]):
                ins = [self.read(v) for v in eqn.invars]
                for s, x in zip(aux["outs"], _RULES[eqn.primitive.name](k, ins, aux["outs"], eqn, aux)):
                    s.terms.append(x)

    def _start(self, eqn, aux):
        """Order 0: the primal value; decides which outputs are constant and checks for a rule."""
        name = eqn.primitive.name
        ins = [self.read(v) for v in eqn.invars]
        if name in _INLINE:
            jaxpr, consts = _sub_jaxpr(eqn)
            inner = aux["inner"] = _Interpreter(jaxpr, consts, ins)
            inner.run(0)
            outs = inner.outputs()
        else:
            vals = eqn.primitive.bind(*[s[0] for s in ins], **eqn.params)
            vals = vals if eqn.primitive.multiple_results else [vals]
            const = all(s.const for s in ins)
            outs = [
                _Series([x], const or not jnp.issubdtype(v.aval.dtype, jnp.inexact), v.aval)
                for v, x in zip(eqn.outvars, vals)
            ]
            if not all(s.closed for s in outs) and name not in _RULES:
                raise NotImplementedError(
                    f"method='taylor' has no rule for the primitive '{name}'; use method='jet' or 'jvp' for this field"
                )
            aux["outs"] = outs
        for v, s in zip(eqn.outvars, outs):
            if not isinstance(v, jcore.DropVar):
                self.env[v] = s


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def taylor_coefficients(vector_field: Callable, t, y, args, order: int, *, dy=None):
    """Normalised Taylor coefficients (y_1, ..., y_order) of the solution of y' = f(t, y, args) through (t, y).

    Convention: y(t + h) = Σ_k y_k h^k, so y_k = y^(k) / k! (Taylor coefficients, not derivatives).

    **Arguments**
    - `vector_field`: `f(t, y, args)`, diffrax style; `y` an array or a pytree of arrays (any batch
      axes are part of the arrays). `f` is traced once at the shapes of `(t, y, args)`.
    - `t`: scalar time. `y`: state. `args`: passed through to the field (treated as constants).
    - `order`: int >= 1, the highest coefficient returned.
    - `dy`: optional, `f(t, y, args)` if already known (taken as y_1, so f's last operation at order
      0 is not needed).

    **Returns** a tuple of `order` pytrees shaped like `y`.

    **Raises** `NotImplementedError` naming a primitive of `f` that has no Taylor rule; `ValueError`
    if `f(t, y, args)` is not a pytree shaped like `y`.
    """
    t = jnp.asarray(t, dtype=jnp.result_type(float))
    y_leaves, y_def = jtu.tree_flatten(y)
    y_leaves = [jnp.asarray(x) for x in y_leaves]
    a_leaves, a_def = jtu.tree_flatten(args)

    def flat_field(t_, ys, as_):
        out = vector_field(t_, jtu.tree_unflatten(y_def, ys), jtu.tree_unflatten(a_def, as_))
        out_leaves, out_def = jtu.tree_flatten(out)
        if out_def != y_def or any(jnp.shape(a) != jnp.shape(b) for a, b in zip(out_leaves, ys)):
            raise ValueError(
                "vector_field(t, y, args) must return a pytree shaped like y; got "
                f"{jtu.tree_map(jnp.shape, out)} for y of {jtu.tree_map(jnp.shape, jtu.tree_unflatten(y_def, ys))}"
            )
        return out_leaves

    closed = jax.make_jaxpr(flat_field)(t, y_leaves, a_leaves)
    invars = closed.jaxpr.invars
    t_series = _Series([t, jnp.ones_like(t)], True, invars[0].aval)
    y_series = [_Series([x], False, v.aval) for x, v in zip(y_leaves, invars[1 : 1 + len(y_leaves)])]
    a_series = [_Series([a], True, v.aval) for a, v in zip(a_leaves, invars[1 + len(y_leaves) :])]
    interp = _Interpreter(closed.jaxpr, closed.consts, [t_series, *y_series, *a_series])
    dy_leaves = None if dy is None else jtu.tree_leaves(dy)
    # The ODE loop: pass k gives f_k, hence y_{k+1} = f_k / (k + 1).
    for k in range(order):
        interp.run(k)
        for i, (ys, fs) in enumerate(zip(y_series, interp.outputs())):
            fk = dy_leaves[i] if k == 0 and dy_leaves is not None else fs[k]
            ys.terms.append(None if fk is None else _fit(fk * (1.0 / (k + 1)), ys.aval))
    coeffs = []
    for k in range(1, order + 1):
        leaves = [_zeros(s.aval) if s[k] is None else s[k] for s in y_series]
        coeffs.append(jtu.tree_unflatten(y_def, leaves))
    return tuple(coeffs)


def taylor_derivatives(vector_field: Callable, t, y, args, order: int, *, dy=None):
    """Total time derivatives (y', ..., y^(order)) of the solution through (t, y), by incremental Taylor mode.

    Convention: derivatives, y^(k) = k! · y_k (see `taylor_coefficients` for the coefficients).

    **Arguments** and **Raises** as `taylor_coefficients`.

    **Returns** a tuple of `order` pytrees shaped like `y`.
    """
    coeffs = taylor_coefficients(vector_field, t, y, args, order, dy=dy)
    return tuple(
        c if k == 1 else jtu.tree_map(lambda x, s=float(math.factorial(k)): x * s, c)
        for k, c in enumerate(coeffs, start=1)
    )
