"""Walk-forward runner: no model predicts a bar it trained on, stitching, signals, controls,
store records (DuckDB and PostgreSQL) and bad input."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlengine import datasets
from mlengine.backtest.baselines import BuyAndHoldBaseline, SMACrossover, TimeSeriesMomentum
from mlengine.backtest.costs import CostModel
from mlengine.backtest.sizing import Kelly
from mlengine.backtest.validity import ValidityConfig
from mlengine.backtest.walkforward import WalkForwardError, walk_forward
from mlengine.data.loader import SplitError, WalkForwardSplit
from mlengine.data.schema import BarDataError, make_bar_frame
from mlengine.data.store import open_store
from mlengine.strategies import Context, NotFittedError, PredictionError, Strategy

FAST = ValidityConfig(bootstrap_reps=100, baseline_samples=100)
FREE = CostModel()


def synthetic_bars(returns: np.ndarray, *, symbol: str = "SYN") -> pd.DataFrame:
    """Hourly 24/7 bars whose close follows ``returns`` (log); each bar opens at the last
    close."""
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.r_[100.0, close[:-1]]
    bars = make_bar_frame(
        pd.date_range("2020-01-01", periods=returns.size, freq="1h", tz="UTC"),
        {
            "open": open_,
            "high": np.maximum(open_, close) * (1 + 1e-4),
            "low": np.minimum(open_, close) * (1 - 1e-4),
            "close": close,
            "volume": np.ones(returns.size),
        },
        symbol=symbol,
        timeframe="1h",
    )
    bars.attrs["market"] = "crypto"
    return bars


def random_walk(n: int, seed: int, sigma: float = 0.002) -> pd.DataFrame:
    return synthetic_bars(np.random.default_rng(seed).normal(0.0, sigma, n))


class Spy:
    """Logs what it is given; ``p_up`` from the sign of the last return (bars <= t only);
    the diagnostic ``train_end_ns`` names the last bar the model trained on."""

    name = "spy"

    def __init__(self, log: list[tuple[Any, ...]] | None = None, seed: int | None = None) -> None:
        self.params = {"p": 0.6}
        self.log = [] if log is None else log
        self.seed = seed

    def fit(self, bars: pd.DataFrame, *, context: Context | None = None) -> Spy:
        self.train_index_ = bars.index
        self.log.append(("fit", bars.index, self.seed, context))
        return self

    def predict_proba(self, bars: pd.DataFrame, *, context: Context | None = None) -> pd.DataFrame:
        if not hasattr(self, "train_index_"):
            raise NotFittedError("spy: not fitted")
        self.log.append(("predict", bars.index))
        up = bars["close"].diff().to_numpy()
        p = np.where(np.isnan(up), 0.5, np.where(up > 0, 0.6, 0.4))
        end = np.int64(self.train_index_[-1].value)
        return pd.DataFrame({"p_up": p, "train_end_ns": end}, index=bars.index)

    def save(self, path: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path) -> Spy:
        raise NotImplementedError


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return datasets.load("eurusd_1h")


@pytest.fixture(scope="module")
def btcusd() -> pd.DataFrame:
    return datasets.load("btcusd_1h_coinbase")


def _assert_no_model_predicts_its_training(run: Any, bars: pd.DataFrame, horizon: int) -> None:
    pred = run.predictions
    assert pred.index.is_unique and pred.index.is_monotonic_increasing
    row = bars.index.get_indexer(pred.index)
    trained = bars.index.get_indexer(pd.to_datetime(pred["train_end_ns"].to_numpy(), utc=True))
    assert (row >= 0).all() and (trained >= 0).all()
    # by construction: the last training bar precedes every bar its model predicts, by the
    # purge of ``horizon`` bars at least
    assert (row - trained >= horizon + 1).all()


def test_spy_on_real_data_trains_before_and_predicts_only_its_window(eurusd: pd.DataFrame) -> None:
    log: list[tuple[Any, ...]] = []
    split = WalkForwardSplit(test_size="30D", min_train_size=500, embargo=3)
    ctx = Context(asset={"symbol": "EURUSD"})
    run = walk_forward(
        lambda seed: Spy(log, seed),
        eurusd,
        splitter=split,
        horizon=4,
        context=ctx,
        validity=FAST,
        seed=11,
        progress=False,
    )
    _assert_no_model_predicts_its_training(run, eurusd, horizon=4)
    assert run.config["splitter"]["purge"] == 4  # raised to the horizon
    fits = [e for e in log if e[0] == "fit"]
    predicts = [e for e in log if e[0] == "predict"]
    assert len(fits) == len(predicts) == len(run.folds) >= 8
    for fold, fit, predict in zip(run.folds, fits, predicts, strict=True):
        assert fit[1].equals(eurusd.index[fold.train])  # trained on the fold's bars only
        assert fit[2] == 11 + fold.fold  # the factory's seed
        assert fit[3] is ctx
        assert predict[1][0] == eurusd.index[0]  # history=None: from the first bar
        assert predict[1][-1] == eurusd.index[fold.test[-1]]  # nothing after the window
        rows = run.predictions[run.predictions["fold"] == fold.fold]
        assert rows.index.equals(eurusd.index[fold.test])
    assert run.predictions.index[0] == eurusd.index[run.folds[0].test[0]]
    assert run.signals.index.equals(eurusd.index[run.folds[0].test[0] :])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    test_size=st.integers(20, 80),
    train_size=st.one_of(st.none(), st.integers(60, 150)),
    purge=st.integers(0, 4),
    embargo=st.integers(0, 4),
    horizon=st.integers(0, 6),
    history=st.one_of(st.none(), st.integers(0, 40)),
)
def test_no_prediction_from_a_model_trained_on_its_bar(
    test_size: int,
    train_size: int | None,
    purge: int,
    embargo: int,
    horizon: int,
    history: int | None,
) -> None:
    bars = random_walk(400, seed=5)
    split = WalkForwardSplit(
        test_size=test_size, train_size=train_size, min_train_size=40, purge=purge, embargo=embargo
    )
    run = walk_forward(
        Spy, bars, splitter=split, horizon=horizon, history=history, validity=FAST, progress=False
    )
    _assert_no_model_predicts_its_training(run, bars, horizon=max(horizon, purge))
    expected = np.concatenate([f.test for f in run.folds])
    assert run.predictions.index.equals(bars.index[expected])
    np.testing.assert_array_equal(
        run.predictions["fold"],
        np.repeat([f.fold for f in run.folds], [f.test.size for f in run.folds]),
    )


@pytest.mark.parametrize("history", [None, 49])
def test_rule_baseline_through_the_runner_equals_the_rule_on_the_full_series(
    eurusd: pd.DataFrame, history: int | None
) -> None:
    split = WalkForwardSplit(test_size=500, min_train_size=1000)
    run = walk_forward(
        lambda: SMACrossover(fast=10, slow=50),
        eurusd,
        splitter=split,
        history=history,
        validity=FAST,
        progress=False,
    )
    full = SMACrossover(fast=10, slow=50).signals(eurusd)["position"]
    pd.testing.assert_series_equal(run.signals["position"], full.loc[run.signals.index])
    assert run.result.metrics.n_trades > 20


def test_too_little_history_changes_the_window_starts(eurusd: pd.DataFrame) -> None:
    split = WalkForwardSplit(test_size=500, min_train_size=1000)
    run = walk_forward(
        lambda: SMACrossover(fast=10, slow=50), eurusd, splitter=split, history=10,
        validity=FAST, progress=False,
    )  # fmt: skip
    first = [int(f.test[0]) for f in run.folds]
    assert (run.signals["position"].iloc[[i - first[0] for i in first]] == 0).all()  # warm-up


def test_buy_and_hold_through_the_runner_tracks_the_asset(btcusd: pd.DataFrame) -> None:
    run = walk_forward(
        BuyAndHoldBaseline,
        btcusd,
        splitter=WalkForwardSplit(test_size="60D", min_train_size=24 * 30),
        costs=FREE,
        validity=FAST,
        progress=False,
    )
    assert run.metrics.n_trades == 1
    assert (run.signals["position"] == 1.0).all()
    oos = btcusd.loc[run.signals.index]
    # free costs: bought at the second bar's open, held to the last close
    expected = oos["close"].iloc[-1] / oos["open"].iloc[1] - 1.0
    assert run.metrics.total_return == pytest.approx(expected, rel=1e-9)


def test_planted_signal_autocorrelated_returns_make_momentum_pay() -> None:
    rng = np.random.default_rng(7)
    phi, n = 0.25, 6000
    noise = rng.normal(0.0, 0.002, n)
    r = np.empty(n)
    r[0] = noise[0]
    for t in range(1, n):
        r[t] = phi * r[t - 1] + noise[t]
    run = walk_forward(
        lambda: TimeSeriesMomentum(lookback=1),
        synthetic_bars(r),
        splitter=WalkForwardSplit(test_size=500, min_train_size=500),
        costs=FREE,
        validity=FAST,
        progress=False,
    )
    m = run.metrics
    se = np.sqrt(0.25 / m.n_direction_bars)
    assert m.direction_accuracy > 0.5 + 3 * se  # theory: 0.5 + arcsin(phi) / pi = 0.58
    assert m.total_return > 0 and m.sharpe > 3
    assert run.verdict.criterion("random_baseline").passed


@pytest.mark.parametrize(
    "make", [lambda: TimeSeriesMomentum(lookback=5), lambda: SMACrossover(fast=5, slow=20), Spy]
)
def test_random_walk_accuracy_stays_within_three_standard_errors(make: Callable[[], Any]) -> None:
    run = walk_forward(
        make,
        random_walk(6000, seed=3),
        splitter=WalkForwardSplit(test_size=500, min_train_size=500),
        validity=FAST,
        progress=False,
    )
    m = run.metrics
    se = np.sqrt(0.25 / m.n_direction_bars)
    assert m.n_direction_bars > 4000
    assert abs(m.direction_accuracy - 0.5) < 3 * se


def test_p_up_reaches_kelly_sizing(eurusd: pd.DataFrame) -> None:
    run = walk_forward(
        Spy,
        eurusd,
        splitter=WalkForwardSplit(test_size=1000, min_train_size=1000),
        sizing=Kelly(fraction=0.5),
        validity=FAST,
        progress=False,
    )
    size = np.abs(run.result.signal.iloc[:, 0].to_numpy())
    # p = 0.6 on the predicted side, payoff 1: half-Kelly 0.5 * (0.6 - 0.4) = 0.1
    assert set(np.round(np.unique(size), 12)) <= {0.0, 0.1}
    assert np.isclose(size, 0.1).mean() > 0.95


def test_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    walk_forward(
        Spy, random_walk(300, 1), splitter=WalkForwardSplit(test_size=50, min_train_size=100),
        validity=FAST, run_name="spy-run",
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert "walk-forward spy-run" in err and "3/3" in err  # windows at bars 150, 200, 250
    assert out == ""


@pytest.mark.parametrize(
    "store_url", ["duckdb_url", pytest.param("pg_url", marks=pytest.mark.postgres)]
)
def test_runs_trials_and_predictions_are_recorded(
    request: pytest.FixtureRequest, store_url: str, eurusd: pd.DataFrame
) -> None:
    split = WalkForwardSplit(test_size="30D", min_train_size=2000)
    with open_store(request.getfixturevalue(store_url)) as store:
        first = walk_forward(
            lambda: SMACrossover(fast=10, slow=50), eurusd, splitter=split, store=store,
            validity=FAST, run_name="sma 10/50", progress=False,
        )  # fmt: skip
        second = walk_forward(
            lambda: SMACrossover(fast=5, slow=20), eurusd, splitter=split, store=store,
            validity=FAST, progress=False,
        )  # fmt: skip
        runs = store.read_table("ml.backtest_runs").set_index("run_id")
        trials = store.read_table("ml.trials")
        stored = store.read_table("ml.predictions", where={"run_id": first.run_id})
    row = runs.loc[first.run_id]
    assert row["name"] == "sma 10/50"
    assert row["symbols"] == ["EURUSD"] and row["timeframe"] == "1h"
    assert row["start_ts"] == first.signals.index[0] and row["end_ts"] == first.signals.index[-1]
    assert row["metrics"]["sharpe"] == pytest.approx(first.metrics.sharpe)
    assert row["metrics"]["verdict"] == {
        "score": pytest.approx(first.verdict.score),
        "effective": first.verdict.effective,
    }
    assert row["config"]["params"] == {"fast": 10, "slow": 50, "allow_short": True}
    assert row["config"]["splitter"]["test_size"] == "30D"

    assert list(trials["run_id"]) == [first.run_id, second.run_id]
    assert (trials["strategy"] == "sma_crossover").all() and (trials["symbol"] == "EURUSD").all()
    assert trials["params"].iloc[1] == {"fast": 5, "slow": 20, "allow_short": True}
    per_bar = first.metrics.sharpe / np.sqrt(first.metrics.periods_per_year)
    assert trials["sharpe"].iloc[0] == pytest.approx(per_bar, rel=1e-6)
    assert first.n_trials == 1 and second.n_trials == 2
    assert second.verdict.details["n_trials"] == 2
    assert second.config["trials"]["variance_source"] == "ml.trials"

    assert len(stored) == len(first.predictions)
    stored = stored.set_index("ts")
    np.testing.assert_array_equal(stored["p_up"], first.predictions["p_up"])
    np.testing.assert_array_equal(stored["fold"], first.predictions["fold"])
    assert set(stored["diagnostics"].iloc[-1]) == {"position", "sma_fast", "sma_slow"}
    assert stored["diagnostics"].iloc[-1]["sma_fast"] == pytest.approx(
        first.predictions["sma_fast"].iloc[-1]
    )


# --- bad input ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return random_walk(300, seed=2)


SPLIT = WalkForwardSplit(test_size=50, min_train_size=100)


def _run(bars: pd.DataFrame, factory: Callable[..., Any] = Spy, **kw: Any) -> Any:
    return walk_forward(factory, bars, splitter=SPLIT, validity=FAST, progress=False, **kw)


class _Shifted(Spy):
    def predict_proba(self, bars: pd.DataFrame, *, context: Context | None = None) -> pd.DataFrame:
        out = super().predict_proba(bars)
        out.index = out.index + pd.Timedelta("1h")
        return out


class _Overconfident(Spy):
    def predict_proba(self, bars: pd.DataFrame, *, context: Context | None = None) -> pd.DataFrame:
        return super().predict_proba(bars).assign(p_up=1.5)


class _FoldColumn(Spy):
    def predict_proba(self, bars: pd.DataFrame, *, context: Context | None = None) -> pd.DataFrame:
        return super().predict_proba(bars).assign(fold=0)


def test_a_factory_that_makes_no_strategy_is_rejected(small: pd.DataFrame) -> None:
    with pytest.raises(WalkForwardError, match="returned dict, which does not follow"):
        _run(small, dict)


def test_a_factory_switching_strategies_is_rejected(small: pd.DataFrame) -> None:
    kinds: list[Callable[[], Strategy]] = [Spy, lambda: SMACrossover(fast=2, slow=3)]
    made = itertools.cycle(kinds)
    with pytest.raises(WalkForwardError, match="made 'spy' and then 'sma_crossover'"):
        _run(small, lambda: next(made)())


def test_misaligned_predictions_name_the_strategy_and_fold(small: pd.DataFrame) -> None:
    with pytest.raises(PredictionError, match="strategy 'spy', fold 0: prediction index differs"):
        _run(small, _Shifted)


def test_p_up_outside_the_unit_interval_is_rejected(small: pd.DataFrame) -> None:
    with pytest.raises(PredictionError, match=r"fold 0: column 'p_up' = 1\.5 outside"):
        _run(small, _Overconfident)


def test_a_fold_diagnostic_is_rejected(small: pd.DataFrame) -> None:
    with pytest.raises(PredictionError, match="'fold' is the runner's column"):
        _run(small, _FoldColumn)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (lambda p, b: np.full(len(b), 2.0), "position 2.0 at bar .* not finite in \\[-1, 1\\]"),
        (lambda p, b: np.full(len(b), np.nan), "position nan at bar"),
        (lambda p, b: np.zeros(3), "returned shape \\(3,\\)"),
        (lambda p, b: ["long"] * len(b), "non-numeric positions"),
    ],
)
def test_bad_signal_rules_are_rejected(small: pd.DataFrame, rule: Any, message: str) -> None:
    with pytest.raises(WalkForwardError, match=message):
        _run(small, to_signal=rule)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"horizon": -1}, "horizon must be an integer >= 0"),
        ({"horizon": True}, "horizon must be an integer >= 0"),
        ({"history": -5}, "history must be >= 0"),
        ({"history": 2.5}, "history must be a bar count"),
        ({"n_trials": 0}, "n_trials must be a positive integer"),
    ],
)
def test_bad_arguments_are_rejected(small: pd.DataFrame, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(WalkForwardError, match=message):
        _run(small, **kw)


def test_bars_off_the_contract_and_too_few_bars_are_rejected(small: pd.DataFrame) -> None:
    with pytest.raises(BarDataError, match="columns must be"):
        _run(small[["close"]])
    with pytest.raises(SplitError, match="not enough bars"):
        _run(small.iloc[:120])


def test_predictions_before_fit_are_impossible_in_the_runner(small: pd.DataFrame) -> None:
    run = _run(small)
    assert run.strategy == "spy" and run.params == {"p": 0.6}
    assert run.verdict.details["n_trials"] == 1  # no store: this run only
    assert run.config["trials"]["variance_source"].startswith("1/T")


class _Flat(Spy):
    def __init__(self) -> None:
        super().__init__()
        self.params = {"p": 0.5}

    def predict_proba(self, bars: pd.DataFrame, *, context: Context | None = None) -> pd.DataFrame:
        return super().predict_proba(bars).assign(p_up=0.5)


def test_a_flat_trial_counts_but_has_no_sharpe(duckdb_url: str, small: pd.DataFrame) -> None:
    with open_store(duckdb_url) as store:
        flat = _run(small, _Flat, store=store)
        spy = _run(small, Spy, store=store)
        trials = store.read_table("ml.trials")
    assert flat.metrics.n_trades == 0
    assert flat.verdict.criterion("deflated_sharpe").passed is False
    assert trials["sharpe"].isna().tolist() == [True, False]
    assert spy.n_trials == 2  # the flat configuration was tried too
    assert spy.config["trials"]["variance_source"].startswith("1/T")
    assert spy.config["trials"]["sharpe_variance"] == pytest.approx(1 / len(spy.signals))


class ExplainingSpy(Spy):
    """A spy that explains itself: one frame naming the bars it was shown."""

    def explain(
        self, bars: pd.DataFrame, *, context: Context | None = None
    ) -> dict[str, pd.DataFrame]:
        self.log.append(("explain", bars.index))
        return {
            "seen": pd.DataFrame({"first": [str(bars.index[0])], "last": [str(bars.index[-1])]})
        }


def test_last_fold_model_explains_up_to_its_last_test_bar() -> None:
    bars = random_walk(600, seed=4)
    log: list[tuple[Any, ...]] = []
    splitter = WalkForwardSplit(3, test_size=100)
    run = walk_forward(
        lambda seed=None: ExplainingSpy(log, seed), bars, splitter=splitter, progress=False
    )
    kinds = [entry[0] for entry in log]
    assert kinds.count("explain") == 1, "only the last fold's model explains"
    assert kinds.index("explain") > len(kinds) - 1 - kinds[::-1].index("fit")
    shown = log[kinds.index("explain")][1]
    assert shown[-1] == run.predictions.index[-1] == bars.index[-1]
    assert run.explanations["seen"].loc[0, "last"] == str(bars.index[-1])
    plain = walk_forward(lambda: Spy(), bars, splitter=splitter, progress=False)
    assert plain.explanations == {}


def test_summary_of_the_stitched_oos_predictions_joins_the_explanations() -> None:
    class Summarizing(Spy):
        def summarize(self, predictions: pd.DataFrame, bars: pd.DataFrame) -> Any:
            assert predictions.index.equals(bars.index)
            counts = predictions.groupby("fold").size()
            return {"per_fold": counts.rename("bars").reset_index().astype({"fold": str})}

    bars = random_walk(600, seed=6)
    run = walk_forward(
        lambda: Summarizing(), bars, splitter=WalkForwardSplit(3, test_size=100), progress=False
    )
    summary = run.explanations["per_fold"]
    assert list(summary["bars"]) == [100, 100, 100]
    assert list(summary["fold"]) == ["0", "1", "2"]


def test_explain_returning_something_else_is_an_error() -> None:
    class Bad(ExplainingSpy):
        def explain(self, bars: pd.DataFrame, *, context: Context | None = None) -> Any:
            return [1, 2]

    with pytest.raises(WalkForwardError, match=r"'spy': explain must return \{name: frame\}"):
        walk_forward(
            lambda: Bad(), random_walk(400, seed=5), splitter=WalkForwardSplit(2, test_size=100)
        )
