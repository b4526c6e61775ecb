//! Which stage `watch` may record instead of apply: the last stage of a plan, when it is a
//! whole-dataset whitening writing one column ([`crate::stages::GroupedOp::deferral`]). Such a
//! stage then writes its column as a copy of the values before whitening, and the dataset records
//! the statistic ([`crate::store::DeferredWhitening`]); any other whole-dataset statistic, or one
//! followed by more stages, is applied and re-emits every row.

use super::Plan;
use crate::ops::normalize::Moments;
use crate::stages::Operator as Op;
use crate::store::DeferredWhitening;

/// What a deferred stage does: copy `source` into the whitening's column, unwhitened.
#[derive(Clone)]
pub struct Deferred {
    /// Index of the stage.
    pub stage: usize,
    /// The column the stage reads its values from.
    pub source: String,
    /// The whitening of the column it writes, without a statistic yet.
    pub whitening: DeferredWhitening,
}

/// The last stage of `plan`, when it is a whole-dataset whitening writing one column.
pub fn deferrable(plan: &Plan) -> Option<Deferred> {
    let stage = plan.stages.len().checked_sub(1)?;
    let st = &plan.stages[stage];
    let Op::Grouped(op) = &st.op else { return None };
    // A re-sent episode's earlier row is found again by re-running the stages before this one on
    // its file, which needs them all local.
    if plan.stages[..stage].iter().any(|s| matches!(s.op, Op::Grouped(_))) {
        return None;
    }
    let d = op.deferral().filter(|_| op.group_column().is_none())?;
    let [(column, _)] = st.writes.as_slice() else { return None };
    let whitening = DeferredWhitening {
        column: column.clone(),
        segments: st.read.get(d.segments)?.clone(),
        moments: Moments { n: 0, mean: 0.0, m2: 0.0 },
        params: d.params,
        segments_only_for_whitening: false,
    };
    Some(Deferred { stage, source: st.read.get(d.values)?.clone(), whitening })
}
