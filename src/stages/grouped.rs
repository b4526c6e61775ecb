//! The small records grouped operators exchange through differential dataflow: a row's
//! contribution ([`Stat`]) and a group's folded statistics ([`Summary`]). Both are totally ordered
//! (floats by `total_cmp`) so that differential can sort and consolidate them; a group's
//! contributions therefore always reach `summarize` in the same order, whatever the number of
//! workers or the order of arrival, which is what makes results bit-identical across `-w N`.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// One row's contribution: a count, a mean and a sum of squared deviations (a single value x is
/// `{n: 1, mean: x, m2: 0}`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Stat {
    /// Number of values.
    pub n: u64,
    /// Their mean.
    pub mean: f64,
    /// Σ (x − mean)².
    pub m2: f64,
}

/// A group's folded statistics.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Summary {
    /// Number of values.
    pub n: u64,
    /// Their sum.
    pub sum: f64,
    /// Their mean.
    pub mean: f64,
    /// Σ (x − mean)².
    pub m2: f64,
}

impl Ord for Stat {
    fn cmp(&self, o: &Self) -> Ordering {
        self.n.cmp(&o.n).then(self.mean.total_cmp(&o.mean)).then(self.m2.total_cmp(&o.m2))
    }
}

impl Ord for Summary {
    fn cmp(&self, o: &Self) -> Ordering {
        self.n
            .cmp(&o.n)
            .then(self.sum.total_cmp(&o.sum))
            .then(self.mean.total_cmp(&o.mean))
            .then(self.m2.total_cmp(&o.m2))
    }
}

macro_rules! order_from_ord {
    ($t:ty) => {
        impl PartialOrd for $t {
            fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
                Some(self.cmp(o))
            }
        }
        impl PartialEq for $t {
            fn eq(&self, o: &Self) -> bool {
                self.cmp(o) == Ordering::Equal
            }
        }
        impl Eq for $t {}
    };
}
order_from_ord!(Stat);
order_from_ord!(Summary);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_is_ordered_and_equal_to_itself() {
        let a = Stat { n: 1, mean: f64::NAN, m2: 0.0 };
        assert_eq!(a, a);
        let b = Stat { n: 1, mean: 1.0, m2: 0.0 };
        assert_ne!(a.cmp(&b), Ordering::Equal);
        assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
    }
}
