"""The AIP-160 filter subset the List methods take, and their page tokens."""
from __future__ import annotations

import pytest

from mailgate.server.errors import InvalidArgument
from mailgate.server.paging import parse_filter

FIELDS = {"campaign": str, "type": str, "state": lambda v: v.removeprefix("STATE_")}


def refused(text: str) -> str:
    with pytest.raises(InvalidArgument) as e:
        parse_filter(text, FIELDS)
    [v] = e.value.violations
    assert v.field == "filter"
    return v.description


def test_terms_joined_by_AND_with_quoted_and_bare_values():
    assert parse_filter('type = "smtp_imap" AND state = STATE_RED', FIELDS) == {"type": "smtp_imap", "state": "RED"}
    assert parse_filter("  ", FIELDS) == {}


def test_quoted_values_are_read_whole_escapes_included():
    assert parse_filter('campaign = "Sales AND Support"', FIELDS) == {"campaign": "Sales AND Support"}
    assert parse_filter(r'campaign = "say \"hi\" AND \\ bye" AND type = "=AND="', FIELDS) == {
        "campaign": 'say "hi" AND \\ bye', "type": "=AND="}


def test_a_repeated_field_is_refused_by_name():
    assert "'campaign' appears more than once" in refused('campaign = "a" AND campaign = "b"')


@pytest.mark.parametrize("text", [
    'campaign = Sales AND Support',     # an unquoted value with a blank
    'campaign = "open',                 # an unterminated string
    'campaign = "a" type = "b"',        # no AND
    'campaign = "a" AND',               # nothing after AND
    'campaign "a"', '= "a"', 'campaign = = "a"', 'campaign = "a" OR type = "b"', 'campaign = (a)',
])
def test_what_is_not_the_subset_is_refused_as_a_filter_violation(text):
    assert refused(text)


def test_an_unknown_field_names_the_filterable_ones():
    assert refused('color = "red"') == "cannot filter on 'color'; filterable: campaign, type, state"
