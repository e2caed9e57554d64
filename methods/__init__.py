"""One file per paper, found by name.

A method is a `methods.base.Method` subclass registered with `@register_method("name")` in
its own file here; `--method name` (or `method: name` in a preset) selects it, and its
options appear once it is selected (`python train.py --method name --help`). A method may
also name a selector flag (Depth Hints: --use_depth_hints) that picks it when the chosen
method is one of its base classes, so monodepth2-style commands keep working.

A method outside this folder is given by its module path (`--method my_pkg.my_method`);
that module defines `METHOD = TheClass`.
"""
import importlib
import pkgutil
import warnings

METHODS = {}
DEFAULT_METHOD = "monodepth2"  # a weight folder without opt.json, a command without --method
# the built-in methods' modules, so that naming one imports only its file (and its bases'):
# option parsing and --help stay light. A test checks this table against the registrations.
BUILTIN = {"monodepth2": "monodepth2", "depth_hints": "depth_hints", "srd": "srd", "bdedepth": "bdedepth",
           "manydepth": "manydepth", "mism_teacher": "mism", "mism_student": "mism", "dynamic_mf": "dynamic_mf"}
SELECTORS = {"use_depth_hints": "depth_hints"}  # selector flag -> the method that owns it
_loaded = False


def register_method(name, selector=None):
    """Class decorator: the method answers to `--method name`, and also to the store_true
    flag `--<selector>` (which it must define in its add_options) when the chosen method is
    one of its bases."""
    def decorate(cls):
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is registered twice")
        cls.name, cls.selector = name, selector
        METHODS[name] = cls
        return cls
    return decorate


def load_all_methods():
    """Import every built-in method (METHODS then holds them all)."""
    _load_builtin()


def _load_builtin():
    global _loaded
    if not _loaded:
        _loaded = True
        for module in pkgutil.iter_modules(__path__):
            if module.name not in ("base",):
                importlib.import_module(f"{__name__}.{module.name}")


RENAMED_HOOKS = {"on_step_end": "on_train_step_end(step, inputs, outputs)", "predict_disp": "predict(inputs)"}


def _check_hooks(cls):
    """A method written for an older interface defines hooks that are never called: say so."""
    for old, new in RENAMED_HOOKS.items():
        if any(old in klass.__dict__ for klass in cls.__mro__):
            warnings.warn(f"{cls.__name__} defines {old}, which is no longer called: define {new} instead")
    return cls


def method_class(name):
    """The class of `--method name`: a registered name, or a module path defining METHOD."""
    if name in BUILTIN and name not in METHODS:
        importlib.import_module(f"{__name__}.{BUILTIN[name]}")
    elif name not in METHODS:
        _load_builtin()
    if name in METHODS:
        return _check_hooks(METHODS[name])
    if "." in name:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            raise SystemExit(f"--method {name!r}: cannot import it ({e}); run from the folder that holds it "
                             "or add that folder to PYTHONPATH") from None
        if not hasattr(module, "METHOD"):
            raise SystemExit(f"--method {name!r}: the module defines no METHOD = <Method subclass>")
        cls = _check_hooks(module.METHOD)
        cls.name = name
        cls.selector = getattr(cls, "selector", None) if "selector" in cls.__dict__ else None
        return cls
    raise SystemExit(f"--method {name!r}: no such method; registered: {', '.join(sorted(METHODS))} "
                     "(or give a module path, e.g. my_pkg.my_method)")


def resolve_method_name(explicit, preset, argv):
    """The method a command asks for: --method, else `method:` in the preset, else
    monodepth2; then a selector flag on the command line or in the preset (e.g.
    --use_depth_hints) upgrades it to the method that owns the flag, when the chosen one is
    a base of that method."""
    name = explicit or (preset or {}).get("method") or "monodepth2"
    if name not in BUILTIN:
        method_class(name)  # a module path: imported here, so that a bad one is named at once
    for flag, owner in SELECTORS.items():
        if (f"--{flag}" in argv or bool((preset or {}).get(flag))) and is_builtin_base(name, owner):
            name = owner
    return name


def is_builtin_base(name, other):
    """Whether built-in method `name`'s class is a proper base of built-in `other`'s, from their
    option chains (methods/option_groups.py: the classes' groups, bases first) without importing
    either class; a test checks it against issubclass for every pair."""
    from .option_groups import CHAINS
    if name not in CHAINS or other not in CHAINS or name == other:
        return False
    chain, longer = CHAINS[name], CHAINS[other]
    return len(chain) < len(longer) and longer[:len(chain)] == chain


def build_method(opt):
    """The nn.Module the Trainer drives, for opt.method."""
    return method_class(getattr(opt, "method", "monodepth2"))(opt)



def load_for_inference(folder, device="cpu", networks=None, **overrides):
    """The method a weight folder was trained with, its weights loaded, in eval mode; see
    methods.base.load_for_inference."""
    from .base import load_for_inference as load
    return load(folder, device, networks, **overrides)
