"""torch.func's module utilities: functional_call, stack_module_state,
replace_all_batch_norm_modules_."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import transfuse.numpy as tnp
from transfuse.ir.errors import TransfuseTypeError, TransfuseValueError

from .module import Module, TransfuseAttributeError
from .normalization import _BatchNorm
from .parameter import Parameter, is_array

__all__ = ["functional_call", "stack_module_state", "replace_all_batch_norm_modules_"]


def functional_call(module: Module, parameter_and_buffer_dicts: Any, args: Any = None,
                    kwargs: dict[str, Any] | None = None, *, tie_weights: bool = True,
                    strict: bool = False) -> Any:
    """Call `module` with some or all of its parameters and buffers replaced by the arrays
    in `parameter_and_buffer_dicts` (a dict, or a tuple/list of dicts, keyed by dotted name).

    Names not given keep the module's own arrays. With `tie_weights`, a value given for one of
    several names that share one array in the module is used for all of them. With `strict`,
    the keys must be exactly the module's parameter and buffer names. The module is restored
    afterwards, also when the call raises; in-place updates made by the call (batch-norm
    running statistics) land in the arrays passed in, and an attribute the call rebinds is
    written back to the dict that supplied it.
    """
    _check_module(module, "functional_call")
    sources = _as_dict_list(parameter_and_buffer_dicts)
    values = _merge(sources)
    if tie_weights:
        values = _untie(module, values)
    if strict:
        _check_strict(module, values)
    args = () if args is None else args if isinstance(args, tuple) else (args,)
    with _substituted(module, values) as final:
        result = module(*args, **(kwargs or {}))
    _write_back(sources, final)
    return result


def _check_module(module: Any, name: str) -> None:
    if not isinstance(module, Module):
        raise TransfuseTypeError(
            f"{name}: expected a transfuse.nn.Module, got {type(module).__name__}")


def _as_dict_list(dicts: Any) -> list[dict[str, Any]]:
    if isinstance(dicts, dict):
        return [dicts]
    if isinstance(dicts, (tuple, list)) and all(isinstance(d, dict) for d in dicts):
        return list(dicts)
    raise TransfuseTypeError(
        "functional_call: parameter_and_buffer_dicts must be a dict or a tuple/list of dicts "
        f"(name -> array), got {type(dicts).__name__}")


def _merge(sources: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    repeated: set[str] = set()
    for source in sources:
        for key, value in source.items():
            if key in merged:
                repeated.add(key)
            merged[key] = value.data if isinstance(value, Parameter) else value
    if repeated:
        raise TransfuseValueError(
            f"functional_call: {sorted(repeated)} appeared in more than one dictionary; which "
            "value to use is ambiguous")
    for key, value in merged.items():
        if not is_array(value):
            raise TransfuseTypeError(
                f"functional_call: the value for {key!r} must be an array, got "
                f"{type(value).__name__}")
    return merged


def _all_named_arrays(module: Module) -> dict[str, Any]:
    """Every parameter and buffer name (tied names included) -> its array."""
    named = dict(module.named_parameters(remove_duplicate=False))
    named.update(module.named_buffers(remove_duplicate=False))
    return named


def _untie(module: Module, values: dict[str, Any]) -> dict[str, Any]:
    """values extended so that every name tied to a given name gets the given value."""
    groups: dict[int, list[str]] = {}
    for name, array in _all_named_arrays(module).items():
        groups.setdefault(id(array), []).append(name)
    untied = dict(values)
    for names in groups.values():
        given = [name for name in names if name in values]
        if len(names) < 2 or not given:
            continue
        if len({id(values[name]) for name in given}) > 1:
            raise TransfuseValueError(
                f"functional_call got different values for the tied names {sorted(names)}; "
                "pass one of them, the same array for all, or use tie_weights=False")
        untied.update({name: values[given[0]] for name in names})
    return untied


def _check_strict(module: Module, values: dict[str, Any]) -> None:
    expected = set(_all_named_arrays(module))
    missing, unexpected = sorted(expected - set(values)), sorted(set(values) - expected)
    problems = []
    if unexpected:
        problems.append(f"Unexpected key(s): {', '.join(map(repr, unexpected))}.")
    if missing:
        problems.append(f"Missing key(s): {', '.join(map(repr, missing))}.")
    if problems:
        raise TransfuseValueError(
            f"functional_call(strict=True) for {module._get_name()}:\n\t" + "\n\t".join(problems))


def _slot(module: Module, name: str) -> tuple[dict[str, Any], str]:
    """The registry dict (of the owning submodule) and key that hold the array `name`."""
    prefix, _, leaf = name.rpartition(".")
    try:
        owner = module.get_submodule(prefix)
    except TransfuseAttributeError as error:
        raise TransfuseValueError(
            f"functional_call: {name!r} is not a parameter or buffer of "
            f"{module._get_name()}: {error}") from None
    for registry in (owner._parameters, owner._buffers):
        if leaf in registry:
            return registry, leaf
    if leaf in owner.__dict__ and is_array(owner.__dict__[leaf]):
        return owner.__dict__, leaf  # a plain array attribute, swapped as torch does
    raise TransfuseValueError(
        f"functional_call: {name!r} is not a parameter or buffer of {module._get_name()} "
        f"({owner._get_name()} at {prefix or 'the top level'} has no {leaf!r})")


@contextmanager
def _substituted(module: Module, values: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Put values into the module's slots, yield, then restore the originals. The yielded dict
    is filled, on exit, with what each slot held at the end of the call."""
    slots = {name: _slot(module, name) for name in values}  # all found before any change
    saved: list[tuple[dict[str, Any], str, Any]] = []
    final: dict[str, Any] = {}
    try:
        for name, value in values.items():
            registry, key = slots[name]
            saved.append((registry, key, registry[key]))
            registry[key] = value
        yield final
    finally:
        for name, (registry, key) in slots.items():
            final[name] = registry.get(key)
        for registry, key, original in reversed(saved):
            registry[key] = original


