"""Words of the studies' generated conclusions, chosen from numbers."""

from __future__ import annotations

import math

from spkadv.studies import wording


def test_change_picks_the_verb_from_the_sign_and_the_tolerance() -> None:
    assert wording.change(0.5) == "raised"
    assert wording.change(-0.5) == "lowered"
    assert wording.change(0.0005, tolerance=1e-3) == "left unchanged"
    assert wording.change(math.nan) == "left unchanged"
    assert wording.change(1.0, up="more", down="less") == "more"


def test_times_says_unbounded_where_the_reference_is_zero() -> None:
    assert wording.times(3.0, 2.0) == "1.50×"
    assert wording.times(1.0, 0.0) == "unbounded"
    assert wording.times(0.0, 0.0) == "1×"


def test_signed_never_writes_a_negative_zero() -> None:
    assert wording.signed(0.0201, 3) == "+0.020" and wording.signed(-0.0201, 3) == "-0.020"
    assert wording.signed(-0.00001, 4) == "+0.0000"


def test_spread_listing_and_bullets() -> None:
    assert wording.spread([1.0, 2.0, 3.0], 1, " %") == "2.0 % (1.0-3.0)"
    assert wording.listing([]) == "" and wording.listing(["a"]) == "a"
    assert wording.listing(["a", "b", "c"]) == "a, b and c"
    assert wording.bullets(["one", "", "two"]) == "- one\n- two"
