"""The order transition table and client order ids, with plain calls."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.orders import (
    TRANSITIONS,
    IllegalTransition,
    Order,
    OrderState,
    Trigger,
    client_order_id,
    parse_sequence,
    transition,
)
from exchange.records import Side


def order(state: OrderState) -> Order:
    return Order("ll-a-1", "a", "sim", "BTC/USD", Side.BUY, Decimal("100"), Decimal("1"), state, 0.0, 0.0)


ALL_PAIRS = [(state, trigger) for state in OrderState for trigger in Trigger]


def test_every_state_has_a_row():
    assert set(TRANSITIONS) == set(OrderState)


@pytest.mark.parametrize("state, trigger", ALL_PAIRS, ids=lambda v: v.value)
def test_each_pair_is_either_allowed_to_its_target_or_refused(state, trigger):
    target = TRANSITIONS[state].get(trigger)
    if target is None:
        with pytest.raises(IllegalTransition, match=f"{trigger.value} is not allowed in state {state.value}"):
            transition(order(state), trigger, 1.0)
    else:
        moved = transition(order(state), trigger, 1.0)
        assert moved.state is target and moved.updated_at == 1.0


def test_a_refused_transition_leaves_the_order_untouched():
    original = order(OrderState.FILLED)
    with pytest.raises(IllegalTransition):
        transition(original, Trigger.CANCEL, 5.0)
    assert original.state is OrderState.FILLED and original.updated_at == 0.0


def test_final_states_accept_nothing_but_a_late_fill_after_a_cancel():
    for state in OrderState:
        if state.is_final:
            allowed = set(TRANSITIONS[state])
            assert allowed <= {Trigger.FILL}, state
    assert TRANSITIONS[OrderState.CANCELED][Trigger.FILL] is OrderState.CANCELED


def test_unknown_is_left_only_on_evidence_never_by_a_timeout_or_a_new_submit():
    exits = set(TRANSITIONS[OrderState.UNKNOWN])
    assert Trigger.SUBMIT not in exits and Trigger.OUTCOME_UNKNOWN not in exits
    assert exits == {Trigger.ACCEPTED, Trigger.FILL, Trigger.FILL_COMPLETE, Trigger.CANCELED, Trigger.EXPIRED, Trigger.REJECTED}


def test_the_happy_path():
    o = order(OrderState.INTENT)
    for trigger, expected in [
        (Trigger.GRANTED, OrderState.RESERVED),
        (Trigger.SUBMIT, OrderState.SUBMITTING),
        (Trigger.ACCEPTED, OrderState.OPEN),
        (Trigger.FILL, OrderState.PARTIALLY_FILLED),
        (Trigger.FILL_COMPLETE, OrderState.FILLED),
    ]:
        o = transition(o, trigger, 1.0)
        assert o.state is expected


@given(st.text(min_size=1, max_size=80), st.integers(min_value=0, max_value=10**9))
def test_client_order_ids_fit_binance_and_round_trip(name, sequence):
    cid = client_order_id(name, sequence)
    assert len(cid) <= 36
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cid)
    assert cid == client_order_id(name, sequence)  # deterministic
    assert parse_sequence(cid) == sequence


@given(st.text(min_size=1, max_size=80), st.integers(min_value=0, max_value=10**8 - 1),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=6))
def test_client_order_ids_of_a_store_instance_fit_binance_and_round_trip(name, sequence, instance):
    cid = client_order_id(name, sequence, instance)
    assert len(cid) <= 36 and re.fullmatch(r"[A-Za-z0-9_-]+", cid)
    assert instance in cid and cid == client_order_id(name, sequence, instance)
    assert parse_sequence(cid) == sequence


def test_two_stores_never_make_the_same_client_order_id():
    assert client_order_id("trend", 1, "k3f9qz") != client_order_id("trend", 1, "a00001") != client_order_id("trend", 1)
    assert client_order_id("trend", 1) == "ll-trend-2ab022-1"  # a store without an instance keeps its ids
    with pytest.raises(ValueError, match="6 characters"):
        client_order_id("trend", 1, "K3F9QZ")


def test_names_that_clean_up_alike_get_different_ids():
    assert client_order_id("a b", 1) != client_order_id("ab", 1)
    assert client_order_id("x" * 40, 1) != client_order_id("x" * 41, 1)
