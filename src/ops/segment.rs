//! Token segment kinds. Every token of an episode carries one `u8` segment code:
//! 0 = prompt, 1 = action (tokens the policy produced; the only trainable ones),
//! 2 = observation (environment/tool output), 3 = template (chat-template glue).
//! Codes above 3 are invalid; [`Segment::from_u8`] rejects them. All operators
//! treat exactly the tokens whose code equals [`ACTION`] as action tokens.

/// Kind of a token within an episode's token list.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Task prompt / system text given before the first turn.
    Prompt = 0,
    /// Tokens produced by the policy; the only trainable tokens.
    Action = 1,
    /// Environment or tool output returned after an action.
    Observation = 2,
    /// Chat-template tokens (role headers, separators).
    Template = 3,
}

/// Segment code of [`Segment::Action`].
pub const ACTION: u8 = Segment::Action as u8;

impl Segment {
    /// Decodes a segment code; `None` for codes other than 0..=3.
    pub fn from_u8(code: u8) -> Option<Segment> {
        match code {
            0 => Some(Segment::Prompt),
            1 => Some(Segment::Action),
            2 => Some(Segment::Observation),
            3 => Some(Segment::Template),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_unknown() {
        for s in [Segment::Prompt, Segment::Action, Segment::Observation, Segment::Template] {
            assert_eq!(Segment::from_u8(s as u8), Some(s));
        }
        assert_eq!(ACTION, 1);
        assert_eq!(Segment::from_u8(4), None);
        assert_eq!(Segment::from_u8(255), None);
    }
}
