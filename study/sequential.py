"""Sequential seeds (issue 23): add paired seeds to every arm until each planned contrast is
decided, with the family-wise error of the "different" and of the "equivalent" verdicts held
at alpha across all looks. Pure numpy/scipy; boundaries from ``study/spending.py``.

The design (docs/protocol.md, "Sequential seeds (--until-decided)", has the formulas):
* Looks at ``planned_looks(start, batch, cap)`` seeds, e.g. 5, 8, 11, 14, 17, 20.
* The statistic of a contrast at a look is its paired estimate, standard error and degrees of
  freedom (``look_statistic``: ``inference.hierarchical_estimate`` on the per-seed contrast
  values, or per (seed, test example)): T = estimate / se with n - 1 df (Satterthwaite df with
  a test-set part). The same test set at every look keeps the increments independent.
* Each hypothesis gets a Lan-DeMets group-sequential test on the information fraction
  t = n / cap, the last planned look spending what is left. "Different" (H0: contrast = 0)
  is two-sided; "equivalent" (H0: |contrast| >= margin) is two one-sided tests (TOST), each
  with one-sided boundaries: the repeated (1 - 2 level) interval inside +-margin.
* Small n: the boundaries are nominal p-value levels for the looks' t statistics at n - 1 df
  whose joint null law (free of the variance) is simulated once per schedule
  (``spending.t_nominal_levels``), so each look spends exactly its share of alpha. Reading the
  normal boundaries as p-value levels (the significance level approach, Jennison & Turnbull
  2000, ch. 3) gives 5.2-5.6% at a nominal 5% with looks at 5, 8, ..., 20 seeds;
  tests/test_sequential.py checks both, and the sequential design's error rates at our n.
* Holm: each family (all contrasts for "different", those with a margin for "equivalent")
  runs the sequentially rejective procedure with group-sequential local tests (Maurer &
  Bretz 2013, Holm's graph: equal weights, full transfer): with r hypotheses of the family
  rejected, the others are tested at level alpha / (m - r), with the boundaries that the same
  spending function gives at that level. A contrast crosses only on its current look's
  statistic (M&B also allow a retrospective rejection on an earlier look at the new level; we
  leave that out, which only makes fewer rejections). Strong FWER <= alpha per family.
* A decision is final. "Equivalent" wins when both cross at one look (as in
  ``inference.verdict``; ``not_zero`` records it). At the last planned look the undecided
  are "inconclusive".

Hand-written where scipy has no equivalent: the vectorised Holm step over thousands of
simulated studies (``_holm``; ``stats.holm`` adjusts one vector of p-values, while here the
local levels change with the rejections of the same look), and the boundary recursion
(``study/spending.py`` says why).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sps

from study import inference
from study.spending import SPENDING, planned_looks, t_critical, t_nominal_levels

ALPHA = 0.05
DECISIONS = ("undecided", "different", "equivalent", "inconclusive")   # codes 0..3
_UNDECIDED, _DIFFERENT, _EQUIVALENT, _INCONCLUSIVE = range(4)
NAIVE = "naive"          # every look at the fixed design's levels: for comparison only


# -- one look's statistic ------------------------------------------------------------------------

def look_statistic(c) -> dict:
    """{"n", "estimate", "se", "df"} of one contrast at one look, JSON-ready (None for NaN).

    ``c``: the contrast per seed, (seeds,), or per (seed, test example), (seeds, examples),
    as ``inference.hierarchical_estimate`` takes it (seeded bootstrap: deterministic)."""
    est = inference.hierarchical_estimate(c)
    return {"n": est.n, "estimate": _num(est.estimate), "se": _num(est.se), "df": _num(est.df)}


def stage_p(estimate, se, df, margin=None):
    """Stage-wise p-values of one look (vectorised): two-sided of H0: contrast = 0, and the
    TOST p of H0: |contrast| >= margin (NaN without a margin or a standard error)."""
    estimate, se, df = (np.asarray(a, dtype=float) for a in (estimate, se, df))
    margin = np.asarray(np.nan if margin is None else margin, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_diff = 2 * sps.t.sf(np.abs(estimate) / se, df)
        p_equiv = np.maximum(sps.t.sf((estimate + margin) / se, df),
                             sps.t.cdf((estimate - margin) / se, df))
    ok = np.isfinite(se) & (se > 0)
    return np.where(ok, p_diff, np.nan), np.where(ok & (margin > 0), p_equiv, np.nan)


# -- the procedure, vectorised over studies ------------------------------------------------------

def _holm(p, nominal, open_, rejected, size):
    """New rejections of one family at one look. p: (studies, contrasts) stage-wise p-values;
    nominal: (contrasts, size) boundary levels at family level alpha / j in column j - 1;
    open_: (studies, contrasts) still undecided; rejected: (studies,) rejections so far.
    Returns (crossed (studies, contrasts), j used (studies, contrasts))."""
    crossed = np.zeros(open_.shape, dtype=bool)
    used = np.zeros(open_.shape, dtype=int)
    cols = np.arange(p.shape[1])[None, :]
    r = rejected.copy()
    while True:
        j = np.clip(size - r, 1, size)                        # (studies,) not yet rejected
        new = open_ & ~crossed & (p < nominal[cols, (j - 1)[:, None]])   # NaN p never crosses
        if not new.any():
            return crossed, used
        crossed |= new
        used = np.where(new, j[:, None], used)
        r = r + new.sum(axis=1)


def run(p_diff, p_equiv, nom_diff, nom_equiv, final: bool, has_margin=None):
    """The decisions of ``studies`` sequential studies.

    p_diff, p_equiv: (studies, contrasts, looks) stage-wise p-values (NaN: no test at that
    look); nom_diff, nom_equiv: (contrasts, m, looks) nominal levels at family level alpha / j
    (column j - 1; -1 where the contrast has no analysis at that look). ``final``: the last
    look is the cap's; has_margin: (contrasts,) bool, the equivalence family (default: the
    contrasts with a finite p_equiv somewhere). Returns codes, look index, j and not_zero,
    each (studies, contrasts)."""
    studies, m, looks = p_diff.shape
    if has_margin is None:
        has_margin = np.isfinite(p_equiv).any(axis=(0, 2))
    has_margin = np.asarray(has_margin, dtype=bool)
    m_equiv = int(has_margin.sum())
    code = np.zeros((studies, m), dtype=int)
    look = np.full((studies, m), -1)
    level_j = np.zeros((studies, m), dtype=int)
    not_zero = np.zeros((studies, m), dtype=bool)
    r_diff, r_equiv = np.zeros(studies, dtype=int), np.zeros(studies, dtype=int)
    for k in range(looks):
        open_ = code == _UNDECIDED
        cross_d, j_d = _holm(p_diff[:, :, k], nom_diff[:, :, k], open_, r_diff, m)
        cross_e = np.zeros_like(cross_d)
        j_e = j_d
        if m_equiv:
            # the equivalence family counts only contrasts with a margin: its levels alpha / j
            # for j <= m_equiv sit in the first m_equiv columns
            cross_e, j_e = _holm(p_equiv[:, :, k], nom_equiv[:, :m_equiv, k], open_ & has_margin,
                                 r_equiv, m_equiv)
        r_diff += cross_d.sum(axis=1)
        r_equiv += cross_e.sum(axis=1)
        code[cross_e] = _EQUIVALENT
        code[cross_d & ~cross_e] = _DIFFERENT
        not_zero |= cross_d & cross_e
        level_j = np.where(cross_e, j_e, np.where(cross_d, j_d, level_j))
        look[cross_d | cross_e] = k
        if final and k == looks - 1:
            look[code == _UNDECIDED] = k
            code[code == _UNDECIDED] = _INCONCLUSIVE
    return code, look, level_j, not_zero


def _levels(ns: Sequence[int], cap: int, final: bool, m: int, alpha: float, sides: int,
            spending: str) -> np.ndarray:
    """(m, looks) nominal levels of one contrast's analyses at n_1 < ... seeds, at family
    levels alpha / j, j = 1..m (``spending.t_nominal_levels``)."""
    if spending == NAIVE:        # the fixed design's level at every look, two- or one-sided
        return np.array([[alpha / j] * len(ns) for j in range(1, m + 1)])
    return np.array([t_nominal_levels(tuple(int(n) for n in ns), cap, alpha / j, sides, spending, final)
                     for j in range(1, m + 1)])


# -- the runner's call -------------------------------------------------------------------------

def decide(looks_so_far: Sequence[Mapping[str, Mapping]], contrasts: Mapping[str, float | None],
           alpha: float = ALPHA, max_seeds: int = 20, seed_batch: int = 3, start_seeds: int = 5,
           spending: str = "obrien-fleming") -> dict:
    """The decisions after the last of ``looks_so_far`` (a pure function of its arguments:
    a resumed study calls it again with the stored looks and gets the same answer).

    looks_so_far: one mapping per look, contrast name -> ``look_statistic`` ({"n",
    "estimate", "se", "df"}); contrasts: name -> smallest effect of interest on the contrast's
    metric (None: no equivalence test); one Holm family per kind of verdict.
    Returns a JSON-serialisable dict: the look, whether it is final, whether to stop and the
    seeds of the next look, and per contrast its decision, the look and n at which it was
    taken, the estimate, the family-simultaneous repeated interval and the boundary crossed."""
    if spending not in SPENDING + (NAIVE,):
        raise ValueError(f"unknown spending {spending!r}; one of {SPENDING}")
    planned = planned_looks(start_seeds, seed_batch, max_seeds)
    k_now = len(looks_so_far)
    if not 1 <= k_now <= len(planned):
        raise ValueError(f"{k_now} looks given; the design plans {len(planned)}: {planned}")
    final = k_now == len(planned)
    names = list(contrasts)
    m = len(names)
    # (contrasts, looks) statistics; an analysis is a look where the contrast's n grew to >= 3
    stat = {key: np.full((m, k_now), np.nan) for key in ("n", "estimate", "se", "df")}
    for k, look in enumerate(looks_so_far):
        for c, name in enumerate(names):
            for key in stat:
                value = (look.get(name) or {}).get(key)
                stat[key][c, k] = np.nan if value is None else float(value)
    nom = {2: np.full((m, m, k_now), -1.0), 1: np.full((m, m, k_now), -1.0)}
    for c in range(m):
        analyses, final_again = [], False      # (look, n): looks where n grew to >= 3
        for k in range(k_now):
            n, se = stat["n"][c, k], stat["se"][c, k]
            if not (np.isfinite(n) and n >= inference.MIN_VERDICT_N and np.isfinite(se) and se > 0):
                continue
            if n > max_seeds:
                raise ValueError(f"contrast {names[c]!r} has {n:g} seeds at look {k + 1} > cap {max_seeds}")
            if not analyses or n > analyses[-1][1]:
                analyses.append((k, int(n)))
            elif final and k == k_now - 1:
                final_again = True     # the cap's look on unchanged data: it spends the rest
        if not analyses:
            continue
        ns = [n for _, n in analyses]
        at_cap = final and (final_again or analyses[-1][0] == k_now - 1)
        early = ns if final_again or not at_cap else ns[:-1]
        for sides in (2, 1):
            if early:
                levels = _levels(early, max_seeds, False, m, alpha, sides, spending)
                for i, (k, _) in enumerate(analyses[:len(early)]):
                    nom[sides][c, :, k] = levels[:, i]
            if at_cap:
                nom[sides][c, :, k_now - 1] = _levels(ns, max_seeds, True, m, alpha, sides, spending)[:, -1]
    margins = np.array([np.nan if contrasts[nm] is None else float(contrasts[nm]) for nm in names])
    p_diff, p_equiv = stage_p(stat["estimate"], stat["se"], stat["df"], margins[:, None])
    code, look, level_j, not_zero = run(p_diff[None], p_equiv[None], nom[2], nom[1], final,
                                        has_margin=np.isfinite(margins))
    out = {}
    for c, name in enumerate(names):
        decision = DECISIONS[code[0, c]]
        analysed = np.flatnonzero(nom[2][c, 0] >= 0)
        k = look[0, c] if look[0, c] >= 0 else (analysed[-1] if len(analysed) else k_now - 1)
        est, se, df = (stat[key][c, k] for key in ("estimate", "se", "df"))
        j = level_j[0, c]
        family = _interval(est, se, df, nom[2][c, m - 1, k], 2)
        boundary = None
        if decision == "different":
            boundary = {"test": "difference", "level": alpha / j, "nominal_p": nom[2][c, j - 1, k],
                        "t_critical": t_critical(nom[2][c, j - 1, k], df), "t": est / se,
                        "p": p_diff[c, k], "interval": _interval(est, se, df, nom[2][c, j - 1, k], 2)}
        elif decision == "equivalent":
            boundary = {"test": "equivalence", "level": alpha / j, "margin": margins[c],
                        "nominal_p": nom[1][c, j - 1, k], "t_critical": t_critical(nom[1][c, j - 1, k], df, 1),
                        "p": p_equiv[c, k], "interval": _interval(est, se, df, nom[1][c, j - 1, k], 1)}
        out[name] = _json({"decision": decision, "look": int(k) + 1, "n": stat["n"][c, k],
                           "estimate": est, "se": se, "df": df, "interval": family,
                           "not_zero": bool(not_zero[0, c]), "boundary": boundary})
    stop = final or all(v["decision"] in ("different", "equivalent") for v in out.values())
    return {"look": k_now, "n_planned": planned[k_now - 1], "final": final, "stop": stop,
            "next_n": None if stop else planned[k_now],
            "design": {"alpha": alpha, "spending": spending, "start_seeds": start_seeds,
                       "seed_batch": seed_batch, "max_seeds": max_seeds, "looks": planned},
            "contrasts": out}


def _interval(est, se, df, nominal, sides):
    """Repeated interval at a look: est -+ t_crit se, where the two-sided boundary at nominal
    level p has t_crit = t_{1-p/2, df}, and a one-sided one (the TOST) t_{1-p, df}."""
    if not (np.isfinite(se) and nominal > 0):
        return None
    half = t_critical(nominal, df, sides) * se
    return [est - half, est + half]


def _num(x):
    return None if x is None or not np.isfinite(x) else float(x)


def _json(value):
    """Plain Python numbers (None for NaN and inf) all the way down."""
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _num(value)
    return value


def plan(start_seeds: int, seed_batch: int, max_seeds: int, n_contrasts: int, alpha: float = ALPHA,
         spending: str = "obrien-fleming") -> dict:
    """What ``--until-decided`` may cost, for ``--dry-run``: the looks, the most seeds per arm,
    and each look's first Holm step (level alpha / m) as a nominal p and a t critical value
    at n - 1 df (later Holm steps test at higher levels)."""
    looks = planned_looks(start_seeds, seed_batch, max_seeds)
    diff = t_nominal_levels(tuple(looks), max_seeds, alpha / n_contrasts, 2, spending)
    equiv = t_nominal_levels(tuple(looks), max_seeds, alpha / n_contrasts, 1, spending)
    return _json({"looks": looks, "max_seeds": max_seeds, "extra_seeds": max_seeds - start_seeds,
                  "spending": spending, "alpha": alpha, "contrasts": n_contrasts,
                  "difference": [{"n": n, "nominal_p": p, "t_critical": t_critical(p, n - 1)}
                                 for n, p in zip(looks, diff)],
                  "equivalence": [{"n": n, "nominal_p": p, "t_critical": t_critical(p, n - 1, 1)}
                                  for n, p in zip(looks, equiv)]})


# -- simulation (tests/test_sequential.py; `python -m study.sequential` prints the table) ------

def simulate(effects: Sequence[float], sd: float, margin: float = 0.005, n_studies: int = 10_000,
             start: int = 5, batch: int = 3, cap: int = 20, alpha: float = ALPHA,
             spending: str = "obrien-fleming", seed: int = 0) -> dict:
    """Sequential, naive (every look at alpha) and fixed (cap seeds, one look) designs run on
    the same synthetic paired scores; error rates, power and seeds per arm.

    A study has a baseline arm and one arm per contrast (contrast i = arm i minus baseline,
    true value ``effects[i]``): score = 0.97 + effect + a per-seed offset shared by every arm
    (pairing cancels it) + the arm's own noise, sd / sqrt(2), so each contrast has seed sd
    ``sd`` and two contrasts correlate 0.5 (a shared baseline)."""
    rng = np.random.default_rng(seed)
    effects = np.asarray(effects, dtype=float)
    m = len(effects)
    # scores: (studies, arms, seeds)
    scores = (0.97 + np.concatenate([[0.0], effects])[None, :, None]
              + rng.normal(0, 0.01, (n_studies, 1, cap))
              + rng.normal(0, sd / math.sqrt(2), (n_studies, m + 1, cap)))
    weights = np.hstack([-np.ones((m, 1)), np.eye(m)])                   # (contrasts, arms)
    c = np.einsum("ca,sat->sct", weights, scores)                        # (studies, contrasts, seeds)
    null_diff, null_equiv = effects == 0, np.abs(effects) >= margin - 1e-12

    def design(looks, kind):
        # est, se, df: (studies, contrasts, looks) at each look's first n seeds
        est = np.stack([c[:, :, :n].mean(axis=2) for n in looks], axis=2)
        se = np.stack([c[:, :, :n].std(axis=2, ddof=1) / math.sqrt(n) for n in looks], axis=2)
        df = np.broadcast_to(np.array(looks, dtype=float) - 1, est.shape)
        p_diff, p_equiv = stage_p(est, se, df, margin)
        nom = {s: np.broadcast_to(_levels(looks, cap, True, m, alpha, s, kind)[None],
                                  (m, m, len(looks))) for s in (2, 1)}
        code, look, _, not_zero = run(p_diff, p_equiv, nom[2], nom[1], final=True)
        said_diff = (code == _DIFFERENT) | not_zero
        n_at = np.array(looks)[look]                                    # (studies, contrasts)
        return {"fwer_different": float((said_diff & null_diff).any(axis=1).mean()),
                "fwer_equivalent": float(((code == _EQUIVALENT) & null_equiv).any(axis=1).mean()),
                "power": float(said_diff[:, ~null_diff].mean()) if (~null_diff).any() else None,
                "equivalent": float((code == _EQUIVALENT).mean()),
                "inconclusive": float((code == _INCONCLUSIVE).mean()),
                "expected_n": float(n_at.max(axis=1).mean()),         # the study stops
                "mean_n_decided": float(n_at.mean())}

    looks = planned_looks(start, batch, cap)
    out = {"effects": effects.tolist(), "sd": sd, "margin": margin, "n_studies": n_studies,
           "looks": looks, "sequential": design(looks, spending), "naive": design(looks, NAIVE),
           "fixed": design([cap], NAIVE)}
    if (~null_diff).any():
        # the smallest fixed design as powerful as the sequential one
        target = out["sequential"]["power"]
        out["fixed_n_for_power"] = next(
            (n for n in range(3, cap + 1) if design([n], NAIVE)["power"] >= target), None)
    return out


ERROR_SCENARIOS = {     # name -> true contrasts (accuracy as a fraction); SESOI 0.005 = 0.5 pp
    "all null": (0.0, 0.0, 0.0),
    "one 2 pp effect, two null": (0.02, 0.0, 0.0),
    "all at the margin": (0.005, -0.005, 0.005),
    "one at the margin, two null": (0.005, 0.0, 0.0),
}


def main(n_studies: int = 20_000) -> None:
    """The tables of docs/protocol.md, "Sequential seeds (--until-decided)"."""
    pct = lambda x: "–" if x is None else f"{100 * x:.1f}"          # noqa: E731
    print(f"{n_studies} simulated studies per cell; 3 contrasts (arm minus a shared baseline), "
          "alpha 0.05, SESOI 0.5 pp, looks at 5, 8, 11, 14, 17, 20 seeds; seed 23\n")
    print("| seed sd | scenario | false different: sequential / naive / fixed 20 "
          "| false equivalent: sequential / naive / fixed 20 | E[n] sequential |")
    print("|---|---|---|---|---|")
    for sd in (0.003, 0.006, 0.010):
        for name, effects in ERROR_SCENARIOS.items():
            r = simulate(effects, sd, n_studies=n_studies, seed=23)
            s_, n_, f_ = r["sequential"], r["naive"], r["fixed"]
            print(f"| {sd * 100:.1f} pp | {name} | {pct(s_['fwer_different'])} / "
                  f"{pct(n_['fwer_different'])} / {pct(f_['fwer_different'])} | "
                  f"{pct(s_['fwer_equivalent'])} / {pct(n_['fwer_equivalent'])} / "
                  f"{pct(f_['fwer_equivalent'])} | {s_['expected_n']:.1f} |")
    print("\nEvery contrast at the SESOI (+0.5 pp): power of 'different' per contrast, seeds per arm")
    print("| seed sd | fixed 20: power | O'Brien-Fleming cap 20: power, E[n] (per contrast) "
          "| fixed n with that power | O'Brien-Fleming cap 23: power, E[n] | Pocock cap 20: power, E[n] |")
    print("|---|---|---|---|---|---|")
    for sd in (0.003, 0.006, 0.010):
        r = simulate((0.005,) * 3, sd, n_studies=n_studies, seed=23)
        r23 = simulate((0.005,) * 3, sd, n_studies=n_studies, seed=23, cap=23)["sequential"]
        poc = simulate((0.005,) * 3, sd, n_studies=n_studies, seed=23, spending="pocock")["sequential"]
        s_ = r["sequential"]
        print(f"| {sd * 100:.1f} pp | {pct(r['fixed']['power'])} | {pct(s_['power'])}, "
              f"{s_['expected_n']:.1f} ({s_['mean_n_decided']:.1f}) | {r['fixed_n_for_power']} | "
              f"{pct(r23['power'])}, {r23['expected_n']:.1f} | {pct(poc['power'])}, {poc['expected_n']:.1f} |")


if __name__ == "__main__":
    main()
