"""What people see of the nodes in ComfyUI's menus and search: display names in one style,
"<What> (RestoreFormer)", help pages titled with them, and search aliases for the words people
type for face restoration (sent by hosts that support SEARCH_ALIASES, ignored by older ones)."""

from __future__ import annotations

import re

import pytest
from helpers import REPO
from helpers.comfy_host import import_comfy

import_comfy()

from restoreformer_node.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

STYLE = re.compile(r"[A-Z][a-z]*( [A-Za-z]+)* \(RestoreFormer\)")


@pytest.mark.parametrize("node_id", sorted(NODE_DISPLAY_NAME_MAPPINGS))
def test_display_name_style(node_id):
    name = NODE_DISPLAY_NAME_MAPPINGS[node_id]
    assert STYLE.fullmatch(name), f"{node_id}: {name!r} is not '<What> (RestoreFormer)'"
    assert "RestoreFormer" not in name.removesuffix(" (RestoreFormer)"), name


@pytest.mark.parametrize("node_id", sorted(NODE_DISPLAY_NAME_MAPPINGS))
def test_help_page_is_titled_with_the_display_name(node_id):
    first = (REPO / "web" / "docs" / f"{node_id}.md").read_text().splitlines()[0]
    assert first == f"# {NODE_DISPLAY_NAME_MAPPINGS[node_id]}"


def test_display_names_are_distinct():
    names = list(NODE_DISPLAY_NAME_MAPPINGS.values())
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("node_id", sorted(NODE_CLASS_MAPPINGS))
def test_search_aliases(node_id):
    aliases = getattr(NODE_CLASS_MAPPINGS[node_id], "SEARCH_ALIASES", None)
    assert isinstance(aliases, list) and aliases, f"{node_id} has no SEARCH_ALIASES list"
    assert all(isinstance(a, str) and a == a.strip().lower() and a for a in aliases), aliases
    assert len(set(aliases)) == len(aliases), aliases


def test_restore_faces_answers_to_the_words_of_other_face_restorers():
    aliases = set(NODE_CLASS_MAPPINGS["RestoreFormerRestoreFaces"].SEARCH_ALIASES)
    assert {"face restore", "gfpgan", "codeformer", "face detailer"} <= aliases
