"""MRD — Momentum Regime Detection: regimes from a Gaussian HMM, momentum features, an LSTM
encoder over windows of both, and an XGBoost head on its embedding plus the decision bar's
features.

The training, prediction, explanation and artefacts are those of every windowed neural
strategy (:mod:`mlengine.strategies._windowed`). MRD's own parts:

* regimes: a :class:`hmmlearn.hmm.GaussianHMM` over causal per-bar observations — the
  one-bar log return, and with ``vol_window > 0`` the log of the ``vol_window``-bar
  realised volatility too — standardised with the training slice's mean and deviation. It
  is fitted on the training slice only (rows ``<= train_end``); the number of states is the
  one with the lowest BIC among ``states`` (a single value fixes it); seeds are fixed.
  States are renumbered by their return volatility, ascending, so regime 0 is the calmest
  in every fold. Flat bars (open = high = low = close, no change: outage fills) carry no
  observation: the HMM is fitted on the sequences between them and the filter only
  propagates through them. The return alone is the default because it keeps the HMM's
  assumption that observations are independent given the state: a realised volatility
  over overlapping windows is autocorrelated within a regime, and BIC then keeps adding
  states to model that (on two-regime series it picked the largest candidate);
* regime features: the *filtered* probabilities ``regime_p0 ..`` — the forward recursion
  in log space over bars ``<= t`` only (:func:`_forward`). hmmlearn's ``predict_proba``
  and Viterbi path are smoothed over the whole sequence (they use later bars) and are
  never used. The number of states may differ between folds, and so may the feature
  names;
* momentum features: :func:`mlengine.features.compute_features` of ``params.features``
  (multi-horizon log returns, ROC, RSI, MACD, trend strength, momentum persistence);
* labels: the direction of the close over ``horizon`` bars, "up" against the rest;
* encoder: :class:`mlengine.nn.recurrent.LSTMEncoder`;
* outputs: ``p_up`` from the XGBoost head, ``encoder_p_up`` from the encoder's head, and the
  diagnostics ``regime`` (the most probable filtered regime, as a float) and
  ``regime_prob`` (its probability) at the same bars;
* :meth:`MRD.summarize`: per-regime statistics of the stitched out-of-sample predictions
  (returns, volatility, duration, transitions, stability across folds, the regime path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from hmmlearn.hmm import GaussianHMM
from numba import njit

from mlengine import labels
from mlengine.features import compute_features
from mlengine.features.registry import column_index
from mlengine.features.registry import frame as column_frame
from mlengine.nn.recurrent import LSTMConfig, LSTMEncoder, Pooling
from mlengine.strategies._windowed import WindowedParams, WindowedStrategy, take_columns
from mlengine.strategies.base import Context, StrategyError
from mlengine.strategies.registry import register

__all__ = ["MRD", "MRDParams", "Regimes"]

#: A realised volatility per bar below this is the rounding residue of flat bars: no data.
_FLAT_VOL = 1e-8
#: EM stops when an iteration gains less log-likelihood than this per observation.
_TOL_PER_OBS = 1e-4
_MAX_STATES = 8
_MIN_OBS_PER_STATE = 20


@dataclass(frozen=True)
class MRDParams(WindowedParams):
    """MRD hyper-parameters (small CPU-friendly defaults): the shared window and training
    settings of :class:`~mlengine.strategies._windowed.WindowedParams`, the feature groups,
    the LSTM's shape and the regime model: candidate numbers of states (BIC picks one),
    covariance type (``"diag"`` or ``"full"``; they differ only with a second
    observation), realised-volatility window of the second observation (0: none), and EM
    iterations."""

    who: ClassVar[str] = "mrd"

    features: tuple[str, ...] = (
        "log_returns",
        "roc",
        "rsi",
        "macd",
        "trend_strength",
        "momentum_persistence",
    )
    hidden_size: int = 32
    n_layers: int = 1
    dropout: float = 0.1
    pooling: Pooling = "last"
    states: tuple[int, ...] = (2, 3, 4)
    covariance: str = "diag"
    vol_window: int = 0
    hmm_iter: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        states = tuple(self.states) if isinstance(self.states, list | tuple) else (self.states,)
        object.__setattr__(self, "states", states)
        super().__post_init__()
        self.check_positive_ints("hidden_size", "n_layers", "hmm_iter")
        self.check_range("dropout", 0.0, 1.0)
        if not self.features or not all(isinstance(f, str) for f in self.features):
            raise StrategyError(f"mrd: features must be feature or group names: {self.features}")
        if self.pooling not in ("last", "mean"):
            raise StrategyError(f"mrd: pooling must be 'last' or 'mean', got {self.pooling!r}")
        ok = all(
            isinstance(k, int) and not isinstance(k, bool) and 2 <= k <= _MAX_STATES for k in states
        )
        if not states or not ok or len(set(states)) != len(states):
            raise StrategyError(
                f"mrd: states must be distinct integers in [2, {_MAX_STATES}], got {self.states!r}"
            )
        object.__setattr__(self, "states", tuple(sorted(states)))
        if self.covariance not in ("diag", "full"):
            raise StrategyError(
                f"mrd: covariance must be 'diag' or 'full', got {self.covariance!r}"
            )
        v = self.vol_window
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v == 1:
            raise StrategyError(f"mrd: vol_window must be 0 or an integer >= 2, got {v!r}")


@dataclass(frozen=True, eq=False)
class Regimes:
    """A fitted Gaussian HMM over ``D`` standardised observations, states ordered by return
    volatility (ascending). ``order[k]`` is hmmlearn's index of regime ``k``; ``bic`` maps
    each candidate number of states to its BIC on the training observations."""

    startprob: np.ndarray  # (K,)
    transmat: np.ndarray  # (K, K)
    means: np.ndarray  # (K, D), standardised
    covars: np.ndarray  # (K, D, D), standardised, full
    obs_mean: np.ndarray  # (D,)
    obs_std: np.ndarray  # (D,)
    order: tuple[int, ...]
    bic: dict[int, float]

    @property
    def n_states(self) -> int:
        return int(self.startprob.size)

    def to_json(self) -> dict[str, Any]:
        return {
            "startprob": self.startprob.tolist(),
            "transmat": self.transmat.tolist(),
            "means": self.means.tolist(),
            "covars": self.covars.tolist(),
            "obs_mean": self.obs_mean.tolist(),
            "obs_std": self.obs_std.tolist(),
            "order": list(self.order),
            "bic": {str(k): v for k, v in self.bic.items()},
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Regimes:
        arrays = {
            k: np.asarray(doc[k], dtype=np.float64)
            for k in ("startprob", "transmat", "means", "covars", "obs_mean", "obs_std")
        }
        order = tuple(int(i) for i in doc["order"])
        bic = {int(k): float(v) for k, v in doc["bic"].items()}
        return cls(**arrays, order=order, bic=bic)

    def filtered(self, obs: np.ndarray) -> np.ndarray:
        """Filtered state probabilities ``(n, K)`` of the raw observations ``obs`` ``(n, D)``
        (NaN rows: no observation); NaN before the first observation."""
        x = (obs - self.obs_mean) / self.obs_std
        valid = np.isfinite(x).all(axis=1)
        logb = np.where(valid[:, None], _log_density(np.nan_to_num(x), self.means, self.covars), 0)
        with np.errstate(divide="ignore"):
            log_start, log_trans = np.log(self.startprob), np.log(self.transmat)
        out = np.empty((len(x), self.n_states))
        _forward(logb, valid, log_start, log_trans, out)
        return out


def _log_density(x: np.ndarray, means: np.ndarray, covars: np.ndarray) -> np.ndarray:
    """``log N(x[i]; means[k], covars[k])`` as ``(n, K)``."""
    chol = np.linalg.cholesky(covars)
    inv = np.linalg.inv(chol)
    z = np.einsum("kij,nkj->nki", inv, x[:, None, :] - means[None, :, :])
    logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    d = x.shape[1]
    return -0.5 * (d * np.log(2.0 * np.pi) + logdet[None, :] + (z * z).sum(axis=2))


@njit(cache=True, nogil=True)
def _forward(
    logb: np.ndarray,
    valid: np.ndarray,
    log_start: np.ndarray,
    log_trans: np.ndarray,
    out: np.ndarray,
) -> None:
    """The forward (filtering) recursion in log space: ``out[t]`` = P(state at ``t`` |
    observations ``<= t``). Rows without an observation (``valid`` False) only propagate
    the previous row through the transition matrix; rows before the first observation
    are NaN."""
    n, k = logb.shape
    la = np.empty(k)
    pred = np.empty(k)
    started = False
    for t in range(n):
        if not started:
            if not valid[t]:
                out[t, :] = np.nan
                continue
            for j in range(k):
                la[j] = log_start[j] + logb[t, j]
            started = True
        else:
            for j in range(k):
                top = -np.inf
                for i in range(k):
                    top = max(top, la[i] + log_trans[i, j])
                acc = 0.0
                for i in range(k):
                    acc += np.exp(la[i] + log_trans[i, j] - top)
                pred[j] = top + np.log(acc)
            for j in range(k):
                la[j] = pred[j] + (logb[t, j] if valid[t] else 0.0)
        top = la.max()
        acc = 0.0
        for j in range(k):
            acc += np.exp(la[j] - top)
        norm = top + np.log(acc)
        for j in range(k):
            la[j] -= norm
            out[t, j] = np.exp(la[j])


def _regime_columns(k: int) -> list[str]:
    """The names of the filtered probabilities of ``k`` regimes among the features."""
    return [f"regime_p{i}" for i in range(k)]


def _runs(valid: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in ``valid``, in order."""
    edges = np.diff(np.r_[0, valid.astype(np.int8), 0])
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


