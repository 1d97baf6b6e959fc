"""Group-sequential boundaries by alpha spending (Lan & DeMets 1983): the look schedule of a
study that adds seeds until its planned contrasts are decided, and the critical values of each
look. The decisions that use them live in ``study/sequential.py``.

A look k analyses n_k paired seeds; its information fraction is t_k = n_k / cap (the last
planned look has t = 1). Under H0 the standardised statistics Z_k of a mean over nested seed
sets are jointly normal with corr(Z_j, Z_k) = sqrt(t_j / t_k) (independent increments of the
score S_k = Z_k sqrt(t_k); Jennison & Turnbull 2000, ch. 3). A spending function alpha(t),
increasing from 0 to the test's level at t = 1, fixes how much of the level look k may use:
P(first crossing at look k | H0) = alpha(t_k) - alpha(t_{k-1}). Two families:

* O'Brien-Fleming type: alpha(t) = 2 - 2 Phi(z_{1-a/2} / sqrt(t)), almost nothing early,
  a last boundary close to the fixed design's (O'Brien & Fleming 1979);
* Pocock type: alpha(t) = a ln(1 + (e - 1) t), about equal nominal levels at every look
  (Pocock 1977), a higher last boundary.

a is the level of a one-sided test (Z crosses upwards); a two-sided test of level ``level``
(|Z| crosses) spends a = level / 2 on each side, as gsDesign's sfLDOF / sfLDPocock and ld98
do: with 5 equally spaced looks at two-sided 0.05 the boundaries are 4.877, 3.357, 2.680,
2.290, 2.031 (O'Brien-Fleming type) and 2.438, 2.427, 2.410, 2.397, 2.386 (Pocock type).

Hand-written, not scipy: the boundary of look k solves a k-dimensional normal probability.
``scipy.stats.multivariate_normal.cdf`` (Genz's randomised quasi-Monte Carlo) takes 0.16 s per
6-dimensional evaluation on our machines with noise of 1e-5, so a root search per look costs
about 15 s per boundary set. The classical recursive integration (Armitage, McPherson & Rowe
1969; Jennison & Turnbull 2000, ch. 19) carries the sub-density of S_k on the continuation
region on a Simpson grid and gives the exit probability in closed form (scipy's normal cdf):
deterministic to ~1e-9 and milliseconds per set. tests/test_sequential.py checks it against
scipy's multivariate normal and against published Lan-DeMets boundaries.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import optimize
from scipy import stats as sps

SPENDING = ("obrien-fleming", "pocock")
_TAIL = 8.0              # a continuation grid stops 8 sd of S_k below the mean (one-sided tests)
_MIN_POINTS = 401        # Simpson grid points per look (odd), more when looks are close
_POINTS_PER_SD = 12      # grid points per sd of an increment S_k - S_{k-1}
_MAX_Z = 40.0            # a boundary above this is "never crossed" (nominal p < 1e-300)
MC_PATHS = 1 << 20       # simulated H0 paths of the t boundaries: level +-0.0002 (1 sd) at 0.05
MC_SEED = 23             # fixed: the same looks give the same boundaries
_MIN_PATHS = 20          # below this many paths' worth of alpha a look keeps the normal level


def planned_looks(start: int, batch: int, cap: int) -> list[int]:
    """Seeds at each look: start, start + batch, ..., and the cap as the last look.

    >>> planned_looks(5, 3, 20)
    [5, 8, 11, 14, 17, 20]"""
    if not (1 <= start <= cap and batch >= 1):
        raise ValueError(f"need 1 <= start ({start}) <= cap ({cap}) and batch ({batch}) >= 1")
    looks = list(range(start, cap + 1, batch))
    return looks if looks[-1] == cap else looks + [cap]


def spent(t, level: float, spending: str = "obrien-fleming", sides: int = 1):
    """Cumulative type I error alpha(t) a test of level ``level`` may have used by fraction t.
    A two-sided test spends ``level / 2`` per side (the symmetric designs of J&T's tables,
    gsDesign and ld98: two-sided 0.05 has the one-sided 0.025 boundaries)."""
    t = np.clip(np.asarray(t, dtype=float), 0.0, 1.0)
    side = level / sides
    if spending == "obrien-fleming":
        with np.errstate(divide="ignore"):
            return sides * np.where(t > 0, 2 * sps.norm.sf(sps.norm.isf(side / 2) / np.sqrt(t)), 0.0)
    if spending == "pocock":
        return sides * side * np.log1p((math.e - 1) * t)
    raise ValueError(f"unknown spending {spending!r}; one of {SPENDING}")


def _simpson(lo: float, hi: float, points: int) -> tuple[np.ndarray, np.ndarray]:
    points += 1 - points % 2                       # Simpson needs an odd count
    x = np.linspace(lo, hi, points)
    w = np.ones(points)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return x, w * (hi - lo) / (points - 1) / 3


@lru_cache(maxsize=1024)
def z_boundaries(fractions: tuple[float, ...], level: float, sides: int = 2,
                 spending: str = "obrien-fleming") -> tuple[float, ...]:
    """Critical values c_1..c_K on the Z scale at strictly increasing information fractions
    in (0, 1]: under H0 the test first crosses at look k with probability
    alpha(t_k) - alpha(t_{k-1}); crossing means |Z_k| >= c_k (``sides`` 2) or Z_k >= c_k (1).
    A look with nothing to spend gets +inf. The last fraction is the caller's to set to 1
    where that look is the final one (it then spends what is left of ``level``)."""
    t = np.asarray(fractions, dtype=float)
    if sides not in (1, 2) or not (0 < level < 1) or len(t) == 0:
        raise ValueError("sides is 1 or 2, 0 < level < 1, at least one look")
    if t[0] <= 0 or t[-1] > 1 + 1e-12 or np.any(np.diff(t) <= 0):
        raise ValueError(f"fractions must increase strictly within (0, 1]: {fractions}")
    target = np.diff(spent(t, level, spending, sides), prepend=0.0)   # (looks,) alpha to spend at each
    out = []
    x = w = f = None                      # grid, weights and sub-density of S_{k-1} (continuing)
    for k, tk in enumerate(t):
        sd_k = math.sqrt(tk)
        if k == 0:
            def exit_prob(c):             # P(cross at look 1) for S_1 ~ N(0, t_1)
                return sides * sps.norm.sf(c)
        else:
            step = math.sqrt(tk - t[k - 1])   # sd of the increment S_k - S_{k-1}
            mass = w * f                      # (grid,) probability weights of continuing paths

            def exit_prob(c, step=step, mass=mass, x=x, sd_k=sd_k):
                up = sps.norm.sf((c * sd_k - x) / step)
                down = sps.norm.cdf((-c * sd_k - x) / step) if sides == 2 else 0.0
                return float(mass @ (up + down))
        if target[k] <= 0 or exit_prob(_MAX_Z) >= target[k]:
            c = math.inf
        else:
            c = optimize.brentq(lambda z: exit_prob(z) - target[k], 0.0, _MAX_Z, xtol=1e-10)
        out.append(c)
        # the continuation region of look k on the score scale, and S_k's sub-density on it
        hi = min(c, _TAIL) * sd_k
        lo = -hi if sides == 2 else -_TAIL * sd_k
        inc = math.sqrt(tk - t[k - 1]) if k else sd_k
        grid, weights = _simpson(lo, hi, max(_MIN_POINTS, int((hi - lo) / inc * _POINTS_PER_SD)))
        if k == 0:
            density = sps.norm.pdf(grid / sd_k) / sd_k
        else:
            # (new grid, old grid) Gaussian kernel of the increment, times the old mass
            density = sps.norm.pdf((grid[:, None] - x[None, :]) / inc) / inc @ (w * f)
        x, w, f = grid, weights, density
    return tuple(float(c) for c in out)


def nominal_levels(fractions: tuple[float, ...], level: float, sides: int = 2,
                   spending: str = "obrien-fleming") -> np.ndarray:
    """The boundaries as nominal p-value levels, (looks,): a look crosses when its stage-wise
    p-value (two-sided for ``sides`` 2, one-sided for 1) is at most this. On this scale the
    boundary carries over to a t statistic at the look's degrees of freedom (the significance
    level approach of Jennison & Turnbull 2000, ch. 3)."""
    c = np.asarray(z_boundaries(tuple(float(f) for f in fractions), float(level), sides, spending))
    return sides * sps.norm.sf(c)


@lru_cache(maxsize=4)
def _null_t_paths(ns: tuple[int, ...], paths: int, seed: int) -> np.ndarray:
    """(paths, looks) t statistics of H0 paths: seed i of every path is the i-th draw of
    ``paths`` standard normals, so a path's first n seeds do not depend on the later looks."""
    rng = np.random.default_rng(seed)
    total = np.zeros(paths)
    squares = np.zeros(paths)
    out = np.empty((paths, len(ns)), dtype=np.float32)   # 4 MB per look at 2^20 paths
    n = 0
    for k, n_k in enumerate(ns):
        while n < n_k:
            x = rng.standard_normal(paths)
            total += x
            squares += x * x
            n += 1
        var = (squares - total * total / n) / (n - 1)
        out[:, k] = total / np.sqrt(var * n)
    return out


