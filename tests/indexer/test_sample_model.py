"""The model ``qac serve`` builds by default answers the README's examples as a model of the
whole 1,000-user train log does (indexer/data/SAMPLE-SOURCE.md)."""

from indexer.model import Model


def test_the_default_model_completes_ny_t_with_ny_times_in_the_first_three(sample_model: Model):
    for history in ([], ["weather"]):
        assert "ny times" in [c.query for c in sample_model.complete("ny t", history, k=3)], history


def test_the_default_model_offers_what_people_search_for_weather(sample_model: Model):
    shown = [c.query for c in sample_model.complete("weather")]
    assert {"weather", "weather channel", "weather forecast"} <= set(shown)
