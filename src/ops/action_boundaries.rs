//! Action boundaries: validates an episode's per-token `segments` and `turns`
//! and returns, for every turn `0..n_turns`, the half-open token range of its
//! action (`None` when the turn has no action tokens, an "empty action").
//!
//! Invariants enforced (otherwise a [`BoundaryError`] naming the token index):
//! `segments` and `turns` have equal length; every segment code is known
//! (see [`super::segment`]); every action token has a turn in
//! `0..n_turns`; the turns of action tokens never decrease along the token
//! list; the action tokens of one turn are contiguous. The `turns` entries of
//! non-action tokens are never interpreted (they may be negative or
//! `>= n_turns`). Every returned span satisfies `start < end <= n_tokens`, and
//! spans are ordered and disjoint.

use std::fmt;

use super::segment::{Segment, ACTION};

/// Token range `[start, end)` of the action of one turn (`end > start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSpan {
    /// Turn index (0-based) the action belongs to.
    pub turn: usize,
    /// Index of the first action token.
    pub start: usize,
    /// One past the index of the last action token.
    pub end: usize,
}

/// Why an episode's `segments`/`turns` could not be turned into action spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundaryError {
    /// `segments` and `turns` have different lengths.
    LengthMismatch {
        /// Length of `segments`.
        segments: usize,
        /// Length of `turns`.
        turns: usize,
    },
    /// A segment code outside 0..=3.
    UnknownSegment {
        /// Token index.
        index: usize,
        /// The offending code.
        code: u8,
    },
    /// An action token whose turn is outside `0..n_turns`.
    TurnOutOfRange {
        /// Token index.
        index: usize,
        /// The token's turn.
        turn: i32,
        /// Number of turns of the episode.
        n_turns: usize,
    },
    /// An action token of `turn` after that turn's action was interrupted.
    NotContiguous {
        /// Token index.
        index: usize,
        /// The turn whose action tokens are split.
        turn: usize,
    },
    /// An action token whose turn is smaller than an earlier action token's.
    TurnsDecreasing {
        /// Token index.
        index: usize,
        /// Turn of the previous action token.
        previous: usize,
        /// Turn of this token.
        turn: usize,
    },
}

impl fmt::Display for BoundaryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoundaryError::LengthMismatch { segments, turns } => write!(
                f,
                "segments has {segments} entries but turns has {turns}; they must be equal"
            ),
            BoundaryError::UnknownSegment { index, code } => {
                write!(f, "token {index}: unknown segment code {code} (expected 0..=3)")
            }
            BoundaryError::TurnOutOfRange {
                index,
                turn,
                n_turns,
            } => write!(
                f,
                "token {index}: action token has turn {turn}, outside 0..{n_turns}"
            ),
            BoundaryError::NotContiguous { index, turn } => write!(
                f,
                "token {index}: action tokens of turn {turn} are not contiguous"
            ),
            BoundaryError::TurnsDecreasing {
                index,
                previous,
                turn,
            } => write!(
                f,
                "token {index}: action token has turn {turn} after an action token of turn {previous}; turns must not decrease"
            ),
        }
    }
}

impl std::error::Error for BoundaryError {}

