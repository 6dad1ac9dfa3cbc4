"""Pickling that keeps notebook-defined classes and functions the consumer's own.

A class or function defined in the notebook lives in a kernel's ``__main__``. It is pickled
*by reference* when the consuming step defines the same one (its definitions cell ran
there too), so an object's class stays the consumer's own class; *by value* (cloudpickle)
only where that is safe; and a class that is neither refuses with a clear message
(:class:`ClassNotImportable`). Standard library only at import (cloudpickle on use).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import sys
import types
from typing import Any


def _main_lookup(qualname: str) -> Any:
    obj: Any = sys.modules.get("__main__")
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _code_fingerprint(obj: Any) -> str:
    """Identify a notebook function or class by its code, not just its name.

    A consumer may define another object under the same name (a Kale functions cell's
    ``h`` while the value holds a conditionally defined ``h``); only the same definition
    may stand in for the pickled one.
    """
    parts: list[str] = []

    def code(fn: types.FunctionType) -> None:
        c = fn.__code__
        parts.append(repr((c.co_code, c.co_names, c.co_varnames, c.co_argcount)))
        parts.extend(repr(k) for k in c.co_consts if not isinstance(k, types.CodeType))

    if isinstance(obj, types.FunctionType):
        code(obj)
    elif isinstance(obj, type):
        for name, attr in sorted(vars(obj).items()):
            is_function = isinstance(attr, types.FunctionType)
            if name.startswith("__") and not is_function:
                continue  # bookkeeping such as __slotnames__, which pickling itself adds
            parts.append(name)
            if is_function:
                code(attr)
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[:16]


def _resolve_main(qualname: str, payload: bytes | None, fingerprint: str | None = None) -> Any:
    """Unpickle a ``__main__`` class/function: the consumer's own if it defines the same one."""
    obj = _main_lookup(qualname)
    if (
        obj is not None
        and isinstance(obj, (type, types.FunctionType))
        and (fingerprint is None or _code_fingerprint(obj) == fingerprint)
    ):
        return obj
    if payload is None:
        raise AttributeError(
            f"{qualname!r} is not defined in this step; define it before using the value"
        )
    import cloudpickle

    return _rebind_globals(cloudpickle.loads(payload))


# Pickles name this function (a reduce of every notebook class or function they hold) by
# module: the package's, where it was defined before the split, so saved values (and the
# digests in cache keys) stay byte for byte what they were, and old cache entries load.
_resolve_main.__module__ = "jupyter_pipeline.runtime.serializers"


def _rebind_globals(obj: Any) -> Any:
    """Give a by-value notebook function (or class's methods) the kernel's own globals.

    cloudpickle rebuilds a function with a private copy of the globals it referenced, frozen
    at pickling time. A function defined in a notebook reads the *current* globals when
    called, so a consumer must see its own values (e.g. a list changed by a later step).
    Globals the consumer does not define keep the producer's values: they are added to the
    kernel's namespace (where the notebook had them too) instead of raising NameError.
    """
    main = sys.modules.get("__main__")
    namespace = getattr(main, "__dict__", None)
    if namespace is None:
        return obj

    def rebind(fn: types.FunctionType) -> types.FunctionType:
        for key, value in fn.__globals__.items():
            if not key.startswith("__"):
                namespace.setdefault(key, value)
        new = types.FunctionType(
            fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__
        )
        new.__kwdefaults__ = fn.__kwdefaults__
        new.__dict__.update(fn.__dict__)
        new.__qualname__ = fn.__qualname__
        new.__module__ = fn.__module__
        new.__doc__ = fn.__doc__
        new.__annotations__ = fn.__annotations__
        return new

    if isinstance(obj, types.FunctionType):
        return rebind(obj)
    if isinstance(obj, type):
        for name, attr in list(vars(obj).items()):
            if isinstance(attr, types.FunctionType) and attr.__module__ == "__main__":
                setattr(obj, name, rebind(attr))
    return obj


def _main_reduce(obj: Any) -> Any:
    """Reduce a class/function defined in the notebook (``__main__``) to a by-name lookup.

    A consumer replays the notebook's ``def``/``class`` statements, so the loaded object
    must use *that* class (``isinstance`` keeps working, globals are the step's own). The
    by-value pickle travels too, for consumers that never define the name.
    """
    if (
        isinstance(obj, (type, types.FunctionType))
        and getattr(obj, "__module__", None) == "__main__"
        and "<" not in obj.__qualname__
        and _main_lookup(obj.__qualname__) is obj
    ):
        try:
            buf = io.BytesIO()
            # By value (that is the payload), its library bases by reference as anywhere.
            _cloudpickle_pickler(buf, check=False, main_by_name=False).dump(obj)
            payload: bytes | None = buf.getvalue()
        except Exception:
            payload = None
        return _resolve_main, (obj.__qualname__, payload, _code_fingerprint(obj))
    return NotImplemented


class ClassNotImportable(Exception):
    """A value's class would travel by value and load as a different, look-alike class."""


def _import_home(obj: Any) -> None:
    """Import the module a library class or function names as its home, if not loaded yet.

    cloudpickle copies a class *by value* when its ``__module__`` is not in ``sys.modules``.
    Some libraries name a submodule that is imported only on demand: with numpy 2,
    ``np.recarray.__module__`` is ``numpy.rec``. Copied by value, the class loads in the next
    step as a look-alike, and its own methods then fail (``super(type, obj): obj must be an
    instance or subtype of type``). Importing the module makes it travel by reference.
    """
    module = getattr(obj, "__module__", None)
    if isinstance(module, str) and module != "__main__" and module not in sys.modules:
        # (not importable after all: the by-value check reports it)
        with contextlib.suppress(Exception):
            importlib.import_module(module)


def _by_value_allowed(cls: type) -> bool:
    """Only a class the notebook defined (or a module the user registered) may travel by value.

    A notebook class is re-created in the consumer by the definitions replay (or loaded by
    value where it is not); any other class copied by value is a different class there.
    """
    import cloudpickle

    module = getattr(cls, "__module__", None) or ""
    if module == "__main__":
        return True
    registered = cloudpickle.list_registry_pickle_by_value()
    return any(module == m or module.startswith(m + ".") for m in registered)


def _cloudpickle_pickler(f: Any, check: bool = True, main_by_name: bool = True) -> Any:
    """A cloudpickle pickler: notebook objects by name (``main_by_name``, see
    ``_main_reduce``), library classes by reference, and (``check``) a clear error for a
    class that cannot travel by reference."""
    import cloudpickle

    class _Pickler(cloudpickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if main_by_name:
                rv = _main_reduce(obj)
                if rv is not NotImplemented:
                    return rv
            if isinstance(obj, (type, types.FunctionType)):
                _import_home(obj)
            rv = super().reducer_override(obj)
            if (
                check
                and isinstance(obj, type)
                and isinstance(rv, tuple)
                and getattr(rv[0], "__name__", "").startswith("_make_skeleton")
                and not _by_value_allowed(obj)
            ):
                raise ClassNotImportable(
                    f"its class {obj.__module__}.{obj.__qualname__} cannot be imported by that "
                    "name, so it would be copied and load as a different class in the next "
                    "step (isinstance checks and the class's own methods would break)"
                )
            return rv

    return _Pickler(f, protocol=5)


def _cloudpickle_dump(value: Any, f: Any) -> None:
    _cloudpickle_pickler(f).dump(value)
