"""Container modules: `Sequential` (a chain) and `ModuleList` (an indexable list)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from transfuse.ir.errors import TransfuseIndexError, TransfuseTypeError

from .module import Module


def _checked_index(index: Any, length: int, owner: str) -> int:
    """index as a non-negative position in a container of `length` modules."""
    if not isinstance(index, int):
        raise TransfuseTypeError(
            f"{owner} indices must be integers or slices, got {type(index).__name__}")
    if not -length <= index < length:
        raise TransfuseIndexError(f"index {index} is out of range for {owner} of length {length}")
    return index % length


class Sequential(Module):
    """Modules applied one after another; children are named '0', '1', ... (or by the keys
    of a dict passed as the only argument)."""

    def __init__(self, *args: Module | dict[str, Module]):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], dict):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(args):
                self.add_module(str(index), module)

    def _items(self) -> list[tuple[str, Module]]:
        return list(self._modules.items())

    def __getitem__(self, index: int | slice) -> Module:
        items = self._items()
        if isinstance(index, slice):
            return Sequential(dict(items[index]))
        return items[_checked_index(index, len(items), "Sequential")][1]

    def __setitem__(self, index: int, module: Module) -> None:
        name = self._items()[_checked_index(index, len(self), "Sequential")][0]
        setattr(self, name, module)

    def __delitem__(self, index: int) -> None:
        name = self._items()[_checked_index(index, len(self), "Sequential")][0]
        del self._modules[name]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        """Add module at the end; returns self."""
        self.add_module(str(len(self)), module)
        return self

    def forward(self, input: Any) -> Any:
        """Pass input through every module in order."""
        for module in self:
            input = module(input)
        return input


class ModuleList(Module):
    """A list of modules, registered as children '0', '1', ...; it has no forward."""

    def __init__(self, modules: Iterable[Module] | None = None):
        super().__init__()
        for module in modules or ():
            self.append(module)

    def __getitem__(self, index: int | slice) -> Module | ModuleList:
        values = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(values[index])
        return values[_checked_index(index, len(values), "ModuleList")]

    def __setitem__(self, index: int, module: Module) -> None:
        setattr(self, str(_checked_index(index, len(self), "ModuleList")), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> ModuleList:
        """Add module at the end; returns self."""
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        """Append every module of `modules`; returns self."""
        for module in modules:
            self.append(module)
        return self
