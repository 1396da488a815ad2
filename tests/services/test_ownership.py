"""Owner tags and subscription names: short, exact, unique across clusters and look-alikes."""

import pytest

from steward.services.ownership import TAG_LENGTH, TAG_PREFIX, owner_tag, subscription_name


def test_tags_are_short_whatever_the_names():
    tag = owner_tag("c" * 300, "u" * 300)
    assert len(tag) == TAG_LENGTH <= 250  # Rucio keeps 250 characters of a comment
    assert tag.startswith(TAG_PREFIX)
    assert len(subscription_name("c" * 300, "u" * 300)) <= 64  # Rucio's subscription names


def test_clusters_and_resources_never_share_a_tag():
    assert owner_tag("dev", "uid-1") != owner_tag("prod", "uid-1")
    assert owner_tag("dev", "uid-1") != owner_tag("dev", "uid-2")
    assert owner_tag("dev", "uid-1") == owner_tag("dev", "uid-1")
    # Joining with a separator cannot be fooled by where a dash or slash falls.
    assert owner_tag("a-b", "c") != owner_tag("a", "b-c")
    assert subscription_name("a-b", "c") != subscription_name("a", "b-c")


@pytest.mark.parametrize(("cluster", "uid"), [("", "uid"), ("cluster", ""), ("", "")])
def test_a_tag_needs_both_halves(cluster, uid):
    with pytest.raises(ValueError, match="cluster id and a resource UID"):
        owner_tag(cluster, uid)
