"""A user's own model in a config: ``training.model: "package.module:factory"``.

``ModelRef("package.module:factory", kwargs)`` is what a ``TrainConfig`` holds for such a
model: the import path as text (a ``str``, so the config writes, hashes and compares it as
the text it is) that is also the factory the engine calls, ``ref(input_shape, n_classes)``
-> ``factory(input_shape, n_classes, **kwargs)``. The user's module is imported on the first
call (or by ``resolve``), never when a config is read, and only for a config that names it.

It is picklable (the text and the kwargs travel, not the function), so worker processes
import the module themselves: it must be importable there, installed or on ``sys.path``. A
module not found on ``sys.path`` is also looked for in the working directory (as
``python -m`` does), so ``examples.custom_model:make_model`` works from the repository
root. No torch here: the user's module imports what it needs.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from poisoncert._validation import param_error

__all__ = ["ModelRef", "is_model_ref"]

_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def is_model_ref(text: object) -> bool:
    """Whether ``text`` has the form ``package.module:factory``."""
    return isinstance(text, str) and bool(_REF.match(text.strip()))


class ModelRef(str):
    """``"package.module:factory"``, callable as the factory with the config's kwargs."""

    def __new__(cls, ref: str, kwargs: Mapping[str, Any] | None = None):
        self = super().__new__(cls, ref.strip())
        self.kwargs = dict(kwargs or {})
        self._factory = None
        return self

    def __reduce__(self):
        return (ModelRef, (str(self), self.kwargs))

    def __deepcopy__(self, memo):
        return ModelRef(str(self), dict(self.kwargs))

    @property
    def module(self) -> str:
        return self.split(":", 1)[0]

    @property
    def attribute(self) -> str:
        return self.split(":", 1)[1]

    def resolve(self) -> Callable[..., Any]:
        """Import the module and return the factory (a ``ValueError`` naming ``training.model``
        when it cannot be imported or is not callable)."""
        if self._factory is not None:
            return self._factory
        module = _import(self.module, str(self))
        factory = getattr(module, self.attribute, None)
        if factory is None or not callable(factory):
            raise param_error("training.model", "the config", "'package.module:factory' "
                              f"naming a callable (module {self.module!r} has no callable "
                              f"{self.attribute!r})", str(self))
        self._factory = factory
        return factory

    def source(self) -> dict[str, Any]:
        """Where the factory comes from: the import path, the module's file and its SHA-256,
        and ``files``: the SHA-256 of every file of the user's code the module imports, found
        by reading the import statements (``code_files``) (recorded in a run, so that a later
        load can tell changed code). The module is found, not run: its parent packages are
        imported, the module itself is not."""
        return self._source(imports=True)

    def _source(self, imports: bool) -> dict[str, Any]:
        path = _module_file(self.module, str(self))
        out: dict[str, Any] = {"ref": str(self), "kwargs": self.kwargs, "file": path,
                               "sha256": None}
        if path and Path(path).is_file():
            out["sha256"] = _sha256(Path(path))
            if imports:
                root, files, absent = _code_files(self.module, Path(path))
                out["root"] = str(root)
                out["files"] = {rel: _sha256(root / rel) for rel in files}
                out["absent"] = absent
        return out

    def module_sha256(self) -> tuple[str | None, str | None]:
        """The module's file and its SHA-256 now (what ``check_model_source`` compares first;
        the imported files are compared by ``changed_files``, without reading them all
        again)."""
        s = self._source(imports=False)
        return s["file"], s["sha256"]

    def changed_files(self, source: Mapping[str, Any]) -> list[str]:
        """The files of ``source["files"]`` (a recorded ``source()``) whose SHA-256 differs
        now, or that are gone, as paths where they are now looked for (under the folder the
        module is found in now: a run may have moved to another machine)."""
        recorded = source.get("files") or {}
        if not recorded:
            return []
        root = _recorded_root(source)
        if root is None:
            path = _module_file(self.module, str(self))  # imports the parent packages
            if not path:
                return sorted(recorded)
            root = _root_of(self.module, Path(path)) or Path(path).parent
        out = []
        for rel, digest in sorted(recorded.items()):
            f = root / rel
            if not f.is_file() or _sha256(f) != digest:
                out.append(str(f))
        out += [str(root / rel) for rel in source.get("absent") or () if (root / rel).exists()]
        return out

    def __call__(self, input_shape, n_classes: int):
        return self.resolve()(tuple(input_shape), int(n_classes), **self.kwargs)


