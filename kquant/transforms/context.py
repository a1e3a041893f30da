"""What a transform sees besides the graph: the graph's inputs and outputs and its own arguments, read through typed getters."""

from __future__ import annotations

import dataclasses

from kquant.errors import TransformError
from kquant.transforms.parse import TransformSpec

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


@dataclasses.dataclass(frozen=True)
class TransformContext:
    """Input and output node names of the graph, and the arguments of one transform."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    spec: TransformSpec = TransformSpec("transform")

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def protected(self) -> frozenset[str]:
        """The graph's input and output nodes: a transform keeps them, with their names and shapes."""
        return frozenset(self.inputs) | frozenset(self.outputs)

    def get(self, key: str) -> list[str]:
        """Every value given for ``key`` (an argument may repeat: ``remove_nodes(op=A, op=B)``)."""
        return self.spec.param_dict.get(key, [])

    def get_one(self, key: str, default: str | None = None) -> str | None:
        values = self.get(key)
        if len(values) > 1:
            raise TransformError(f"{self.name} takes one '{key}' argument, got {len(values)}: {self.name}({key}=...)")
        return values[0] if values else default

    def get_one_string(self, key: str, default: str = "") -> str:
        return self.get_one(key, default)

    def get_one_int(self, key: str, default: int) -> int:
        return self._convert(key, default, int, "an integer")

    def get_one_float(self, key: str, default: float) -> float:
        return self._convert(key, default, float, "a number")

    def get_one_bool(self, key: str, default: bool) -> bool:
        value = self.get_one(key)
        if value is None:
            return default
        if value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise TransformError(f"{self.name}: '{key}' must be true or false, got '{value}'; write {self.name}({key}={str(default).lower()})")

    def _convert(self, key, default, kind, what):
        value = self.get_one(key)
        if value is None:
            return default
        try:
            return kind(value)
        except ValueError:
            raise TransformError(f"{self.name}: '{key}' must be {what}, got '{value}'; write {self.name}({key}={default})") from None
