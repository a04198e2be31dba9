"""YOLO's class names: a dataset's data.yaml (`names`: a list, or a dict by index) or classes.txt
(a name a line). Read for boxes -> masks, by the batch command and the web demo alike."""

from __future__ import annotations

__all__ = ["MAX_NAMES_BYTES", "names_from_classes_txt", "names_from_data_yaml"]

MAX_NAMES_BYTES = 1 << 20  # a data.yaml or classes.txt: names, not a dataset
MAX_NAMES = 10_000


def names_from_data_yaml(text: str, file: str = "data.yaml") -> list[str]:
    """The class names of a data.yaml's `names`, in class order; ValueError naming `file` for YAML
    that does not parse, or names that are not a list or a dict by whole numbers of text."""
    import yaml

    if len(text) > MAX_NAMES_BYTES:
        raise ValueError(f"{file} is over {MAX_NAMES_BYTES >> 20} MB; a data.yaml lists class names")
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{file} is not YAML: {str(exc)[:200]}") from None
    names = body.get("names") if isinstance(body, dict) else None
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, list) or not all(isinstance(n, (str, int, float)) for n in names):
        raise ValueError(f"{file} has no 'names' list (or dict by class number) of names")
    return _checked([str(n) for n in names], file)


def names_from_classes_txt(text: str, file: str = "classes.txt") -> list[str]:
    """The class names of a classes.txt, a name a line (blank lines skipped)."""
    if len(text) > MAX_NAMES_BYTES:
        raise ValueError(f"{file} is over {MAX_NAMES_BYTES >> 20} MB; a classes.txt lists class names")
    return _checked([n.strip() for n in text.splitlines() if n.strip()], file)


def _checked(names: list[str], file: str) -> list[str]:
    if len(names) > MAX_NAMES:
        raise ValueError(f"{file} lists {len(names):,} classes; at most {MAX_NAMES:,} are read")
    return names