def _recorded_root(source: Mapping[str, Any]) -> Path | None:
    """The folder that holds the recorded module file now, found without importing anything:
    the recorded folder, else the first of ``sys.path`` (and the working directory) that
    holds the file at its place; None where none does."""
    try:
        rel = Path(source["file"]).relative_to(source["root"])
    except (KeyError, TypeError, ValueError):
        return None
    for entry in [source["root"], *sys.path, os.getcwd()]:
        folder = Path(entry or os.getcwd())
        if (folder / rel).is_file():
            return folder
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: Most files ``code_files`` reads (3,000 small modules took 1.9 s).
MAX_CODE_FILES = 10_000


def _root_of(name: str, file: Path) -> Path | None:
    """The folder on ``sys.path`` that module ``name`` (at ``file``) is found in, or None
    where the file does not lie at ``name``'s place below a folder (a package that extends
    its ``__path__``, for example)."""
    depth = len(name.split(".")) - (0 if file.name == "__init__.py" else 1)
    if depth >= len(file.parents):
        return None
    root = file.parents[depth]
    found = _find(root, name)
    return root if found and found[-1][0] == file else None


def _library_folders() -> set[Path]:
    """Folders of installed and standard-library code (their modules are not the user's)."""
    import site
    import sysconfig

    out = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            out.add(Path(p).resolve())
    for p in [*getattr(site, "getsitepackages", list)(), site.getusersitepackages()]:
        out.add(Path(p).resolve())
    return out


def _installed_tops(root: Path) -> set[str] | None:
    """Top-level names of packages installed in ``root``, which are not the user's code:
    None for a library folder of this Python (only the module's own package is followed
    there), else the names that ``*.dist-info`` records (``pip install --target``, vendored
    copies) list: usually none (a project's own ``*.egg-info``, from an editable install,
    records no copies)."""
    if root.resolve() in _library_folders():
        return None
    out: set[str] = set()
    try:
        infos = [p for p in root.iterdir() if p.suffix == ".dist-info" and p.is_dir()]
    except OSError:
        return out
    for info in infos:
        try:
            lines = (info / "RECORD").read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        for line in lines:
            first = line.split(",", 1)[0].split("/", 1)[0]
            if first and not first.startswith(".") and not first.endswith(".dist-info") \
                    and first != "__pycache__":
                out.add(first.removesuffix(".py"))
    return out


def _find(root: Path, name: str, absent: set[Path] | None = None) -> list[tuple[Path, str]]:
    """What importing ``name`` from ``root`` runs, as (file, its dotted name): each package's
    ``__init__.py`` on the way and the module's own file, found as Python's path finder finds
    them (a folder with ``__init__.py``, else ``part.py``, else a folder without: a namespace
    package); empty where ``root`` does not hold ``name``'s first part. Paths are below
    ``root`` as written (a symbolic link is not followed to its target's name). ``absent``
    collects the files whose appearance would change that (below a package of ``root``'s: a
    fallback ``try: from .fast import f`` whose module is added later)."""
    parts = name.split(".")
    out: list[tuple[Path, str]] = []
    folder = root
    for i, part in enumerate(parts):
        dotted = ".".join(parts[:i + 1])
        pkg, mod = folder / part, folder / f"{part}.py"
        if (pkg / "__init__.py").is_file():
            out.append((pkg / "__init__.py", dotted))
            folder = pkg
        elif mod.is_file():  # a module: any later part is one of its attributes
            out.append((mod, dotted))
            return out
        elif pkg.is_dir():  # a namespace package
            if absent is not None and i:
                absent.update((pkg / "__init__.py", mod))
            folder = pkg
        else:  # an attribute of the package found so far, or nothing of root's
            if absent is not None and i:
                absent.update((pkg / "__init__.py", mod))
            return out if i else []
    return out


