//! Sessions per token: the engine counts live sessions by the token id of the credential each
//! was opened with ([`junction_core::SessionCredential`]) and refuses a join past the limit, so
//! one leaked token cannot fill the server. A session holds a [`TokenSeat`] for as long as it is
//! in its room; dropping the seat (however the session ends) gives it back.

use std::collections::HashMap;
use std::sync::Arc;

use junction_core::ContractError;
use parking_lot::Mutex;

/// Live sessions per token id, engine-wide.
#[derive(Default)]
pub(crate) struct TokenSessions {
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl TokenSessions {
    /// Takes one of `token_id`'s seats, or refuses when it holds `limit` already (0: no limit).
    pub(crate) fn acquire(&self, token_id: &str, limit: usize) -> Result<TokenSeat, ContractError> {
        let mut counts = self.counts.lock();
        let count = counts.entry(token_id.to_owned()).or_insert(0);
        if limit > 0 && *count >= limit {
            return Err(ContractError::TooManySessions { limit });
        }
        *count += 1;
        Ok(TokenSeat { counts: self.counts.clone(), token_id: token_id.to_owned() })
    }

    #[cfg(test)]
    fn live(&self, token_id: &str) -> usize {
        self.counts.lock().get(token_id).copied().unwrap_or(0)
    }
}

/// One live session of a token; given back when dropped.
pub(crate) struct TokenSeat {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    token_id: String,
}

impl TokenSeat {
    pub(crate) fn token_id(&self) -> &str {
        &self.token_id
    }
}

impl Drop for TokenSeat {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&self.token_id) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.token_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_are_counted_per_token_and_given_back_on_drop() {
        let sessions = TokenSessions::default();
        let a1 = sessions.acquire("a", 2).unwrap();
        let a2 = sessions.acquire("a", 2).unwrap();
        assert_eq!(sessions.acquire("a", 2).err(), Some(ContractError::TooManySessions { limit: 2 }));
        let _b = sessions.acquire("b", 2).unwrap();
        drop(a1);
        assert_eq!(sessions.live("a"), 1);
        let _a3 = sessions.acquire("a", 2).unwrap();
        drop(a2);
        assert!(sessions.acquire("c", 0).is_ok(), "0 is no limit");
        assert_eq!(sessions.live("c"), 0, "the seat was dropped at once");
    }
}
