//! Jinja in task SQL (`{{ ds }}`, `{% if is_incremental() %}`, `{{ config(...) }}`): replaced
//! before parsing by placeholders of the *same byte length*, so every offset in the parsed text
//! is the same offset in the user's text. Edits are applied to the user's text and copy its
//! slices, which is how the Jinja is restored untouched.

use std::ops::Range;

/// One Jinja construct in the user's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub range: Range<usize>,
    /// The text between the delimiters, trimmed (`ds`, `ref('orders')`, `if is_incremental()`).
    pub inner: String,
    pub kind: RegionKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// `{{ ... }}` standing for a value or a name: becomes an identifier placeholder.
    Expression,
    /// `{% ... %}`, `{# ... #}`, `{{ config(...) }}` and the `else` branches of `{% if %}`:
    /// become blanks.
    Blank,
}

/// The parseable twin of a templated text.
#[derive(Debug, Clone)]
pub struct Templated {
    pub text: String,
    pub regions: Vec<Region>,
}

impl Templated {
    /// The Jinja expression a placeholder identifier stands for.
    pub fn expression_at(&self, offset: usize) -> Option<&Region> {
        self.regions
            .iter()
            .find(|r| r.kind == RegionKind::Expression && r.range.start == offset)
    }
}

impl Templated {
    /// A byte range widened so that it never ends (or starts) inside a Jinja expression: a
    /// placeholder spans only the construct's first line, and an edit placed after it must
    /// land after the whole `{{ ... }}`.
    pub fn snap(&self, range: Range<usize>) -> Range<usize> {
        let inside = |at: usize| {
            let i = self.regions.partition_point(|r| r.range.start < at);
            i.checked_sub(1)
                .map(|i| &self.regions[i])
                .filter(|r| r.kind == RegionKind::Expression && at < r.range.end)
        };
        let start = inside(range.start).map_or(range.start, |r| r.range.start);
        let end = inside(range.end).map_or(range.end, |r| r.range.end);
        start..end.max(start)
    }
}

/// Calls that produce no SQL text: their region is blanked rather than made an identifier.
const NON_SQL_CALLS: [&str; 4] = ["config(", "log(", "doc(", "set "];

/// Replaces every Jinja construct by a placeholder of the same byte length (newlines kept, so
/// line numbers stay right). Text without Jinja is returned as it is.
pub fn substitute(text: &str) -> Templated {
    let bytes = text.as_bytes();
    let mut out = bytes.to_vec();
    let mut regions = Vec::new();
    let mut i = 0;
    // Depth of `{% if %}` blocks, and the depth at which an else branch is being skipped.
    let mut depth = 0usize;
    let mut skipping: Option<usize> = None;
    let mut skip_from = 0usize;
    while i + 1 < bytes.len() {
        let close: &[u8] = match &bytes[i..i + 2] {
            b"{{" => b"}}",
            b"{%" => b"%}",
            b"{#" => b"#}",
            _ => {
                i += 1;
                continue;
            }
        };
        let Some(end) = find(bytes, i + 2, close) else {
            // An unterminated tag stays as it is; the parser reports it.
            break;
        };
        let end = end + 2;
        let inner = text[i + 2..end - 2]
            .trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace())
            .to_string();
        let opener = bytes[i + 1];
        let word = inner.split_whitespace().next().unwrap_or("").to_string();
        if opener == b'%' {
            match word.as_str() {
                "if" | "for" | "macro" | "call" | "filter" => depth += 1,
                "elif" | "else" if skipping.is_none() => {
                    skipping = Some(depth);
                    skip_from = i;
                }
                "endif" | "endfor" | "endmacro" | "endcall" | "endfilter" => {
                    if skipping == Some(depth) {
                        blank(&mut out, skip_from..i);
                        regions.push(Region {
                            range: skip_from..i,
                            inner: "else branch".to_string(),
                            kind: RegionKind::Blank,
                        });
                        skipping = None;
                    }
                    depth = depth.saturating_sub(1);
                }
                _ => {}
            }
        }
        let kind = if opener == b'{' && !NON_SQL_CALLS.iter().any(|c| inner.starts_with(c)) {
            RegionKind::Expression
        } else {
            RegionKind::Blank
        };
        if skipping.is_none() {
            match kind {
                RegionKind::Expression => placeholder(&mut out, i..end, regions.len()),
                RegionKind::Blank => blank(&mut out, i..end),
            }
            regions.push(Region {
                range: i..end,
                inner,
                kind,
            });
        }
        i = end;
    }
    if skipping.is_some() {
        blank(&mut out, skip_from..bytes.len());
    }
    // Only ASCII bytes replaced whole constructs that start and end on ASCII delimiters, so
    // the result is valid UTF-8; fall back to the text itself should that ever not hold.
    let text = String::from_utf8(out).unwrap_or_else(|_| text.to_string());
    Templated { text, regions }
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn blank(out: &mut [u8], range: Range<usize>) {
    for b in &mut out[range] {
        if *b != b'\n' && *b != b'\r' {
            *b = b' ';
        }
    }
}