def _skipped_blocks(tree) -> set[int]:
    """Ids of the statements under ``if TYPE_CHECKING:`` and ``if __name__ ==
    "__main__":`` (not run when a module is imported)."""
    import ast

    def never_on_import(test) -> bool:
        if isinstance(test, ast.Name | ast.Attribute):
            return (test.id if isinstance(test, ast.Name) else test.attr) == "TYPE_CHECKING"
        if not (isinstance(test, ast.Compare) and len(test.comparators) == 1
                and isinstance(test.ops[0], ast.Eq | ast.Is)):
            return False
        pair = {type(x).__name__: x for x in (test.left, test.comparators[0])}
        return (set(pair) == {"Name", "Constant"} and pair["Name"].id == "__name__"
                and pair["Constant"].value == "__main__")

    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and never_on_import(node.test):
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def _imported_names(tree, module: str, is_package: bool) -> list[str]:
    """The dotted names the import statements of a module ``module`` name (relative ones
    resolved against its package), outside the blocks ``_skipped_blocks`` gives."""
    import ast

    skip = _skipped_blocks(tree)
    package = module if is_package else module.rpartition(".")[0]

    def absolute(level: int, rest: str | None, against: str) -> str | None:
        if not level:
            return rest
        base = against.split(".") if against else []
        if level - 1 >= len(base):
            return None  # beyond the top package: that import fails on its own
        return ".".join([*base[:len(base) - (level - 1)], *([rest] if rest else [])])

    names: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            stem = absolute(node.level, node.module, package)
            if stem:
                names.append(stem)
                names.extend(f"{stem}.{a.name}" for a in node.names)  # "*": its __all__
        elif isinstance(node, ast.Call):
            names.extend(n for n in [_literal_import(node, module, package, absolute)] if n)
    return names


