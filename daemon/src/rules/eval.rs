//! A profile's value under a function filter.

use std::cell::RefCell;

use kiln_plugin_api::Profile;
use regex::Regex;

use super::ValueKind;

thread_local! {
    /// Which frames of the profile being evaluated match, reused across profiles.
    static MATCHED: RefCell<Vec<bool>> = const { RefCell::new(Vec::new()) };
}

/// With `Total`, the sum of the samples whose stack holds a frame matching `function` (the
/// matching subtrees' total; a stack counts once however often the function recurs on it);
/// with `SelfValue`, the sum of the samples whose leaf frame matches.
pub fn function_value(profile: &Profile, function: &Regex, kind: ValueKind) -> i64 {
    MATCHED.with_borrow_mut(|matched| {
        // Each distinct frame of the profile's frame table is matched once, not once per
        // sample that reaches it.
        matched.clear();
        matched.extend(
            profile
                .frames
                .iter()
                .map(|f| function.is_match(&f.function)),
        );
        if !matched.contains(&true) {
            return 0;
        }
        let hit = |i: &u32| matched[*i as usize];
        profile
            .samples
            .iter()
            .filter(|s| match kind {
                ValueKind::Total => s.stack.iter().any(hit),
                ValueKind::SelfValue => s.stack.last().is_some_and(hit),
            })
            .map(|s| s.value)
            .sum()
    })
}
