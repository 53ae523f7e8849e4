from __future__ import annotations

from comparators.paths import parse_pattern
from comparators.patterns import (
    States,
    TrieBuilder,
    best,
    index_candidates,
    key_candidates,
    matches,
    step_index,
    step_item,
    step_key,
)


def trie(*patterns: str, tag: str = "t") -> States:
    builder = TrieBuilder()
    for n, pattern in enumerate(patterns):
        builder.add(parse_pattern(pattern), tag, n)
    return builder.states()


def test_empty_trie_has_no_states() -> None:
    assert TrieBuilder().states() == ()


def test_exact_key_then_index() -> None:
    states = trie("items[1].a")
    assert matches(step_key(step_index(step_key(states, "items"), 1), "a"), "t")
    assert step_index(step_key(states, "items"), 0) == ()
    assert step_key(states, "other") == ()


def test_wildcards() -> None:
    states = trie("*.a", "l[*]")
    assert matches(step_key(step_key(states, "x"), "a"), "t")
    assert matches(step_index(step_key(states, "l"), 7), "t")
    assert matches(step_item(step_key(states, "l")), "t")
    assert not matches(step_key(step_key(states, "l"), "k"), "t")
    star_index = step_index(trie("*"), 3)
    assert matches(star_index, "t")
    assert matches(step_item(trie("*")), "t")


def test_non_string_keys_match_only_star() -> None:
    assert step_key(trie("1"), 1) == ()
    assert matches(step_key(trie("*"), 1), "t")


def test_best_prefers_specific_then_last() -> None:
    states = step_key(trie("*", "price", tag="n"), "price")
    assert best(states, "n") == 1
    later = step_key(trie("price", "*", "price", tag="n"), "price")
    assert best(later, "n") == 2
    assert best(states, "other") is None


def test_candidates() -> None:
    assert key_candidates(trie("a", "b")) == {"a", "b"}
    assert key_candidates(trie("a", "*")) is None
    assert key_candidates(trie("*")) is None
    two = step_key(trie("x.a", "*.b"), "x")
    assert set(key_candidates(two) or ()) == {"a", "b"}
    assert key_candidates(step_key(trie("x.a", "*.*"), "x")) is None
    assert index_candidates(trie("[3]", "[1]", "[9]"), 5) == [1, 3]
    assert index_candidates(trie("[*]"), 2) == range(2)
