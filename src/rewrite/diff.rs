//! A unified diff of a rewrite, for people: what natkey changed, with three lines of context.
//! Task files are small, so a plain longest-common-subsequence over lines is enough.

/// `--- a/FILE` / `+++ b/FILE` and the hunks that turn `before` into `after`; empty when the
/// texts are equal.
pub fn unified_diff(file: &str, before: &str, after: &str) -> String {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    if a == b {
        return String::new();
    }
    // Lines too many for a quadratic table get one hunk replacing everything.
    let ops = if a.len().saturating_mul(b.len()) > 4_000_000 {
        a.iter()
            .map(|l| Op::Delete(l))
            .chain(b.iter().map(|l| Op::Insert(l)))
            .collect()
    } else {
        diff_lines(&a, &b)
    };
    let path = file.trim_start_matches('/');
    let mut out = format!("--- a/{path}\n+++ b/{path}\n");
    const CONTEXT: usize = 3;
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| !matches!(op, Op::Keep(_)))
        .map(|(i, _)| i)
        .collect();
    let mut i = 0;
    while i < changed.len() {
        let start = changed[i].saturating_sub(CONTEXT);
        let mut end = changed[i];
        while i < changed.len() && changed[i] <= end + 2 * CONTEXT {
            end = changed[i];
            i += 1;
        }
        let end = (end + CONTEXT + 1).min(ops.len());
        let (mut a_start, mut b_start) = (1, 1);
        for op in &ops[..start] {
            match op {
                Op::Keep(_) => {
                    a_start += 1;
                    b_start += 1;
                }
                Op::Delete(_) => a_start += 1,
                Op::Insert(_) => b_start += 1,
            }
        }
        let hunk = &ops[start..end];
        let a_len = hunk.iter().filter(|o| !matches!(o, Op::Insert(_))).count();
        let b_len = hunk.iter().filter(|o| !matches!(o, Op::Delete(_))).count();
        out.push_str(&format!("@@ -{a_start},{a_len} +{b_start},{b_len} @@\n"));
        for op in hunk {
            let (sign, line) = match op {
                Op::Keep(l) => (' ', l),
                Op::Delete(l) => ('-', l),
                Op::Insert(l) => ('+', l),
            };
            out.push(sign);
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

enum Op<'a> {
    Keep(&'a str),
    Delete(&'a str),
    Insert(&'a str),
}

fn diff_lines<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<Op<'a>> {
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut ops = Vec::new();
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            ops.push(Op::Keep(a[i]));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            ops.push(Op::Delete(a[i]));
            i += 1;
        } else {
            ops.push(Op::Insert(b[j]));
            j += 1;
        }
    }
    ops.extend(a[i..].iter().map(|l| Op::Delete(l)));
    ops.extend(b[j..].iter().map(|l| Op::Insert(l)));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_shows_added_and_changed_lines_with_context() {
        let before = "-- load\nINSERT INTO t\nSELECT 1;\n";
        let after = "-- load\nBEGIN;\nINSERT INTO t\nSELECT 1 ON CONFLICT DO NOTHING;\n";
        insta::assert_snapshot!(unified_diff("load.sql", before, after), @r"
        --- a/load.sql
        +++ b/load.sql
        @@ -1,3 +1,4 @@
         -- load
        +BEGIN;
         INSERT INTO t
        -SELECT 1;
        +SELECT 1 ON CONFLICT DO NOTHING;
        ");
        assert_eq!(unified_diff("x", "a\n", "a\n"), "");
    }
}
