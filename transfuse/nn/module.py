"""`Module`: parameters, buffers and submodules registered by attribute, as in torch.nn."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from transfuse.ir.errors import TransfuseError, TransfuseTypeError, TransfuseValueError

from .parameter import Parameter, is_array

_REGISTRIES = ("_parameters", "_buffers", "_modules")


class TransfuseAttributeError(TransfuseError, AttributeError):
    """A module attribute, submodule, parameter or buffer that does not exist."""


class MissingForwardError(TransfuseError, NotImplementedError):
    """A module called without a `forward` method."""


class IncompatibleKeys(NamedTuple):
    """What `load_state_dict` did not match: keys the module has and the dict lacks, and back."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def join_name(prefix: str, name: str) -> str:
    """The dotted name of `name` inside the submodule called `prefix`."""
    return f"{prefix}.{name}" if prefix else name


def _add_indent(text: str, spaces: int) -> str:
    """Indent every line of text but the first (torch's repr layout)."""
    first, *rest = text.split("\n")
    if not rest:
        return text
    return first + "\n" + "\n".join(" " * spaces + line for line in rest)


class Module:
    """Base class of layers and models: holds parameters, buffers and submodules.

    Assigning a `Parameter` to an attribute registers a parameter, a `Module` registers a
    submodule, and `register_buffer` registers a buffer (state that is not trained, such as
    batch-norm running statistics). Attribute access returns the plain arrays.
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", {})

    # -- calling --------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation of the module; subclasses define it."""
        raise MissingForwardError(
            f"{self._get_name()} has no forward(): define `forward(self, ...)` in the "
            "subclass; calling the module calls it")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def _get_name(self) -> str:
        return type(self).__name__

    # -- registration ---------------------------------------------------------------------
    def _check_initialised(self, what: str) -> None:
        if "_parameters" not in self.__dict__:
            raise TransfuseTypeError(
                f"cannot assign {what} before Module.__init__() has run: call "
                f"super().__init__() first in {self._get_name()}.__init__")

    def _check_new_name(self, name: Any, kind: str, registry: str) -> None:
        if not isinstance(name, str):
            raise TransfuseTypeError(f"{kind} name should be a str, got {type(name).__name__}")
        if name == "" or "." in name:
            raise TransfuseValueError(
                f"{kind} name {name!r} is not allowed: it must be non-empty and contain no '.'")
        if hasattr(self, name) and name not in self.__dict__[registry]:
            raise TransfuseValueError(
                f"cannot register {kind} {name!r} on {self._get_name()}: an attribute with "
                "that name already exists")

    def register_parameter(self, name: str, param: Parameter | Any | None) -> None:
        """Register `param` (a `Parameter`, a plain array, or None) as parameter `name`."""
        self._check_initialised("parameters")
        self._check_new_name(name, "parameter", "_parameters")
        self._parameters[name] = _unwrap(param, name, "parameter")

    def register_buffer(self, name: str, tensor: Any | None, persistent: bool = True) -> None:
        """Register array `tensor` (or None) as buffer `name` (in `state_dict` if persistent)."""
        self._check_initialised("buffers")
        self._check_new_name(name, "buffer", "_buffers")
        if isinstance(tensor, Parameter):
            raise TransfuseTypeError(
                f"buffer {name!r} was given a Parameter; pass the plain array or use "
                "register_parameter")
        self._buffers[name] = _unwrap(tensor, name, "buffer")
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Register `module` (or None) as the submodule called `name`."""
        self._check_initialised("submodules")
        if module is not None and not isinstance(module, Module):
            raise TransfuseTypeError(
                f"submodule {name!r} must be a transfuse.nn.Module or None, got "
                f"{type(module).__name__}")
        self._check_new_name(name, "submodule", "_modules")
        self._modules[name] = module

    register_module = add_module

    def _forget(self, name: str) -> None:
        """Remove name from every registry and from the plain attributes."""
        for registry in _REGISTRIES:
            self.__dict__[registry].pop(name, None)
        self._non_persistent_buffers.discard(name)
        self.__dict__.pop(name, None)

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, (Parameter, Module)):
            self._check_initialised("parameters or submodules")
            registry, stored = ((self._parameters, value.data) if isinstance(value, Parameter)
                                else (self._modules, value))
            if name not in registry:  # replacing in place keeps the registration order
                self._forget(name)
            registry[name] = stored
            return
        registries = {key: self.__dict__.get(key) or {} for key in _REGISTRIES}
        if name in registries["_parameters"]:
            self._parameters[name] = _unwrap(value, name, "parameter")
        elif name in registries["_buffers"]:
            self._buffers[name] = _unwrap(value, name, "buffer")
        elif name in registries["_modules"]:
            if value is not None:
                raise TransfuseTypeError(
                    f"cannot assign a {type(value).__name__} to submodule {name!r} of "
                    f"{self._get_name()} (a transfuse.nn.Module or None expected)")
            self._modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails; reads __dict__ directly so that copy and
        # pickle (which probe attributes before __init__ state exists) do not recurse.
        for key in _REGISTRIES:
            registry = self.__dict__.get(key)
            if registry is not None and name in registry:
                return registry[name]
        raise TransfuseAttributeError(f"'{self._get_name()}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for key in _REGISTRIES:
            if name in self.__dict__.get(key, {}):
                del self.__dict__[key][name]
                self._non_persistent_buffers.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self) -> list[str]:
        names = set(super().__dir__())
        for key in _REGISTRIES:
            names.update(self.__dict__.get(key, {}))
        return sorted(names)

    # -- traversal ------------------------------------------------------------------------
    def named_modules(self, prefix: str = "", remove_duplicate: bool = True
                      ) -> Iterator[tuple[str, Module]]:
        """This module and every submodule, depth first, with dotted names."""
        yield from self._named_modules(set(), prefix, remove_duplicate)

    def _named_modules(self, seen: set[int], prefix: str, remove_duplicate: bool
                       ) -> Iterator[tuple[str, Module]]:
        if id(self) in seen:
            return
        if remove_duplicate:
            seen.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module._named_modules(seen, join_name(prefix, name), remove_duplicate)

    def modules(self) -> Iterator[Module]:
        """This module and every submodule."""
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """The direct submodules with their names (each module once)."""
        seen: set[int] = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator[Module]:
        """The direct submodules."""
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry: str, prefix: str, recurse: bool,
                       remove_duplicate: bool) -> Iterator[tuple[str, Any]]:
        seen: set[int] = set()
        modules = (self.named_modules(prefix, remove_duplicate) if recurse
                   else [(prefix, self)])
        for module_prefix, module in modules:
            for name, value in module.__dict__[registry].items():
                if value is None or id(value) in seen:
                    continue
                if remove_duplicate:
                    seen.add(id(value))
                yield join_name(module_prefix, name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Any]]:
        """(dotted name, array) of every parameter; a tied array is listed once."""
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Any]:
        """Every parameter array (each object once)."""
        for _, value in self.named_parameters(recurse=recurse):
            yield value

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Any]]:
        """(dotted name, array) of every buffer that is not None."""
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Any]:
        """Every buffer array (each object once)."""
        for _, value in self.named_buffers(recurse=recurse):
            yield value

    def get_submodule(self, target: str) -> Module:
        """The submodule with dotted name `target` ('' is this module)."""
        module = self
        for item in target.split(".") if target else []:
            child = module._modules.get(item)
            if child is None:
                raise TransfuseAttributeError(
                    f"{module._get_name()} has no submodule {item!r} (looking up {target!r})")
            module = child
        return module

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call fn on every submodule (children first) and on this module; returns self."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # -- state ----------------------------------------------------------------------------
    def state_dict(self, *, destination: dict[str, Any] | None = None, prefix: str = ""
                   ) -> dict[str, Any]:
        """Parameters and persistent buffers by dotted name (the module's own arrays)."""
        destination = {} if destination is None else destination
        for name, value in self._parameters.items():
            if value is not None:
                destination[prefix + name] = value
        for name, value in self._buffers.items():
            if value is not None and name not in self._non_persistent_buffers:
                destination[prefix + name] = value
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination=destination, prefix=f"{prefix}{name}.")
        return destination

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True,
                        assign: bool = False) -> IncompatibleKeys:
        """Copy state_dict's values into the module's arrays in place (or make them the
        module's arrays, with assign=True); on any error nothing is changed."""
        expected = self.state_dict()
        missing = [key for key in expected if key not in state_dict]
        unexpected = [key for key in state_dict if key not in expected]
        errors = _size_mismatches(expected, state_dict)
        if strict:
            if unexpected:
                errors.append(f"Unexpected key(s) in state_dict: {_quoted(unexpected)}.")
            if missing:
                errors.append(f"Missing key(s) in state_dict: {_quoted(missing)}.")
        if errors:
            raise TransfuseValueError(
                f"Error(s) in loading state_dict for {self._get_name()}:\n\t"
                + "\n\t".join(errors))
        if assign:
            self._assign_state(state_dict, expected)
        else:
            for key, target in expected.items():
                if key in state_dict:
                    target[...] = np.asarray(state_dict[key])
        return IncompatibleKeys(missing, unexpected)

    def _assign_state(self, state_dict: dict[str, Any], expected: dict[str, Any]) -> None:
        converted: dict[int, Any] = {}  # one array per source object keeps ties
        for key in expected:
            if key not in state_dict:
                continue
            value = state_dict[key]
            if id(value) not in converted:
                converted[id(value)] = value if is_array(value) else np.asarray(value)
            prefix, _, leaf = key.rpartition(".")
            owner = self.get_submodule(prefix)
            registry = "_parameters" if leaf in owner._parameters else "_buffers"
            owner.__dict__[registry][leaf] = converted[id(value)]

    # -- modes and dtypes -----------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and every submodule; returns self."""
        if not isinstance(mode, bool):
            raise TransfuseTypeError(f"train(mode): mode must be a bool, got {mode!r}")
        self.training = mode
        for module in self.children():
            module.train(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (`train(False)`); returns self."""
        return self.train(False)

    def to(self, dtype: Any) -> Module:
        """Cast floating-point parameters and buffers to `dtype` (ties kept); returns self."""
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.floating):
            raise TransfuseTypeError(
                f"Module.to only accepts floating-point dtypes, got {dtype}")
        converted: dict[int, tuple[Any, Any]] = {}  # id -> (old, new); old kept alive
        for module in self.modules():
            for key in ("_parameters", "_buffers"):
                registry = module.__dict__[key]
                for name, value in registry.items():
                    if value is None or not np.issubdtype(value.dtype, np.floating):
                        continue
                    if id(value) not in converted:
                        converted[id(value)] = (value, value.astype(dtype))
                    registry[name] = converted[id(value)][1]
        return self

    def float(self) -> Module:
        """Cast floating-point parameters and buffers to float32; returns self."""
        return self.to(np.float32)

    def double(self) -> Module:
        """Cast floating-point parameters and buffers to float64; returns self."""
        return self.to(np.float64)

    # -- printing -------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The layer's settings, shown inside its repr; subclasses override it."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): {_add_indent(repr(module), 2)}"
                       for name, module in self._modules.items()]
        lines = extra_lines + child_lines
        body = ""
        if len(extra_lines) == 1 and not child_lines:
            body = extra_lines[0]
        elif lines:
            body = "\n  " + "\n  ".join(lines) + "\n"
        return f"{self._get_name()}({body})"


def _unwrap(value: Any, name: str, kind: str) -> Any:
    """The plain array (or None) to store for a parameter or buffer."""
    if isinstance(value, Parameter):
        return value.data
    if value is None or is_array(value):
        return value
    raise TransfuseTypeError(
        f"cannot use a {type(value).__name__} as {kind} {name!r}: an array (or None) is "
        "expected")


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _size_mismatches(expected: dict[str, Any], state_dict: dict[str, Any]) -> list[str]:
    """One message per key whose shape differs between the module and state_dict."""
    errors = []
    for key, target in expected.items():
        if key not in state_dict:
            continue
        shape = tuple(np.shape(state_dict[key]))
        if shape != tuple(target.shape):
            errors.append(
                f"size mismatch for {key}: copying a param with shape {shape} from "
                f"checkpoint, the shape in current model is {tuple(target.shape)}.")
    return errors
