"""YOLO's class names from a data.yaml or classes.txt: the forms datasets use, and what is refused."""

from __future__ import annotations

import pytest

from sam_demo.engine.utils.yolo import MAX_NAMES_BYTES, names_from_classes_txt, names_from_data_yaml


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("names: [cat, dog]", ["cat", "dog"]),
        ("path: .\nnames:\n  1: dog\n  0: cat\n", ["cat", "dog"]),
        ("names:\n  - '<b>x</b>'\n  - 3\n", ["<b>x</b>", "3"]),
        ("nc: 0\nnames: []\n", []),
        ("names: [no, yes, 010, 1e3]", ["no", "yes", "010", "1e3"]),  # as written, not YAML 1.1's False, True, 8
        ("names: {0: person, 2: car}", ["person", "class 1", "car"]),  # a class skipped keeps the numbers
        ('names: ["\\U0001F431 cat"]', ["\U0001f431 cat"]),
    ],
)
def test_data_yaml_names_in_class_order(text, names):
    assert names_from_data_yaml(text) == names


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("names: 7", "has no 'names' list"),
        ("names: [[a, b]]", "has no 'names' list"),
        ("names: {a: 1}", "the keys of 'names' are class numbers"),
        ("names: {-1: a}", "class numbers run from 0"),
        ("names: " + "[" * 600 + "]" * 600, "is not YAML"),
        ("- just\n- a list", "has no 'names' list"),
        ("names: [a\n", "is not YAML"),
        ("a: &x [1]\nnames: *x\n" + " " * MAX_NAMES_BYTES, "is over 256 KB"),
    ],
)
def test_data_yaml_that_names_no_classes_is_refused_by_name(text, says):
    with pytest.raises(ValueError, match=says) as error:
        names_from_data_yaml(text, "set/data.yaml")
    assert "set/data.yaml" in str(error.value)


def test_classes_txt_is_a_name_a_line():
    assert names_from_classes_txt("cat\n\n dog \n") == ["cat", "dog"]
    with pytest.raises(ValueError, match="at most 10,000"):
        names_from_classes_txt("x\n" * 10_001)
