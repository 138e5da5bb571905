"""Column expressions and aggregates, polars-like: ``rb.col("price") * rb.col("qty") > 1000``.

An ``Expr`` is a small tree that the Rust engine evaluates a batch at a time with Arrow kernels.
Plain Python values on either side of an operator become literals. Python's ``and``/``or``/``not``
cannot be overloaded, so conditions combine with ``&``, ``|`` and ``~``:

>>> import riverbed as rb
>>> (rb.col("qty") > 0) & ~rb.col("price").is_null()
((col("qty") > 0) & ~col("price").is_null())
>>> rb.sum("pv") / rb.sum("v")
(sum(col("pv")) / sum(col("v")))

``to_plan()`` gives the plan shape of ``rust/riverbed-stream/src/expr.rs``.
"""

from __future__ import annotations

import datetime as _dt
import numbers
from typing import Any

from riverbed._units import timestamp_ms

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1

_CAST_NAMES = {
    "int64": "int64",
    "int": "int64",
    "float64": "float64",
    "float": "float64",
    "double": "float64",
    "utf8": "utf8",
    "string": "utf8",
    "str": "utf8",
    "bool": "bool",
    "boolean": "bool",
    "timestamp_ms": "timestamp_ms",
    "timestamp[ms]": "timestamp_ms",
}
_CAST_PY_TYPES = {int: "int64", float: "float64", str: "utf8", bool: "bool"}


def _literal(value: object) -> dict[str, Any]:
    """A Python value as a ``{"lit": ...}`` node (datetimes become timestamp_ms, timedeltas ms)."""
    if isinstance(value, Expr):
        return value._node
    if value is None or isinstance(value, (bool, str)):
        return {"lit": value}
    if isinstance(value, _dt.datetime):
        return {"cast": {"expr": {"lit": timestamp_ms(value, "literal")}, "to": "timestamp_ms"}}
    if isinstance(value, _dt.timedelta):
        return {"lit": round(value.total_seconds() * 1000)}
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # numpy scalars
        return _literal(value.item())  # type: ignore[attr-defined]
    if hasattr(value, "as_py") and type(value).__module__.startswith("pyarrow"):  # pyarrow scalars
        return _literal(value.as_py())  # type: ignore[attr-defined]
    if isinstance(value, numbers.Integral):
        v = int(value)
        if not _I64_MIN <= v <= _I64_MAX:
            raise ValueError(f"integer literal {v} does not fit in int64")
        return {"lit": v}
    if isinstance(value, numbers.Real):
        return {"lit": float(value)}
    raise TypeError(
        f"cannot use a {type(value).__name__} in an expression; use rb.col(name), rb.lit(value) "
        "with None, bool, int, float, str or datetime, or another expression"
    )


def _node(value: object) -> dict[str, Any]:
    return value._node if isinstance(value, Expr) else _literal(value)


def _binary(op: str, left: object, right: object) -> Expr:
    return Expr({"binary": {"op": op, "left": _node(left), "right": _node(right)}})


def _unary(op: str, expr: Expr) -> Expr:
    return Expr({"unary": {"op": op, "expr": expr._node}})


def _cast_name(to: object) -> str:
    if isinstance(to, str):
        name = _CAST_NAMES.get(to.strip().lower())
        if name is None:
            raise ValueError(f"cannot cast to {to!r}; use one of 'int64', 'float64', 'utf8', 'bool', 'timestamp_ms'")
        return name
    if isinstance(to, type) and to in _CAST_PY_TYPES:
        return _CAST_PY_TYPES[to]
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pa = None  # type: ignore[assignment]
    if pa is not None and isinstance(to, pa.DataType):
        if to == pa.int64():
            return "int64"
        if to == pa.float64():
            return "float64"
        if to in (pa.string(), pa.large_string()):
            return "utf8"
        if to == pa.bool_():
            return "bool"
        if pa.types.is_timestamp(to) and to.unit == "ms":
            return "timestamp_ms"
        raise ValueError(f"cannot cast to {to}; use int64, float64, string, bool or timestamp('ms')")
    raise TypeError(f"cast target must be a type name or a pyarrow DataType, got {type(to).__name__}")


