"""The rule-condition language: a tokenizer, a recursive-descent parser to our own AST, a type checker
against a declared schema of names per activity, and a compiler to closures.

Why not Python's `eval`/`ast`: program files come from operators, so user text is never executed; it can
only name what the schema declares (no attribute access, no `__class__`), and every mistake is a load error
with a column. Compiling once at load into closures keeps evaluation per event to a few function calls.

Grammar (lowest precedence first; keywords are lower case)::

    condition  := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := additive [("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") additive]
    additive   := term (("+" | "-") term)*
    term       := unary (("*" | "/" | "%") unary)*
    unary      := "-" unary | primary
    primary    := NUMBER | STRING | "true" | "false" | "null" | list | "(" or_expr ")" | name [call]
    list       := "[" [or_expr ("," or_expr)* [","]] "]"
    name       := IDENT ("." IDENT | "[" STRING "]")*
    call       := "(" [or_expr ("," or_expr)*] ")"

NUMBER is decimal digits with an optional fraction (exact `Decimal`, never float); STRING is single- or
double-quoted with backslash escapes. Comparisons do not chain. Types: number, string, bool, list, null and
`any` (custom/extended fields, whose type is only known per event).

Runtime semantics: `==`/`!=` compare values of the same kind (a number never equals a string or a bool);
ordering, arithmetic and `and`/`or` on a value of the wrong kind (a missing or string custom field), a
division by zero or a malformed argument make the whole condition *not hold* rather than fail the event.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial
from operator import attrgetter
from typing import Any, Final

from loyalty_stream.engine import periods
from loyalty_stream.engine.state import ZERO, CustomerState
from loyalty_stream.program.event_points import CATEGORY_OF

MAX_LENGTH = 4000
MAX_DEPTH = 64

NUMBER, STRING, BOOL, ANY, NULL = "number", "string", "bool", "any", "null"
LIST_STRING, LIST_ANY = "list[string]", "list[any]"


def list_of(element: str) -> str:
    return f"list[{element}]"


def element_of(list_type: str) -> str | None:
    return list_type[5:-1] if list_type.startswith("list[") else None


class ExpressionError(ValueError):
    """A load-time error in a condition: the message, the 1-based column it points at, and a hint."""

    def __init__(self, message: str, column: int, hint: str = "") -> None:
        super().__init__(f"{message} at column {column}" + (f"; {hint}" if hint else ""))
        self.message = message
        self.column = column
        self.hint = hint


class EvalError(Exception):
    """A runtime type mismatch (e.g. a string custom field compared with `>`): the condition does not hold."""


# Evaluation environment ---------------------------------------------------------------------------------

class Env:
    """What a condition reads: the customer state, the activity, the program and the event time."""

    __slots__ = ("_local", "activity", "activity_name", "at", "program", "state")

    def __init__(self, state: CustomerState, activity: Any, program: Any, at: datetime,
                 activity_name: str = "") -> None:
        self.state = state
        self.activity = activity
        self.program = program
        self.at = at
        self.activity_name = activity_name or type(activity).__name__
        self._local: datetime | None = None

    @property
    def local(self) -> datetime:
        """Event time in the program's time zone (computed once per activity)."""
        if self._local is None:
            self._local = self.at.astimezone(self.program.zone)
        return self._local


Getter = Callable[[Env], Any]


@dataclass(frozen=True, slots=True)
class Attr:
    type: str
    get: Getter
    each: tuple[Getter, Getter] | None = None
    """For a list of one field of records (`transaction.categories`): (records, field) getters, so that a
    literal text is looked for with no list built (see `_Compiler.membership`)."""


@dataclass(frozen=True, slots=True)
class Func:
    params: tuple[str, ...]
    type: str
    impl: Callable[..., Any]
    """impl(env, *args)"""


@dataclass(frozen=True, slots=True)
class Schema:
    """The names, field maps (prefix.<field>) and functions a condition on one activity may use."""

    activity: str
    names: Mapping[str, Attr]
    maps: Mapping[str, Getter]
    functions: Mapping[str, Func]

    def known(self) -> list[str]:
        maps = (f"{m}.<field>" for m in self.maps)
        return sorted([*self.names, *maps, *(f"{f}(...)" for f in self.functions)])


# Tokenizer ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # number, string, ident, keyword, op, end
    text: str
    value: Any
    column: int


KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
_TWO_CHAR_OPS = frozenset({"==", "!=", "<=", ">="})
_ONE_CHAR_OPS = frozenset("<>+-*/%()[],.")
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        col = i + 1
        if ch.isspace():
            i += 1
        elif ch.isdigit():
            j = i
            while j < n and text[j].isdigit():
                j += 1
            if j + 1 < n and text[j] == "." and text[j + 1].isdigit():
                j += 1
                while j < n and text[j].isdigit():
                    j += 1
            if j < n and (text[j].isalpha() or text[j] == "_"):
                raise ExpressionError(f"malformed number {text[i:j + 1]!r}", col)
            tokens.append(Token("number", text[i:j], Decimal(text[i:j]), col))
            i = j
        elif ch in "\"'":
            j, chars = i + 1, []
            while True:
                if j >= n:
                    raise ExpressionError("unterminated string", col)
                c = text[j]
                if c == ch:
                    break
                if c == "\\":
                    if j + 1 >= n or text[j + 1] not in _ESCAPES:
                        raise ExpressionError("invalid escape in string", j + 1)
                    chars.append(_ESCAPES[text[j + 1]])
                    j += 2
                    continue
                chars.append(c)
                j += 1
            tokens.append(Token("string", text[i:j + 1], "".join(chars), col))
            i = j + 1
        elif ch.isalpha() or ch == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            tokens.append(Token("keyword" if word in KEYWORDS else "ident", word, word, col))
            i = j
        elif text[i:i + 2] in _TWO_CHAR_OPS:
            tokens.append(Token("op", text[i:i + 2], None, col))
            i += 2
        elif ch in _ONE_CHAR_OPS:
            tokens.append(Token("op", ch, None, col))
            i += 1
        else:
            raise ExpressionError(f"unexpected character {ch!r}", col)
    tokens.append(Token("end", "", None, n + 1))
    return tokens


# AST ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Node:
    column: int


@dataclass(frozen=True, slots=True)
class Literal(Node):
    value: Any
    type: str


@dataclass(frozen=True, slots=True)
class ListLiteral(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Name(Node):
    parts: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, slots=True)
class Call(Node):
    function: Name
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Unary(Node):
    op: str  # "-" | "not"
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary(Node):
    op: str  # arithmetic, comparison, "in", "not in", "and", "or"
    left: Node
    right: Node


# Parser ---------------------------------------------------------------------------------------------------