def _write_back(sources: list[dict[str, Any]], final: dict[str, Any]) -> None:
    """Rebound slots (`self.x = self.x + 1`) go back to the dict that supplied the name."""
    for source in sources:
        for key in source:
            if key in final and final[key] is not source[key]:
                source[key] = final[key]


def stack_module_state(models: Sequence[Module]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parameters and buffers of same-structured models, each stacked on a new leading axis:
    (params, buffers), for vmap over functional_call."""
    models = list(models)
    if not models:
        raise TransfuseValueError("stack_module_state: expected at least one model, got 0")
    for model in models:
        _check_module(model, "stack_module_state")
    first = models[0]
    if any(type(m) is not type(first) for m in models):
        kinds = sorted({type(m).__name__ for m in models})
        raise TransfuseTypeError(
            f"stack_module_state: all models must be of the same class, got {kinds}")
    if len({m.training for m in models}) > 1:
        raise TransfuseValueError(
            "stack_module_state: all models must be in the same mode (all train or all eval)")
    params = _stack_named([dict(m.named_parameters()) for m in models], "parameter")
    buffers = _stack_named([dict(m.named_buffers()) for m in models], "buffer")
    return params, buffers


def _stack_named(per_model: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    names = list(per_model[0])
    for index, named in enumerate(per_model[1:], start=1):
        if list(named) != names:
            raise TransfuseValueError(
                f"stack_module_state: model {index} has {kind}s {sorted(named)} but model 0 "
                f"has {sorted(names)}; the models must share one structure")
    for name in names:
        _check_same_aval([named[name] for named in per_model], name)
    return {name: tnp.stack([named[name] for named in per_model]) for name in names}


def _check_same_aval(arrays: list[Any], name: str) -> None:
    first = arrays[0]
    for index, array in enumerate(arrays[1:], start=1):
        if tuple(array.shape) != tuple(first.shape) or array.dtype != first.dtype:
            raise TransfuseValueError(
                f"stack_module_state: {name!r} is {tuple(array.shape)} {array.dtype} in model "
                f"{index} but {tuple(first.shape)} {first.dtype} in model 0")


def replace_all_batch_norm_modules_(root: Module) -> Module:
    """Make every batch-norm layer in root stop tracking running statistics (in place): it
    then always normalises by the batch's statistics. Returns root."""
    _check_module(root, "replace_all_batch_norm_modules_")
    for module in root.modules():
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            module.running_mean = None
            module.running_var = None
            module.num_batches_tracked = None
            module.track_running_stats = False
    return root
