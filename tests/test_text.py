"""Normalisation shared by the memory and the formatter: equal-looking text made equal, code kept."""

import pytest

from rhizome.text import normalise_text


@pytest.mark.parametrize(("raw", "expected"), [
    ("e\u0301te\u0301", "été"),  # NFC composes
    ("x² ½ ﬁ ™ ＡＢＣ", "x² ½ ﬁ ™ ＡＢＣ"),  # ... but does not fold compatibility characters (NFKC would)
    ("zero\u200bwidth\u200c\u200d\u2060\ufeff!", "zerowidth!"),
    ("non\u00a0breaking\u202fspaces", "non breaking spaces"),
    ("bell\x07 null\x00 esc\x1b[0m c1\x9f", "bell null esc[0m c1"),
    ("tabs\tstay\nand\nnewlines", "tabs\tstay\nand\nnewlines"),
    ("windows\r\nold mac\rline\u2028sep", "windows\nold mac\nline\nsep"),
    ("trailing   \nspaces\t\nend", "trailing\nspaces\nend"),
    ("a\n\n\n\n\n\nb", "a\n\n\nb"),  # more than two blank lines -> two
    ("a\n\n\nb", "a\n\n\nb"),  # two blank lines stay (PEP 8 between functions)
    ("  \n\n  hello world \n\n  ", "hello world"),
    ("", ""),
])
def test_normalise_text(raw, expected):
    assert normalise_text(raw) == expected


def test_normalise_keeps_code_indentation():
    code = "```python\ndef f(x):\n    if x:\n\treturn 1   \n        # deep\n```"
    assert normalise_text(code) == "```python\ndef f(x):\n    if x:\n\treturn 1\n        # deep\n```"
    assert normalise_text("\n\n    indented_code = 1\n    more = 2\n") == "    indented_code = 1\n    more = 2"
