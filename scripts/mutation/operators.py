"""Mutation operators: a curated set of cosmic-ray's core operators plus three of our own.

cosmic-ray replaces every binary operator with every other one (``+`` with 11 others) and
every comparison with every other one, which floods a module with mutants that any test
kills (``+`` → ``@``). The default set keeps the classic informative ones:

- arithmetic: ``+``↔``-``, ``*``↔``/``, ``//``→``/``, ``%``→``//``, ``**``→``*``,
  ``<<``↔``>>``, ``&``↔``|``, ``^``→``|``;
- comparisons: the boundary (``<``↔``<=``, ``>``↔``>=``) and the negation of each
  (``<``→``>=``, ``==``↔``!=``, ``is``↔``is not``; cosmic-ray has no ``in`` operator);
- unary: ``-x``→``+x``, drop ``not`` / ``-`` / ``~``;
- ``True``↔``False``, ``and``↔``or``, ``not`` added to conditions, numbers ± 1, loops made
  to run zero times, ``break``↔``continue``, except clauses that catch nothing,
  decorators removed;
- ours: a condition replaced by ``True`` / by ``False`` (``if x is None:`` → ``if True:``),
  and ``raise …`` replaced by ``pass``.

``--all-operators`` uses every cosmic-ray core operator instead (plus ours).
"""

from __future__ import annotations

import parso
import parso.python.tree as pt
from cosmic_ray.operators.operator import Example, Operator
from cosmic_ray.plugins import get_operator, operator_names

_BINARY = {
    "Add": ["Sub"], "Sub": ["Add"], "Mul": ["Div"], "Div": ["Mul"], "FloorDiv": ["Div"],
    "Mod": ["FloorDiv"], "Pow": ["Mul"], "LShift": ["RShift"], "RShift": ["LShift"],
    "BitAnd": ["BitOr"], "BitOr": ["BitAnd"], "BitXor": ["BitOr"],
}
_COMPARE = {
    "Lt": ["LtE", "GtE"], "LtE": ["Lt", "Gt"], "Gt": ["GtE", "LtE"], "GtE": ["Gt", "Lt"],
    "Eq": ["NotEq"], "NotEq": ["Eq"], "Is": ["IsNot"], "IsNot": ["Is"], "In": ["NotIn"], "NotIn": ["In"],
}
_UNARY = ["USub_UAdd", "Delete_Not", "Delete_USub", "Delete_Invert"]
_SIMPLE = [
    "AddNot", "ReplaceTrueWithFalse", "ReplaceFalseWithTrue", "ReplaceAndWithOr", "ReplaceOrWithAnd",
    "ReplaceBreakWithContinue", "ReplaceContinueWithBreak", "ExceptionReplacer", "NumberReplacer",
    "RemoveDecorator", "ZeroIterationForLoop",
]


def _conditions(node):
    """The test expressions of an if/elif/while statement or a conditional expression."""
    if isinstance(node, (pt.IfStmt, pt.WhileStmt)):
        kids = node.children
        return [i + 1 for i, k in enumerate(kids) if isinstance(k, pt.Keyword) and k.value in ("if", "elif", "while")]
    if isinstance(node, pt.PythonNode) and node.type == "test":  # a if cond else b
        return [2]
    return []


class _ReplaceCondition(Operator):
    value = "True"

    def mutation_positions(self, node):
        for i in _conditions(node):
            expr = node.children[i]
            if expr.get_code().strip() != self.value:  # "while True:" stays as it is
                yield (expr.start_pos, expr.end_pos)

    def mutate(self, node, index):
        i = [j for j in _conditions(node) if node.children[j].get_code().strip() != self.value][index]
        prefix = node.children[i].get_first_leaf().prefix
        node.children[i] = parso.parse(f"{prefix}{self.value}")
        return node

    @classmethod
    def examples(cls):
        return (Example("if x: pass", f"if {cls.value}: pass"),)


class ConditionTrue(_ReplaceCondition):
    value = "True"


class ConditionFalse(_ReplaceCondition):
    value = "False"


class RaiseToPass(Operator):
    """``raise X`` → ``pass`` (the refusal silently dropped)."""

    def mutation_positions(self, node):
        if node.type == "raise_stmt" or (isinstance(node, pt.Keyword) and node.value == "raise"
                                         and node.parent is not None and node.parent.type != "raise_stmt"):
            yield (node.start_pos, node.end_pos)

    def mutate(self, node, index):
        prefix = node.get_first_leaf().prefix
        return parso.parse(f"{prefix}pass")

    @classmethod
    def examples(cls):
        return (Example("raise ValueError('x')", "pass"),)


OURS = {"hedui/ConditionTrue": ConditionTrue, "hedui/ConditionFalse": ConditionFalse, "hedui/RaiseToPass": RaiseToPass}


def default_operator_names() -> list[str]:
    names = set(operator_names())
    out = []
    for a, bs in _BINARY.items():
        out += [f"core/ReplaceBinaryOperator_{a}_{b}" for b in bs]
    for a, bs in _COMPARE.items():
        out += [f"core/ReplaceComparisonOperator_{a}_{b}" for b in bs]
    out += [f"core/ReplaceUnaryOperator_{u}" for u in _UNARY]
    out += [f"core/{s}" for s in _SIMPLE]
    return [n for n in out if n in names]


def operators(all_operators: bool = False) -> list[tuple[str, Operator]]:
    """(name, instance) for every operator of the run; operators that need arguments
    (VariableReplacer, VariableInserter) are left out."""
    names = list(operator_names()) if all_operators else default_operator_names()
    out = []
    for n in names:
        cls = get_operator(n)
        if cls.arguments():
            continue
        out.append((n, cls()))
    out += [(n, c()) for n, c in OURS.items()]
    return out
