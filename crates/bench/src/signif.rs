//! Whether two runs of a row differ by more than their noise: the
//! Mann–Whitney U rank test (two-sided) on the repetitions of each run,
//! with the family-wise error over all the rows of a comparison held at
//! [`ALPHA`] by Holm's step-down procedure.
//!
//! The p-value is exact for small samples (up to [`EXACT_MAX`] values in
//! all): the distribution of the rank sum under the null hypothesis, with
//! the midranks of ties, counted over every way of choosing which values
//! came from the first run. Larger samples use the normal approximation
//! with the tie correction of the variance and a continuity correction.
//!
//! Why a family: a comparison has ~100 rows (configurations ×
//! workloads). Tested one by one at 5%, two runs of the same binary show
//! about five "changed" rows by chance; with 3 repetitions against 3, where
//! the old rule called complete separation (p = 2/20 = 0.1) a change, ten.
//! [`verdicts`] instead rejects the rows' null hypotheses by Holm's
//! procedure: sorted by p, the k-th smallest (from 0) must be at most
//! ALPHA / (m − k), and the first that is not stops the procedure. Then the
//! chance that *any* row of two runs of the same binary is marked changed
//! is at most ALPHA, whatever the dependence between rows (rows of one run
//! share the machine's state, so they are not independent; Holm needs no
//! independence, unlike Benjamini–Hochberg).
//!
//! Rows whose repetitions could not reach ALPHA even alone (3 against 3:
//! the smallest p is 0.1) are left out of the family (Tarone's
//! refinement: they can never be rejected, so they add no false
//! rejection) and read "within noise", saying that so few repetitions
//! cannot show a change. The price of the family is repetitions: complete
//! separation of n against n gives p = 2 / C(2n, n), so one changed row
//! among m needs 2 / C(2n, n) ≤ ALPHA / m ([`reps_needed`]): 4 a run for a
//! single row, 6 among ten rows, 8 among the ~100 of a full run, where 10
//! leave room for an overlapping pair. When many rows change together, as
//! after a change of the engine, Holm's later thresholds are looser
//! (ALPHA / (m − k)), so those are found with fewer.
//!
//! Not added: a minimum effect such as "the shift exceeds each run's own
//! spread". For repetitions that are exchangeable within a run it adds no
//! error control the family does not already give, and for drift between
//! runs (another day, other load) it does not help either: a run's spread
//! says nothing about the next run's level. That drift is what
//! interleaving the configurations within a run is for; between runs,
//! read a "changed" as "changed between these two runs".

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

/// The family-wise error rate of a comparison: the chance that any of its
/// rows is marked changed when none changed.
pub const ALPHA: f64 = 0.05;

/// What the test says about a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The runs differ by more than their noise: Holm's procedure over the
    /// comparison's rows rejects this row's null hypothesis.
    Changed {
        /// The row's own p-value.
        p: f64,
        /// Holm's adjusted p-value (at most [`ALPHA`]).
        adjusted: f64,
    },
    /// The difference is within the noise.
    WithinNoise {
        /// The row's own p-value.
        p: f64,
        /// Holm's adjusted p-value (above [`ALPHA`]).
        adjusted: f64,
    },
    /// Within the noise as far as these repetitions can tell: even alone
    /// the row could not reach [`ALPHA`] (3 against 3: p ≥ 0.1), so it is
    /// not in the family.
    Untestable {
        /// The row's own p-value.
        p: f64,
        /// Repetitions of the first run.
        n1: usize,
        /// Repetitions of the second run.
        n2: usize,
    },
    /// A run has fewer than two repetitions (or none): nothing to test.
    TooFew,
}

impl Verdict {
    /// The verdict as a table cell.
    pub fn text(&self) -> String {
        match self {
            Verdict::Changed { p, adjusted } => {
                format!("changed (p={p:.2e}, Holm {adjusted:.3})")
            }
            Verdict::WithinNoise { p, adjusted } => {
                format!("within noise (p={p:.3}, Holm {adjusted:.2})")
            }
            Verdict::Untestable { p, n1, n2 } => {
                format!("within noise (p={p:.2}; {n1} vs {n2} reps cannot show a change)")
            }
            Verdict::TooFew => "too few reps".to_string(),
        }
    }

    /// Whether the row is marked changed.
    pub fn changed(&self) -> bool {
        matches!(self, Verdict::Changed { .. })
    }
}