class Expr:
    """A column expression. Build with ``rb.col``, ``rb.lit``, operators and methods."""

    __slots__ = ("_node",)

    def __init__(self, node: dict[str, Any]) -> None:
        if not isinstance(node, dict):
            raise TypeError("Expr wraps a plan node (dict); build expressions with rb.col() and rb.lit()")
        self._node = node

    def to_plan(self) -> dict[str, Any]:
        """The expression in the plan's JSON shape."""
        return self._node

    # -- truthiness -------------------------------------------------------------------------
    def __bool__(self) -> bool:
        raise TypeError(
            "an Expr has no truth value: combine conditions with & (and), | (or) and ~ (not) "
            "instead of 'and'/'or'/'not', wrap each comparison in parentheses, "
            "and write col(x).is_null() instead of 'col(x) is None'"
        )

    __hash__ = None  # type: ignore[assignment]  # == builds an expression

    # -- arithmetic -------------------------------------------------------------------------
    def __add__(self, other: object) -> Expr:
        return _binary("+", self, other)

    def __radd__(self, other: object) -> Expr:
        return _binary("+", other, self)

    def __sub__(self, other: object) -> Expr:
        return _binary("-", self, other)

    def __rsub__(self, other: object) -> Expr:
        return _binary("-", other, self)

    def __mul__(self, other: object) -> Expr:
        return _binary("*", self, other)

    def __rmul__(self, other: object) -> Expr:
        return _binary("*", other, self)

    def __truediv__(self, other: object) -> Expr:
        return _binary("/", self, other)

    def __rtruediv__(self, other: object) -> Expr:
        return _binary("/", other, self)

    def __mod__(self, other: object) -> Expr:
        return _binary("%", self, other)

    def __rmod__(self, other: object) -> Expr:
        return _binary("%", other, self)

    def __neg__(self) -> Expr:
        return _unary("neg", self)

    def __pos__(self) -> Expr:
        return self

    def __abs__(self) -> Expr:
        return self.abs()

    # -- comparisons ------------------------------------------------------------------------
    def __eq__(self, other: object) -> Expr:  # type: ignore[override]
        return _binary("==", self, other)

    def __ne__(self, other: object) -> Expr:  # type: ignore[override]
        return _binary("!=", self, other)

    def __lt__(self, other: object) -> Expr:
        return _binary("<", self, other)

    def __le__(self, other: object) -> Expr:
        return _binary("<=", self, other)

    def __gt__(self, other: object) -> Expr:
        return _binary(">", self, other)

    def __ge__(self, other: object) -> Expr:
        return _binary(">=", self, other)

    # -- boolean logic ----------------------------------------------------------------------
    def __and__(self, other: object) -> Expr:
        return _binary("and", self, other)

    def __rand__(self, other: object) -> Expr:
        return _binary("and", other, self)

    def __or__(self, other: object) -> Expr:
        return _binary("or", self, other)

    def __ror__(self, other: object) -> Expr:
        return _binary("or", other, self)

    def __invert__(self) -> Expr:
        return _unary("not", self)

    # -- methods ----------------------------------------------------------------------------
    def is_null(self) -> Expr:
        return _unary("is_null", self)

    def is_not_null(self) -> Expr:
        return _unary("is_not_null", self)

    def fill_null(self, value: object) -> Expr:
        """This expression with nulls replaced by ``value`` (a literal or an expression)."""
        return Expr({"fill_null": {"expr": self._node, "value": _node(value)}})

    def cast(self, to: object) -> Expr:
        """Cast to ``"int64"``, ``"float64"``, ``"utf8"``, ``"bool"`` or ``"timestamp_ms"``
        (or the pyarrow types ``int64()``, ``float64()``, ``string()``, ``bool_()``, ``timestamp("ms")``)."""
        return Expr({"cast": {"expr": self._node, "to": _cast_name(to)}})

    def abs(self) -> Expr:
        return _unary("abs", self)

    def log(self) -> Expr:
        """Natural logarithm."""
        return _unary("log", self)

    def exp(self) -> Expr:
        return _unary("exp", self)

    def sqrt(self) -> Expr:
        return _unary("sqrt", self)

    def clip(self, lower: object = None, upper: object = None) -> Expr:
        """Values below ``lower`` become ``lower``, above ``upper`` become ``upper`` (None: no bound)."""
        return Expr(
            {
                "clip": {
                    "expr": self._node,
                    "lower": None if lower is None else _node(lower),
                    "upper": None if upper is None else _node(upper),
                }
            }
        )

    def __repr__(self) -> str:
        return _fmt(self._node)


# -- when / then / otherwise ----------------------------------------------------------------


class When:
    """``rb.when(cond)``: waits for ``.then(value)``."""

    __slots__ = ("_branches", "_cond")

    def __init__(self, branches: list[list[dict[str, Any]]], cond: object) -> None:
        self._branches = branches
        self._cond = _node(cond)

    def then(self, value: object) -> Then:
        return Then([*self._branches, [self._cond, _node(value)]])

    def __repr__(self) -> str:
        return f"when({_fmt(self._cond)})"