/// Returns one entry per turn `0..n_turns`: the span of that turn's action, or
/// `None` when the turn has no action tokens. See the module docs for the
/// checks performed; with several problems, the error is the one at the
/// earliest token.
///
/// The scan works on runs rather than tokens: it checks every code at once
/// (the largest must be known), finds the next action token with `memchr`,
/// and inside a run of action tokens only looks for the next change of turn.
pub fn action_spans(segments: &[u8], turns: &[i32], n_turns: usize) -> Result<Vec<Option<ActionSpan>>, BoundaryError> {
    if segments.len() != turns.len() {
        return Err(BoundaryError::LengthMismatch { segments: segments.len(), turns: turns.len() });
    }
    // Tokens before the first unknown code are checked as usual; an error there comes first.
    let all_known = segments.iter().copied().max().is_none_or(|c| Segment::from_u8(c).is_some());
    let unknown = if all_known { None } else { segments.iter().position(|&c| Segment::from_u8(c).is_none()) };
    let known = &segments[..unknown.unwrap_or(segments.len())];
    let mut spans: Vec<Option<ActionSpan>> = vec![None; n_turns];
    let mut previous: Option<usize> = None;
    let mut i = 0;
    while let Some(found) = memchr::memchr(ACTION, &known[i..]) {
        let run_start = i + found;
        let run_end = known[run_start..].iter().position(|&c| c != ACTION).map_or(known.len(), |n| run_start + n);
        // Within the run, each stretch of equal turns is one turn's action tokens.
        let mut index = run_start;
        while index < run_end {
            let raw_turn = turns[index];
            let stretch = turns[index..run_end].iter().position(|&t| t != raw_turn).map_or(run_end, |n| index + n);
            let turn = usize::try_from(raw_turn)
                .ok()
                .filter(|&t| t < n_turns)
                .ok_or(BoundaryError::TurnOutOfRange { index, turn: raw_turn, n_turns })?;
            if let Some(prev) = previous.filter(|&p| turn < p) {
                return Err(BoundaryError::TurnsDecreasing { index, previous: prev, turn });
            }
            previous = Some(turn);
            match &mut spans[turn] {
                // The turn's earlier tokens ended before this stretch: a non-action token or
                // another turn's tokens came between.
                Some(_) => return Err(BoundaryError::NotContiguous { index, turn }),
                slot @ None => *slot = Some(ActionSpan { turn, start: index, end: stretch }),
            }
            index = stretch;
        }
        i = run_end;
    }
    match unknown {
        Some(index) => Err(BoundaryError::UnknownSegment { index, code: segments[index] }),
        None => Ok(spans),
    }
}