@lru_cache(maxsize=1024)
def t_nominal_levels(ns: tuple[int, ...], cap: int, level: float, sides: int = 2,
                     spending: str = "obrien-fleming", final: bool = True, paths: int = MC_PATHS,
                     seed: int = MC_SEED) -> np.ndarray:
    """Nominal p-value levels, (looks,), for one-sample t statistics at n_1 < ... < n_K seeds
    (n - 1 df) that spend exactly alpha(t_k) - alpha(t_{k-1}) at each look, t_k = n_k / cap
    (the last look's t = 1 where ``final``).

    The significance level approach (``nominal_levels`` applied to a t statistic at its df)
    gets each look's marginal right but not the joint crossing: at our n it gives 5.2-5.8% at
    a nominal 5% (tests/test_sequential.py). Under H0 the t statistics' joint law is free of
    the variance, so it is simulated once (``paths`` seeded paths): at each look the level is
    the quantile of the stage-wise p-values of the paths still running that spends the
    increment. The first look, and increments below 20 paths' worth, keep the normal
    levels: the first look's are exact (one t statistic), the others negligible."""
    if any(b <= a for a, b in zip(ns, ns[1:])) or ns[0] < 2 or ns[-1] > cap:
        raise ValueError(f"seeds at the looks must increase within [2, cap={cap}]: {ns}")
    fractions = [n / cap for n in ns]
    if final:
        fractions[-1] = 1.0
    normal = nominal_levels(tuple(fractions), level, sides, spending)
    target = np.diff(spent(np.array(fractions), level, spending, sides), prepend=0.0)
    t = _null_t_paths(tuple(ns), paths, seed)
    out = normal.copy()
    running = np.ones(paths, dtype=bool)
    for k, n in enumerate(ns):
        stat = np.abs(t[:, k]) if sides == 2 else t[:, k]        # crosses when large
        count = int(round(target[k] * paths))
        alive = stat[running]
        if k > 0 and _MIN_PATHS <= count < len(alive):
            # the critical value between the count-th and the next largest running statistic
            top = -np.partition(-alive, [count - 1, count])[[count - 1, count]]
            out[k] = sides * sps.t.sf(0.5 * (float(top[0]) + float(top[1])), n - 1)
        running &= ~(stat > t_critical(out[k], n - 1, sides))
    return out


def t_critical(nominal: float, df: float, sides: int = 2) -> float:
    """The t critical value of a nominal level at ``df`` degrees of freedom (inf for level 0)."""
    return float(sps.t.isf(nominal / sides, df)) if nominal > 0 else math.inf
