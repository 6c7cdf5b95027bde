//! Minimal text edits: a byte range of the user's text and what replaces it. Rules locate the
//! range with parser spans (see `source.rs`), so everything outside it — formatting, comments,
//! Jinja — is kept byte for byte.

use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub range: Range<usize>,
    pub text: String,
}

impl Edit {
    pub fn insert(at: usize, text: impl Into<String>) -> Edit {
        Edit {
            range: at..at,
            text: text.into(),
        }
    }

    pub fn replace(range: Range<usize>, text: impl Into<String>) -> Edit {
        Edit {
            range,
            text: text.into(),
        }
    }
}

/// Applies edits to `text`. Insertions at the same offset keep their order; an edit that
/// overlaps one already applied is dropped (two rules rewriting the same text cannot both win,
/// and the first, by position, is kept). Ranges outside the text or off a character boundary
/// are dropped too.
pub fn apply(text: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by_key(|e| (e.range.start, e.range.end));
    let mut out = String::with_capacity(text.len() + 256);
    let mut done = 0usize;
    let mut last_end: Option<usize> = None;
    for e in edits {
        let valid = e.range.start <= e.range.end
            && e.range.end <= text.len()
            && text.is_char_boundary(e.range.start)
            && text.is_char_boundary(e.range.end);
        if !valid || e.range.start < done || last_end.is_some_and(|end| e.range.start < end) {
            continue;
        }
        out.push_str(&text[done..e.range.start]);
        out.push_str(&e.text);
        done = e.range.end;
        if e.range.end > e.range.start {
            last_end = Some(e.range.end);
        }
    }
    out.push_str(&text[done..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_in_position_order_and_overlaps_are_dropped() {
        let text = "INSERT INTO t VALUES (1);";
        let out = apply(
            text,
            vec![
                Edit::insert(24, " ON CONFLICT (a) DO NOTHING"),
                Edit::insert(0, "BEGIN;\n"),
                Edit::replace(22..23, "2"),
                Edit::replace(21..24, "(9)"),
                Edit::insert(25, "\nCOMMIT;"),
            ],
        );
        assert_eq!(
            out,
            "BEGIN;\nINSERT INTO t VALUES (9) ON CONFLICT (a) DO NOTHING;\nCOMMIT;"
        );
    }

    #[test]
    fn edits_outside_the_text_are_ignored() {
        assert_eq!(
            apply("é", vec![Edit::insert(1, "x"), Edit::insert(9, "y")]),
            "é"
        );
    }
}