/// Per-token flags, `true` exactly on the last token of each action.
///
/// # Panics
/// If a span ends beyond `n_tokens` (spans must come from [`action_spans`]
/// on an episode of `n_tokens` tokens).
pub fn action_end_flags(spans: &[Option<ActionSpan>], n_tokens: usize) -> Vec<bool> {
    let mut flags = vec![false; n_tokens];
    for span in spans.iter().flatten() {
        assert!(
            span.end <= n_tokens,
            "action span of turn {} ends at {} beyond {n_tokens} tokens",
            span.turn,
            span.end
        );
        flags[span.end - 1] = true;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn span(turn: usize, start: usize, end: usize) -> Option<ActionSpan> {
        Some(ActionSpan { turn, start, end })
    }

    #[test]
    fn golden_spans_with_empty_turn() {
        // tokens: P A0 A0 O0 T1 O1 A2 O2(turn 3, outside 0..3, allowed: not an action)
        let seg = [0, 1, 1, 2, 3, 2, 1, 2];
        let turns = [0, 0, 0, 0, 1, 1, 2, 3];
        let spans = action_spans(&seg, &turns, 3).unwrap();
        assert_eq!(spans, vec![span(0, 1, 3), None, span(2, 6, 7)]);
        assert_eq!(action_end_flags(&spans, seg.len()), vec![false, false, true, false, false, false, true, false]);
    }

    #[test]
    fn no_tokens_all_turns_empty() {
        assert_eq!(action_spans(&[], &[], 2).unwrap(), vec![None, None]);
        assert!(action_end_flags(&[None, None], 0).is_empty());
    }

    #[test]
    fn errors_name_the_token() {
        assert_eq!(action_spans(&[1, 1], &[0], 1), Err(BoundaryError::LengthMismatch { segments: 2, turns: 1 }));
        let e = action_spans(&[0, 7], &[0, 0], 1).unwrap_err();
        assert_eq!(e, BoundaryError::UnknownSegment { index: 1, code: 7 });
        assert!(e.to_string().contains("token 1"));
        assert_eq!(
            action_spans(&[2, 1], &[0, 1], 1),
            Err(BoundaryError::TurnOutOfRange { index: 1, turn: 1, n_turns: 1 })
        );
        assert_eq!(action_spans(&[1], &[-1], 1), Err(BoundaryError::TurnOutOfRange { index: 0, turn: -1, n_turns: 1 }));
        assert_eq!(action_spans(&[1, 2, 1], &[0, 0, 0], 1), Err(BoundaryError::NotContiguous { index: 2, turn: 0 }));
        assert_eq!(
            action_spans(&[1, 1], &[1, 0], 2),
            Err(BoundaryError::TurnsDecreasing { index: 1, previous: 1, turn: 0 })
        );
        let msg = BoundaryError::NotContiguous { index: 2, turn: 0 }.to_string();
        assert!(msg.contains("token 2") && msg.contains("turn 0"));
    }

    /// The earlier token-by-token scan: the oracle for [`action_spans`].
    fn token_by_token(
        segments: &[u8],
        turns: &[i32],
        n_turns: usize,
    ) -> Result<Vec<Option<ActionSpan>>, BoundaryError> {
        if segments.len() != turns.len() {
            return Err(BoundaryError::LengthMismatch { segments: segments.len(), turns: turns.len() });
        }
        let mut spans: Vec<Option<ActionSpan>> = vec![None; n_turns];
        let mut previous: Option<usize> = None;
        for (index, (&code, &raw_turn)) in segments.iter().zip(turns).enumerate() {
            if Segment::from_u8(code).is_none() {
                return Err(BoundaryError::UnknownSegment { index, code });
            }
            if code != ACTION {
                continue;
            }
            let turn = usize::try_from(raw_turn)
                .ok()
                .filter(|&t| t < n_turns)
                .ok_or(BoundaryError::TurnOutOfRange { index, turn: raw_turn, n_turns })?;
            if let Some(prev) = previous {
                if turn < prev {
                    return Err(BoundaryError::TurnsDecreasing { index, previous: prev, turn });
                }
            }
            previous = Some(turn);
            match &mut spans[turn] {
                Some(span) if span.end == index => span.end = index + 1,
                Some(_) => return Err(BoundaryError::NotContiguous { index, turn }),
                slot @ None => *slot = Some(ActionSpan { turn, start: index, end: index + 1 }),
            }
        }
        Ok(spans)
    }

    proptest! {
        /// Any segments and turns (mostly valid, sometimes not): the same spans or the same error
        /// as the token-by-token scan.
        #[test]
        fn run_scan_equals_token_by_token_scan(
            tokens in prop::collection::vec((prop_oneof![6 => 0u8..4, 1 => 4u8..6], -1i32..5), 0..40),
            n_turns in 0usize..5,
        ) {
            let (seg, turns): (Vec<u8>, Vec<i32>) = tokens.into_iter().unzip();
            prop_assert_eq!(action_spans(&seg, &turns, n_turns), token_by_token(&seg, &turns, n_turns));
        }

        /// Well-formed episodes (actions of non-decreasing turns, observations between): equal too.
        #[test]
        fn run_scan_equals_token_by_token_scan_on_episodes(
            layout in prop::collection::vec((0usize..4, 0usize..3, any::<bool>()), 0..8),
        ) {
            let (mut seg, mut turns) = (Vec::new(), Vec::new());
            for (t, &(alen, olen, skip)) in layout.iter().enumerate() {
                let t = t as i32 + i32::from(skip);
                seg.extend(std::iter::repeat_n(ACTION, alen).chain(std::iter::repeat_n(2u8, olen)));
                turns.extend(std::iter::repeat_n(t, alen + olen));
            }
            let n = layout.len() + 1;
            prop_assert_eq!(action_spans(&seg, &turns, n), token_by_token(&seg, &turns, n));
        }

        #[test]
        fn spans_recover_generated_layout(
            layout in prop::collection::vec((0usize..4, 0usize..3), 0..6),
            prompt in 0usize..3,
        ) {
            let mut seg = vec![0u8; prompt];
            let mut turns = vec![0i32; prompt];
            let mut expected = Vec::new();
            for (t, &(alen, olen)) in layout.iter().enumerate() {
                let start = seg.len();
                seg.extend(std::iter::repeat_n(ACTION, alen));
                seg.extend(std::iter::repeat_n(2u8, olen));
                turns.extend(std::iter::repeat_n(t as i32, alen + olen));
                expected.push((alen > 0).then_some(ActionSpan { turn: t, start, end: start + alen }));
            }
            let spans = action_spans(&seg, &turns, layout.len()).unwrap();
            prop_assert_eq!(&spans, &expected);
            let flags = action_end_flags(&spans, seg.len());
            prop_assert_eq!(flags.iter().filter(|&&f| f).count(), spans.iter().flatten().count());
        }
    }
}