class Then(Expr):
    """``rb.when(c).then(x)``: an expression (null where no branch matches) that can be continued
    with ``.when(c2).then(y)`` or finished with ``.otherwise(z)``."""

    __slots__ = ("_branches",)

    def __init__(self, branches: list[list[dict[str, Any]]]) -> None:
        super().__init__({"when": {"branches": branches, "otherwise": {"lit": None}}})
        self._branches = branches

    def when(self, cond: object) -> When:
        return When(self._branches, cond)

    def otherwise(self, value: object) -> Expr:
        return Expr({"when": {"branches": self._branches, "otherwise": _node(value)}})


def when(condition: object) -> When:
    """``rb.when(cond).then(x).when(c2).then(y).otherwise(z)``: the first branch whose condition
    is true (a null condition counts as false); ``otherwise`` when none is."""
    return When([], condition)


# -- constructors ---------------------------------------------------------------------------


def col(name: str) -> Expr:
    """The column ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"column name must be str, got {type(name).__name__}")
    return Expr({"col": name})


def lit(value: object) -> Expr:
    """A literal: None, bool, int, float, str or a datetime (a timestamp_ms)."""
    return Expr(_literal(value))


# -- aggregates -----------------------------------------------------------------------------


def _agg_input(x: object, func: str) -> dict[str, Any]:
    if isinstance(x, str):
        return {"col": x}
    if isinstance(x, Expr):
        return x._node
    raise TypeError(f"{func}() takes a column name or an expression, got {type(x).__name__}")


def _agg(func: str, x: object) -> Expr:
    return Expr({"agg": {"func": func, "expr": _agg_input(x, func)}})


def count(x: object = None) -> Expr:
    """Number of records; ``count(x)``: number of non-null values of ``x``."""
    if x is None:
        return Expr({"agg": {"func": "count"}})
    return _agg("count", x)


def sum(x: object) -> Expr:
    """Sum of ``x`` (a column name or an expression); nulls are skipped (all null: null)."""
    return _agg("sum", x)


def mean(x: object) -> Expr:
    return _agg("mean", x)


def min(x: object) -> Expr:
    return _agg("min", x)


def max(x: object) -> Expr:
    return _agg("max", x)


def first(x: object) -> Expr:
    """The first non-null value, in event-time order."""
    return _agg("first", x)


def last(x: object) -> Expr:
    """The last non-null value, in event-time order."""
    return _agg("last", x)


def std(x: object) -> Expr:
    """Sample standard deviation (ddof=1)."""
    return _agg("std", x)


def var(x: object) -> Expr:
    """Sample variance (ddof=1)."""
    return _agg("var", x)


def count_distinct(x: object) -> Expr:
    """Number of distinct non-null values."""
    return _agg("count_distinct", x)


# -- repr -----------------------------------------------------------------------------------

_BIN_SYMBOL = {"and": "&", "or": "|"}
_UNARY_METHOD = {"abs", "log", "exp", "sqrt", "is_null", "is_not_null"}


def _fmt(n: Any) -> str:
    if n is None:
        return "None"
    if not isinstance(n, dict) or len(n) != 1:
        return repr(n)
    ((tag, body),) = n.items()
    if tag == "col":
        return f'col("{body}")'
    if tag == "lit":
        return repr(body)
    if tag == "binary":
        return f"({_fmt(body['left'])} {_BIN_SYMBOL.get(body['op'], body['op'])} {_fmt(body['right'])})"
    if tag == "unary":
        op, inner = body["op"], _fmt(body["expr"])
        if op == "neg":
            return f"-{inner}"
        if op == "not":
            return f"~{inner}"
        return f"{inner}.{op}()"
    if tag == "fill_null":
        return f"{_fmt(body['expr'])}.fill_null({_fmt(body['value'])})"
    if tag == "cast":
        return f"{_fmt(body['expr'])}.cast({body['to']!r})"
    if tag == "clip":
        return f"{_fmt(body['expr'])}.clip({_fmt(body.get('lower'))}, {_fmt(body.get('upper'))})"
    if tag == "when":
        parts = [f"when({_fmt(c)}).then({_fmt(v)})" for c, v in body["branches"]]
        return ".".join(parts) + f".otherwise({_fmt(body['otherwise'])})"
    if tag == "agg":
        return f"{body['func']}({_fmt(body['expr']) if body.get('expr') is not None else ''})"
    return repr(n)
