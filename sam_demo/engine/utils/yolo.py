"""YOLO's class names: a dataset's data.yaml (`names`: a list, or a dict by index) or classes.txt
(a name a line). Read for boxes -> masks, by the batch command and the web demo alike."""

from __future__ import annotations

__all__ = ["MAX_NAMES_BYTES", "names_from_classes_txt", "names_from_data_yaml"]

MAX_NAMES_BYTES = 256 << 10  # a data.yaml or classes.txt: names, not a dataset
MAX_NAMES = 10_000


def names_from_data_yaml(text: str, file: str = "data.yaml") -> list[str]:
    """The class names of a data.yaml's `names`, in class order (a dict by class number may skip
    some: "class k" fills the gaps); ValueError naming `file` for YAML that does not parse, or names
    that are not a list or a dict by class numbers of names. Every value is read as text, as written
    (`no` is "no", `010` is "010"; YAML 1.1 would make them False and 8)."""
    import yaml

    if len(text) > MAX_NAMES_BYTES:
        raise ValueError(f"{file} is over {MAX_NAMES_BYTES >> 10} KB; a data.yaml lists class names")
    try:
        body = yaml.load(text, Loader=getattr(yaml, "CBaseLoader", yaml.BaseLoader))  # noqa: S506 (strings only)
    except (yaml.YAMLError, RecursionError) as exc:
        raise ValueError(f"{file} is not YAML: {str(exc)[:200]}") from None
    names = body.get("names") if isinstance(body, dict) else None
    if isinstance(names, dict):
        names = _by_number(names, file)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{file} has no 'names' list (or dict by class number) of names")
    return _checked(names, file)


def _by_number(names: dict, file: str) -> list[str]:
    """A `names` dict {class number: name} as a list in class order, "class k" where k is not given."""
    try:
        numbered = {int(k): v for k, v in names.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{file}: the keys of 'names' are class numbers (0, 1, ...)") from None
    if numbered and (min(numbered) < 0 or max(numbered) >= MAX_NAMES):
        raise ValueError(f"{file}: class numbers run from 0 to {MAX_NAMES - 1}")
    return [numbered.get(k, f"class {k}") for k in range(max(numbered, default=-1) + 1)]


def names_from_classes_txt(text: str, file: str = "classes.txt") -> list[str]:
    """The class names of a classes.txt, a name a line (blank lines skipped)."""
    if len(text) > MAX_NAMES_BYTES:
        raise ValueError(f"{file} is over {MAX_NAMES_BYTES >> 10} KB; a classes.txt lists class names")
    return _checked([n.strip() for n in text.splitlines() if n.strip()], file)


def _checked(names: list[str], file: str) -> list[str]:
    if len(names) > MAX_NAMES:
        raise ValueError(f"{file} lists {len(names):,} classes; at most {MAX_NAMES:,} are read")
    return names
