//! Whether two runs of a row differ by more than their noise: the
//! Mann–Whitney U rank test (two-sided) on the repetitions of each run.
//!
//! The p-value is exact for small samples (up to [`EXACT_MAX`] values in
//! all): the distribution of the rank sum under the null hypothesis, with
//! the midranks of ties, counted over every way of choosing which values
//! came from the first run. Larger samples use the normal approximation
//! with the tie correction of the variance and a continuity correction.
//!
//! The verdict ([`verdict`]): "changed" when p < 0.05. With few
//! repetitions that can be out of reach — with 3 against 3 the smallest
//! two-sided p is 2/20 = 0.1, when every sample of one run lies above
//! every sample of the other — so when the smallest attainable p is above
//! 0.05, the threshold is 0.1, which at 3 against 3 (and 3 against 4)
//! means exactly that complete separation. When even 0.1 cannot be
//! reached (2 against 2, or one repetition) there is no verdict.

/// Samples up to this many in all get the exact p-value.
pub const EXACT_MAX: usize = 40;

/// The result of a test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the first sample: pairs (a, b) with a > b, ties counting half.
    pub u: f64,
    /// Two-sided p-value.
    pub p: f64,
    /// The smallest two-sided p-value these sample sizes allow (exact
    /// test, no ties).
    pub p_min: f64,
    /// Whether `p` is exact (else the normal approximation).
    pub exact: bool,
}

/// Midranks (1-based) of `values`, ties sharing the mean of their ranks.
fn midranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        // Positions i..=j (0-based) hold ranks i+1..=j+1.
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// C(n, k) as a float.
fn choose(n: usize, k: usize) -> f64 {
    let k = k.min(n - k);
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// The standard normal's upper tail, P(Z > z), from erfc (Numerical
/// Recipes' Chebyshev fit, relative error below 1.2e-7).
fn normal_upper_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    let erfc = if x >= 0.0 { erfc } else { 2.0 - erfc };
    erfc / 2.0
}

/// The two-sided Mann–Whitney U test of `a` against `b`; `None` when a
/// side is empty or a value is not finite.
///
/// ```
/// use fastfuse_bench::signif::mann_whitney;
/// // Every sample of one run above every one of the other, 3 against 3.
/// let t = mann_whitney(&[10.0, 11.0, 12.0], &[1.0, 2.0, 3.0]).unwrap();
/// assert_eq!(t.u, 9.0);
/// assert!((t.p - 0.1).abs() < 1e-12);
/// ```
pub fn mann_whitney(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 || a.iter().chain(b).any(|v| !v.is_finite()) {
        return None;
    }
    let n = n1 + n2;
    let all: Vec<f64> = a.iter().chain(b).copied().collect();
    let ranks = midranks(&all);
    let r1: f64 = ranks[..n1].iter().sum();
    let u = r1 - (n1 * (n1 + 1)) as f64 / 2.0;
    let mean = (n1 * n2) as f64 / 2.0;
    let p_min = (2.0 / choose(n, n1)).min(1.0);
    if n <= EXACT_MAX {
        // Doubled midranks are integers; count the subsets of n1 of them
        // by their sum: ways[k][s] = subsets of size k summing to s.
        let twice: Vec<usize> = ranks.iter().map(|r| (r * 2.0).round() as usize).collect();
        let max_sum: usize = twice.iter().sum();
        let mut ways = vec![vec![0.0f64; max_sum + 1]; n1 + 1];
        ways[0][0] = 1.0;
        for &r in &twice {
            for k in (1..=n1).rev() {
                let (lower, upper) = ways.split_at_mut(k);
                for s in (r..=max_sum).rev() {
                    upper[0][s] += lower[k - 1][s - r];
                }
            }
        }
        let total = choose(n, n1);
        // U = R1 - n1(n1+1)/2, so |U - mean| is |R1 - (mean + n1(n1+1)/2)|.
        let center2 = 2.0 * mean + (n1 * (n1 + 1)) as f64;
        let observed = (2.0 * r1 - center2).abs();
        let extreme: f64 = ways[n1]
            .iter()
            .enumerate()
            .filter(|(s, _)| (*s as f64 - center2).abs() >= observed - 1e-9)
            .map(|(_, w)| w)
            .sum();
        return Some(MannWhitney {
            u,
            p: (extreme / total).min(1.0),
            p_min,
            exact: true,
        });
    }
    // Normal approximation, the variance reduced for ties.
    let mut sorted = all.clone();
    sorted.sort_by(f64::total_cmp);
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && sorted[j + 1] == sorted[i] {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        i = j + 1;
    }
    let nf = n as f64;
    let var = (n1 * n2) as f64 / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
    let p = if var <= 0.0 {
        1.0
    } else {
        let z = ((u - mean).abs() - 0.5).max(0.0) / var.sqrt();
        (2.0 * normal_upper_tail(z)).min(1.0)
    };
    Some(MannWhitney {
        u,
        p,
        p_min,
        exact: false,
    })
}