/// Holm's step-down adjusted p-values, in the order given: the k-th
/// smallest (from 0) of m becomes (m − k)·p, never below the one before,
/// at most 1. A row is rejected at level α when its adjusted p is ≤ α.
///
/// ```
/// let adj = fastfuse_bench::signif::holm(&[0.01, 0.04, 0.03, 0.005]);
/// let want = [0.03, 0.06, 0.06, 0.02];
/// assert!(adj.iter().zip(want).all(|(a, w)| (a - w).abs() < 1e-12));
/// ```
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (k, &i) in order.iter().enumerate() {
        running = running.max(((m - k) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// The repetitions each run needs (n against n) for complete separation
/// to mark one changed row among `rows`: the least n with
/// 2 / C(2n, n) ≤ ALPHA / rows.
///
/// ```
/// use fastfuse_bench::signif::reps_needed;
/// assert_eq!([1, 10, 100].map(reps_needed), [4, 6, 8]);
/// ```
pub fn reps_needed(rows: usize) -> usize {
    let threshold = ALPHA / rows.max(1) as f64;
    (2..)
        .find(|&n| 2.0 / choose(2 * n, n) <= threshold)
        .unwrap_or(2)
}

/// The verdicts on the rows of one comparison, each row the two runs'
/// repetitions (see the module's rule).
///
/// ```
/// use fastfuse_bench::signif::verdicts;
/// let before = [100.0, 101.0, 99.0, 100.5, 99.5];
/// let after = [130.0, 131.0, 129.0, 130.5, 129.5];
/// let v = verdicts(&[(&before, &after), (&before, &before), (&[1.0], &[2.0])]);
/// assert!(v[0].changed() && !v[1].changed());
/// assert_eq!(v[2].text(), "too few reps");
/// ```
pub fn verdicts(rows: &[(&[f64], &[f64])]) -> Vec<Verdict> {
    let tests: Vec<Option<MannWhitney>> = rows
        .iter()
        .map(|(a, b)| {
            if a.len() < 2 || b.len() < 2 {
                None
            } else {
                mann_whitney(a, b)
            }
        })
        .collect();
    // The family: rows that could reach ALPHA at all.
    let family: Vec<usize> = (0..rows.len())
        .filter(|&i| tests[i].is_some_and(|t| t.p_min <= ALPHA + 1e-12))
        .collect();
    let adjusted = holm(
        &family
            .iter()
            .map(|&i| tests[i].unwrap().p)
            .collect::<Vec<_>>(),
    );
    (0..rows.len())
        .map(|i| {
            let Some(t) = tests[i] else {
                return Verdict::TooFew;
            };
            match family.iter().position(|&f| f == i) {
                Some(k) if adjusted[k] <= ALPHA + 1e-12 => Verdict::Changed {
                    p: t.p,
                    adjusted: adjusted[k],
                },
                Some(k) => Verdict::WithinNoise {
                    p: t.p,
                    adjusted: adjusted[k],
                },
                None => Verdict::Untestable {
                    p: t.p,
                    n1: rows[i].0.len(),
                    n2: rows[i].1.len(),
                },
            }
        })
        .collect()
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

    /// A small deterministic generator (SplitMix64) for the simulations.
    struct Rng(u64);

    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as f64 / u64::MAX as f64
        }

        /// `n` repetitions of a row around `level`, spread 10% (±5%).
        fn reps(&mut self, n: usize, level: f64) -> Vec<f64> {
            (0..n)
                .map(|_| level * (1.0 + 0.1 * (self.uniform() - 0.5)))
                .collect()
        }
    }

    /// Two runs of the same binary: `rows` rows of `n` repetitions each,
    /// every row drawn from the same distribution in both runs.
    fn same_binary(rng: &mut Rng, rows: usize, n: usize) -> Vec<(Vec<f64>, Vec<f64>)> {
        (0..rows)
            .map(|r| {
                let level = 100.0 * (1.0 + r as f64);
                (rng.reps(n, level), rng.reps(n, level))
            })
            .collect()
    }

    fn judge(rows: &[(Vec<f64>, Vec<f64>)]) -> Vec<Verdict> {
        let refs: Vec<(&[f64], &[f64])> = rows
            .iter()
            .map(|(a, b)| (a.as_slice(), b.as_slice()))
            .collect();
        verdicts(&refs)
    }

    #[test]
    fn runs_of_the_same_binary_are_within_noise() {
        // 3 and 5 repetitions, 100 rows, 200 pairs of runs: not one row
        // marked changed, where testing rows one by one would mark many.
        for n in [3, 5] {
            let mut rng = Rng(n as u64);
            let (mut by_row, mut complete) = (0, 0);
            for _ in 0..200 {
                let rows = same_binary(&mut rng, 100, n);
                let v = judge(&rows);
                assert!(v.iter().all(|v| !v.changed()), "{n} reps: {v:?}");
                by_row += rows
                    .iter()
                    .filter(|(a, b)| mann_whitney(a, b).unwrap().p <= 0.1 + 1e-12)
                    .count();
                complete += rows
                    .iter()
                    .filter(|(a, b)| {
                        let t = mann_whitney(a, b).unwrap();
                        (t.p - t.p_min).abs() < 1e-12
                    })
                    .count();
                if n == 3 {
                    assert!(v
                        .iter()
                        .all(|v| matches!(v, Verdict::Untestable { n1: 3, n2: 3, .. })));
                }
            }
            // What the rule replaces: at 3 reps complete separation (the
            // old "changed") in ~10% of rows, ~10 rows per comparison.
            if n == 3 {
                assert!((1600..2400).contains(&complete), "{complete}");
            }
            assert!(by_row > 1000, "{n}: {by_row}");
        }
        // 10 repetitions, where a row can be rejected: the family-wise
        // error stays at most 5% — at most ~10 of 200 comparisons with any
        // row marked changed (binomial sd ~3), while ~5% of all rows have
        // p < 0.05 on their own.
        let mut rng = Rng(10);
        let (mut with_a_change, mut raw) = (0, 0);
        for _ in 0..200 {
            let v = judge(&same_binary(&mut rng, 100, 10));
            if v.iter().any(Verdict::changed) {
                with_a_change += 1;
            }
            raw += v
                .iter()
                .filter(|v| matches!(v, Verdict::WithinNoise { p, .. } | Verdict::Changed { p, .. } if *p < 0.05))
                .count();
        }
        eprintln!("10 reps: {with_a_change} of 200 comparisons with a false change; {raw} rows at p < 0.05");
        assert!(with_a_change <= 16, "{with_a_change} of 200");
        assert!(
            (700..1300).contains(&raw),
            "{raw} of 20000 rows at p < 0.05"
        );
    }

    #[test]
    fn a_30_percent_shift_is_marked_changed() {
        let mut rng = Rng(30);
        // 5 repetitions, the four seed rows all 30% faster.
        let rows: Vec<_> = (0..4)
            .map(|r| {
                let level = 1000.0 * (1.0 + r as f64);
                (rng.reps(5, level), rng.reps(5, level * 1.3))
            })
            .collect();
        let v = judge(&rows);
        assert!(v.iter().all(Verdict::changed), "{v:?}");
        assert!(
            v[0].text().starts_with("changed (p=7.94e-3, Holm 0.032)"),
            "{}",
            v[0].text()
        );
        // One row of five shifted, 5 repetitions: that row only.
        let mut rows = same_binary(&mut rng, 5, 5);
        rows[2].1 = rng.reps(5, 300.0 * 1.3);
        let v = judge(&rows);
        assert!(v[2].changed(), "{v:?}");
        assert_eq!(v.iter().filter(|v| v.changed()).count(), 1, "{v:?}");
        // One row among 100: 5 repetitions cannot show it (p ≥ 0.0079 >
        // 0.05 / 100), 8 can.
        for (n, found) in [(5, false), (8, true)] {
            let mut rows = same_binary(&mut rng, 100, n);
            rows[7].1 = rng.reps(n, 800.0 * 0.7);
            let v = judge(&rows);
            assert_eq!(v[7].changed(), found, "{n} reps: {:?}", v[7]);
            assert_eq!(reps_needed(100) <= n, found);
        }
    }

    #[test]
    fn too_few_repetitions_get_no_test() {
        let v = verdicts(&[
            (&[1.0], &[2.0]),
            (&[], &[1.0, 2.0]),
            (&[1.0, 2.0], &[5.0, 6.0]),
            (&[1.0, 2.0, 3.0], &[5.0, 6.0, 7.0]),
        ]);
        assert_eq!(v[0], Verdict::TooFew);
        assert_eq!(v[1], Verdict::TooFew);
        // 2 against 2 and 3 against 3, even separated: not in the family.
        assert!(matches!(v[2], Verdict::Untestable { n1: 2, n2: 2, .. }));
        assert_eq!(
            v[3].text(),
            "within noise (p=0.10; 3 vs 3 reps cannot show a change)"
        );
    }
}
