from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from pushstr.metrics import LoopCounter


def test_loop_counter_is_exposed_as_a_prometheus_counter() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("demo_events", "Events", ["relay", "type"], initial=[("a", "EOSE")], registry=registry)
    counter.inc("a", "EVENT")
    counter.inc("a", "EVENT")
    assert registry.get_sample_value("demo_events_total", {"relay": "a", "type": "EVENT"}) == 2
    assert registry.get_sample_value("demo_events_total", {"relay": "a", "type": "EOSE"}) == 0
    assert counter.value("a", "EVENT") == 2
    text = generate_latest(registry).decode()
    assert "demo_events_total counter" in text and 'demo_events_total{relay="a",type="EVENT"} 2.0' in text


def test_removed_series_disappear() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("demo_gone", "Gone", ["relay"], registry=registry)
    counter.inc("wss://old")
    counter.remove("wss://old")
    assert registry.get_sample_value("demo_gone_total", {"relay": "wss://old"}) is None


def test_unlabelled_counter() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("demo_plain", "Plain", registry=registry)
    counter.inc()
    assert registry.get_sample_value("demo_plain_total") == 1
