"""Champion and challenger (intraday/forecasting/evaluation.py): the
candidate never learns from the held-out days, both are scored on the same
cells, and only a better portfolio forecast is promoted."""

from dataclasses import replace

import numpy as np
import pytest

from intraday.forecasting import backtest, evaluation, metrics
from intraday.forecasting.features import Panel
from intraday.forecasting.model import fit

from .conftest import SMALL

HOLDOUT = 4


def _shuffled(data: backtest.BacktestData) -> backtest.BacktestData:
    """The same fleet with each device's readings shuffled in time: a model
    trained on it has learned no daily profile. (Scaling the readings would
    not do: the features are in units of each device's own level, and such
    a model is only a percent or two worse, which the promotion test rightly
    calls noise.)"""
    p = data.panel
    rng = np.random.default_rng(0)
    panel = Panel(p.device_ids, p.start, np.stack([row[rng.permutation(len(row))] for row in p.power]),
                  p.outdoor_temp, p.attributes, p.countries, p.step_minutes)
    return replace(data, panel=panel, observed=None)


@pytest.fixture(scope="module")
def candidate(data):
    return evaluation.train_candidate(data, SMALL, HOLDOUT)


@pytest.fixture(scope="module")
def worse(data, candidate):
    _, origins = candidate
    return fit(backtest._truncated(_shuffled(data).panel, origins[0]), data.temperature, SMALL)


def test_the_candidate_learns_only_from_data_before_the_held_out_days(data, candidate):
    model, origins = candidate
    assert len(origins) == HOLDOUT and origins == sorted(origins)
    first = data.panel.timestamp(origins[0])
    assert model.manifest["training"]["data_end"] == first.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert model.manifest["training"]["holdout"]["days"] == HOLDOUT
    # The whole held-out horizon lies inside the data, one day ahead each.
    assert origins[-1] + data.panel.per_day <= data.panel.intervals


def test_a_worse_candidate_is_not_promoted_and_a_better_one_is(data, candidate, worse):
    model, origins = candidate
    H = data.panel.per_day
    kept = evaluation.evaluate(worse, model, data, origins, H)
    assert kept.candidate["portfolio"]["pinball_mean"] > kept.champion["portfolio"]["pinball_mean"]
    promote, why = evaluation.decide(kept)
    assert not promote and why.startswith("not better: portfolio pinball")
    # The roles swapped: the same two models, the same cells.
    won = evaluation.evaluate(model, worse, data, origins, H)
    assert won.candidate["portfolio"] == kept.champion["portfolio"]
    assert won.origins == kept.origins and not won.champion_in_sample
    assert won.candidate["portfolio"]["pinball_mean"] < 0.6 * won.champion["portfolio"]["pinball_mean"]
    assert won.test["days"] == HOLDOUT and won.test["mean_difference"] < 0
    promote, why = evaluation.decide(won)
    assert promote and why.startswith("better: portfolio pinball") and "Diebold-Mariano p = " in why
    assert evaluation.decide(kept, force=True)[0] is True


def _judged(candidate: list[float], champion: list[float]) -> evaluation.Evaluation:
    """An evaluation with these daily portfolio losses (and their means as
    the overall scores), to judge the decision rule alone."""
    def side(daily):
        return {"portfolio": {"pinball_mean": float(np.mean(daily))}, "daily_portfolio_pinball": daily}
    test = metrics.diebold_mariano(np.array(candidate), np.array(champion))
    return evaluation.Evaluation([f"day {k}" for k in range(len(candidate))], side(candidate), side(champion),
                                 False, {"alpha": evaluation.PROMOTION_ALPHA, **test})


def test_promotion_needs_a_lower_loss_day_after_day_not_on_average():
    champion = [3.0, 2.5, 4.0, 3.2, 2.8, 3.6, 3.1]
    steady = [c * 0.9 for c in champion]  # 10 % better every day
    assert evaluation.decide(_judged(steady, champion))[0]
    # The same 10 % better on average, from one lucky day: noise.
    lucky = list(champion)
    lucky[2] = champion[2] - 0.1 * sum(champion)
    assert np.mean(lucky) == pytest.approx(np.mean(steady))
    noisy = _judged(lucky, champion)
    promote, why = evaluation.decide(noisy)
    assert not promote and noisy.test["p_value"] > evaluation.PROMOTION_ALPHA
    assert f"Diebold-Mariano p = {noisy.test['p_value']:.3f}" in why
    assert not evaluation.decide(_judged(champion, champion))[0]  # a tie
    assert not evaluation.decide(_judged([1.0], [2.0]))[0]  # one day is no evidence
    assert "too few days" in evaluation.decide(_judged([1.0], [2.0]))[1]