/// What the test says about a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The runs differ by more than their noise, at this threshold.
    Changed {
        /// The p-value.
        p: f64,
        /// The threshold it is under.
        alpha: f64,
    },
    /// The difference is within the noise.
    WithinNoise {
        /// The p-value.
        p: f64,
    },
    /// Too few repetitions for any verdict: the smallest attainable p is
    /// above 0.1.
    TooFew,
}

impl Verdict {
    /// The verdict as a table cell.
    pub fn text(&self) -> String {
        match self {
            Verdict::Changed { p, .. } => format!("changed (p={p:.3})"),
            Verdict::WithinNoise { p } => format!("within noise (p={p:.2})"),
            Verdict::TooFew => "too few reps".to_string(),
        }
    }
}

/// The verdict on two runs' samples (see the module's rule).
///
/// ```
/// use fastfuse_bench::signif::{verdict, Verdict};
/// let v = verdict(&[10.0, 11.0, 12.0], &[1.0, 2.0, 3.0]);
/// assert!(matches!(v, Verdict::Changed { alpha, .. } if alpha == 0.1));
/// assert!(matches!(verdict(&[1.0, 3.0, 5.0], &[2.0, 4.0, 6.0]), Verdict::WithinNoise { .. }));
/// assert_eq!(verdict(&[1.0], &[2.0]), Verdict::TooFew);
/// ```
pub fn verdict(a: &[f64], b: &[f64]) -> Verdict {
    let Some(t) = mann_whitney(a, b) else {
        return Verdict::TooFew;
    };
    let alpha = if t.p_min <= 0.05 {
        0.05
    } else if t.p_min <= 0.1 + 1e-12 {
        0.1
    } else {
        return Verdict::TooFew;
    };
    // p < 0.05, or p ≤ 0.1 when that is the best the sizes allow (then
    // p = p_min: complete separation).
    let changed = if alpha == 0.05 {
        t.p < 0.05
    } else {
        t.p <= 0.1 + 1e-12
    };
    if changed {
        Verdict::Changed { p: t.p, alpha }
    } else {
        Verdict::WithinNoise { p: t.p }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn exact_p_values_match_the_tables() {
        // scipy.stats.mannwhitneyu's documented example (exact method):
        // U = 17, p = 0.1111.
        let males = [19.0, 22.0, 16.0, 29.0, 24.0];
        let females = [20.0, 11.0, 17.0, 12.0];
        let t = mann_whitney(&males, &females).unwrap();
        assert_eq!(t.u, 17.0);
        assert!(t.exact);
        assert!(close(t.p, 1.0 / 9.0), "{t:?}");
        // Complete separation: 2 / C(n1 + n2, n1).
        let t = mann_whitney(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0]).unwrap();
        assert_eq!(t.u, 0.0);
        assert!(close(t.p, 2.0 / 70.0), "{t:?}");
        assert!(close(t.p_min, 2.0 / 70.0));
        let t = mann_whitney(&[11.0, 12.0, 13.0, 14.0, 15.0], &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert!(close(t.p, 2.0 / 252.0), "{t:?}");
        // Interleaved 3 against 3 (U = 3 of 9): 14 of the 20 splits are
        // at least as far from the mean 4.5.
        let t = mann_whitney(&[1.0, 3.0, 5.0], &[2.0, 4.0, 6.0]).unwrap();
        assert_eq!(t.u, 3.0);
        assert!(close(t.p, 0.7), "{t:?}");
        // Identical samples: p = 1.
        assert!(close(
            mann_whitney(&[1.0, 2.0], &[1.0, 2.0]).unwrap().p,
            1.0
        ));
    }

    #[test]
    fn ties_use_midranks() {
        // Ranks of [1, 2, 2, 3]: 1, 2.5, 2.5, 4.
        assert_eq!(midranks(&[2.0, 1.0, 3.0, 2.0]), vec![2.5, 1.0, 4.0, 2.5]);
        // a = [2, 3] b = [1, 2]: U = (2 vs 1: 1) + (2 vs 2: 0.5) + 3 vs both: 2 = 3.5.
        let t = mann_whitney(&[2.0, 3.0], &[1.0, 2.0]).unwrap();
        assert_eq!(t.u, 3.5);
        // Doubled rank sums of the 6 splits of {2, 5, 5, 8} into pairs:
        // 7, 7, 10, 10, 13, 13; observed 13, center 10: 4 of 6 as extreme.
        assert!(close(t.p, 4.0 / 6.0), "{t:?}");
    }

    #[test]
    fn large_samples_use_the_normal_approximation() {
        // 25 against 25, b shifted by 0.5 of a's 0..25 spread.
        let a: Vec<f64> = (0..25).map(f64::from).collect();
        let b: Vec<f64> = (0..25).map(|i| f64::from(i) + 10.5).collect();
        let t = mann_whitney(&a, &b).unwrap();
        assert!(!t.exact);
        // U = sum over a of the b below it: b_j < a_i iff j < i - 10.5.
        let u: usize = (0..25usize).map(|i| i.saturating_sub(10)).sum();
        assert_eq!(t.u, u as f64);
        // mean 312.5, sd sqrt(25 * 25 * 51 / 12) = 51.54: z = (312.5 -
        // 105 - 0.5) / 51.54 = 4.016, two-sided p = 5.9e-5.
        assert!((t.p - 5.92e-5).abs() < 0.2e-5, "{t:?}");
        // The tail itself: P(Z > 1.96) = 0.025.
        assert!((normal_upper_tail(1.959_964) - 0.025).abs() < 1e-6);
        assert!((normal_upper_tail(0.0) - 0.5).abs() < 1e-7);
    }

    #[test]
    fn the_verdict_follows_the_stated_rule() {
        // 3 against 3: only complete separation (p = 0.1) is a change.
        assert_eq!(
            verdict(&[10.0, 11.0, 12.0], &[1.0, 2.0, 3.0]),
            Verdict::Changed {
                p: mann_whitney(&[10.0, 11.0, 12.0], &[1.0, 2.0, 3.0])
                    .unwrap()
                    .p,
                alpha: 0.1
            }
        );
        assert!(matches!(
            verdict(&[10.0, 2.5, 12.0], &[1.0, 2.0, 3.0]),
            Verdict::WithinNoise { .. }
        ));
        // 5 against 5, separated: p = 0.0079 < 0.05.
        assert!(matches!(
            verdict(&[6.0, 7.0, 8.0, 9.0, 10.0], &[1.0, 2.0, 3.0, 4.0, 5.0]),
            Verdict::Changed { alpha, .. } if alpha == 0.05
        ));
        // 2 against 2: at best p = 1/3.
        assert_eq!(verdict(&[5.0, 6.0], &[1.0, 2.0]), Verdict::TooFew);
        assert_eq!(verdict(&[], &[1.0]), Verdict::TooFew);
    }
}