def _literal_import(call, module: str, package: str, absolute) -> str | None:
    """The module ``importlib.import_module("x")`` / ``import_module(".x", __package__)`` /
    ``__import__("x")`` names with a literal text, else None."""
    import ast

    f = call.func
    fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
    if fname not in ("import_module", "__import__") or not call.args or not (
            isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
        return None
    text = call.args[0].value
    level = len(text) - len(text.lstrip("."))
    if not level or fname == "__import__":
        return text if not level else None
    anchor = call.args[1] if len(call.args) > 1 else next(
        (k.value for k in call.keywords if k.arg == "package"), None)
    if isinstance(anchor, ast.Name) and anchor.id in ("__package__", "__name__"):
        against = package if anchor.id == "__package__" else module
    elif isinstance(anchor, ast.Constant) and isinstance(anchor.value, str):
        against = anchor.value
    else:
        return None
    return absolute(level, text[level:] or None, against)


def _all_names(path: Path) -> list[str]:
    """The literal ``__all__`` of a package's ``__init__.py`` (what ``from p import *``
    imports: its names that are submodules are imported)."""
    import ast

    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return []
            return [v for v in value if isinstance(v, str)] if isinstance(
                value, list | tuple) else []
    return []


def code_files(name: str, file: Path) -> tuple[Path, list[str]]:
    """The user's code that module ``name`` (at ``file``) runs when imported: its own file,
    its packages' ``__init__.py`` and, recursively, every module of the same folder on
    ``sys.path`` that one of those files imports (``import a.b``, ``from a import b``,
    relative imports, at any place in a file but under ``if TYPE_CHECKING:`` or ``if
    __name__ == "__main__":``), each read under its own dotted name, as paths relative to that
    folder (``/``-separated), with that folder. Found by reading the files (``ast``), not by
    running them, with ``importlib.import_module`` / ``__import__`` of a literal name, and
    the submodules a package's literal ``__all__`` names for ``from package import *``. Not
    followed: poisoncert, modules outside that folder, packages installed there
    (``_installed_tops``; a module installed in a library folder: its own file and its
    packages' ``__init__.py`` only), and more than ``MAX_CODE_FILES`` files. A module
    imported by a computed name (``importlib.import_module(text)``, a registry importing its
    folder) is not seen. Where the module does not lie at its name's place (a package that
    extends its ``__path__``), its own file alone."""
    return _code_files(name, file)[:2]


def _code_files(name: str, file: Path) -> tuple[Path, list[str], list[str]]:
    """``code_files``, and the files whose appearance would change what the import runs
    (``_find``'s ``absent``), relative to the folder too."""
    import ast

    root = _root_of(name, file)
    if root is None:
        return file.parent, [file.name], []
    top = name.split(".")[0]
    installed = _installed_tops(root)
    if installed is None:  # an installed package: its own files, not a crawl of the library
        return root, sorted(p.relative_to(root).as_posix() for p, _ in _find(root, name)), []

    def followed(mod: str) -> bool:
        first = mod.split(".")[0]
        return first != "poisoncert" and (first == top or first not in installed)

    seen: set[Path] = set()
    absent: set[Path] = set()
    todo = list(_find(root, name, absent))
    while todo and len(seen) < MAX_CODE_FILES:
        path, mod = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            continue  # its import fails with its own error
        for n in _imported_names(tree, mod, path.name == "__init__.py"):
            if not followed(n):
                continue
            found = _find(root, n.removesuffix(".*"), None if n.endswith(".*") else absent)
            if n.endswith(".*") and found and found[-1][0].name == "__init__.py":
                stem = n[:-2]  # from a package import *: the submodules its __all__ names
                found += [f for m in _all_names(found[-1][0])
                          for f in _find(root, f"{stem}.{m}", absent)]
            todo.extend(f for f in found if f[0] not in seen)
    rel = sorted(p.relative_to(root).as_posix() for p in seen)
    return root, rel, sorted(p.relative_to(root).as_posix() for p in absent - seen)


def _module_file(name: str, ref: str) -> str | None:
    """The file of module ``name`` (looked for as ``_import`` would), without running it."""
    import importlib.util

    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__file__", None)
    for attempt in range(2):
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        except Exception as e:  # noqa: BLE001 - a parent package failed to import
            raise param_error("training.model", "the config", "'package.module:factory' whose "
                              f"packages import ({type(e).__name__}: {e})", ref) from e
        if spec is not None:
            return spec.origin
        cwd = os.getcwd()
        if attempt or cwd in sys.path or "" in sys.path:
            break
        sys.path.insert(0, cwd)
    raise _import_error(ref, ModuleNotFoundError(f"No module named {name!r}"), where=True)


def _import(name: str, ref: str):
    try:
        return _import_module(name, ref)
    except ModuleNotFoundError as e:
        if e.name is None or not (name == e.name or name.startswith(e.name + ".")):
            raise _import_error(ref, e) from None  # the user's module lacks one of its imports
        cwd = os.getcwd()
        if cwd in sys.path or "" in sys.path:
            raise _import_error(ref, e, where=True) from None
    sys.path.insert(0, cwd)  # as ``python -m`` does; kept, so worker processes inherit it
    try:
        return _import_module(name, ref)
    except ModuleNotFoundError as e:
        sys.path.remove(cwd)
        raise _import_error(ref, e, where=True) from None


def _import_module(name: str, ref: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code: one clear line, not a traceback
        raise param_error("training.model", "the config", "'package.module:factory' whose "
                          f"module imports ({type(e).__name__}: {e})", ref) from e


def _import_error(ref: str, e: ModuleNotFoundError, where: bool = False) -> ValueError:
    """``where``: the module itself was not found, so say where it is looked for."""
    hint = (f"; working directory {os.getcwd()}: run the command from the folder that holds "
            "the module's package (for a trained run, the folder it was trained from), or add "
            "that folder to PYTHONPATH") if where else ""
    return param_error("training.model", "the config", "'package.module:factory' with a "
                       f"module importable from sys.path or the working directory ({e}{hint})",
                       ref)