def test_the_diebold_mariano_statistic_is_the_corrected_t_of_the_differences():
    from scipy import stats

    a, b = np.array([1.0, 1.4, 0.9, 1.2, 1.1]), np.array([1.3, 1.5, 1.2, 1.25, 1.6])
    dm = metrics.diebold_mariano(a, b)
    t = stats.ttest_1samp(a - b, 0.0)
    assert dm["statistic"] == pytest.approx(t.statistic * np.sqrt(4 / 5))
    assert dm["p_value"] == pytest.approx(stats.t.cdf(dm["statistic"], df=4))
    assert dm["p_value"] < 0.05 < metrics.diebold_mariano(b, a)["p_value"]


def test_an_equal_candidate_is_not_better(data, candidate):
    model, origins = candidate
    tie = evaluation.evaluate(model, model, data, origins, data.panel.per_day)
    assert tie.candidate == tie.champion
    assert evaluation.decide(tie)[0] is False
    promote, why = evaluation.decide(tie, force=True)
    assert promote and why.startswith("forced; portfolio pinball")


def test_with_no_champion_the_candidate_meets_the_seasonal_fallback(data, candidate):
    model, origins = candidate
    e = evaluation.evaluate(model, None, data, origins, data.panel.per_day)
    assert e.champion["portfolio"]["rows"] == e.candidate["portfolio"]["rows"] > 0
    # The engine beats the fallback it replaces on this fleet (backtests show it in every season);
    # whether four days of 8 devices are evidence enough is the test's to say.
    assert e.candidate["portfolio"]["pinball_mean"] < e.champion["portfolio"]["pinball_mean"], e.to_dict()
    assert e.test["mean_difference"] < 0
    assert evaluation.decide(e)[0] == (e.test["p_value"] < evaluation.PROMOTION_ALPHA)


def test_a_champion_that_saw_the_held_out_days_is_scored_after_its_data_or_flagged(data, candidate, model):
    cand, origins = candidate
    # `model` learned from the whole window: every held-out day is in its data.
    e = evaluation.evaluate(cand, model, data, origins, data.panel.per_day)
    assert e.champion_in_sample and len(e.origins) == HOLDOUT
    assert "the champion in-sample" in evaluation.decide(e)[1]
    # A champion that ends after the first held-out day is scored on the later days only.
    _, fewer = evaluation.train_candidate(data, SMALL, HOLDOUT - 1)
    late = fit(backtest._truncated(data.panel, fewer[0]), data.temperature, SMALL)
    e = evaluation.evaluate(cand, late, data, origins, data.panel.per_day)
    assert not e.champion_in_sample and len(e.origins) == HOLDOUT - 1


def test_no_held_out_day_is_refused(data, candidate):
    model, _ = candidate
    with pytest.raises(Exception, match="no held-out days"):
        evaluation.evaluate(model, None, data, [], data.panel.per_day)
    assert np.isfinite(evaluation.evaluate(model, None, data, candidate[1][-1:], data.panel.per_day)
                       .candidate["portfolio"]["pinball_mean"])


def test_a_window_with_too_few_days_of_readings_is_refused_with_the_reason(data):
    p = data.panel
    power = p.power.copy()
    power[:, : 8 * p.per_day] = np.nan  # the first 8 of 16 days without a reading
    gappy = replace(data, panel=Panel(p.device_ids, p.start, power, p.outdoor_temp, p.attributes, p.countries,
                                      p.step_minutes))
    with pytest.raises(Exception, match=r"has readings on 8 of the window's 16 days; training needs at "
                                        rf"least {10 + HOLDOUT} \(10 \+ {HOLDOUT} held out\)"):
        evaluation.train_candidate(gappy, SMALL, HOLDOUT)
    evaluation.check_coverage(data, HOLDOUT)  # the whole window: enough
