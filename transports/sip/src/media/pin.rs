//! PIN entry: digits until `#`, compared with the room's PIN; `*` starts over; a limited
//! number of attempts.

use subtle::ConstantTimeEq;

/// What a key press did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinProgress {
    /// Still typing.
    Typing,
    Accepted,
    /// Wrong; `left` attempts remain.
    Wrong {
        left: u32,
    },
    /// Wrong too many times: hang up.
    Failed,
}

#[derive(Debug, Clone)]
pub struct PinEntry {
    expected: String,
    typed: String,
    attempts_left: u32,
}

impl PinEntry {
    pub fn new(expected: impl Into<String>, attempts: u32) -> Self {
        Self { expected: expected.into(), typed: String::new(), attempts_left: attempts.max(1) }
    }

    pub fn press(&mut self, key: char) -> PinProgress {
        match key {
            '#' => {
                // Constant time: how long the check takes says nothing about how much matched.
                let right = bool::from(self.typed.as_bytes().ct_eq(self.expected.as_bytes()));
                self.typed.clear();
                if right {
                    return PinProgress::Accepted;
                }
                self.attempts_left = self.attempts_left.saturating_sub(1);
                if self.attempts_left == 0 {
                    PinProgress::Failed
                } else {
                    PinProgress::Wrong { left: self.attempts_left }
                }
            }
            '*' => {
                self.typed.clear();
                PinProgress::Typing
            }
            digit => {
                // Longer than any PIN can be: keep the tail, so the check simply fails.
                if self.typed.len() < 32 {
                    self.typed.push(digit);
                }
                PinProgress::Typing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn type_in(entry: &mut PinEntry, keys: &str) -> PinProgress {
        keys.chars().map(|k| entry.press(k)).last().unwrap()
    }

    #[test]
    fn three_wrong_attempts_fail() {
        let mut entry = PinEntry::new("1234", 3);
        assert_eq!(type_in(&mut entry, "1111#"), PinProgress::Wrong { left: 2 });
        assert_eq!(type_in(&mut entry, "99*1234#"), PinProgress::Accepted);
        let mut entry = PinEntry::new("1234", 3);
        assert_eq!(type_in(&mut entry, "1#"), PinProgress::Wrong { left: 2 });
        assert_eq!(type_in(&mut entry, "#"), PinProgress::Wrong { left: 1 });
        assert_eq!(type_in(&mut entry, "12345#"), PinProgress::Failed);
    }
}
