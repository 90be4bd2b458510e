"""Author–year labels for the bibliography page (a small Sphinx extension of the book).

sphinxcontrib-bibtex labels bibliography entries with its style's label style; the
default gives ``[BaltruvsaitisAM19]``-like keys, which neither match the in-text
author–year citations nor render LaTeX accents. This registers a pybtex formatting
style ``authoryear`` whose labels read ``Baltrušaitis et al., 2019``, ``Greydanus &
Kobak, 2024`` or ``Han, 2015`` (a suffix a, b, ... separates equal labels), with
entries sorted by author, year and title. ``_config.yml`` selects it with
``bibtex_default_style: authoryear``.
"""
from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.sorting.author_year_title import SortingStyle


def _plain(latex: str) -> str:
    """LaTeX (accents, braces) to plain Unicode text: ``Baltru{\\v{s}}aitis`` -> ``Baltrušaitis``."""
    return Text.from_latex(latex).render_as("text")


def _surname(person) -> str:
    return _plain(" ".join(person.prelast_names + person.last_names))


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_label(self, entry) -> str:
        persons = entry.persons.get("author") or entry.persons.get("editor") or []
        year = entry.fields.get("year", "n.d.")
        if not persons:
            who = _plain(entry.fields.get("title", entry.key)).split(":")[0]
        elif len(persons) == 1:
            who = _surname(persons[0])
        elif len(persons) == 2:
            who = f"{_surname(persons[0])} & {_surname(persons[1])}"
        else:
            who = f"{_surname(persons[0])} et al."
        return f"{who}, {year}"

    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [self.format_label(e) for e in entries]
        counts, seen = Counter(labels), Counter()
        for label in labels:
            if counts[label] > 1:
                seen[label] += 1
                yield f"{label}{chr(ord('a') + seen[label] - 1)}"
            else:
                yield label


class AuthorYearStyle(UnsrtStyle):
    default_label_style = AuthorYearLabelStyle
    default_sorting_style = SortingStyle


def setup(app):
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
