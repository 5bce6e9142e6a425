//! How long the daemon keeps an ended sandbox: its view, its report path and its streams'
//! replay stay reachable over the API for [`KEPT_FOR`] after it ended, and at most
//! [`KEPT_MAX`] ended sandboxes are kept (the earliest ended go first). Then the daemon forgets
//! it: the API answers 404 as for an id it never had, and its evidence stays in its run
//! directory. Without this a long-lived daemon (one `safe-run run --pool` after another) kept
//! every sandbox it ever ended, with up to 4 MiB of replay per streamed exec, and every create
//! counted its places over all of them.

use std::time::{Duration, Instant};

/// How long an ended sandbox stays reachable.
pub const KEPT_FOR: Duration = Duration::from_secs(10 * 60);
/// At most this many ended sandboxes are kept.
pub const KEPT_MAX: usize = 1000;

/// The ids to forget now, of `ended` (id, when it ended): those ended `keep_for` ago or
/// longer, then the earliest ended beyond the `keep_max` latest.
pub fn to_forget(
    ended: &[(String, Instant)],
    now: Instant,
    keep_for: Duration,
    keep_max: usize,
) -> Vec<String> {
    let mut by_end: Vec<&(String, Instant)> = ended.iter().collect();
    by_end.sort_by_key(|(id, at)| (*at, id.clone()));
    let over = by_end.len().saturating_sub(keep_max);
    by_end
        .iter()
        .enumerate()
        .filter(|(i, (_, at))| *i < over || now.saturating_duration_since(*at) >= keep_for)
        .map(|(_, (id, _))| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_and_the_earliest_past_the_cap_are_forgotten() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let ended = vec![
            ("c".to_owned(), at(30)),
            ("a".to_owned(), at(10)),
            ("b".to_owned(), at(20)),
            ("d".to_owned(), at(40)),
        ];
        // Nothing is old enough and the cap holds them all.
        assert!(to_forget(&ended, at(45), Duration::from_secs(60), 10).is_empty());
        // Old enough: ended 60 s ago or more.
        assert_eq!(
            to_forget(&ended, at(80), Duration::from_secs(60), 10),
            vec!["a", "b"]
        );
        // Over the cap: the earliest ended go, whatever their ids.
        assert_eq!(
            to_forget(&ended, at(45), Duration::from_secs(60), 3),
            vec!["a"]
        );
        assert_eq!(
            to_forget(&ended, at(45), Duration::from_secs(60), 0),
            vec!["a", "b", "c", "d"]
        );
        assert!(to_forget(&[], at(0), Duration::ZERO, 0).is_empty());
    }
}