_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def at(self, kind: str, text: str | None = None) -> bool:
        tok = self.tok
        return tok.kind == kind and (text is None or tok.text == text)

    def expect(self, kind: str, text: str) -> Token:
        if not self.at(kind, text):
            raise ExpressionError(f"expected {text!r}, found {_describe(self.tok)}", self.tok.column)
        return self.advance()

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"expression nested deeper than {MAX_DEPTH} levels", self.tok.column)

    def parse(self) -> Node:
        if self.at("end"):
            raise ExpressionError("empty expression", self.tok.column)
        node = self.or_expr()
        if not self.at("end"):
            raise ExpressionError(f"unexpected {_describe(self.tok)}", self.tok.column)
        return node

    def or_expr(self) -> Node:
        self.nest()
        node = self.and_expr()
        while self.at("keyword", "or"):
            col = self.advance().column
            node = Binary(col, "or", node, self.and_expr())
        self.depth -= 1
        return node

    def and_expr(self) -> Node:
        node = self.not_expr()
        while self.at("keyword", "and"):
            col = self.advance().column
            node = Binary(col, "and", node, self.not_expr())
        return node

    def not_expr(self) -> Node:
        if self.at("keyword", "not"):
            col = self.advance().column
            self.nest()
            node = Unary(col, "not", self.not_expr())
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Node:
        left = self.additive()
        tok = self.tok
        op: str | None = None
        if tok.kind == "op" and tok.text in _COMPARISONS:
            op = tok.text
            self.advance()
        elif self.at("keyword", "in"):
            op = "in"
            self.advance()
        elif self.at("keyword", "not") and self.tokens[self.pos + 1].text == "in":
            op = "not in"
            self.advance()
            self.advance()
        if op is None:
            return left
        node = Binary(tok.column, op, left, self.additive())
        nxt = self.tok
        if (nxt.kind == "op" and nxt.text in _COMPARISONS) or self.at("keyword", "in"):
            raise ExpressionError("comparisons cannot be chained; join them with 'and'", nxt.column)
        return node

    def additive(self) -> Node:
        node = self.term()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            tok = self.advance()
            node = Binary(tok.column, tok.text, node, self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/", "%"):
            tok = self.advance()
            node = Binary(tok.column, tok.text, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.at("op", "-"):
            col = self.advance().column
            self.nest()
            node = Unary(col, "-", self.unary())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> Node:
        tok = self.tok
        if tok.kind == "number":
            self.advance()
            return Literal(tok.column, tok.value, NUMBER)
        if tok.kind == "string":
            self.advance()
            return Literal(tok.column, tok.value, STRING)
        if tok.kind == "keyword" and tok.text in ("true", "false"):
            self.advance()
            return Literal(tok.column, tok.text == "true", BOOL)
        if tok.kind == "keyword" and tok.text == "null":
            self.advance()
            return Literal(tok.column, None, NULL)
        if self.at("op", "("):
            self.advance()
            node = self.or_expr()
            self.expect("op", ")")
            return node
        if self.at("op", "["):
            self.advance()
            items = self.sequence("]")
            return ListLiteral(tok.column, tuple(items))
        if tok.kind == "ident":
            return self.name()
        if tok.kind == "end":
            raise ExpressionError("unexpected end of expression", tok.column)
        raise ExpressionError(f"unexpected {_describe(tok)}", tok.column)

    def sequence(self, closer: str) -> list[Node]:
        items: list[Node] = []
        while not self.at("op", closer):
            items.append(self.or_expr())
            if not self.at("op", ","):
                break
            self.advance()
        self.expect("op", closer)
        return items

    def name(self) -> Node:
        first = self.advance()
        parts = [first.text]
        while True:
            if self.at("op", "."):
                self.advance()
                if not self.at("ident"):
                    found = _describe(self.tok)
                    raise ExpressionError(f"expected a name after '.', found {found}", self.tok.column)
                parts.append(self.advance().text)
            elif self.at("op", "[") and self.tokens[self.pos + 1].kind == "string":
                self.advance()
                parts.append(self.advance().value)
                self.expect("op", "]")
            else:
                break
        name = Name(first.column, tuple(parts))
        if self.at("op", "("):
            self.advance()
            return Call(first.column, name, tuple(self.sequence(")")))
        return name


def _describe(tok: Token) -> str:
    return "end of expression" if tok.kind == "end" else repr(tok.text)


def parse(text: str) -> Node:
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters", MAX_LENGTH + 1)
    return _Parser(tokenize(text)).parse()


# Type checking + compilation --------------------------------------------------------------------------------

Fn = Callable[[Env], Any]


Check = Callable[[Any], Any]
Test = tuple[Getter, Check]
"""A condition part as (get, check): the part's value is `check(get(env))`, with the same result and the
same errors as its generic closure; both are C callables where possible (an `attrgetter`, an operator
`partial`, a set's `__contains__`) so a test costs no Python frame."""


@dataclass(frozen=True, slots=True)
class Typed:
    type: str
    fn: Fn
    const: bool = False
    value: Any = None
    each: tuple[Getter, Getter] | None = None
    """A name's `Attr.each`."""
    parts: tuple[Test, ...] = ()
    """Fast form of a bool: one test, or the tests of an `and` (`any_of` False) / `or` chain, each giving
    exactly True or False. `compile_condition` runs them in one closure; `fn` is the generic form."""
    any_of: bool = False


def _const(value: Any, type_: str) -> Typed:
    return Typed(type_, lambda env: value, True, value)


def _kind(value: Any) -> str:
    """Runtime kind for equality: a bool is not a number, a number is not a string."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, Decimal):
        return NUMBER
    if isinstance(value, str):
        return STRING
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def field_value(value: Any) -> Any:
    """Custom/extended field values as the language sees them: integers become exact Decimals."""
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return value


def _eq(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b) and a == b


def _num(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    raise EvalError(f"not a number: {value!r}")


def _bool(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise EvalError(f"not a boolean: {value!r}")


def _compatible(a: str, b: str) -> bool:
    if a == b or ANY in (a, b) or NULL in (a, b):
        return True
    ea, eb = element_of(a), element_of(b)
    return ea is not None and eb is not None and _compatible(ea, eb)


class _Compiler:
    def __init__(self, schema: Schema, fast: bool = True) -> None:
        self.schema = schema
        self.used: set[str] = set()
        self.fast = fast
        """Whether to give bools their `parts` (off: only the generic closures, which tests compare with)."""

    def compile(self, node: Node) -> Typed:
        if isinstance(node, Literal):
            return _const(node.value, node.type)
        if isinstance(node, ListLiteral):
            return self.list_literal(node)
        if isinstance(node, Name):
            return self.name(node)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, Unary):
            return self.unary(node)
        if isinstance(node, Binary):
            if node.op in ("and", "or"):
                return self.logical(node)
            if node.op in ("in", "not in"):
                return self.membership(node)
            if node.op in _COMPARISONS:
                return self.comparison(node)
            return self.arithmetic(node)
        raise ExpressionError("unsupported expression", node.column)  # pragma: no cover

    # names ---------------------------------------------------------------------------------------
    def name(self, node: Name) -> Typed:
        dotted = node.dotted
        attr = self.schema.names.get(dotted)
        if attr is not None:
            self.used.add(dotted)
            return Typed(attr.type, attr.get, each=attr.each)
        prefix = ".".join(node.parts[:-1])
        if len(node.parts) > 1 and prefix in self.schema.maps:
            field = node.parts[-1]
            get_map = self.schema.maps[prefix]
            self.used.add(dotted)

            def get_field(env: Env) -> Any:
                fields = get_map(env)
                return None if fields is None else field_value(fields.get(field))

            return Typed(ANY, get_field)
        if dotted in self.schema.maps:
            raise ExpressionError(f"{dotted!r} needs a field name, e.g. '{dotted}.age_group'", node.column)
        if dotted in self.schema.functions or dotted in _BUILTINS:
            raise ExpressionError(f"{dotted!r} is a function: call it with (...)", node.column)
        raise ExpressionError(f"unknown name {dotted!r}", node.column, self.suggest(dotted))

    def suggest(self, dotted: str) -> str:
        close = difflib.get_close_matches(dotted, [*self.schema.names, *self.schema.maps], n=1, cutoff=0.8)
        if close:
            return f"did you mean {close[0]!r}?"
        prefix = dotted.rsplit(".", 1)[0]
        elsewhere = sorted(a for a, s in SCHEMAS.items() if dotted in s.names or prefix in s.maps)
        if elsewhere:
            return f"not available on {self.schema.activity} (only on {', '.join(elsewhere)})"
        return ""

    def call(self, node: Call) -> Typed:
        dotted = node.function.dotted
        args = [self.compile(a) for a in node.args]
        if dotted in _BUILTINS:
            return _BUILTINS[dotted](node, args)
        func = self.schema.functions.get(dotted)
        if func is None:
            raise ExpressionError(f"unknown function {dotted!r}", node.column, self.suggest_function(dotted))
        if len(args) != len(func.params):
            raise ExpressionError(
                f"{dotted}() takes {len(func.params)} argument(s), got {len(args)}", node.column
            )
        for param, arg, arg_node in zip(func.params, args, node.args, strict=True):
            if not _compatible(param, arg.type) or arg.type == NULL:
                raise ExpressionError(f"{dotted}() needs a {param} argument, got {arg.type}", arg_node.column)
        self.used.add(dotted)
        impl = func.impl
        fns = [a.fn for a in args]
        if len(fns) == 1:
            only = fns[0]
            return Typed(func.type, lambda env: impl(env, only(env)))
        return Typed(func.type, lambda env: impl(env, *(f(env) for f in fns)))

    def suggest_function(self, dotted: str) -> str:
        close = difflib.get_close_matches(dotted, [*self.schema.functions, *_BUILTINS], n=1)
        return f"did you mean {close[0]!r}?" if close else ""

    # operators -----------------------------------------------------------------------------------
    def list_literal(self, node: ListLiteral) -> Typed:
        items = [self.compile(i) for i in node.items]
        element = ANY
        types = {i.type for i in items if i.type != NULL}
        if len(types) > 1 and ANY not in types:
            raise ExpressionError(f"list elements must share one type, got {sorted(types)}", node.column)
        if len(types) == 1:
            element = types.pop()
        if all(i.const for i in items):
            value = [i.value for i in items]
            return Typed(list_of(element), lambda env: value, True, value)
        fns = [i.fn for i in items]
        return Typed(list_of(element), lambda env: [f(env) for f in fns])

    def unary(self, node: Unary) -> Typed:
        operand = self.compile(node.operand)
        fn = operand.fn
        if node.op == "not":
            self.require(operand, BOOL, "'not'", node.operand)
            if operand.type == BOOL:
                return Typed(BOOL, lambda env: not fn(env))
            return Typed(BOOL, lambda env: not _bool(fn(env)))
        self.require(operand, NUMBER, "unary '-'", node.operand)
        if operand.const:
            return _const(-operand.value, NUMBER)
        return Typed(NUMBER, lambda env: -_num(fn(env)))

    def require(self, typed: Typed, wanted: str, what: str, node: Node) -> None:
        if typed.type not in (wanted, ANY):
            raise ExpressionError(f"{what} needs a {wanted}, got {typed.type}", node.column)

    def logical(self, node: Binary) -> Typed:
        left, right = self.compile(node.left), self.compile(node.right)
        self.require(left, BOOL, f"'{node.op}'", node.left)
        self.require(right, BOOL, f"'{node.op}'", node.right)
        lf, rf = left.fn, right.fn
        fn: Fn
        if left.type == BOOL and right.type == BOOL and node.op == "and":
            fn = lambda env: lf(env) and rf(env)  # noqa: E731
        elif left.type == BOOL and right.type == BOOL:
            fn = lambda env: lf(env) or rf(env)  # noqa: E731
        elif node.op == "and":
            fn = lambda env: _bool(lf(env)) and _bool(rf(env))  # noqa: E731
        else:
            fn = lambda env: _bool(lf(env)) or _bool(rf(env))  # noqa: E731
        if not self.fast:
            return Typed(BOOL, fn)
        any_of = node.op == "or"
        return Typed(BOOL, fn, parts=(*_chained(left, any_of), *_chained(right, any_of)), any_of=any_of)

    def arithmetic(self, node: Binary) -> Typed:
        left, right = self.compile(node.left), self.compile(node.right)
        self.require(left, NUMBER, f"'{node.op}'", node.left)
        self.require(right, NUMBER, f"'{node.op}'", node.right)
        op = _ARITHMETIC[node.op]
        lf, rf = left.fn, right.fn
        if left.const and right.const:
            try:
                return _const(op(left.value, right.value), NUMBER)
            except EvalError as exc:
                raise ExpressionError(str(exc), node.column) from None
        if left.type == NUMBER and right.type == NUMBER:
            return Typed(NUMBER, lambda env: op(lf(env), rf(env)))
        return Typed(NUMBER, lambda env: op(_num(lf(env)), _num(rf(env))))

    def comparison(self, node: Binary) -> Typed:
        left, right = self.compile(node.left), self.compile(node.right)
        op = node.op
        lf, rf = left.fn, right.fn
        if not _compatible(left.type, right.type):
            raise ExpressionError(f"cannot compare {left.type} with {right.type} using {op!r}", node.column)
        if op in ("==", "!="):
            same = left.type == right.type and left.type in (NUMBER, STRING)
            if op == "==":
                if same:
                    fn: Fn = lambda env: lf(env) == rf(env)  # noqa: E731
                else:
                    fn = lambda env: _eq(lf(env), rf(env))  # noqa: E731
            elif same:
                fn = lambda env: lf(env) != rf(env)  # noqa: E731
            else:
                fn = lambda env: not _eq(lf(env), rf(env))  # noqa: E731
            if not self.fast or left.const or not right.const:
                return Typed(BOOL, fn)
            return Typed(BOOL, fn, parts=((lf, _equality_check(op, same, right.value)),))
        for side, typed in ((node.left, left), (node.right, right)):
            if typed.type not in (NUMBER, STRING, ANY):
                raise ExpressionError(f"{op!r} compares numbers or strings, got {typed.type}", side.column)
        order = _ORDERING[op]
        if left.type == NUMBER and right.type == NUMBER:
            if right.const:  # (`amount >= 1000`: the literal bound, not read through a call per evaluation)
                limit = right.value
                # Fast form `limit <= amount`: the same for two numbers (a NaN fails either way round).
                parts = ((lf, partial(_REFLECTED[op], limit)),) if self.fast and not left.const else ()
                return Typed(BOOL, lambda env: order(lf(env), limit), parts=parts)
            return Typed(BOOL, lambda env: order(lf(env), rf(env)))
        return Typed(BOOL, lambda env: _ordered(order, lf(env), rf(env)))

    def membership(self, node: Binary) -> Typed:
        left, right = self.compile(node.left), self.compile(node.right)
        element = element_of(right.type)
        if element is None and right.type != ANY:
            raise ExpressionError(f"'{node.op}' needs a list on the right, got {right.type}",
                                  node.right.column)
        if element is not None and not _compatible(left.type, element):
            raise ExpressionError(f"cannot look for a {left.type} in a {right.type}", node.column)
        lf, rf = left.fn, right.fn
        negate = node.op == "not in"
        if right.const and not (element or "").startswith("list["):
            keys = frozenset((_kind(v), v) for v in right.value)

            def member_const(env: Env) -> bool:
                value = lf(env)
                return ((_kind(value), value) in keys) != negate

            # A text (or number) name among literal texts (numbers) or nulls: its kind is its type's, so a
            # set of the plain values gives the same answer as the (kind, value) pairs, from C.
            kinds = {_kind(v) for v in right.value}
            if self.fast and not left.const and left.type in (NUMBER, STRING) and kinds <= {left.type, NULL}:
                plain = frozenset(right.value)
                check: Check = partial(_absent, plain) if negate else plain.__contains__
                return Typed(BOOL, member_const, parts=((lf, check),))
            return Typed(BOOL, member_const)

        if left.const and isinstance(left.value, str):
            text = left.value

            def member_text(env: Env) -> bool:
                """`member` for a literal text (`"fuel" in transaction.categories`): `_eq` holds only for an
                item of the same text (nothing but a text equals one), which is what `in` tests, with no
                Python call per item."""
                items = rf(env)
                if not isinstance(items, list | tuple):
                    raise EvalError(f"not a list: {items!r}")
                return (text in items) != negate

            if self.fast and right.each is not None:
                # `"fuel" in transaction.categories` as `"fuel" in map(category, line_items)`: no list and no
                # Python frame per item; a text never equals the None the list leaves out.
                records, field = right.each
                look: Check = partial(_lacks if negate else _has, text, field)
                return Typed(BOOL, member_text, parts=((records, look),))
            return Typed(BOOL, member_text)

        def member(env: Env) -> bool:
            items = rf(env)
            if not isinstance(items, list | tuple):
                raise EvalError(f"not a list: {items!r}")
            value = lf(env)
            return any(_eq(value, item) for item in items) != negate

        return Typed(BOOL, member)


def _ordered(order: Callable[[Any, Any], bool], a: Any, b: Any) -> bool:
    ka, kb = _kind(a), _kind(b)
    if ka != kb or ka not in (NUMBER, STRING):
        raise EvalError(f"cannot order {a!r} and {b!r}")
    return order(a, b)


def _chained(typed: Typed, any_of: bool) -> tuple[Test, ...]:
    """An operand of an `and` (`or`) as tests of that chain: its own (one test, or a chain of the same
    operator) or its generic closure; an `any` operand must give a bool, as `_bool` checks generically."""
    if typed.type != BOOL:
        return ((typed.fn, _bool),)
    if typed.parts and (len(typed.parts) == 1 or typed.any_of == any_of):
        return typed.parts
    return ((typed.fn, _IS_TRUE),)


def _ne(a: Any, b: Any) -> bool:
    return not _eq(a, b)


def _equality_check(op: str, same: bool, value: Any) -> Check:
    """`x == value` as a check of x: `value == x` when both sides are of one declared kind (texts and
    numbers compare the same either way round), `x is None` for null, else `_eq` (symmetric)."""
    if value is None:
        return partial(operator.is_ if op == "==" else operator.is_not, None)
    if same:
        return partial(operator.eq if op == "==" else operator.ne, value)
    return partial(_eq if op == "==" else _ne, value)


def _absent(values: frozenset[Any], value: Any) -> bool:
    return value not in values


def _has(text: str, field: Getter, records: Any) -> bool:
    return text in map(field, records)


def _lacks(text: str, field: Getter, records: Any) -> bool:
    return text not in map(field, records)


_IS_TRUE: Final = partial(operator.is_, True)


def _div(a: Decimal, b: Decimal) -> Decimal:
    if b == ZERO:
        raise EvalError("division by zero")
    return a / b


def _mod(a: Decimal, b: Decimal) -> Decimal:
    if b == ZERO:
        raise EvalError("modulo by zero")
    return a % b


_ARITHMETIC: dict[str, Callable[[Decimal, Decimal], Decimal]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _div,
    "%": _mod,
}
_REFLECTED: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.gt, "<=": operator.ge, ">": operator.lt, ">=": operator.le,
}
_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    # The operator module's functions (no Python frame per comparison): they only ever order numbers with
    # numbers and texts with texts (`_ordered` checks the kinds of `any` values), which give a bool.
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _numbers(name: str, node: Call, args: Sequence[Typed]) -> list[Fn]:
    for arg, arg_node in zip(args, node.args, strict=True):
        if arg.type not in (NUMBER, ANY):
            raise ExpressionError(f"{name}() needs number arguments, got {arg.type}", arg_node.column)
    return [a.fn for a in args]


def _min_max(name: str, pick: Callable[..., Decimal]) -> Callable[[Call, Sequence[Typed]], Typed]:
    def build(node: Call, args: Sequence[Typed]) -> Typed:
        if not args:
            raise ExpressionError(f"{name}() needs at least one argument", node.column)
        fns = _numbers(name, node, args)
        if all(a.const for a in args):
            return _const(pick(a.value for a in args), NUMBER)
        return Typed(NUMBER, lambda env: pick(_num(f(env)) for f in fns))

    return build


def _abs(node: Call, args: Sequence[Typed]) -> Typed:
    if len(args) != 1:
        raise ExpressionError(f"abs() takes 1 argument, got {len(args)}", node.column)
    (fn,) = _numbers("abs", node, args)
    if args[0].const:
        return _const(abs(args[0].value), NUMBER)
    return Typed(NUMBER, lambda env: abs(_num(fn(env))))


_BUILTINS: dict[str, Callable[[Call, Sequence[Typed]], Typed]] = {
    "min": _min_max("min", min),
    "max": _min_max("max", max),
    "abs": _abs,
}


# Public API -------------------------------------------------------------------------------------------------

Predicate = Callable[[Env], bool]


def _always(env: Env) -> bool:
    return True


def _never(env: Env) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    source: str
    holds: Predicate
    names: frozenset[str]
    """Schema names the condition reads (introspection, docs)."""


def compile_condition(text: str, activity: str, fast: bool = True) -> CompiledCondition:
    """Parse, type-check and compile a rule condition for `activity`; raises ExpressionError.

    `fast` (the default) runs a condition made of tests (see `Test`) in one closure; False keeps the
    generic closures (tests compare the two)."""
    schema = SCHEMAS.get(activity)
    if schema is None:
        raise ExpressionError(f"no expression schema for activity {activity!r}", 1)
    node = parse(text)
    compiler = _Compiler(schema, fast)
    typed = compiler.compile(node)
    if typed.type not in (BOOL, ANY):
        raise ExpressionError(f"a condition must be true or false, this is a {typed.type}", node.column)
    names = frozenset(compiler.used)
    if typed.const:
        return CompiledCondition(text, _always if typed.value is True else _never, names)
    if typed.parts:
        return CompiledCondition(text, _holds(typed.parts, typed.any_of), names)
    fn = typed.fn

    def holds(env: Env) -> bool:
        try:
            return fn(env) is True
        except (EvalError, ArithmeticError):
            return False

    return CompiledCondition(text, holds, names)


def _holds(parts: tuple[Test, ...], any_of: bool) -> Predicate:
    """One closure for the whole condition (each test gives exactly True or False): what the generic
    closures compute, with a Python frame per condition instead of several per name and operator."""
    if len(parts) == 1:
        ((get, check),) = parts

        def holds(env: Env) -> bool:
            try:
                return check(get(env)) is True
            except (EvalError, ArithmeticError):
                return False

    elif any_of:
        def holds(env: Env) -> bool:
            try:
                for get, check in parts:  # noqa: SIM110 (any() would add a generator frame)
                    if check(get(env)) is True:
                        return True
                return False
            except (EvalError, ArithmeticError):
                return False

    else:
        def holds(env: Env) -> bool:
            try:
                for get, check in parts:  # noqa: SIM110 (all() would add a generator frame)
                    if check(get(env)) is not True:
                        return False
                return True
            except (EvalError, ArithmeticError):
                return False

    return holds


def evaluate(text: str, activity: str, env: Env) -> bool:
    """Compile and evaluate once (tools, tests); the engine uses precompiled conditions."""
    return compile_condition(text, activity).holds(env)


# Schemas --------------------------------------------------------------------------------------------------

def _dec(value: int) -> Decimal:
    return Decimal(value)


def _days(value: Any) -> int:
    days = _num(value)
    if days != days.to_integral_value() or days < 1 or days > 3660:
        raise EvalError(f"points_redeemed_in_past_days needs whole days 1-3660, got {days}")
    return int(days)


def _customer() -> tuple[dict[str, Attr], dict[str, Getter], dict[str, Func]]:
    def redeemed(period: periods.Period) -> Getter:
        return lambda env: periods.points_redeemed_in(env.state, env.at, period, env.program.zone)

    names = {
        "customer.tier": Attr(STRING, lambda env: env.state.tier or env.program.lowest_tier),
        "customer.lifetime_points": Attr(NUMBER, attrgetter("state.lifetime_earned")),
        "customer.lifetime_purchases": Attr(NUMBER, attrgetter("state.lifetime_purchases")),
        "customer.purchase_count": Attr(NUMBER, lambda env: Decimal(env.state.purchase_count)),
        "customer.current_points": Attr(NUMBER, attrgetter("state.current")),
        "customer.promised_points": Attr(NUMBER, attrgetter("state.promised")),
        "customer.points_redeemed_today": Attr(NUMBER, redeemed("day")),
        "customer.points_redeemed_in_calendar_week": Attr(NUMBER, redeemed("calendar_week")),
        "customer.points_redeemed_in_calendar_month": Attr(NUMBER, redeemed("calendar_month")),
        "customer.registered": Attr(BOOL, lambda env: env.state.registered_at is not None),
        "event.type": Attr(STRING, attrgetter("activity_name")),
        "event.date": Attr(STRING, lambda env: env.local.date().isoformat()),
        "event.hour": Attr(NUMBER, lambda env: _dec(env.local.hour)),
        "event.weekday": Attr(NUMBER, lambda env: _dec(env.local.isoweekday())),
        "event.day": Attr(NUMBER, lambda env: _dec(env.local.day)),
        "event.month": Attr(NUMBER, lambda env: _dec(env.local.month)),
    }
    # The vendor document's spelling of the redemption-limit expressions.
    for alias, name in (
        ("currentCustomer.pointsRedeemedToday", "customer.points_redeemed_today"),
        ("currentCustomer.pointsRedeemedInCalendarWeek", "customer.points_redeemed_in_calendar_week"),
        ("currentCustomer.pointsRedeemedInCalendarMonth", "customer.points_redeemed_in_calendar_month"),
    ):
        names[alias] = names[name]
    maps: dict[str, Getter] = {
        "customer.custom_fields": attrgetter("state.custom_fields"),
        "customer.extended_fields": attrgetter("state.extended_fields"),
    }
    past_days = Func(
        (NUMBER,), NUMBER, lambda env, n: periods.points_redeemed_past_days(env.state, env.at, _days(n))
    )
    functions = {
        "customer.points_redeemed_in_past_days": past_days,
        "currentCustomer.pointsRedeemedInPastDays": past_days,
    }
    return names, maps, functions


def _tender_amount(env: Env, mode: Any) -> Decimal:
    return sum((t.amount for t in env.activity.payload.tenders if t.mode == mode), ZERO)


def _payload(field: str) -> Getter:
    """`env.activity.payload.<field>` read from C (no Python frame)."""
    return attrgetter(f"activity.payload.{field}")


def _transaction() -> tuple[dict[str, Attr], dict[str, Getter], dict[str, Func]]:
    items, tenders = _payload("line_items"), _payload("tenders")
    count = Attr(NUMBER, lambda env: Decimal(len(env.activity.payload.line_items)))
    names = {
        "transaction.amount": Attr(NUMBER, _payload("amount")),
        "transaction.bill_number": Attr(STRING, _payload("bill_number")),
        "transaction.channel": Attr(STRING, _payload("channel")),
        "transaction.store": Attr(STRING, _payload("store")),
        "transaction.line_item_count": count,
        "line_item_count": count,
        "transaction.total_quantity": Attr(
            NUMBER, lambda env: sum((i.quantity for i in env.activity.payload.line_items), ZERO)
        ),
        "transaction.skus": Attr(
            LIST_STRING, lambda env: [i.sku for i in env.activity.payload.line_items],
            (items, attrgetter("sku")),
        ),
        "transaction.categories": Attr(
            LIST_STRING,
            lambda env: [i.category for i in env.activity.payload.line_items if i.category is not None],
            (items, attrgetter("category")),
        ),
        "transaction.tender_modes": Attr(
            LIST_STRING, lambda env: [t.mode for t in env.activity.payload.tenders], (tenders, attrgetter("mode"))
        ),
    }
    maps: dict[str, Getter] = {
        "transaction.custom_fields": _payload("custom_fields"),
        "transaction.extended_fields": _payload("extended_fields"),
    }
    functions = {"transaction.tender_amount": Func((STRING,), NUMBER, _tender_amount)}
    return names, maps, functions


def _payload_maps(prefix: str, *fields: str) -> dict[str, Getter]:
    return {f"{prefix}.{field}": _payload(field) for field in fields}


def _build_schemas() -> dict[str, Schema]:
    base_names, base_maps, base_functions = _customer()
    tx_names, tx_maps, tx_functions = _transaction()
    per_activity: dict[str, tuple[dict[str, Attr], dict[str, Getter], dict[str, Func]]] = {
        "TransactionAdd": (tx_names, tx_maps, tx_functions),
        "Registration": (
            {"registration.tier": Attr(STRING, _payload("tier"))},
            _payload_maps("registration", "custom_fields", "extended_fields"),
            {},
        ),
        "CustomerUpdate": ({}, _payload_maps("update", "custom_fields", "extended_fields"), {}),
        "Engagement": (
            {
                "engagement.event_name": Attr(STRING, _payload("event_name")),
                "engagement.category": Attr(
                    STRING, lambda env: CATEGORY_OF.get(env.activity.payload.event_name)
                ),
                "engagement.count": Attr(NUMBER, lambda env: Decimal(env.activity.payload.count)),
            },
            _payload_maps("engagement", "attributes"),
            {},
        ),
        "PointsRedemption": (
            {
                "redemption.points": Attr(NUMBER, _payload("points")),
                "redemption.bill_number": Attr(STRING, _payload("bill_number")),
            },
            {},
            {},
        ),
        "DelayedAccrual": (
            {"accrual.points": Attr(NUMBER, lambda env: getattr(env.activity, "points", ZERO))},
            {},
            {},
        ),
        "TierChange": (
            {
                "tier_change.from_tier": Attr(STRING, attrgetter("activity.from_tier")),
                "tier_change.to_tier": Attr(STRING, attrgetter("activity.to_tier")),
                "tier_change.reason": Attr(STRING, attrgetter("activity.reason")),
            },
            {},
            {},
        ),
    }
    return {
        activity: Schema(
            activity, {**base_names, **names}, {**base_maps, **maps}, {**base_functions, **functions}
        )
        for activity, (names, maps, functions) in per_activity.items()
    }


SCHEMAS: Mapping[str, Schema] = _build_schemas()
"""Names per activity: every condition is type-checked against its activity's schema at load."""