/// `_j<n>___` on the first line of the construct, spaces after, newlines kept.
fn placeholder(out: &mut [u8], range: Range<usize>, n: usize) {
    let name = format!("_j{n}");
    let mut name = name.bytes();
    let mut first_line = true;
    for b in &mut out[range] {
        if *b == b'\n' || *b == b'\r' {
            first_line = false;
        } else if first_line {
            *b = name.next().unwrap_or(b'_');
        } else {
            *b = b' ';
        }
    }
}

/// A dbt model's `{{ config(...) }}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbtConfig {
    /// The whole `{{ config(...) }}` construct.
    pub range: Range<usize>,
    /// The offset of the call's closing parenthesis.
    pub close_paren: usize,
    pub materialized: Option<String>,
    pub has_unique_key: bool,
    /// True when the argument list is empty (`config()`), so a new argument needs no comma.
    pub empty: bool,
}

/// Finds and reads the first `config(...)` call of a dbt model.
pub fn dbt_config(text: &str, templated: &Templated) -> Option<DbtConfig> {
    let region = templated
        .regions
        .iter()
        .find(|r| r.inner.starts_with("config(") && text[r.range.clone()].starts_with("{{"))?;
    let body = &text[region.range.clone()];
    let open = body.find("config(")? + "config(".len();
    let close = body.rfind(')')?;
    if close < open {
        return None;
    }
    let args = &body[open..close];
    let materialized = argument(args, "materialized");
    Some(DbtConfig {
        range: region.range.clone(),
        close_paren: region.range.start + close,
        materialized,
        has_unique_key: argument_present(args, "unique_key"),
        empty: args.trim().is_empty(),
    })
}

fn argument_present(args: &str, name: &str) -> bool {
    let mut rest = args;
    while let Some(p) = rest.find(name) {
        let before = rest[..p].chars().next_back();
        let after = rest[p + name.len()..].trim_start();
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') && after.starts_with('=') {
            return true;
        }
        rest = &rest[p + name.len()..];
    }
    false
}

/// The string value of `name='value'` in a call's arguments.
fn argument(args: &str, name: &str) -> Option<String> {
    let mut rest = args;
    while let Some(p) = rest.find(name) {
        let after = rest[p + name.len()..].trim_start();
        if let Some(value) = after.strip_prefix('=') {
            let value = value.trim_start();
            let quote = value.chars().next()?;
            if quote == '\'' || quote == '"' {
                let v = &value[1..];
                return v.find(quote).map(|end| v[..end].to_string());
            }
        }
        rest = &rest[p + name.len()..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_never_end_inside_a_multi_line_expression() {
        let text = "SELECT {{ a,\n b }} FROM t";
        let t = substitute(text);
        let first_line = text.find('\n').expect("two lines");
        assert_eq!(t.snap(7..first_line), 7..text.find(" FROM").expect("from"));
        assert_eq!(t.snap(0..6), 0..6);
    }

    #[test]
    fn placeholders_keep_every_offset_and_line() {
        let text = "{{ config(materialized='incremental') }}\nSELECT * FROM {{ ref('orders') }}\n\
                    WHERE dt = '{{ ds }}'\n{% if is_incremental() %}AND x > 1{% else %}AND y{% endif %}\n";
        let t = substitute(text);
        assert_eq!(t.text.len(), text.len());
        assert_eq!(t.text.lines().count(), text.lines().count());
        assert!(t.text.starts_with(&" ".repeat(40)), "{}", t.text);
        assert!(t.text.contains("FROM _j1________________"), "{}", t.text);
        assert!(t.text.contains("'_j2_____'"), "{}", t.text);
        assert!(t.text.contains("AND x > 1"), "{}", t.text);
        assert!(!t.text.contains("AND y"), "{}", t.text);
        let stmt = "SELECT * FROM ";
        let at = t.text.find(stmt).expect("present") + stmt.len();
        assert_eq!(
            t.expression_at(at).map(|r| r.inner.as_str()),
            Some("ref('orders')")
        );
    }

    #[test]
    fn multi_line_expressions_keep_their_newlines() {
        let text = "SELECT {{\n  some_macro()\n}} FROM t";
        let t = substitute(text);
        assert_eq!(t.text.lines().count(), 3);
        assert!(t.text.starts_with("SELECT _j\n"), "{:?}", t.text);
    }

    #[test]
    fn unterminated_jinja_is_left_for_the_parser() {
        let t = substitute("SELECT {{ ds FROM t");
        assert_eq!(t.text, "SELECT {{ ds FROM t");
    }

    #[test]
    fn dbt_config_arguments_are_read() {
        let text =
            "{{\n  config(materialized = 'incremental', on_schema_change='fail')\n}}\nselect 1";
        let t = substitute(text);
        let c = dbt_config(text, &t).expect("config");
        assert_eq!(c.materialized.as_deref(), Some("incremental"));
        assert!(!c.has_unique_key);
        assert_eq!(&text[c.close_paren..c.close_paren + 1], ")");
        let text = "{{ config(materialized='incremental', unique_key=['a','b']) }}";
        let c = dbt_config(text, &substitute(text)).expect("config");
        assert!(c.has_unique_key);
    }
}