@register
class MRD(WindowedStrategy):
    """Momentum Regime Detection (see the module docstring)."""

    name = "mrd"
    params_class = MRDParams
    params: MRDParams

    @classmethod
    def contract_params(cls) -> dict[str, Any]:
        """Tiny settings for the contract suite (a fit in about a second)."""
        return {
            "window": 16,
            "hidden_size": 16,
            "epochs": 2,
            "batch_size": 64,
            "n_estimators": 20,
            "early_stopping_rounds": 5,
            "states": (2, 3),
            "hmm_iter": 20,
        }

    # -- hooks ------------------------------------------------------------------------------

    def _features(self, bars: pd.DataFrame) -> pd.DataFrame:
        return compute_features(bars, list(self.params.features))

    def _labels(self, bars: pd.DataFrame) -> np.ndarray:
        lab = labels.direction(bars, self.params.horizon).values.to_numpy()
        return np.where(np.isnan(lab), np.nan, (lab > 0).astype(np.float64))

    def _encoder(self, names: list[str]) -> LSTMEncoder:
        p = self.params
        cfg = LSTMConfig(
            n_features=len(names),
            window=p.window,
            hidden_size=p.hidden_size,
            n_layers=p.n_layers,
            dropout=p.dropout,
            pooling=p.pooling,
        )
        return LSTMEncoder(cfg, seed=p.seed)

    def _outputs(self, head: np.ndarray, encoder: np.ndarray) -> dict[str, np.ndarray]:
        return {"p_up": head, "encoder_p_up": encoder}

    def _observations(self, bars: pd.DataFrame) -> np.ndarray:
        """Per bar the one-bar log return (and the log realised volatility when
        ``vol_window > 0``), ``(n, 1 or 2)``; NaN rows in the warm-up, at flat bars and
        where the volatility is below :data:`_FLAT_VOL`."""
        w = self.params.vol_window
        names, params = ["log_returns"], {"log_returns": {"lags": 1}}
        if w:
            names.append("realised_vol")
            params["realised_vol"] = {"windows": w}
        frame = compute_features(bars, names, params=params)
        # compute_features checked the bars: the OHLCV columns in order, float64
        o, h, low, c = bars.to_numpy().T[:4]
        ret = take_columns(frame, ["ret_log_1"])[:, 0]
        flat = (o == h) & (h == low) & (low == c) & (ret == 0.0)
        if not w:
            return np.where(flat, np.nan, ret)[:, None]
        vol = take_columns(frame, [f"rvol_{w}"])[:, 0]
        ok = ~flat & (vol >= _FLAT_VOL)  # NaN fails too
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(ok[:, None], np.c_[ret, np.log(vol)], np.nan)

    def _fit_state(self, bars: pd.DataFrame, features: pd.DataFrame, train_end: int) -> None:
        """Fit the regime HMM on the observations of rows ``<= train_end`` (module docs)."""
        p = self.params
        obs = self._observations(bars.iloc[: train_end + 1])
        valid = np.isfinite(obs).all(axis=1)
        x = obs[valid]
        need = _MIN_OBS_PER_STATE * p.states[-1]
        if len(x) < need:
            raise StrategyError(
                f"mrd: the training slice holds {len(x)} regime observations; {p.states[-1]} "
                f"states need at least {need}: give more bars or fewer states"
            )
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        xs = (x - mean) / std
        lengths = _runs(valid)
        fits = {
            k: GaussianHMM(
                n_components=k,
                covariance_type=p.covariance,
                n_iter=p.hmm_iter,
                tol=_TOL_PER_OBS * len(xs),
                random_state=p.seed,
                implementation="scaling",
            ).fit(xs, lengths)
            for k in p.states
        }
        bic = {k: float(m.bic(xs, lengths)) for k, m in fits.items()}
        model = fits[min(bic, key=bic.__getitem__)]
        order = np.argsort(model.covars_[:, 0, 0], kind="stable")  # return variance
        self.regimes_ = Regimes(
            startprob=model.startprob_[order],
            transmat=model.transmat_[np.ix_(order, order)],
            means=model.means_[order],
            covars=model.covars_[order],
            obs_mean=mean,
            obs_std=std,
            order=tuple(int(i) for i in order),
            bic=bic,
        )

    def _augment(self, bars: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
        probs = self.regimes_.filtered(self._observations(bars))
        names = _regime_columns(probs.shape[1])
        if features.index.is_(bars.index) and all(
            dtype == np.float64 for dtype in features.dtypes.tolist()
        ):
            # what the concat below gives, as one block: no alignment, no per-block work
            block = np.concatenate([features.to_numpy().T, probs.T])
            columns = column_index([*features.columns.tolist(), *names])
            if columns.dtype != features.columns.dtype:  # labels that are not (all) text
                columns = features.columns.append(pd.Index(names))
            return pd.DataFrame(block.T, index=bars.index, columns=columns, copy=False)
        return pd.concat([features, pd.DataFrame(probs, index=bars.index, columns=names)], axis=1)

    def _state(self) -> dict[str, Any]:
        return {"regimes": self.regimes_.to_json()}

    def _load_state(self, doc: dict[str, Any]) -> None:
        self.regimes_ = Regimes.from_json(doc["regimes"])

    # -- predictions and their summary -------------------------------------------------------

    def predict_proba(
        self, bars: pd.DataFrame, *, context: Context | None = None, last: int | None = None
    ) -> pd.DataFrame:
        """``p_up`` and ``encoder_p_up`` (see the base, also for ``last``), plus ``regime``
        (the most probable filtered regime) and ``regime_prob`` (its probability) at the
        bars with a ``p_up``."""
        out, features = self._predict(bars, last)
        if features is None:  # no bars
            probs = self.regimes_.filtered(self._observations(bars))
        else:  # the filtered probabilities the features hold (_augment)
            probs = take_columns(features, _regime_columns(self.regimes_.n_states))
        known = np.isfinite(out["p_up"]) & np.isfinite(probs).all(axis=1)
        safe = np.where(known[:, None], probs, 0.0)
        out["regime"] = np.where(known, safe.argmax(axis=1), np.nan)
        out["regime_prob"] = np.where(known, safe.max(axis=1), np.nan)
        return column_frame(bars, out)

    def summarize(self, predictions: pd.DataFrame, bars: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Regime statistics of the stitched out-of-sample ``predictions`` on ``bars``.

        Returns are next-bar log returns ``ln(close[t + 1] / close[t])`` — what a position
        taken at bar ``t``'s close earns. Frames (string column labels):

        * ``regime_stats`` — per regime: ``n_bars``, ``share`` of the bars with a regime,
          ``mean_return``, ``volatility`` (standard deviation), ``long_share`` (share with
          ``p_up > 0.5``), ``mean_return_long`` (mean return of those bars), ``accuracy``
          (direction accuracy of ``p_up`` on bars that moved), ``expected_duration`` (mean
          length in bars of the regime's runs in the path; a run ends at a change of regime
          or fold, or a bar without a regime);
        * ``regime_transitions`` — ``from``, ``n`` (bars followed by a bar of the same fold
          with a regime) and ``to_<k>``: the empirical transition matrix of the path;
        * ``regime_folds`` — per fold and regime: ``n_bars``, ``share`` of the fold's bars
          with a regime, ``mean_return``, ``volatility``: the stability across folds;
        * ``regime_path`` — per bar: ``ts`` (ISO 8601 text), ``close``, ``regime`` (NaN
          where there is none).
        """
        missing = [c for c in ("p_up", "fold", "regime") if c not in predictions.columns]
        if missing:
            raise StrategyError(f"mrd: summarize needs prediction column(s) {missing}")
        if not predictions.index.equals(bars.index):
            raise StrategyError(
                f"mrd: summarize needs predictions on the bars' index ({len(predictions)} "
                f"prediction rows, {len(bars)} bars)"
            )
        close = bars["close"].to_numpy(dtype=np.float64)
        ret = np.full(close.size, np.nan)
        ret[:-1] = np.log(close[1:] / close[:-1])
        regime = predictions["regime"].to_numpy(dtype=np.float64, na_value=np.nan)
        fold = predictions["fold"].to_numpy(dtype=np.float64, na_value=np.nan)
        p_up = predictions["p_up"].to_numpy(dtype=np.float64, na_value=np.nan)
        known = np.isfinite(regime)
        regimes = np.unique(regime[known]).astype(np.int64)
        # runs: a new one starts at a change of regime or fold, or after a bar without one
        new = np.ones(regime.size, dtype=bool)
        new[1:] = (regime[1:] != regime[:-1]) | (fold[1:] != fold[:-1]) | ~known[:-1]
        run_id = np.cumsum(new)
        stats = []
        for k in regimes:
            at = regime == k
            n_runs = np.unique(run_id[at]).size
            long = at & (p_up > 0.5)
            moved = at & np.isfinite(ret) & (ret != 0)
            stats.append(
                {
                    "regime": int(k),
                    "n_bars": int(at.sum()),
                    "share": float(at.sum() / known.sum()),
                    **_moments(ret[at]),
                    "long_share": float(long.sum() / at.sum()),
                    "mean_return_long": _mean(ret[long]),
                    "accuracy": _mean(((p_up[moved] > 0.5) == (ret[moved] > 0)).astype(float)),
                    "expected_duration": float(at.sum() / n_runs),
                }
            )
        step = known[:-1] & known[1:] & (fold[:-1] == fold[1:])
        counts = np.zeros((regimes.size, regimes.size))
        src, dst = (np.searchsorted(regimes, regime[s][step]) for s in (slice(-1), slice(1, None)))
        np.add.at(counts, (src, dst), 1.0)
        rows = counts.sum(axis=1)
        with np.errstate(invalid="ignore"):
            matrix = counts / rows[:, None]
        transitions = pd.DataFrame(
            {
                "from": regimes,
                "n": rows.astype(np.int64),
                **{f"to_{int(k)}": matrix[:, i] for i, k in enumerate(regimes)},
            }
        )
        per_fold = []
        for f in np.unique(fold[known]):
            in_fold = known & (fold == f)
            for k in np.unique(regime[in_fold]).astype(np.int64):
                at = in_fold & (regime == k)
                per_fold.append(
                    {
                        "fold": int(f),
                        "regime": int(k),
                        "n_bars": int(at.sum()),
                        "share": float(at.sum() / in_fold.sum()),
                        **_moments(ret[at]),
                    }
                )
        path = pd.DataFrame(
            {"ts": [ts.isoformat() for ts in bars.index], "close": close, "regime": regime}
        )
        stat_cols = ["regime", "n_bars", "share", "mean_return", "volatility", "long_share"]
        stat_cols += ["mean_return_long", "accuracy", "expected_duration"]
        fold_cols = ["fold", "regime", "n_bars", "share", "mean_return", "volatility"]
        return {
            "regime_stats": pd.DataFrame(stats, columns=stat_cols),
            "regime_transitions": transitions,
            "regime_folds": pd.DataFrame(per_fold, columns=fold_cols),
            "regime_path": path,
        }


def _mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def _moments(ret: np.ndarray) -> dict[str, float]:
    """Mean and sample standard deviation of the finite returns (NaN when too few)."""
    x = ret[np.isfinite(ret)]
    return {"mean_return": _mean(x), "volatility": float(x.std(ddof=1)) if x.size > 1 else np.nan}
